//! Header semantics of a proxy (RFC 9110 §7.6): hop-by-hop fields stop at
//! the proxy in both directions, end-to-end fields pass unchanged, and the
//! proxy adds `X-Forwarded-*` and `Via`. Requests go over raw TCP where a
//! client library would add or hide fields.

use crate::common::config::{Route, TestConfig};
use crate::common::*;
use http::{Request, Response};

/// Answers with the request it received: the request line, then one
/// `name: value` line per header field, in the order they arrived.
fn echo_backend() -> Backend {
    backend(|req: Request<hyper::body::Incoming>| async move {
        let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        for (name, value) in req.headers() {
            out.push_str(&format!(
                "{}: {}\n",
                name,
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        Response::new(full(out))
    })
}

/// What the echo backend saw.
struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn parse(body: &str) -> Seen {
        let mut lines = body.lines();
        let request_line = lines.next().expect("request line").to_string();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").expect("name: value");
                (n.to_string(), v.to_string())
            })
            .collect();
        Seen {
            request_line,
            headers,
        }
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single field `name`; panics if absent or repeated.
    fn one(&self, name: &str) -> &str {
        match self.all(name).as_slice() {
            [v] => v,
            other => panic!(
                "{name}: expected one field, got {other:?} in {:?}",
                self.headers
            ),
        }
    }

    fn lacks(&self, name: &str) {
        assert!(
            self.all(name).is_empty(),
            "{name} reached the backend: {:?}",
            self.headers
        );
    }
}

/// Sends `head` (a full request head, ending in a blank line) over raw TCP
/// with `Connection: close` semantics expected, returns what the echo
/// backend saw.
async fn through(proxy: &Proxy, head: &str) -> Seen {
    let resp = parse_raw(&raw(proxy.addr, head.as_bytes()).await);
    assert_eq!(resp.status, 200, "{}", resp.text());
    Seen::parse(&resp.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_fields_stop_at_the_proxy() {
    let origin = echo_backend();
    let proxy = Proxy::to(origin.addr, "");
    let seen = through(
        &proxy,
        "GET /echo?q=1 HTTP/1.1\r\n\
         Host: client.example:8080\r\n\
         Connection: close, x-custom-hop\r\n\
         x-custom-hop: 1\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\
         TE: trailers, deflate\r\n\
         Upgrade: foo\r\n\
         Trailer: x\r\n\
         X-Ordinary: kept as is\r\n\
         Accept: text/plain, */*;q=0.5\r\n\
         User-Agent: tidegate-test/1\r\n\
         Cookie: a=1; b=2\r\n\
         X-Multi: one\r\n\
         X-Multi: two\r\n\
         \r\n",
    )
    .await;
    assert_eq!(seen.request_line, "GET /echo?q=1 HTTP/1.1");
    for hop in [
        "connection",
        "x-custom-hop",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "trailer",
        "transfer-encoding",
    ] {
        seen.lacks(hop);
    }
    // The client's TE stops here; the proxy, which forwards trailers, says
    // `TE: trailers` on its own behalf (RFC 9110 §10.1.4).
    assert_eq!(seen.one("te"), "trailers");
    assert_eq!(seen.one("host"), "client.example:8080");
    assert_eq!(seen.one("x-ordinary"), "kept as is");
    assert_eq!(seen.one("accept"), "text/plain, */*;q=0.5");
    assert_eq!(seen.one("user-agent"), "tidegate-test/1");
    assert_eq!(seen.one("cookie"), "a=1; b=2");
    assert_eq!(seen.all("x-multi"), ["one", "two"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_options_in_several_fields_and_any_case_are_removed() {
    let origin = echo_backend();
    let proxy = Proxy::to(origin.addr, "");
    let seen = through(
        &proxy,
        "GET / HTTP/1.1\r\n\
         Host: t\r\n\
         Connection: X-First-Hop\r\n\
         Connection: close ,  x-second-hop,,\r\n\
         x-first-hop: a\r\n\
         X-SECOND-HOP: b\r\n\
         X-First-Hop: c\r\n\
         X-Stays: yes\r\n\
         \r\n",
    )
    .await;
    seen.lacks("connection");
    seen.lacks("x-first-hop");
    seen.lacks("x-second-hop");
    assert_eq!(seen.one("x-stays"), "yes");
}

/// `Connection` is read as bytes: tab whitespace around a token, and a
/// token with obs-text (not UTF-8, names no field) beside the others, still
/// take the named fields away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_options_with_tabs_and_obs_text_are_removed() {
    let origin = echo_backend();
    let proxy = Proxy::to(origin.addr, "");
    // (hyper does not read `close` in a value with obs-text: the
    // connection stays open, so one response is read, not to the end.)
    let mut c = RawConn::connect(proxy.addr).await;
    c.send(
        b"GET / HTTP/1.1\r\n\
          Host: t\r\n\
          Connection: close,\tx-tab-hop\t, caf\xe9, x-after\r\n\
          X-Tab-Hop: a\r\n\
          X-After: b\r\n\
          X-Stays: yes\r\n\
          \r\n",
    )
    .await;
    let resp = c.response().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = Seen::parse(&resp.text());
    seen.lacks("connection");
    seen.lacks("x-tab-hop");
    seen.lacks("x-after");
    assert_eq!(seen.one("x-stays"), "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_fields_are_added() {
    let origin = echo_backend();
    let proxy = Proxy::to(origin.addr, "");
    let seen = through(
        &proxy,
        "GET / HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(seen.one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(seen.one("x-forwarded-proto"), "http");
    assert_eq!(seen.one("x-forwarded-host"), "shop.example");
    assert_eq!(seen.one("host"), "shop.example", "Host passes unchanged");
    let via = seen.all("via").join(", ");
    assert!(via.contains("1.1 tidegate"), "via: {via:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_appends_to_the_clients_chain() {
    let origin = echo_backend();
    let proxy = Proxy::to(origin.addr, "");

    let seen = through(
        &proxy,
        "GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.2.3.4\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(seen.one("x-forwarded-for"), "1.2.3.4, 127.0.0.1");

    // Two fields are one list (RFC 9110 §5.3): the order is kept.
    let seen = through(
        &proxy,
        "GET / HTTP/1.1\r\nHost: t\r\n\
         X-Forwarded-For: 1.2.3.4\r\n\
         X-Forwarded-For: 5.6.7.8, 9.9.9.9\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        seen.one("x-forwarded-for"),
        "1.2.3.4, 5.6.7.8, 9.9.9.9, 127.0.0.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_proto_and_host_claims_are_replaced_and_via_is_appended() {
    let origin = echo_backend();
    let proxy = Proxy::to(origin.addr, "");
    let seen = through(
        &proxy,
        "GET / HTTP/1.1\r\n\
         Host: real.example\r\n\
         X-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: spoofed.example\r\n\
         Via: 1.0 edge-cache\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(seen.one("x-forwarded-proto"), "http");
    assert_eq!(seen.one("x-forwarded-host"), "real.example");
    let via = seen.all("via").join(", ");
    assert_eq!(
        via, "1.0 edge-cache, 1.1 tidegate",
        "earlier hops come first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_goes_upstream_in_origin_form_with_its_host() {
    // RFC 9112 §3.2.2: the target's authority wins over the Host field.
    let origin = echo_backend();
    let proxy = Proxy::to(origin.addr, "");
    let seen = through(
        &proxy,
        "GET http://abs.example/a/b?c=d HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(seen.request_line, "GET /a/b?c=d HTTP/1.1");
    assert_eq!(seen.one("host"), "abs.example");
    assert_eq!(seen.one("x-forwarded-host"), "abs.example");
}

fn config_with_upstream_host(origin: &Backend, upstream_host: &str) -> String {
    TestConfig::new()
        .route(Route::to("app").set("upstream_host", upstream_host))
        .group("app", [format!("http://{}", origin.addr)])
        .toml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_host_server_sends_the_servers_own_authority() {
    let origin = echo_backend();
    let proxy = Proxy::start(&config_with_upstream_host(&origin, "server"));
    let seen = through(
        &proxy,
        "GET / HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(seen.one("host"), origin.addr.to_string());
    assert_eq!(
        seen.one("x-forwarded-host"),
        "public.example",
        "X-Forwarded-Host keeps what the client asked for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_host_fixed_sends_that_value() {
    let origin = echo_backend();
    let proxy = Proxy::start(&config_with_upstream_host(&origin, "fixed.example"));
    let seen = through(
        &proxy,
        "GET / HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(seen.one("host"), "fixed.example");
    assert_eq!(seen.one("x-forwarded-host"), "public.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_host_client_is_the_default_spelled_out() {
    let origin = echo_backend();
    let proxy = Proxy::start(&config_with_upstream_host(&origin, "client"));
    let seen = through(
        &proxy,
        "GET / HTTP/1.1\r\nHost: public.example:81\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(seen.one("host"), "public.example:81");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_fields_stop_at_the_proxy() {
    let origin = fixed_backend(
        b"HTTP/1.1 200 OK\r\n\
          Content-Length: 5\r\n\
          Connection: x-resp-hop\r\n\
          x-resp-hop: 1\r\n\
          Keep-Alive: timeout=5\r\n\
          Upgrade: foo\r\n\
          Proxy-Connection: x\r\n\
          Via: 1.1 origin-cache\r\n\
          X-Ordinary: kept as is\r\n\
          Cache-Control: no-cache\r\n\
          Set-Cookie: a=1\r\n\
          Set-Cookie: b=2\r\n\
          \r\n\
          hello",
    );
    let proxy = Proxy::to(origin.addr, "");
    // A kept-alive request, so that any `Connection` field in the answer
    // could only have come from the backend.
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let resp = conn.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"hello");
    for hop in [
        "connection",
        "x-resp-hop",
        "keep-alive",
        "upgrade",
        "proxy-connection",
    ] {
        assert!(
            !resp.has(hop),
            "{hop} reached the client: {:?}",
            resp.headers
        );
    }
    assert_eq!(resp.all("via").join(", "), "1.1 origin-cache, 1.1 tidegate");
    assert_eq!(resp.all("x-ordinary"), ["kept as is"]);
    assert_eq!(resp.all("cache-control"), ["no-cache"]);
    assert_eq!(resp.all("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(resp.all("content-length"), ["5"]);

    // The connection is still good for another exchange.
    conn.send(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let again = conn.response().await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxys_own_error_responses_carry_via() {
    // A route that matches nothing: the proxy answers itself.
    let origin = echo_backend();
    let proxy = Proxy::start(&format!(
        r#"
[server]
threads = 1
log_level = "error"

[[listeners]]
address = "127.0.0.1:0"

[[routes]]
path_prefix = "/only"
upstream = "app"

[upstreams.app]
servers = ["{}"]
"#,
        origin.addr
    ));
    let resp = parse_raw(
        &raw(
            proxy.addr,
            b"GET /elsewhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(resp.status, 404);
    assert_eq!(resp.all("via"), ["1.1 tidegate"]);
    // hyper adds `Date` to the proxy's own responses (the vendored hyper
    // refreshes its cached date only when it writes one): present, and
    // today's, not a stale or zero time.
    let date = resp.header("date").expect("a Date field");
    let at = httpdate::parse_http_date(date).expect("an HTTP date");
    let skew = match at.duration_since(std::time::SystemTime::now()) {
        Ok(ahead) => ahead,
        Err(behind) => behind.duration(),
    };
    assert!(skew.as_secs() < 3600, "Date {date} is {skew:?} off");
}

/// A proxied response keeps the upstream's `Date`; the proxy adds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_date_passes_unchanged_and_alone() {
    let origin = backend(|_req: Request<hyper::body::Incoming>| async move {
        let mut resp = Response::new(full("ok"));
        resp.headers_mut().insert(
            "date",
            http::HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        resp
    });
    let proxy = Proxy::to(origin.addr, "");
    let resp = parse_raw(
        &raw(
            proxy.addr,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.all("date"), ["Sun, 06 Nov 1994 08:49:37 GMT"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_closing_its_connection_does_not_close_the_clients() {
    // `Connection: close` is about the backend's own hop: the client's
    // connection stays open, and the next request gets a fresh upstream.
    let origin = raw_backend(|mut s| async move {
        let mut buf = Vec::new();
        if read_request_head(&mut s, &mut buf).await.is_some() {
            let _ = tokio::io::AsyncWriteExt::write_all(
                &mut s,
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            )
            .await;
        }
        // Dropping the socket closes it.
    });
    let proxy = Proxy::to(origin.addr, "");
    let mut conn = RawConn::connect(proxy.addr).await;
    for round in 0..3 {
        conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let r = conn.response().await;
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        assert_eq!(r.body, b"ok", "round {round}");
        assert!(!r.has("connection"), "round {round}: {:?}", r.headers);
    }
}

/// Heads far larger than a connection's first read (hyper's reads start at
/// 2 KiB here, see vendor/hyper/TIDEGATE-PATCH.md) cross intact both ways,
/// between small ones on the same kept-alive connection, so that the read
/// size grows and shrinks back on both sides of the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_heads_cross_intact_between_small_ones_on_one_connection() {
    let origin = backend(|req: Request<hyper::body::Incoming>| async move {
        let big = req.headers().get("x-big").cloned();
        let size = big.as_ref().map_or(0, |v| v.len());
        let mut resp = Response::new(full(size.to_string()));
        if let Some(v) = big {
            // The response head is about twice the request's.
            resp.headers_mut().insert("x-big-back", v.clone());
            resp.headers_mut().insert("x-big-again", v);
        }
        resp
    });
    let proxy = Proxy::to(origin.addr, "");
    let mut conn = RawConn::connect(proxy.addr).await;
    for size in [0usize, 12_000, 0, 3_000, 15_000, 0] {
        let big: String = (0..size)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let mut head = String::from("GET /h HTTP/1.1\r\nHost: t\r\n");
        if size > 0 {
            head.push_str(&format!("X-Big: {big}\r\n"));
        }
        head.push_str("\r\n");
        conn.send(head.as_bytes()).await;
        let resp = conn.response().await;
        assert_eq!(resp.status, 200, "size {size}: {}", resp.text());
        assert_eq!(resp.text(), size.to_string());
        if size > 0 {
            assert_eq!(resp.header("x-big-back"), Some(big.as_str()));
            assert_eq!(resp.header("x-big-again"), Some(big.as_str()));
        } else {
            assert!(!resp.has("x-big-back"));
        }
    }
}
