//! Upstream connections are pooled and reused; one the upstream closed
//! while pooled is replaced without the client noticing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::*;
use tokio::io::AsyncWriteExt;

/// A keep-alive origin that counts the connections it accepts; with
/// `one_shot`, it answers one request per connection and closes the
/// connection, unanswered, when a second request arrives on it: the race
/// of a server's idle timer firing just as the proxy reuses the connection.
fn counting_origin(accepted: Arc<AtomicUsize>, one_shot: bool) -> Backend {
    raw_backend(move |mut stream| {
        accepted.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut buf = Vec::new();
            let mut answered = 0;
            while read_request_head(&mut stream, &mut buf).await.is_some() {
                if one_shot && answered == 1 {
                    return;
                }
                let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if stream.write_all(resp).await.is_err() {
                    return;
                }
                answered += 1;
            }
        }
    })
}

/// The status of a POST of four bytes through `proxy`.
async fn post_data(proxy: &Proxy) -> http::StatusCode {
    let req = http::Request::post("/")
        .header("host", "t")
        .body(full("data"))
        .unwrap();
    tokio::time::timeout(HANG, send(proxy.addr, req))
        .await
        .expect("no hang")
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_share_one_upstream_connection() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let origin = counting_origin(accepted.clone(), false);
    // One thread: the pool is per thread.
    let proxy = Proxy::start(&config_to(origin.addr, "").replace("threads = 2", "threads = 1"));
    for _ in 0..50 {
        let (status, _, body) = get(proxy.addr, "/").await;
        assert_eq!(status, 200);
        assert_eq!(body, "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_a_reused_connection_is_invisible_to_clients() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let origin = counting_origin(accepted.clone(), true);
    let proxy = Proxy::start(&config_to(origin.addr, "").replace("threads = 2", "threads = 1"));
    for i in 0..3 {
        // Let the pooled connection age past the point where a server's
        // idle timer may close it (the proxy then keeps a copy of requests
        // safe to repeat). This sleep makes the condition under test; it
        // synchronises nothing.
        if i > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
        let (status, _, body) = get(proxy.addr, "/").await;
        assert_eq!(status, 200, "request {i}");
        assert_eq!(body, "ok");
    }
    // Every request after the first found its pooled connection closed
    // under it and went again on a new one.
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

/// The upstream closes a connection once it sits idle in the proxy's pool,
/// as a server with a short keep-alive timer does, and the proxy's next
/// request (a POST, which is never repeated once sent) is not written
/// there but goes out whole on a new connection. (The pooled connection
/// is not polled at checkout; the request's first poll finds the close
/// before writing, and the request comes back unsent.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_goes_out_on_a_pooled_connection_the_upstream_closed() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let close_now = Arc::new(tokio::sync::Notify::new());
    let (a, c, n) = (accepted.clone(), closed.clone(), close_now.clone());
    let origin = raw_backend(move |mut stream| {
        a.fetch_add(1, Ordering::SeqCst);
        let (c, n) = (c.clone(), n.clone());
        async move {
            let mut buf = Vec::new();
            if read_request_head(&mut stream, &mut buf).await.is_some() {
                // The body too: a close with unread bytes would be a reset.
                while buf.len() < 4 {
                    let mut chunk = [0u8; 64];
                    match tokio::io::AsyncReadExt::read(&mut stream, &mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                let _ = stream.write_all(resp).await;
                // Idle in the pool now: the server's timer fires.
                n.notified().await;
            }
            drop(stream);
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    let proxy = Proxy::start(&config_to(origin.addr, "").replace("threads = 2", "threads = 1"));
    for i in 0..3 {
        assert_eq!(post_data(&proxy).await, 200, "request {i}");
        // The answer is back, its connection pooled: the origin closes it
        // (on loopback the close has reached the proxy's socket once the
        // origin counts it).
        close_now.notify_one();
        until("the origin's close", || {
            closed.load(Ordering::SeqCst) == i + 1
        })
        .await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_is_not_repeated_on_a_closed_connection() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let origin = counting_origin(accepted.clone(), true);
    let proxy = Proxy::start(&config_to(origin.addr, "").replace("threads = 2", "threads = 1"));
    assert_eq!(get(proxy.addr, "/").await.0, 200);
    // POST is not idempotent: it fails with 502 rather than risk running
    // twice.
    assert_eq!(post_data(&proxy).await, 502);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_body_goes_again_whole_on_a_fresh_connection() {
    // Each origin answers one request per connection with the length of
    // its body, and closes the connection, unanswered, at the second.
    let origin = || {
        raw_backend(|mut stream| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = Vec::new();
            let mut answered = false;
            while let Some(head) = read_request_head(&mut stream, &mut buf).await {
                if answered {
                    return;
                }
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                while buf.len() < len {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.drain(..len);
                let body = len.to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
                answered = true;
            }
        })
    };
    let (a, b) = (origin(), origin());
    let proxy = Proxy::start(&group_config(
        &quoted(&[&a, &b]),
        "balance = \"round_robin\"",
    ));
    let put = || async {
        let req = http::Request::put("/")
            .header("host", "t")
            .header("content-length", 1000)
            .body(full(vec![b'x'; 1000]))
            .unwrap();
        let resp = tokio::time::timeout(HANG, send(proxy.addr, req))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status().as_u16();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, body)
    };
    // One request to each origin leaves a pooled connection to each.
    for _ in 0..2 {
        assert_eq!(put().await, (200, bytes::Bytes::from_static(b"1000")));
    }
    // Let them age past the point where a server may close them (this
    // sleep makes the condition under test), then reuse one: it is closed
    // under the request, which goes again with its whole body.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(put().await, (200, bytes::Bytes::from_static(b"1000")));
}
