//! Client-side timeouts: slow heads and idle kept-alive connections are
//! closed, active ones are not.

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use std::time::Duration;

/// A short head timeout, and an idle timeout no test waits for: a close
/// can only come from `client_header`.
const HEAD_1S: &str = "[timeouts]\nclient_header = \"1s\"\nclient_idle = \"1h\"\n";
/// The other way round: a close can only come from `client_idle`.
const IDLE_1S: &str = "[timeouts]\nclient_header = \"1h\"\nclient_idle = \"1s\"\n";

/// How long a test waits for the close: far past the 1 s it sets, and
/// below the defaults (30 s head, 60 s idle), so a setting that is
/// ignored fails the test instead of passing late.
const BELOW_DEFAULTS: Duration = Duration::from_secs(20);

/// Reads until the server closes the connection; everything it sent.
async fn closed_by_server(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(BELOW_DEFAULTS, s.read_to_end(&mut out))
        .await
        .expect("server closes the connection")
        .ok();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_head_is_cut_off() {
    let origin = backend(|_| async { text(200, "ok") });
    let proxy = Proxy::to(origin.addr, HEAD_1S);
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    let out = closed_by_server(&mut s).await;
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 408"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_new_connection_is_closed() {
    let origin = backend(|_| async { text(200, "ok") });
    let proxy = Proxy::to(origin.addr, HEAD_1S);
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let out = closed_by_server(&mut s).await;
    assert!(out.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connection_is_closed_after_its_response() {
    let origin = backend(|_| async { text(200, "ok") });
    let proxy = Proxy::to(origin.addr, IDLE_1S);
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // The whole response arrives, then the idle connection is closed.
    let out = closed_by_server(&mut s).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("\r\n\r\nok"), "{out}");
}

/// One `GET /` on `s`, read to the end of its `ok` body.
async fn get_ok(s: &mut tokio::net::TcpStream) {
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(HANG, s.read(&mut buf))
            .await
            .expect("response")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connection_serves_several_requests() {
    let origin = backend(|_| async { text(200, "ok") });
    let proxy = Proxy::to(origin.addr, "");
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    for _ in 0..3 {
        get_ok(&mut s).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connection_serves_requests_after_its_idle_memory_is_freed() {
    // An HTTP/1.1 connection idle for a second frees its buffers and the
    // slot its requests' futures take (hyper patch 13), at the watch's
    // next look (within 4 s of the request's end). The next request on
    // it makes them again. (The wait is the idle time being tested.)
    let origin = backend(|_| async { text(200, "ok") });
    let proxy = Proxy::to(origin.addr, "");
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    for _ in 0..2 {
        get_ok(&mut s).await;
        tokio::time::sleep(Duration::from_millis(5500)).await;
    }
    get_ok(&mut s).await;
}
