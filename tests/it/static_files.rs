//! Static files on a route (`static = { root = ... }`): content types,
//! HEAD, validators and preconditions, single and multipart ranges,
//! precompressed siblings, folders and their index, every way out of the
//! root refused, symbolic links, fallbacks (upstream, file), 405, a large
//! file streamed intact; with curl and wget where a real client fits.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use bytes::Bytes;

const HELLO: &str = "hello, world\n";
const SECRET: &str = "TOP SECRET, outside the root";
const BIG: usize = 8 * 1024 * 1024;

/// A site: `www/` (the root) and, beside it, `secret.txt`, which no
/// request may read.
struct Site {
    dir: Dir,
}

impl Site {
    fn new(tag: &str) -> Site {
        let dir = Dir::new(tag);
        let www = dir.join("www");
        let put = |name: &str, data: &[u8]| {
            let p = www.join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, data).expect("write");
        };
        std::fs::write(dir.join("secret.txt"), SECRET).expect("secret");
        put("index.html", b"<h1>home</h1>");
        put("hello.txt", HELLO.as_bytes());
        put("style.css", b"body{}");
        put("logo.svg", b"<svg/>");
        put("data.json", b"{}");
        put("blob", b"?");
        put("digits.txt", "0123456789".repeat(10).as_bytes());
        put("docs/index.html", b"<h1>docs</h1>");
        put("docs/guide.txt", b"guide");
        put("evil.example/index.html", b"not a redirect elsewhere");
        put("empty/nothing-here.txt", b"x");
        put(".env", b"PASSWORD=1");
        put(".well-known/security.txt", b"Contact: mailto:x@example.com");
        // app.js with a real gzip sibling and (fake) brotli and zstd ones.
        put("app.js", b"console.log('identity');");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"console.log('from gzip');").expect("gzip");
        put("app.js.gz", &gz.finish().expect("gzip"));
        put("app.js.br", b"BROTLI-BYTES");
        put("app.js.zst", b"ZSTD-BYTES");
        put("big.bin", &big());
        std::os::unix::fs::symlink(www.join("hello.txt"), www.join("link-in.txt")).expect("link");
        std::os::unix::fs::symlink(dir.join("secret.txt"), www.join("link-out.txt")).expect("link");
        std::os::unix::fs::symlink(&dir.0, www.join("up")).expect("link");
        Site { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("www")
    }
}

/// 8 MiB of a deterministic pattern.
fn big() -> Vec<u8> {
    let mut s = Stream::new(17);
    let mut out = vec![0; BIG];
    s.fill(&mut out);
    out
}

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

/// A proxy with one route: `route` is the rest of its inline fields,
/// `extra` more TOML after it.
fn proxy(route: &str, extra: &str) -> Proxy {
    Proxy::start(&format!(
        "[server]\nthreads = 1\nlog_level = \"error\"\nshutdown_grace = \"10s\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [[routes]]\n{route}\n{extra}"
    ))
}

fn static_route(root: &Path, more: &str) -> String {
    format!(
        "static = {{ root = {:?}{more} }}",
        root.display().to_string()
    )
}

async fn ask(
    p: &Proxy,
    method: &str,
    path: &str,
    h: &[(&str, &str)],
) -> (u16, http::HeaderMap, Bytes) {
    fetch(p.addr, method, "test.local", path, h, empty()).await
}

