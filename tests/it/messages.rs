//! Message framing (RFC 9112 §6): bodies that are absent, chunked, delimited
//! by the close of the connection or announced with `Expect: 100-continue`
//! all cross the proxy intact, and a kept-alive connection stays in step.
//! Clients here are raw TCP, so every byte on the wire is seen.

use crate::common::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

const HELLO: &str = "hello world";

/// `/text`: 11 bytes with a length. `/204`, `/304`: bodiless statuses.
/// `/version`: the HTTP version the request arrived in.
/// `/stream/N`: N bytes of stream 3, chunked. `/echo`: the request body.
fn origin() -> Backend {
    backend(|req: Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_string();
        match path.as_str() {
            "/text" => {
                let mut r = Response::new(full(HELLO));
                r.headers_mut()
                    .insert("content-length", http::HeaderValue::from(HELLO.len()));
                r.headers_mut()
                    .insert("content-type", http::HeaderValue::from_static("text/plain"));
                r
            }
            "/204" => {
                let mut r = Response::new(empty());
                *r.status_mut() = http::StatusCode::NO_CONTENT;
                r.headers_mut()
                    .insert("x-origin", http::HeaderValue::from_static("204"));
                r
            }
            "/304" => {
                let mut r = Response::new(empty());
                *r.status_mut() = http::StatusCode::NOT_MODIFIED;
                r.headers_mut()
                    .insert("etag", http::HeaderValue::from_static("\"v1\""));
                r
            }
            "/version" => Response::new(full(format!("{:?}", req.version()))),
            "/echo" => {
                let body = req.into_body().collect().await.expect("body").to_bytes();
                Response::new(full(body))
            }
            p => {
                let n: u64 = p
                    .strip_prefix("/stream/")
                    .and_then(|n| n.parse().ok())
                    .expect("known path");
                Response::new(stream_body(3, n, 4096))
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_has_headers_but_no_body_and_the_connection_stays_in_step() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let mut conn = RawConn::connect(proxy.addr).await;
    // Pipelined: were the HEAD answer to carry a body, those bytes would
    // sit where the GET's status line should be.
    conn.send(
        b"HEAD /text HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /text HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let head = conn.head_response().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("11"));
    assert_eq!(head.header("content-type"), Some("text/plain"));
    let get = conn.response().await;
    assert_eq!(get.status, 200);
    assert_eq!(get.text(), HELLO);

    // And once more, not pipelined, on the same connection.
    conn.send(b"HEAD /text HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let head = conn.head_response().await;
    assert_eq!(head.header("content-length"), Some("11"));
    conn.send(b"GET /text HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(conn.response().await.text(), HELLO);
    assert!(
        conn.pending().is_empty(),
        "stray bytes: {:?}",
        conn.pending()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_content_and_not_modified_have_no_body_and_the_connection_stays_in_step() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let mut conn = RawConn::connect(proxy.addr).await;

    conn.send(b"GET /204 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let r = conn.response().await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("x-origin"), Some("204"));
    assert!(!r.has("transfer-encoding"), "{:?}", r.headers);

    conn.send(b"GET /304 HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"v1\"\r\n\r\n")
        .await;
    let r = conn.response().await;
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert!(!r.has("transfer-encoding"), "{:?}", r.headers);

    // The next response starts exactly where the bodiless ones ended.
    conn.send(b"GET /text HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let r = conn.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), HELLO);
    assert!(
        conn.pending().is_empty(),
        "stray bytes: {:?}",
        conn.pending()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_body_reaches_the_backend_intact() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let mut conn = RawConn::connect(proxy.addr).await;

    // Small, with a chunk extension, each chunk in its own write.
    conn.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    for part in [
        &b"5\r\nhello\r\n"[..],
        b"1;ext=yes\r\n \r\n",
        b"5\r\nworld\r\n",
        b"0\r\n\r\n",
    ] {
        conn.send(part).await;
    }
    let r = conn.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), HELLO);

    // Larger, in chunks of many sizes, on the same connection.
    let mut gen = Stream::new(21);
    let mut sent = Vec::new();
    let mut wire = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for i in 0..300usize {
        let n = 1 + (i * 7919) % 4000;
        let chunk = gen.chunk(n);
        wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        wire.extend_from_slice(&chunk);
        wire.extend_from_slice(b"\r\n");
        sent.extend_from_slice(&chunk);
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    conn.send(&wire).await;
    let r = conn.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), sent.len());
    assert!(r.body == sent, "echoed body differs from what was sent");
}

/// A raw origin whose responses end when it closes the connection:
/// `len` bytes of stream 5, written in pieces.
fn close_delimited_origin(len: usize) -> Backend {
    raw_backend(move |mut s| async move {
        let mut buf = Vec::new();
        if read_request_head(&mut s, &mut buf).await.is_none() {
            return;
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            .await;
        let mut gen = Stream::new(5);
        let mut left = len;
        while left > 0 {
            let n = left.min(10_000);
            if s.write_all(&gen.chunk(n)).await.is_err() {
                return;
            }
            left -= n;
        }
        let _ = s.shutdown().await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_delimited_by_close_arrives_complete() {
    let len = 300_000;
    let origin = close_delimited_origin(len);
    let proxy = Proxy::to(origin.addr, "");
    // Twice: the first upstream connection is gone, and the proxy must not
    // hand the second request to it.
    for round in 0..2 {
        let req = Request::get("/").header("host", "t").body(empty()).unwrap();
        let resp = tokio::time::timeout(HANG, send(proxy.addr, req))
            .await
            .expect("no hang")
            .expect("response");
        assert_eq!(resp.status(), 200, "round {round}");
        let body = tokio::time::timeout(HANG, resp.into_body().collect())
            .await
            .expect("body ends")
            .expect("body completes without error")
            .to_bytes();
        let mut v = Verifier::new(5);
        v.feed(&body);
        assert_eq!(v.len, len as u64, "round {round}");
    }

    // On the wire, to a kept-alive HTTP/1.1 client, the proxy must frame
    // it (chunked) rather than close: the connection serves another request.
    let mut conn = RawConn::connect(proxy.addr).await;
    for _ in 0..2 {
        conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let r = conn.response().await;
        assert_eq!(r.status, 200);
        let mut v = Verifier::new(5);
        v.feed(&r.body);
        assert_eq!(v.len, len as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_continue_then_the_final_response() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    // Nothing of the body has been sent: the proxy must say go ahead.
    let interim = conn.response().await;
    assert_eq!(interim.status, 100, "{interim:?}");
    assert!(
        conn.pending().is_empty(),
        "final response came before the body"
    );
    conn.send(HELLO.as_bytes()).await;
    let r = conn.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), HELLO);

    // The connection is still in step.
    conn.send(b"GET /text HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(conn.response().await.text(), HELLO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_over_the_limit_is_refused_without_continue() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "[limits]\nmax_body_bytes = 1000\n");
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    let r = conn.response().await;
    assert_eq!(r.status, 413, "the client is told before it sends: {r:?}");
}

/// The whole answer to a request that ends with the server's close.
async fn exchange_to_close(proxy: &Proxy, request: &[u8]) -> RawResponse {
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(request).await;
    let bytes = conn.read_to_close().await;
    let (resp, used) = parse_response(&bytes, false, true).expect("a whole response");
    assert_eq!(used, bytes.len(), "bytes after the response");
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_client_is_served() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");

    let r = exchange_to_close(&proxy, b"GET /text HTTP/1.0\r\nHost: t\r\n\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), HELLO);

    // The proxy speaks its own version upstream (RFC 9110 §6.2).
    let r = exchange_to_close(&proxy, b"GET /version HTTP/1.0\r\nHost: t\r\n\r\n").await;
    assert_eq!(r.text(), "HTTP/1.1");

    // A body of unknown length: HTTP/1.0 has no chunked coding, so the
    // proxy must end it by closing.
    let n = 100_000u64;
    let r = exchange_to_close(
        &proxy,
        format!("GET /stream/{n} HTTP/1.0\r\nHost: t\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        !r.has("transfer-encoding"),
        "chunked sent to an HTTP/1.0 client: {:?}",
        r.headers
    );
    let mut v = Verifier::new(3);
    v.feed(&r.body);
    assert_eq!(v.len, n);

    // With a body of its own.
    let r = exchange_to_close(
        &proxy,
        b"POST /echo HTTP/1.0\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), HELLO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_keep_alive_client_gets_two_answers_on_one_connection() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let mut conn = RawConn::connect(proxy.addr).await;
    for _ in 0..2 {
        conn.send(b"GET /text HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let r = conn.response().await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), HELLO);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_with_content_length_reaches_the_backend_intact() {
    // The ordinary case next to the chunked one, through hyper's client.
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let body = Stream::new(9).chunk(200_000);
    let req = Request::post("/echo")
        .header("host", "t")
        .header("content-length", body.len())
        .body(full(body.clone()))
        .unwrap();
    let resp = tokio::time::timeout(HANG, send(proxy.addr, req))
        .await
        .expect("no hang")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got: Bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(got == body, "echoed body differs");
}
