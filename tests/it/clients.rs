//! Real clients through the proxy: what users see with curl and wget.

use std::process::Command;

use crate::common::*;
use http::{Request, Response};
use http_body_util::BodyExt;

const MIB: u64 = 1 << 20;

/// `/down/N`: N bytes of stream 7 with a length. `/up`: `len crc` of the
/// request body. Anything else: `hello from PATH`.
fn origin() -> Backend {
    backend(|req: Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_string();
        if let Some(n) = path.strip_prefix("/down/") {
            let n: u64 = n.parse().expect("length");
            let mut r = Response::new(stream_body(7, n, 64 * 1024));
            r.headers_mut()
                .insert("content-length", http::HeaderValue::from(n));
            return r;
        }
        if path == "/up" {
            let mut body = req.into_body();
            let mut len = 0u64;
            let mut crc = crc32fast::Hasher::new();
            while let Some(frame) = body.frame().await {
                if let Some(d) = frame.expect("upload frame").data_ref() {
                    len += d.len() as u64;
                    crc.update(d);
                }
            }
            return text(200, &format!("{len} {:08x}", crc.finalize()));
        }
        text(200, &format!("hello from {path}"))
    })
}

/// curl, quiet but with errors, failing on HTTP errors, never via a proxy
/// from the environment, and bounded in time.
fn curl() -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail", "--noproxy", "*", "--max-time", "60"]);
    c
}

fn wget() -> Command {
    let mut c = Command::new("wget");
    c.args(["-q", "--no-proxy", "--tries=1", "--timeout=60"]);
    c
}