/// The exact bytes of a request line, on a connection of its own: the
/// status.
async fn raw_status(p: &Proxy, target: &str) -> (u16, String) {
    let text = raw(
        p.addr,
        format!("GET {target} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn curl() -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--noproxy", "*", "--max-time", "60"]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_types_head_and_validators() {
    let site = Site::new("static-types");
    let p = proxy(&static_route(&site.root(), ""), "");
    for (path, ct) in [
        ("/hello.txt", "text/plain; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/logo.svg", "image/svg+xml"),
        ("/data.json", "application/json"),
        ("/blob", "application/octet-stream"),
        ("/", "text/html; charset=utf-8"),
    ] {
        let (s, h, _) = ask(&p, "GET", path, &[]).await;
        assert_eq!(s, 200, "{path}");
        assert_eq!(h["content-type"], ct, "{path}");
    }
    let (s, h, body) = ask(&p, "GET", "/hello.txt", &[]).await;
    assert_eq!((s, &body[..]), (200, HELLO.as_bytes()));
    assert_eq!(h["content-length"], HELLO.len().to_string().as_str());
    assert_eq!(h["accept-ranges"], "bytes");
    let etag = h["etag"].to_str().expect("etag").to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong: {etag}"
    );
    let modified = h["last-modified"].to_str().expect("date").to_string();
    assert!(!h.contains_key("vary"), "no siblings, no Vary");

    // HEAD: the same head, no body.
    let (s, hh, body) = ask(&p, "HEAD", "/hello.txt", &[]).await;
    assert_eq!(s, 200);
    assert!(body.is_empty());
    assert_eq!(hh["content-length"], h["content-length"]);
    assert_eq!(hh["etag"], h["etag"]);
    let head = ok(&run_command({
        let mut c = curl();
        c.args(["-I", &p.url("/hello.txt")]);
        c
    })
    .await);
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", HELLO.len())),
        "{head}"
    );

    // 304 by either validator; 412 by either precondition.
    let (s, h304, body) = ask(&p, "GET", "/hello.txt", &[("if-none-match", &etag)]).await;
    assert_eq!(s, 304);
    assert!(body.is_empty());
    assert_eq!(h304["etag"], etag.as_str());
    // No Content-Length but the 200's (RFC 9110 §8.6): none here.
    assert!(!h304.contains_key("content-length"), "{h304:?}");
    let (s, _, _) = ask(&p, "GET", "/hello.txt", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(s, 200);
    let (s, _, _) = ask(&p, "GET", "/hello.txt", &[("if-modified-since", &modified)]).await;
    assert_eq!(s, 304);
    let (s, _, _) = ask(
        &p,
        "GET",
        "/hello.txt",
        &[("if-modified-since", "Thu, 01 Jan 1998 00:00:00 GMT")],
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, _) = ask(&p, "GET", "/hello.txt", &[("if-match", "\"other\"")]).await;
    assert_eq!(s, 412);
    let (s, _, _) = ask(&p, "GET", "/hello.txt", &[("if-match", &etag)]).await;
    assert_eq!(s, 200);
    let (s, _, _) = ask(
        &p,
        "GET",
        "/hello.txt",
        &[("if-unmodified-since", "Thu, 01 Jan 1998 00:00:00 GMT")],
    )
    .await;
    assert_eq!(s, 412);

    // curl -z: If-Modified-Since from a date (the file's own: 304, no body).
    let out = ok(&run_command({
        let mut c = curl();
        c.args([
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-z",
            &modified,
            &p.url("/hello.txt"),
        ]);
        c
    })
    .await);
    assert_eq!(out, "304");
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_single_multipart_if_range_and_416() {
    let site = Site::new("static-ranges");
    let p = proxy(&static_route(&site.root(), ""), "");
    let digits = "0123456789".repeat(10);
    let (s, h, body) = ask(&p, "GET", "/digits.txt", &[("range", "bytes=10-14")]).await;
    assert_eq!(s, 206);
    assert_eq!(&body[..], b"01234");
    assert_eq!(h["content-range"], "bytes 10-14/100");
    assert_eq!(h["content-length"], "5");
    let (s, _, body) = ask(&p, "GET", "/digits.txt", &[("range", "bytes=-3")]).await;
    assert_eq!((s, &body[..]), (206, &b"789"[..]));

    // If-Range: the current tag gives the range, a stale one the whole.
    let (_, h, _) = ask(&p, "GET", "/digits.txt", &[]).await;
    let etag = h["etag"].to_str().expect("etag").to_string();
    let (s, _, body) = ask(
        &p,
        "GET",
        "/digits.txt",
        &[("range", "bytes=0-1"), ("if-range", &etag)],
    )
    .await;
    assert_eq!((s, &body[..]), (206, &b"01"[..]));
    let (s, _, body) = ask(
        &p,
        "GET",
        "/digits.txt",
        &[("range", "bytes=0-1"), ("if-range", "\"stale\"")],
    )
    .await;
    assert_eq!((s, body.len()), (200, 100));

    // 416, with the length.
    let (s, h, _) = ask(&p, "GET", "/digits.txt", &[("range", "bytes=100-")]).await;
    assert_eq!(s, 416);
    assert_eq!(h["content-range"], "bytes */100");

    // Several ranges with curl: multipart/byteranges, each part parsed.
    let out = run_command({
        let mut c = curl();
        c.args(["-r", "0-9,20-29", "-D", "-", &p.url("/digits.txt")]);
        c
    })
    .await;
    let text = ok(&out);
    let (head, body) = text.split_once("\r\n\r\n").expect("head");
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    let ct = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .expect("content-type");
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect("multipart")
        .to_string();
    let parts: Vec<&str> = body
        .split(&format!("--{boundary}"))
        .map(|p| p.trim_matches(['\r', '\n']))
        .filter(|p| !p.is_empty() && *p != "--")
        .collect();
    assert_eq!(parts.len(), 2, "{body:?}");
    for (part, (range, data)) in parts
        .iter()
        .zip([("0-9", &digits[0..10]), ("20-29", &digits[20..30])])
    {
        let (phead, pdata) = part.split_once("\r\n\r\n").expect("part head");
        assert!(
            phead.contains(&format!("content-range: bytes {range}/100")),
            "{phead}"
        );
        assert!(phead.contains("content-type: text/plain"), "{phead}");
        assert_eq!(pdata, data);
    }
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precompressed_siblings_by_accept_encoding() {
    let site = Site::new("static-precompressed");
    let p = proxy(&static_route(&site.root(), ""), "");
    let (s, h, body) = ask(&p, "GET", "/app.js", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(s, 200);
    assert_eq!(h["content-encoding"], "br");
    assert_eq!(h["vary"], "accept-encoding");
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(&body[..], b"BROTLI-BYTES");
    let br_tag = h["etag"].clone();
    // br, zstd, gzip in that order among the codings the client rates
    // alike; its q-values first.
    for (accept, coding, bytes) in [
        ("zstd, gzip", "zstd", &b"ZSTD-BYTES"[..]),
        ("gzip, br, zstd", "br", b"BROTLI-BYTES"),
        ("br;q=0.5, zstd", "zstd", b"ZSTD-BYTES"),
    ] {
        let (s, h, body) = ask(&p, "GET", "/app.js", &[("accept-encoding", accept)]).await;
        assert_eq!(s, 200, "{accept}");
        assert_eq!(h["content-encoding"], coding, "{accept}");
        assert_eq!(h["vary"], "accept-encoding");
        assert_eq!(&body[..], bytes, "{accept}");
        // (Each sibling its own tag.)
        assert_eq!(h["etag"] == br_tag, coding == "br", "{accept}");
    }
    let (_, h, _) = ask(
        &p,
        "GET",
        "/app.js",
        &[("accept-encoding", "gzip;q=1, br;q=0.5")],
    )
    .await;
    assert_eq!(h["content-encoding"], "gzip");
    // Identity to a client that names codings: still Vary, its own tag;
    // none of a sibling's.
    let (_, h, body) = ask(&p, "GET", "/app.js", &[("accept-encoding", "identity")]).await;
    assert!(!h.contains_key("content-encoding"));
    assert_eq!(h["vary"], "accept-encoding");
    assert_eq!(&body[..], b"console.log('identity');");
    assert_ne!(h["etag"], br_tag);
    // A client that names none takes the file as it is (no sibling is
    // looked for: no Vary, as nginx's gzip_static).
    let (_, h, body) = ask(&p, "GET", "/app.js", &[]).await;
    assert!(!h.contains_key("content-encoding") && !h.contains_key("vary"));
    assert_eq!(&body[..], b"console.log('identity');");
    // A range applies to the encoded representation.
    let (s, h, body) = ask(
        &p,
        "GET",
        "/app.js",
        &[("accept-encoding", "br"), ("range", "bytes=0-5")],
    )
    .await;
    assert_eq!((s, &body[..]), (206, &b"BROTLI"[..]));
    assert_eq!(h["content-range"], "bytes 0-5/12");
    // With precompressed = false, never a sibling.
    drop(p);
    let p = proxy(&static_route(&site.root(), ", precompressed = false"), "");
    let (_, h, _) = ask(&p, "GET", "/app.js", &[("accept-encoding", "br")]).await;
    assert!(!h.contains_key("content-encoding") && !h.contains_key("vary"));
    p.stop();
    // curl --compressed decodes the gzip sibling.
    let p = proxy(&static_route(&site.root(), ""), "");
    let out = ok(&run_command({
        let mut c = curl();
        c.args([
            "--compressed",
            "-H",
            "Accept-Encoding: gzip",
            &p.url("/app.js"),
        ]);
        c
    })
    .await);
    assert_eq!(out, "console.log('from gzip');");
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_index_redirect_hidden_and_405() {
    let site = Site::new("static-folders");
    let p = proxy(&static_route(&site.root(), ""), "");
    let (s, h, _) = ask(&p, "GET", "/docs?x=1", &[]).await;
    assert_eq!(s, 301);
    assert_eq!(h["location"], "/docs/?x=1");
    let (s, _, body) = ask(&p, "GET", "/docs/", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"<h1>docs</h1>"[..]));
    // Never a protocol-relative redirect to another host.
    let (s, text) = raw_status(&p, "//evil.example").await;
    assert_eq!(s, 301, "{text}");
    assert!(text.contains("\r\nlocation: /evil.example/\r\n"), "{text}");
    // No index, no listing.
    let (s, _, _) = ask(&p, "GET", "/empty/", &[]).await;
    assert_eq!(s, 404);
    let (s, _, _) = ask(&p, "GET", "/hello.txt/", &[]).await;
    assert_eq!(s, 404);
    let (s, _, _) = ask(&p, "GET", "/missing.txt", &[]).await;
    assert_eq!(s, 404);
    // Dotfiles are not served; `.well-known` is.
    let (s, _, body) = ask(&p, "GET", "/.env", &[]).await;
    assert_eq!(s, 404);
    assert!(!String::from_utf8_lossy(&body).contains("PASSWORD"));
    let (s, _, _) = ask(&p, "GET", "/.well-known/security.txt", &[]).await;
    assert_eq!(s, 200);
    let with = proxy(&static_route(&site.root(), ", dotfiles = true"), "");
    let (s, _, body) = ask(&with, "GET", "/.env", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"PASSWORD=1"[..]));
    with.stop();
    // Other methods: 405 with Allow.
    let (s, h, _) = ask(&p, "POST", "/hello.txt", &[]).await;
    assert_eq!(s, 405);
    assert_eq!(h["allow"], "GET, HEAD");
    // wget follows the folder's redirect to its index.
    let out_dir = Dir::new("static-wget");
    let file = out_dir.join("got.html");
    ok(&run_command({
        let mut c = Command::new("wget");
        c.args(["-q", "--no-proxy", "--tries=1", "--timeout=60", "-O"])
            .arg(&file)
            .arg(p.url("/docs"));
        c
    })
    .await);
    assert_eq!(std::fs::read(&file).expect("wget's file"), b"<h1>docs</h1>");
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_leaves_the_root() {
    let site = Site::new("static-escape");
    // Each refused by the path's normalisation alone: with
    // `symlinks = "any"` too, where no canonical path is checked.
    let paths = [
        "/../secret.txt",
        "/docs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/docs/%2e%2e/%2e%2e/secret.txt",
        "/docs%2f..%2f..%2fsecret.txt",
        "/..%2fsecret.txt",
        "/..%5csecret.txt",
        "/docs\\..\\..\\secret.txt",
        "/hello.txt%00.html",
        "/%00",
    ];
    for more in [
        ", symlinks = \"inside\"",
        ", symlinks = \"any\"",
        ", symlinks = \"any\", io = \"pool\"",
    ] {
        let p = proxy(&static_route(&site.root(), more), "");
        // Sanity: the route serves.
        assert_eq!(raw_status(&p, "/hello.txt").await.0, 200);
        for target in paths {
            let (status, text) = raw_status(&p, target).await;
            assert!(matches!(status, 400 | 404), "{target}: {status}\n{text}");
            assert!(!text.contains(SECRET), "{target} leaked the secret");
        }
        p.stop();
    }
    // Symbolic links out of the root (a file, a folder) are not followed;
    // one inside is.
    let p = proxy(&static_route(&site.root(), ""), "");
    for target in ["/up/secret.txt", "/link-out.txt"] {
        let (status, text) = raw_status(&p, target).await;
        assert_eq!(status, 404, "{target}: {text}");
        assert!(!text.contains(SECRET), "{target} leaked the secret");
    }
    let (s, _, body) = ask(&p, "GET", "/link-in.txt", &[]).await;
    assert_eq!((s, &body[..]), (200, HELLO.as_bytes()));
    p.stop();
    // `symlinks = "any"` follows links out of the root too (the
    // operator's choice).
    let p = proxy(&static_route(&site.root(), ", symlinks = \"any\""), "");
    let (s, _, body) = ask(&p, "GET", "/link-out.txt", &[]).await;
    assert_eq!((s, &body[..]), (200, SECRET.as_bytes()));
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_to_upstream_and_to_a_file() {
    let site = Site::new("static-fallback");
    let app = backend(|req: http::Request<hyper::body::Incoming>| async move {
        text(200, &format!("app {} {}", req.method(), req.uri()))
    });
    let p = proxy(
        &format!("upstream = \"app\"\n{}", static_route(&site.root(), "")),
        &format!("[upstreams.app]\nservers = [\"{}\"]", app.addr),
    );
    let (s, _, body) = ask(&p, "GET", "/hello.txt", &[]).await;
    assert_eq!((s, &body[..]), (200, HELLO.as_bytes()));
    let (s, _, body) = ask(&p, "GET", "/api/users?x=1", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"app GET /api/users?x=1"[..]));
    let (s, _, body) = ask(&p, "POST", "/hello.txt", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"app POST /hello.txt"[..]));
    p.stop();

    // A single-page application: any path without a file is index.html.
    let p = proxy(
        &static_route(&site.root(), ", fallback = \"/index.html\""),
        "",
    );
    let (s, h, body) = ask(&p, "GET", "/app/route/42", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"<h1>home</h1>"[..]));
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let (s, _, body) = ask(&p, "GET", "/hello.txt", &[]).await;
    assert_eq!((s, &body[..]), (200, HELLO.as_bytes()));
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_by_strip_prefix() {
    let site = Site::new("static-alias");
    let p = proxy(
        &format!(
            "path_prefix = \"/assets/\"\nstrip_prefix = \"/assets\"\n{}",
            static_route(&site.root(), "")
        ),
        "",
    );
    let (s, _, body) = ask(&p, "GET", "/assets/hello.txt", &[]).await;
    assert_eq!((s, &body[..]), (200, HELLO.as_bytes()));
    let (s, h, _) = ask(&p, "GET", "/assets/docs", &[]).await;
    assert_eq!(s, 301);
    assert_eq!(h["location"], "/assets/docs/");
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_streams_intact() {
    let site = Site::new("static-large");
    let p = proxy(&static_route(&site.root(), ""), "");
    let want = sha256(&big());
    let (s, h, body) = ask(&p, "GET", "/big.bin", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(h["content-length"], BIG.to_string().as_str());
    assert_eq!(sha256(&body), want);
    // A range across chunk boundaries.
    let (s, _, part) = ask(&p, "GET", "/big.bin", &[("range", "bytes=100000-700000")]).await;
    assert_eq!(s, 206);
    assert_eq!(&part[..], &body[100_000..=700_000]);
    // curl to a file.
    let out_dir = Dir::new("static-large-out");
    let file = out_dir.join("big.bin");
    ok(&run_command({
        let mut c = curl();
        c.arg("-o").arg(&file).arg(p.url("/big.bin"));
        c
    })
    .await);
    assert_eq!(sha256(&std::fs::read(&file).expect("curl's file")), want);
    // And over HTTP/2 (h2c), with flow control in the way.
    let file2 = out_dir.join("big-h2.bin");
    let out = ok(&run_command({
        let mut c = curl();
        c.args(["--http2-prior-knowledge", "-w", "%{http_version}", "-o"])
            .arg(&file2)
            .arg(p.url("/big.bin"));
        c
    })
    .await);
    assert_eq!(out, "2");
    assert_eq!(sha256(&std::fs::read(&file2).expect("curl's file")), want);
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_field() {
    let site = Site::new("static-config");
    let missing = site.dir.join("nope");
    let file = site.root().join("hello.txt");
    for (route, want) in [
        (static_route(&missing, ""), "static.root"),
        (static_route(&file, ""), "is not a folder"),
        (
            static_route(&site.root(), ", symlinks = \"never\""),
            "static.symlinks",
        ),
        (
            static_route(&site.root(), ", fallback = \"app\""),
            "static.fallback",
        ),
        (
            static_route(&site.root(), ", index = [\"../x\"]"),
            "static.index",
        ),
        (static_route(&site.root(), ", io = \"async\""), "static.io"),
        (
            static_route(&site.root(), ", io = \"pool\", sendfile = true"),
            "static.sendfile",
        ),
        (
            format!("{}\nupstream = \"nope\"", static_route(&site.root(), "")),
            "no upstream group named `nope`",
        ),
        (
            format!(
                "{}\nrespond = {{ status = 200 }}",
                static_route(&site.root(), "")
            ),
            "routes[0].static",
        ),
    ] {
        let toml = format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\n{route}\n");
        let err = tidegate::Config::from_toml(&toml, "test.toml").expect_err(&route);
        let text = err.to_string();
        assert!(text.contains(want), "{route}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_passes_check_and_serves() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/static-files.toml");
    let out = run_command({
        let mut c = Command::new(env!("CARGO_BIN_EXE_tidegate"));
        c.args(["check", "--config", path]);
        c
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Served, on a free port instead of the example's (and its roots
    // made absolute: the harness's file name is not the example's).
    let www = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/www");
    let text = std::fs::read_to_string(path)
        .expect("example")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("root = \"www", &format!("root = \"{www}"));
    // As `GET /config` shows it.
    let config = tidegate::Config::from_toml(&text, "example.toml").expect("loads");
    let json = serde_json::to_value(&config).expect("serialises");
    let action = &json["routes"][0]["action"]["static"];
    assert_eq!(action["root"], www, "{json}");
    assert_eq!(action["symlinks"], "inside");
    assert_eq!(action["io"], "inline");
    let p = Proxy::start(&text);
    let (s, h, body) = ask(&p, "GET", "/assets/app.js", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    assert!(String::from_utf8_lossy(&body).contains("app.js loaded"));
    let (s, _, body) = ask(&p, "GET", "/", &[]).await;
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&body).contains("Served from disk"));
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_for_static_answers() {
    let site = Site::new("static-log");
    let log = TempFile::new("static-access.log");
    let p = Proxy::start(&format!(
        "[server]\nthreads = 1\nlog_level = \"error\"\naccess_log = {:?}\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\n{}\n",
        log.arg(),
        static_route(&site.root(), "")
    ));
    assert_eq!(ask(&p, "GET", "/hello.txt", &[]).await.0, 200);
    assert_eq!(
        ask(&p, "GET", "/digits.txt", &[("range", "bytes=0-9")])
            .await
            .0,
        206
    );
    assert_eq!(ask(&p, "GET", "/missing", &[]).await.0, 404);
    tokio::task::spawn_blocking(move || p.stop())
        .await
        .expect("stop");
    let text = std::fs::read_to_string(&log.path).expect("log written");
    let field = |needle: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle}: {text}"));
        line.split(' ').map(str::to_string).collect()
    };
    // time client "request line" status bytes upstream seconds outcome
    assert_eq!(
        &field("/hello.txt")[5..7],
        ["200", &HELLO.len().to_string()]
    );
    assert_eq!(&field("/digits.txt")[5..7], ["206", "10"]);
    assert_eq!(field("/missing")[5], "404");
}

/// A folder with two releases of a site, `a/` and `b/`, each with a
/// `v.txt` saying which it is.
fn releases(name: &str) -> Dir {
    let dir = Dir::new(name);
    for (release, text) in [("a", "release a"), ("b", "release b")] {
        std::fs::create_dir_all(dir.join(release)).expect("mkdir");
        std::fs::write(dir.join(release).join("v.txt"), text).expect("write");
    }
    std::fs::write(dir.join("b").join("only-b.txt"), "new in b").expect("write");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_link_swapped_on_deploy_is_followed() {
    let dir = releases("static-deploy");
    let current = dir.join("current");
    std::os::unix::fs::symlink(dir.join("a"), &current).expect("link");
    let p = proxy(&static_route(&current, ""), "");
    let (s, _, body) = ask(&p, "GET", "/v.txt", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"release a"[..]));
    // Swapped as deploy tools do: a new link renamed over the old one.
    let next = dir.join("next");
    std::os::unix::fs::symlink(dir.join("b"), &next).expect("link");
    std::fs::rename(&next, &current).expect("swap");
    // A file only the new release has: found at once.
    let (s, _, body) = ask(&p, "GET", "/only-b.txt", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"new in b"[..]));
    // One both have: the new release's within the second the kept root
    // is trusted for (at once here: the miss above checked the root).
    until_served(&p, "/v.txt", b"release b").await;
    p.stop();
}

/// Asks for `path` until it is `want`, bounded by HANG (a kept root is
/// used unchecked for a second, see `ROOT_CHECKED_FOR`).
async fn until_served(p: &Proxy, path: &str, want: &[u8]) {
    let mut last = Vec::new();
    let found = tokio::time::timeout(HANG, async {
        loop {
            let (s, _, body) = ask(p, "GET", path, &[]).await;
            if s == 200 && body[..] == *want {
                return;
            }
            last = body.to_vec();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "{path} never became {:?}; last {:?}",
        String::from_utf8_lossy(want),
        String::from_utf8_lossy(&last)
    );
}

/// Whether this process holds a descriptor open on `path`.
fn held_open(path: &Path) -> bool {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|target| target == path)
}

/// A worker thread keeps its static root open; a reload closes it (a
/// root the new config does not serve is not held, say against an
/// unmount).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_closes_the_roots_kept_open() {
    let dir = releases("static-reload-roots");
    let (a, b) = (
        dir.join("a").canonicalize().expect("a"),
        dir.join("b").canonicalize().expect("b"),
    );
    let mut p = proxy(&static_route(&a, ""), "");
    let (s, _, body) = ask(&p, "GET", "/v.txt", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"release a"[..]));
    assert!(held_open(&a), "the root is kept open");
    p.reload(&format!(
        "[server]\nthreads = 1\nlog_level = \"error\"\nshutdown_grace = \"10s\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\n{}\n",
        static_route(&b, "")
    ));
    let (s, _, body) = ask(&p, "GET", "/v.txt", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"release b"[..]));
    assert!(!held_open(&a), "the old root is closed");
    assert!(held_open(&b));
    p.stop();
}

/// The root's descriptor is kept per thread while the root is the same
/// folder: one made again in its place (a deploy that deletes and copies)
/// is followed at once, and a FIFO in it is no file (and holds nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_folder_made_again_is_followed_and_a_fifo_is_no_file() {
    let dir = Dir::new("static-remade");
    let root = dir.join("www");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::write(root.join("v.txt"), "first").expect("write");
    let p = proxy(&static_route(&root, ""), "");
    let (s, _, body) = ask(&p, "GET", "/v.txt", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"first"[..]));
    // Kept open while the old folder is gone: a new one of the same name.
    let old = dir.join("www-old");
    std::fs::rename(&root, &old).expect("move");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::write(root.join("v.txt"), "second").expect("write");
    until_served(&p, "/v.txt", b"second").await;
    // The root itself, asked for: an index-less folder.
    assert_eq!(ask(&p, "GET", "/", &[]).await.0, 404);
    let fifo = root.join("pipe.txt");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let answer = tokio::time::timeout(HANG, ask(&p, "GET", "/pipe.txt", &[]))
        .await
        .expect("a FIFO held the request");
    assert_eq!(answer.0, 404);
    std::fs::write(root.join("index.html"), "home").expect("write");
    let (s, _, body) = ask(&p, "GET", "/", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"home"[..]));
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_static_answers_by_route_and_class() {
    let site = Site::new("static-metrics");
    let p = proxy(
        &static_route(&site.root(), ""),
        "[admin]\naddress = \"127.0.0.1:0\"",
    );
    for _ in 0..2 {
        assert_eq!(ask(&p, "GET", "/hello.txt", &[]).await.0, 200);
    }
    assert_eq!(ask(&p, "GET", "/missing", &[]).await.0, 404);
    // A count lands as its response ends, just after the client has it:
    // scraped until it is there.
    let count = |text: &str, code: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("tidegate_requests_total{")
                    && l.contains("route=\"routes[0]\"")
                    && l.contains(&format!("code=\"{code}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let text = tokio::time::timeout(HANG, async {
        loop {
            let (status, text) = crate::admin::admin_get(&p, "/metrics", &[]).await;
            assert_eq!(status, 200);
            if count(&text, "2xx") == 2.0 && count(&text, "4xx") == 1.0 {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("static answers counted");
    assert!(text.contains("tidegate_requests_total{"));
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_io_answers_the_same() {
    let site = Site::new("static-pool");
    let p = proxy(&static_route(&site.root(), ", io = \"pool\""), "");
    let (s, h, body) = ask(&p, "GET", "/hello.txt", &[]).await;
    assert_eq!((s, &body[..]), (200, HELLO.as_bytes()));
    let etag = h["etag"].to_str().expect("etag").to_string();
    assert_eq!(
        ask(&p, "GET", "/hello.txt", &[("if-none-match", &etag)])
            .await
            .0,
        304
    );
    let (s, _, body) = ask(&p, "GET", "/digits.txt", &[("range", "bytes=10-14")]).await;
    assert_eq!((s, &body[..]), (206, &b"01234"[..]));
    let (s, _, body) = ask(&p, "GET", "/big.bin", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(sha256(&body), sha256(&big()));
    assert_eq!(ask(&p, "GET", "/link-out.txt", &[]).await.0, 404);
    assert_eq!(ask(&p, "GET", "/docs", &[]).await.0, 301);
    p.stop();
}

/// The bytes `sendfile(2)` sent, by an strace log's lines.
fn sent_by_sendfile(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("sendfile("))
        .filter_map(|l| l.rsplit_once(") = ")?.1.trim().parse::<u64>().ok())
        .sum()
}

/// `sendfile` (on by default): on a plain HTTP/1.1 connection every span
/// of a file answer of at least 16 KiB goes out by `sendfile(2)` (strace
/// counts its bytes), intact, in every shape of answer: whole, a range, a
/// multipart range around a short span, between small answers, with the
/// requests pipelined on one connection and not read until all are sent
/// (the socket fills: partial sends). With `sendfile = false` none does,
/// and the bytes are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendfile_sends_a_files_spans_intact() {
    use super::common::binary::Binary;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let site = Site::new("static-sendfile");
    let big = big();
    let multi = "bytes=0-99,50000-1200000,8000000-8100000";
    let asks = [
        ("/big.bin", ""),
        ("/hello.txt", ""),
        ("/big.bin", "bytes=100000-2000000"),
        ("/big.bin", multi),
        ("/big.bin", ""),
    ];
    let spans = (BIG + 1_900_001 + 1_150_001 + 100_001 + BIG) as u64;
    for (on, more) in [(true, ""), (false, ", sendfile = false")] {
        let dir = Dir::new("static-sendfile-run");
        let config = dir.join("tidegate.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nthreads = 1\nlog_level = \"info\"\n\
                 [[listeners]]\naddress = \"127.0.0.1:0\"\n\
                 [[routes]]\n{}\n",
                static_route(&site.root(), more)
            ),
        )
        .expect("config");
        // strace attached to the running proxy (both killed if the test
        // fails: a proxy started by strace would outlive it).
        let mut b = Binary::start(&["--config", config.to_str().expect("path")]);
        let addr = b.listening().await;
        let trace = dir.join("strace.txt");
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-e", "trace=sendfile", "-o"])
            .arg(&trace)
            .args(["-p", &b.pid.to_string()]);
        let tracer = Binary::spawn(cmd);
        let tasks = format!("/proc/{}/task", b.pid);
        until("strace follows every thread", || {
            std::fs::read_dir(&tasks).expect("tasks").all(|t| {
                let status = std::fs::read_to_string(t.expect("task").path().join("status"));
                status.is_ok_and(|s| {
                    s.lines()
                        .any(|l| l.starts_with("TracerPid:") && l.trim_end() != "TracerPid:\t0")
                })
            })
        })
        .await;
        let mut requests = String::new();
        for (i, (path, range)) in asks.iter().enumerate() {
            requests += &format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n");
            if !range.is_empty() {
                requests += &format!("Range: {range}\r\n");
            }
            if i == asks.len() - 1 {
                requests += "Connection: close\r\n";
            }
            requests += "\r\n";
        }
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(requests.as_bytes()).await.expect("write");
        let mut all = Vec::new();
        tokio::time::timeout(HANG, s.read_to_end(&mut all))
            .await
            .expect("the proxy closes")
            .expect("read");
        // The responses in order, each whole.
        let mut got = Vec::new();
        let mut rest = &all[..];
        while !rest.is_empty() {
            let (r, used) = parse_response(rest, false, true).expect("a whole response");
            assert!(r.has("content-length"), "sendfile {on}: {:?}", r.headers);
            got.push((r.status, r.body));
            rest = &rest[used..];
        }
        assert_eq!(got.len(), asks.len(), "sendfile {on}");
        assert_eq!((got[0].0, sha256(&got[0].1)), (200, sha256(&big)));
        assert_eq!((got[1].0, &got[1].1[..]), (200, HELLO.as_bytes()));
        assert_eq!((got[2].0, &got[2].1[..]), (206, &big[100_000..=2_000_000]));
        assert_eq!(got[3].0, 206);
        let body = &got[3].1;
        let mut at = 0;
        for (from, to) in [(0, 99), (50_000, 1_200_000), (8_000_000, 8_100_000)] {
            let want = &big[from..=to];
            let found = body[at..]
                .windows(want.len().min(64))
                .position(|w| w == &want[..w.len()])
                .expect("each range, in order")
                + at;
            assert_eq!(&body[found..found + want.len()], want, "sendfile {on}");
            at = found + want.len();
        }
        assert_eq!((got[4].0, sha256(&got[4].1)), (200, sha256(&big)));
        // Stopped (strace follows it out), and its sends counted.
        b.signal(rustix::process::Signal::TERM);
        let (status, log) = b.wait().await;
        assert!(status.success(), "{log}");
        tracer.wait().await;
        let log = std::fs::read_to_string(&trace).expect("strace's log");
        let want = if on { spans } else { 0 };
        assert_eq!(sent_by_sendfile(&log), want, "sendfile {on}:\n{log}");
    }
}
