//! Response compression (`compress` on a route or listener): bodies
//! compressed with gzip, br and zstd decode byte for byte with Debian's
//! `gzip`, `brotli` and `zstd` tools; the client's q-values choose; what
//! must stay as it is does (HEAD, small bodies, other types, encoded
//! bodies, `no-transform`, 206); server-sent events stay live through it;
//! curl's `--compressed` reads it over HTTP/1.1 and HTTP/2.

use std::io::Write;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::sync::Notify;

use crate::common::config::{Route, TestConfig};
use crate::common::*;

/// A text that compresses well and is not a repeat of one short line.
fn page() -> Bytes {
    let mut s = String::new();
    for i in 0..4000 {
        s.push_str(&format!(
            "<p>paragraph {i}: {}</p>\n",
            "lorem ipsum ".repeat(i % 7)
        ));
    }
    Bytes::from(s)
}

fn respond(status: u16, fields: &[(&str, &str)], body: Bytes) -> Response<Body> {
    let mut r = Response::builder().status(status);
    for (n, v) in fields {
        r = r.header(*n, *v);
    }
    r.body(full(body)).unwrap()
}

/// Serves the cases by path; `/sse` sends one event, waits for `next`,
/// then sends a second one and ends.
fn origin(next: Arc<Notify>) -> Backend {
    backend(move |req: Request<hyper::body::Incoming>| {
        let next = next.clone();
        async move {
            let page = page();
            let len = page.len().to_string();
            let html = [
                ("content-type", "text/html; charset=utf-8"),
                ("content-length", len.as_str()),
                ("etag", "\"v1\""),
                ("accept-ranges", "bytes"),
            ];
            match req.uri().path() {
                "/page" => respond(200, &html, page),
                "/missing" => respond(404, &[("content-type", "text/html")], page),
                "/small" => respond(200, &[("content-type", "text/html")], Bytes::from("tiny")),
                "/png" => respond(200, &[("content-type", "image/png")], page),
                "/encoded" => respond(
                    200,
                    &[("content-type", "text/html"), ("content-encoding", "gzip")],
                    page,
                ),
                "/no-transform" => respond(
                    200,
                    &[
                        ("content-type", "text/html"),
                        ("cache-control", "public, no-transform"),
                    ],
                    page,
                ),
                "/range" => respond(
                    206,
                    &[
                        ("content-type", "text/html"),
                        ("content-range", "bytes 0-9999/99999"),
                    ],
                    page.slice(..10000),
                ),
                "/chunked" => {
                    let (mut tx, body) = BodyChannel::new();
                    tokio::spawn(async move {
                        for piece in page.chunks(3000) {
                            if !tx.send(Bytes::copy_from_slice(piece)).await {
                                return;
                            }
                        }
                    });
                    let mut r = Response::new(body);
                    r.headers_mut()
                        .insert("content-type", "text/plain".parse().unwrap());
                    r
                }
                "/sse" => {
                    let (mut tx, body) = BodyChannel::new();
                    tokio::spawn(async move {
                        tx.send(Bytes::from("data: one\n\n")).await;
                        next.notified().await;
                        tx.send(Bytes::from("data: two\n\n")).await;
                    });
                    let mut r = Response::new(body);
                    r.headers_mut()
                        .insert("content-type", "text/event-stream".parse().unwrap());
                    r
                }
                _ => text(404, "no such case"),
            }
        }
    })
}

fn config(origin: &Backend) -> String {
    TestConfig::new()
        .group("app", [origin.addr])
        .route(Route::to("app").set("compress", toml::Table::new()))
        .toml()
}

/// `METHOD path` with `Accept-Encoding: accept`: status, head, raw body.
async fn ask(
    proxy: &Proxy,
    method: &str,
    path: &str,
    accept: Option<&str>,
) -> (u16, http::HeaderMap, Bytes) {
    let fields: &[(&str, &str)] = match accept {
        Some(a) => &[("accept-encoding", a)],
        None => &[],
    };
    fetch(proxy.addr, method, "test.local", path, fields, empty()).await
}

/// `tool -dc` on `bytes`: the decoded body.
async fn decode(tool: &str, bytes: &Bytes) -> Vec<u8> {
    let file = TempFile::new(tool);
    std::fs::write(&file.path, bytes).unwrap();
    let mut cmd = Command::new(tool);
    cmd.arg("-dc").arg(&file.path);
    let out = run_command(cmd).await;
    assert!(out.status.success(), "{tool}: {out:?}");
    out.stdout
}