/// Checks that `file` holds exactly the first `n` bytes of stream 7.
fn check_download(file: &TempFile, n: u64) {
    let got = std::fs::read(&file.path).expect("downloaded file");
    assert_eq!(got.len() as u64, n, "downloaded length");
    let mut v = Verifier::new(7);
    v.feed(&got);
    assert_eq!(v.crc.finalize(), stream_crc(7, n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_downloads_20_mib_byte_for_byte() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let n = 20 * MIB;
    let file = TempFile::new("curl-down");
    let mut cmd = curl();
    cmd.args(["-o", file.arg(), &proxy.url(&format!("/down/{n}"))]);
    ok(&run_command(cmd).await);
    check_download(&file, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wget_downloads_20_mib_byte_for_byte() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let n = 20 * MIB;
    let file = TempFile::new("wget-down");
    let mut cmd = wget();
    cmd.args(["-O", file.arg(), &proxy.url(&format!("/down/{n}"))]);
    ok(&run_command(cmd).await);
    check_download(&file, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_uploads_5_mib_with_expect_100_continue() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let n = 5 * MIB;
    let file = TempFile::with("curl-up", &Stream::new(13).chunk(n as usize));
    let mut cmd = curl();
    cmd.args([
        "-v",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.arg()),
        &proxy.url("/up"),
    ]);
    let out = run_command(cmd).await;
    let body = ok(&out);
    assert_eq!(body, format!("{n} {:08x}", stream_crc(13, n)));
    // curl asked to go ahead, and the proxy said so (rather than curl
    // giving up waiting and sending anyway).
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(
        trace.contains("> Expect: 100-continue"),
        "curl did not send Expect:\n{trace}"
    );
    assert!(
        trace.contains("< HTTP/1.1 100 Continue"),
        "no 100 Continue from the proxy:\n{trace}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_uploads_chunked() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let n = 3 * MIB + 17;
    let file = TempFile::with("curl-up-chunked", &Stream::new(14).chunk(n as usize));
    let mut cmd = curl();
    cmd.args([
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", file.arg()),
        &proxy.url("/up"),
    ]);
    let body = ok(&run_command(cmd).await);
    assert_eq!(body, format!("{n} {:08x}", stream_crc(14, n)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_head_shows_the_length_and_no_body() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let mut cmd = curl();
    cmd.args(["-I", &proxy.url("/down/12345")]);
    let out = ok(&run_command(cmd).await);
    let mut lines = out.lines();
    let status = lines.next().expect("status line");
    assert!(status.starts_with("HTTP/1.1 200"), "{out}");
    let headers: Vec<(String, String)> = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("content-length"), Some("12345"), "{out}");
    assert_eq!(get("via"), Some("1.1 tidegate"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reuses_one_connection_for_two_urls() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let mut cmd = curl();
    cmd.args([
        "-w",
        "\n%{http_code} connects=%{num_connects}\n",
        &proxy.url("/first"),
        &proxy.url("/second"),
    ]);
    let out = ok(&run_command(cmd).await);
    assert_eq!(
        out, "hello from /first\n200 connects=1\nhello from /second\n200 connects=0\n",
        "the second URL should reuse the first connection"
    );
}

// ---------------------------------------------------------------------------
// HTTP/2 and TLS with real clients: curl (nghttp2 inside) and h2load.

/// The proxy on a TLS listener for `a.test` (certificate from a fresh test
/// CA, written out for curl's `--cacert`), in front of `origin`.
struct TlsProxy {
    proxy: Proxy,
    ca_file: TempFile,
    _leaf: crate::common::pki::Leaf,
}

fn tls_proxy(origin: &Backend) -> TlsProxy {
    let ca = crate::common::pki::Ca::new("Test CA");
    let leaf = ca.server(&["a.test"]);
    let config = config_to(origin.addr, "").replace(
        "address = \"127.0.0.1:0\"",
        &format!(
            "address = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]",
            leaf.cert_file.arg(),
            leaf.key_file.arg()
        ),
    );
    TlsProxy {
        proxy: Proxy::start(&config),
        ca_file: ca.file,
        _leaf: leaf,
    }
}

impl TlsProxy {
    /// curl set to verify against the test CA and to find `a.test` here.
    fn curl(&self) -> Command {
        let mut c = curl();
        c.args([
            "--cacert",
            self.ca_file.arg(),
            "--resolve",
            &format!("a.test:{}:127.0.0.1", self.proxy.addr.port()),
        ]);
        c
    }

    fn url(&self, path: &str) -> String {
        format!("https://a.test:{}{}", self.proxy.addr.port(), path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2_over_tls_downloads_and_uploads_byte_for_byte() {
    let origin = origin();
    let p = tls_proxy(&origin);
    let n = 20 * MIB;
    let file = TempFile::new("curl-h2-down");
    let mut cmd = p.curl();
    cmd.args([
        "--http2",
        "-w",
        "%{http_version}",
        "-o",
        file.arg(),
        &p.url(&format!("/down/{n}")),
    ]);
    let out = ok(&run_command(cmd).await);
    assert_eq!(out, "2", "curl negotiated HTTP/2");
    check_download(&file, n);

    let n = 5 * MIB + 3;
    let up = TempFile::with("curl-h2-up", &Stream::new(15).chunk(n as usize));
    let mut cmd = p.curl();
    cmd.args([
        "--http2",
        "--data-binary",
        &format!("@{}", up.arg()),
        &p.url("/up"),
    ]);
    assert_eq!(
        ok(&run_command(cmd).await),
        format!("{n} {:08x}", stream_crc(15, n))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_tls_speaks_http1_when_asked() {
    let origin = origin();
    let p = tls_proxy(&origin);
    let mut cmd = p.curl();
    cmd.args(["--http1.1", "-w", " %{http_version}", &p.url("/x")]);
    assert_eq!(ok(&run_command(cmd).await), "hello from /x 1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2_prior_knowledge_on_a_plain_listener() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let mut cmd = curl();
    cmd.args([
        "--http2-prior-knowledge",
        "-w",
        " %{http_version}",
        &proxy.url("/h2c"),
    ]);
    assert_eq!(ok(&run_command(cmd).await), "hello from /h2c 2");
}

/// `h2load`'s summary line: requests done, succeeded, failed, errored.
fn h2load_counts(out: &str) -> (u64, u64, u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no summary in h2load output:\n{out}"));
    let num = |word: &str| -> u64 {
        let before = line
            .split(',')
            .find(|part| part.trim().ends_with(word))
            .unwrap_or_else(|| panic!("no `{word}` in {line}"));
        before
            .split_whitespace()
            .rev()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count for `{word}` in {line}"))
    };
    (num("done"), num("succeeded"), num("failed"), num("errored"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_over_tls_and_h2c_has_no_failed_requests() {
    let origin = origin();
    let p = tls_proxy(&origin);
    let plain = Proxy::to(origin.addr, "");
    let n = 4000;
    for url in [
        format!("https://127.0.0.1:{}/x", p.proxy.addr.port()),
        plain.url("/x"),
    ] {
        let mut cmd = Command::new("h2load");
        cmd.args([
            "-n",
            &n.to_string(),
            "-c",
            "20",
            "-m",
            "10",
            "-T",
            "60",
            &url,
        ]);
        let out = ok(&run_command(cmd).await);
        let (done, succeeded, failed, errored) = h2load_counts(&out);
        assert_eq!(
            (done, succeeded, failed, errored),
            (n, n, 0, 0),
            "{url}:\n{out}"
        );
        assert!(out.contains("Application protocol: h2"), "{out}");
    }
}
