//! Routing end to end: host, path, method and header matching with their
//! precedence; rewrites; redirects; fixed responses; header edits; per-route
//! timeouts.

use crate::common::config::{Route, TestConfig};
use crate::common::*;
use http::Request;

/// An origin that answers `NAME METHOD PATH?QUERY` plus the headers asked
/// for in `x-echo` (comma-separated), one per line.
fn named(name: &'static str) -> Backend {
    backend(move |req: Request<hyper::body::Incoming>| async move {
        let mut out = format!("{name} {} {}", req.method(), req.uri());
        if let Some(want) = req.headers().get("x-echo").and_then(|v| v.to_str().ok()) {
            for n in want.split(',') {
                let v = req.headers().get(n.trim()).and_then(|v| v.to_str().ok());
                out.push_str(&format!("\n{}={}", n.trim(), v.unwrap_or("-")));
            }
        }
        let mut r = text(200, &out);
        r.headers_mut()
            .insert("x-origin-secret", "s3cret".parse().unwrap());
        r
    })
}

async fn ask(
    addr: std::net::SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    exchange(addr, method, host, path, headers, empty()).await
}

fn first_word(body: &str) -> &str {
    body.split(' ').next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_kinds_and_precedence() {
    let (a, b, c, d, e, f, g) = (
        named("any"),
        named("wild"),
        named("exact-host"),
        named("regex"),
        named("exact-path"),
        named("long-prefix"),
        named("canary"),
    );
    let proxy = Proxy::start(
        &TestConfig::new()
            .threads(1)
            .log_level("error")
            .route(Route::to("any"))
            .route(Route::to("wild").host("*.example.com"))
            .route(Route::to("exact_host").host("www.example.com"))
            .route(Route::to("regex").path_regex(r"\.php$"))
            .route(Route::to("exact_path").path("/status"))
            .route(Route::to("long_prefix").path_prefix("/static/img/"))
            .route(
                Route::to("canary")
                    .path_prefix("/static/")
                    .methods(&["get"])
                    .header("x-canary", "1"),
            )
            .group("any", [a.addr])
            .group("wild", [b.addr])
            .group("exact_host", [c.addr])
            .group("regex", [d.addr])
            .group("exact_path", [e.addr])
            .group("long_prefix", [f.addr])
            .group("canary", [g.addr])
            .toml(),
    );
    let p = proxy.addr;
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("GET", "www.example.com", "/x.php", &[], "exact-host"),
        ("GET", "shop.example.com:8080", "/x.php", &[], "wild"),
        ("GET", "example.com", "/x.php", &[], "regex"),
        ("GET", "other.test", "/status", &[], "exact-path"),
        ("GET", "other.test", "/status/more", &[], "any"),
        ("GET", "other.test", "/static/img/a.php", &[], "regex"),
        ("GET", "other.test", "/static/img/a.png", &[], "long-prefix"),
        (
            "GET",
            "other.test",
            "/static/a.css",
            &[("x-canary", "1")],
            "canary",
        ),
        (
            "POST",
            "other.test",
            "/static/a.css",
            &[("x-canary", "1")],
            "any",
        ),
        (
            "GET",
            "other.test",
            "/static/a.css",
            &[("x-canary", "2")],
            "any",
        ),
    ];
    for (method, host, path, headers, want) in cases {
        let (status, _, body) = ask(p, method, host, path, headers).await;
        assert_eq!(status, 200, "{method} {host}{path}");
        assert_eq!(
            first_word(&body),
            *want,
            "{method} {host}{path} {headers:?}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_redirects_fixed_responses_and_header_edits() {
    let app = named("app");
    let proxy = Proxy::start(&format!(
        r#"
[server]
threads = 1
log_level = "error"
[[listeners]]
address = "127.0.0.1:0"

[[routes]]
path_prefix = "/api/"
strip_prefix = "/api"
upstream = "app"
request_headers = {{ set = {{ "x-from" = "tidegate" }}, add = {{ "x-extra" = "1" }}, remove = ["x-drop"] }}
response_headers = {{ set = {{ "cache-control" = "no-store" }}, remove = ["x-origin-secret"] }}

[[routes]]
path_regex = '^/old/'
rewrite = {{ regex = '^/old/(\w+)/(\d+)$', replace = "/new/$2/$1" }}
upstream = "app"

[[routes]]
path_prefix = "/moved/"
redirect = {{ status = 301, location = "https://{{host}}/new{{uri}}" }}

[[routes]]
path = "/healthz"
respond = {{ status = 200, body = "ok\n", headers = {{ "content-type" = "text/plain" }} }}

[[routes]]
path = "/teapot"
methods = ["GET"]
respond = {{ status = 418 }}

[upstreams.app]
servers = ["{}"]
"#,
        app.addr
    ));
    let p = proxy.addr;

    // strip_prefix keeps the query; request and response headers edited.
    let (status, h, body) = ask(
        p,
        "GET",
        "t",
        "/api/users?id=7",
        &[
            ("x-echo", "x-from,x-extra,x-drop"),
            ("x-drop", "gone"),
            ("x-from", "client"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "app GET /users?id=7\nx-from=tidegate\nx-extra=1\nx-drop=-"
    );
    assert_eq!(h.get("cache-control").unwrap(), "no-store");
    assert!(h.get("x-origin-secret").is_none());

    // Regex rewrite with captures.
    let (_, h, body) = ask(p, "GET", "t", "/old/user/42", &[]).await;
    assert_eq!(body, "app GET /new/42/user");
    assert_eq!(h.get("x-origin-secret").unwrap(), "s3cret");

    // Redirect with the request's host and URI.
    let (status, h, body) = ask(p, "GET", "shop.test", "/moved/a?b=1", &[]).await;
    assert_eq!(status, 301);
    assert_eq!(
        h.get("location").unwrap(),
        "https://shop.test/new/moved/a?b=1"
    );
    assert_eq!(body, "");

    // Fixed responses, never reaching the origin.
    let (status, h, body) = ask(p, "GET", "t", "/healthz", &[]).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(h.get("content-type").unwrap(), "text/plain");
    assert_eq!(ask(p, "GET", "t", "/teapot", &[]).await.0, 418);
    // POST /teapot matches no route.
    assert_eq!(ask(p, "POST", "t", "/teapot", &[]).await.0, 404);
}

/// An origin that reads a request head and never answers.
fn silent_backend() -> Backend {
    raw_backend(|mut s| async move {
        let mut buf = Vec::new();
        let _ = read_request_head(&mut s, &mut buf).await;
        let mut rest = [0u8; 1];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut rest).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_route_timeout_and_body_limit() {
    let silent = silent_backend();
    let proxy = Proxy::start(
        &TestConfig::new()
            .threads(1)
            .log_level("error")
            .set("timeouts.upstream_response_head", "10m")
            .route(
                Route::to("silent")
                    .path_prefix("/quick/")
                    .set("max_body_bytes", 10)
                    .set("timeouts.upstream_response_head", "300ms"),
            )
            .group("silent", [silent.addr])
            .toml(),
    );
    // The route's 300 ms applies, not the global 10 minutes.
    assert_eq!(ask(proxy.addr, "GET", "t", "/quick/x", &[]).await.0, 504);
    let req = Request::post("/quick/x")
        .header("host", "t")
        .body(full("more than ten bytes"))
        .unwrap();
    assert_eq!(send(proxy.addr, req).await.unwrap().status(), 413);
}

/// An HTTP/1.1 connection's requests take turns with one response-head
/// timer (`HeadTimer`): it must still fire at each request's own deadline,
/// whether that is earlier than the one it was armed for (a 300 ms route
/// after a 10-minute one) or comes after the timer fired for a request
/// before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_timeout_holds_for_each_request_of_a_kept_alive_connection() {
    let fast = backend(|_req| async { text(200, "fast") });
    let silent = silent_backend();
    let proxy = Proxy::start(
        &TestConfig::new()
            .threads(1)
            .log_level("error")
            .set("timeouts.upstream_response_head", "10m")
            .route(
                Route::to("silent")
                    .path_prefix("/quick/")
                    .set("timeouts.upstream_response_head", "300ms"),
            )
            .route(Route::to("fast"))
            .group("silent", [silent.addr])
            .group("fast", [fast.addr])
            .toml(),
    );
    let mut c = RawConn::connect(proxy.addr).await;
    for (path, status, body) in [
        ("/a", 200, "fast"),
        ("/quick/1", 504, "504 Gateway Timeout\n"),
        ("/b", 200, "fast"),
        ("/quick/2", 504, "504 Gateway Timeout\n"),
        ("/quick/3", 504, "504 Gateway Timeout\n"),
        ("/c", 200, "fast"),
    ] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        let r = c.response().await;
        assert_eq!((r.status, r.text().as_str()), (status, body), "{path}");
    }
}