#[tokio::test]
async fn each_coding_decodes_byte_for_byte_with_the_system_tool() {
    let origin = origin(Arc::new(Notify::new()));
    let proxy = Proxy::start(&config(&origin));
    let page = page();
    for (accept, coding, tool) in [
        ("gzip", "gzip", "gzip"),
        ("br", "br", "brotli"),
        ("zstd", "zstd", "zstd"),
        // The client's weights choose; the server's order breaks ties.
        ("gzip;q=1.0, br;q=0.5, zstd;q=0.1", "gzip", "gzip"),
        ("gzip, br, zstd", "zstd", "zstd"),
        ("deflate, br", "br", "brotli"),
        ("*;q=0.5, zstd;q=0", "br", "brotli"),
    ] {
        for path in ["/page", "/chunked", "/missing"] {
            let (status, h, body) = ask(&proxy, "GET", path, Some(accept)).await;
            assert_eq!(h["content-encoding"], coding, "{accept} {path}");
            assert_eq!(h["vary"], "accept-encoding", "{path}");
            assert!(!h.contains_key("content-length"), "{path}");
            assert!(body.len() < page.len() / 3, "{path}: {}", body.len());
            assert!(decode(tool, &body).await == page, "{accept} {path}");
            if path == "/page" {
                assert_eq!(status, 200);
                assert_eq!(h["etag"], "W/\"v1\"");
                assert!(!h.contains_key("accept-ranges"));
            }
        }
    }
}

#[tokio::test]
async fn what_must_stay_as_it_is_does() {
    let origin = origin(Arc::new(Notify::new()));
    let proxy = Proxy::start(&config(&origin));
    let page = page();
    // A client that accepts none of them (or none at all) gets the
    // identity form, and the Vary that says it could have been otherwise.
    // (Or prefers the identity form by its weight.)
    for accept in [
        None,
        Some("identity"),
        Some("gzip;q=0, br;q=0, zstd;q=0"),
        Some("gzip;q=0.5, identity"),
    ] {
        let (_, h, body) = ask(&proxy, "GET", "/page", accept).await;
        assert!(!h.contains_key("content-encoding"), "{accept:?}");
        assert_eq!(h["vary"], "accept-encoding");
        assert_eq!(h["etag"], "\"v1\"");
        assert_eq!(body, page);
    }
    // HEAD: the head of the identity form.
    let (_, h, body) = ask(&proxy, "HEAD", "/page", Some("gzip")).await;
    assert!(!h.contains_key("content-encoding"));
    assert_eq!(h["content-length"], page.len().to_string());
    assert!(body.is_empty());
    for path in ["/small", "/png", "/no-transform", "/range"] {
        let (_, h, body) = ask(&proxy, "GET", path, Some("gzip, br, zstd")).await;
        assert!(!h.contains_key("content-encoding"), "{path}");
        assert!(body.len() <= page.len());
    }
    // Already encoded: passed as it is, its coding untouched.
    let (_, h, body) = ask(&proxy, "GET", "/encoded", Some("br")).await;
    assert_eq!(h["content-encoding"], "gzip");
    assert_eq!(body, page);
    // A route without `compress` is not compressed.
    let plain = Proxy::start(&TestConfig::proxying(origin.addr).toml());
    let (_, h, _) = ask(&plain, "GET", "/page", Some("gzip")).await;
    assert!(!h.contains_key("content-encoding") && !h.contains_key("vary"));
}

#[tokio::test]
async fn a_listeners_compress_applies_to_its_routes() {
    let origin = origin(Arc::new(Notify::new()));
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .listener_set("compress", toml::toml! { algorithms = ["gzip"] })
            .toml(),
    );
    let (_, h, body) = ask(&proxy, "GET", "/page", Some("br, gzip")).await;
    assert_eq!(h["content-encoding"], "gzip");
    assert!(decode("gzip", &body).await == page());
}

#[tokio::test]
async fn server_sent_events_stay_live() {
    let next = Arc::new(Notify::new());
    let origin = origin(next.clone());
    let proxy = Proxy::start(&config(&origin));
    let req = Request::get("/sse")
        .header("host", "test.local")
        .header("accept-encoding", "gzip")
        .body(empty())
        .unwrap();
    let resp = tokio::time::timeout(HANG, send(proxy.addr, req))
        .await
        .expect("no hang")
        .expect("response");
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut body = resp.into_body();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    // The first event decodes while the origin still holds the second.
    while !decoder.get_ref().ends_with(b"data: one\n\n") {
        let frame = tokio::time::timeout(HANG, body.frame())
            .await
            .expect("the first event comes while the stream is open")
            .expect("a frame")
            .unwrap();
        if let Ok(d) = frame.into_data() {
            decoder.write_all(&d).unwrap();
            decoder.flush().unwrap();
        }
    }
    next.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    decoder.write_all(&rest).unwrap();
    assert_eq!(decoder.finish().unwrap(), b"data: one\n\ndata: two\n\n");
}

