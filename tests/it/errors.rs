//! Failures become precise statuses: 502, 504, 400, 431, 413, 404; and a
//! client that goes away cancels its upstream request.

use std::sync::Arc;

use crate::common::config::{Route, TestConfig};
use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn status_of(resp: &str) -> &str {
    resp.split(' ').nth(1).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_is_502() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = Proxy::to(dead, "");
    let (status, _, body) = get(proxy.addr, "/").await;
    assert_eq!(status, 502);
    assert_eq!(body, "502 Bad Gateway\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_without_answer_is_502() {
    let origin = raw_backend(|mut s| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        // Drop without a response.
    });
    let proxy = Proxy::to(origin.addr, "");
    let (status, _, _) = get(proxy.addr, "/").await;
    assert_eq!(status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_is_504() {
    let origin = raw_backend(|mut s| async move {
        // Read the request, never answer, keep the socket open.
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    let proxy = Proxy::to(origin.addr, "[timeouts]\nupstream_response_head = \"1s\"\n");
    let (status, _, body) = get(proxy.addr, "/").await;
    assert_eq!(status, 504);
    assert_eq!(body, "504 Gateway Timeout\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_is_400() {
    let origin = backend(|_| async { text(200, "should not be reached") });
    let proxy = Proxy::to(origin.addr, "");
    let resp = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nBad Header Line\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), "400", "{resp}");
    let resp = raw(proxy.addr, b"\x16\x03\x01garbage\r\n\r\n").await;
    assert_eq!(status_of(&resp), "400", "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shaped_request_is_refused() {
    let origin = backend(|_| async { text(200, "should not be reached") });
    let proxy = Proxy::to(origin.addr, "");
    // Both Content-Length and a chunked Transfer-Encoding that is not last.
    let resp = raw(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(status_of(&resp), "400", "{resp}");
    // Two different Content-Lengths.
    let resp = raw(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    )
    .await;
    assert_eq!(status_of(&resp), "400", "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_head_is_431() {
    let origin = backend(|_| async { text(200, "ok") });
    let proxy = Proxy::to(origin.addr, "[limits]\nmax_request_head_bytes = 8192\n");
    let big = "a".repeat(20_000);
    let req = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    let resp = raw(proxy.addr, req.as_bytes()).await;
    assert_eq!(status_of(&resp), "431", "{resp}");
    // Under the limit passes.
    let req = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        &big[..4000]
    );
    let resp = raw(proxy.addr, req.as_bytes()).await;
    assert_eq!(status_of(&resp), "200", "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_route_limit_is_413() {
    let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = reached.clone();
    let origin = backend(move |req: Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let n = req.into_body().collect().await.map(|b| b.to_bytes().len());
            text(200, &format!("{n:?}"))
        }
    });
    let proxy = Proxy::to(origin.addr, "[limits]\nmax_body_bytes = 1000\n");
    // Declared length over the limit: refused before anything is sent.
    let req = Request::post("/")
        .header("host", "t")
        .header("content-length", 5000)
        .body(full(vec![b'x'; 5000]))
        .unwrap();
    let resp = send(proxy.addr, req).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Chunked body that grows past the limit while streaming.
    // Sent in one write: the proxy answers as soon as the limit is passed,
    // and a client still writing then could meet a closed connection.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 600, "y".repeat(600));
    let request = format!(
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(3)
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(HANG, s.read_to_end(&mut out))
        .await
        .expect("answered")
        .ok();
    let out = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&out), "413", "{out}");

    // At the limit passes.
    let req = Request::post("/")
        .header("host", "t")
        .body(full(vec![b'x'; 1000]))
        .unwrap();
    let resp = send(proxy.addr, req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "Ok(1000)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_is_404() {
    let origin = backend(|_| async { text(200, "ok") });
    let proxy = Proxy::start(
        &TestConfig::new()
            .threads(1)
            .route(Route::to("app").host("only.example"))
            .group("app", [origin.addr])
            .toml(),
    );
    let (status, _, _) = get(proxy.addr, "/").await;
    assert_eq!(status, 404);
    let req = Request::get("/")
        .header("host", "only.example")
        .body(empty())
        .unwrap();
    assert_eq!(send(proxy.addr, req).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_abort_cancels_upstream_stream() {
    // The origin streams forever until a send fails; it reports that.
    let (gone_tx, mut gone_rx) = tokio::sync::mpsc::channel::<u64>(1);
    let origin = backend(move |_req| {
        let gone_tx = gone_tx.clone();
        async move {
            let (mut tx, body) = BodyChannel::new();
            tokio::spawn(async move {
                let mut sent = 0u64;
                while tx.send(Bytes::from(vec![b'z'; 64 * 1024])).await {
                    sent += 1;
                }
                let _ = gone_tx.send(sent).await;
            });
            http::Response::new(body)
        }
    });
    let proxy = Proxy::to(origin.addr, "");
    {
        let req = Request::get("/").header("host", "t").body(empty()).unwrap();
        let resp = send(proxy.addr, req).await.unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.data_ref().is_some());
        // Dropping the body and its connection: the client goes away.
    }
    let sent = tokio::time::timeout(HANG, gone_rx.recv())
        .await
        .expect("the origin's stream is cancelled")
        .expect("report");
    assert!(sent >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_still_sending_a_large_body_gets_the_413() {
    // The origin reads the whole body before it answers, as most do; one
    // that answered first would end the exchange before the limit is hit.
    let origin = backend(|req: Request<hyper::body::Incoming>| async move {
        let _ = req.into_body().collect().await;
        text(200, "should not be reached")
    });
    let proxy = Proxy::to(origin.addr, "[limits]\nmax_body_bytes = 1000\n");
    for chunked in [false, true] {
        let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let head = if chunked {
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
        } else {
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 8388608\r\n\r\n".to_string()
        };
        // The client sends 8 MiB without looking at the answer first, as
        // curl does with a large file; writes may fail once the proxy is
        // done, which is fine.
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(head.as_bytes()).await;
            let piece = vec![b'z'; 64 * 1024];
            for _ in 0..128 {
                let ok = if chunked {
                    wr.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                        .await
                        .is_ok()
                        && wr.write_all(&piece).await.is_ok()
                        && wr.write_all(b"\r\n").await.is_ok()
                } else {
                    wr.write_all(&piece).await.is_ok()
                };
                if !ok {
                    break;
                }
            }
        });
        let mut out = Vec::new();
        let _ = tokio::time::timeout(HANG, rd.read_to_end(&mut out)).await;
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.starts_with("HTTP/1.1 413"),
            "chunked={chunked}: {out:?}"
        );
        let _ = writer.await;
    }
}

/// A request body the client gets wrong (here an invalid chunk size, after
/// a first chunk already went upstream) is the client's failure: 400, not
/// the 502 of an upstream failure, though it is the upstream send that
/// fails (the cause is found in the error's source chain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_request_body_is_the_clients_400_not_a_502() {
    let origin = backend(|req: Request<hyper::body::Incoming>| async move {
        let read = req.into_body().collect().await;
        text(200, if read.is_ok() { "whole" } else { "broken" })
    });
    let proxy = Proxy::to(origin.addr, "");
    let resp = raw(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), "400", "{resp}");
}

/// An origin that answers every request with a 200 carrying `fields` and
/// the body `seen` (4 bytes), then closes.
fn canned(fields: &'static str) -> Backend {
    raw_backend(move |mut s| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(format!("HTTP/1.1 200 OK\r\n{fields}\r\n\r\nseen").as_bytes())
            .await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_content_length_is_read_strictly() {
    // Repeated values that agree frame the body (RFC 9112 §6.3), whether
    // in one field or several, and go on as one field; anything else is
    // no framing to trust.
    for (head, framed) in [
        ("Content-Length: 4", true),
        ("Content-Length: 4\r\nContent-Length: 4", true),
        ("Content-Length: 4, 4", true),
        ("Content-Length: 4,4\r\nContent-Length: 4", true),
        ("Content-Length: 4\r\nContent-Length: 5", false),
        ("Content-Length: 4, 5", false),
        ("Content-Length: +4", false),
        ("Content-Length: 4x", false),
        ("Content-Length: 99999999999999999999", false),
    ] {
        let origin = canned(head);
        let proxy = Proxy::to(origin.addr, "");
        let (status, headers, body) = get(proxy.addr, "/").await;
        if framed {
            assert_eq!((status, &body[..]), (200, &b"seen"[..]), "{head:?}");
            let sent: Vec<_> = headers.get_all("content-length").iter().collect();
            assert_eq!(sent, ["4"], "{head:?}");
        } else {
            assert_eq!(status, 502, "{head:?}");
        }
    }
}