#[tokio::test]
async fn curl_reads_it_over_http1_and_http2() {
    let origin = origin(Arc::new(Notify::new()));
    let proxy = Proxy::start(&config(&origin));
    let page = page();
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--fail", "--noproxy", "*", "--compressed", version])
            .args(["-w", "%{size_download}"])
            .args(["-o", "/dev/null"])
            .arg(format!("http://{}/page", proxy.addr));
        let out = run_command(cmd).await;
        assert!(out.status.success(), "{out:?}");
        let downloaded: usize = String::from_utf8_lossy(&out.stdout).parse().unwrap();
        assert!(downloaded < page.len() / 3, "{version}: {downloaded}");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--fail", "--noproxy", "*", "--compressed", version])
            .arg(format!("http://{}/page", proxy.addr));
        let out = run_command(cmd).await;
        assert!(out.stdout == page, "{version}");
    }
}

#[tokio::test]
async fn bad_compress_fields_are_refused_with_their_field() {
    let file = TempFile::new("compress.toml");
    let toml = TestConfig::new()
        .group("app", ["127.0.0.1:9"])
        .route(Route::to("app").set(
            "compress",
            toml::toml! { algorithms = ["gzip", "lzma"] gzip_level = 12 types = ["html"] },
        ))
        .toml();
    std::fs::write(&file.path, toml).unwrap();
    let (code, err) = check_config(&file).await;
    assert_ne!(code, Some(0));
    for field in [
        "routes[0].compress.algorithms[1]",
        "routes[0].compress.gzip_level",
        "routes[0].compress.types[0]",
    ] {
        assert!(err.contains(field), "{field}: {err}");
    }
}

/// A cached response on a route that compresses: a hit in a coding is
/// compressed too (it decodes byte for byte), the form the first hit
/// made is kept and served again as it is (with its length), a hit
/// without `Accept-Encoding` is the stored body, and the origin is asked
/// once.
#[tokio::test]
async fn a_cached_response_is_compressed_and_each_codings_form_is_kept() {
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let origin = backend(move |_req: Request<hyper::body::Incoming>| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            respond(
                200,
                &[
                    ("content-type", "text/html"),
                    ("cache-control", "max-age=600"),
                    ("etag", "\"c1\""),
                ],
                page(),
            )
        }
    });
    let proxy = Proxy::start(
        &TestConfig::new()
            .set("caches.pages.memory", "16MiB")
            .group("app", [origin.addr])
            .route(
                Route::to("app")
                    .set("cache", "pages")
                    .set("compress", toml::Table::new()),
            )
            .toml(),
    );
    let page = page();
    // The miss, compressed as it streams.
    let (_, h, body) = ask(&proxy, "GET", "/cached", Some("gzip")).await;
    assert_eq!(h["content-encoding"], "gzip");
    assert!(decode("gzip", &body).await == page);
    for (coding, tool) in [("gzip", "gzip"), ("br", "brotli"), ("zstd", "zstd")] {
        // The first hit in a coding makes its form...
        let (status, h, first) = ask(&proxy, "GET", "/cached", Some(coding)).await;
        assert_eq!(status, 200);
        let cs = h["cache-status"].to_str().unwrap();
        assert!(cs.starts_with("tidegate; hit"), "{cs}");
        assert_eq!(h["content-encoding"], coding, "{h:?}");
        assert_eq!(h["vary"], "accept-encoding");
        assert_eq!(h["etag"], "W/\"c1\"");
        assert!(first.len() < page.len() / 3, "{coding}: {}", first.len());
        assert!(decode(tool, &first).await == page, "{coding}");
        // ...which the next ones get as it is, with its length.
        let (_, h, again) = ask(&proxy, "GET", "/cached", Some(coding)).await;
        assert_eq!(h["content-encoding"], coding);
        assert_eq!(h["content-length"], first.len().to_string().as_str());
        assert_eq!(again, first, "{coding}");
    }
    // Without Accept-Encoding: the stored body, as it came.
    let (_, h, body) = ask(&proxy, "GET", "/cached", None).await;
    assert!(!h.contains_key("content-encoding"), "{h:?}");
    assert_eq!(h["vary"], "accept-encoding");
    assert_eq!(body, page);
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
}
