//! Graceful shutdown: new connections are refused at once, exchanges in
//! flight run to completion, idle connections close, and the process exits
//! 0 on SIGTERM.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::binary::Binary;
use crate::common::config::TestConfig;
use crate::common::*;
use bytes::Bytes;
use http::Response;
use rustix::process::Signal;
use tokio::sync::{mpsc, oneshot};

/// One listener, `threads` workers, and a grace period far beyond
/// [`HANG`]: a proxy that waited for the grace period instead of closing
/// finished connections fails the test instead of passing slowly.
fn config(origin: SocketAddr, threads: usize) -> String {
    TestConfig::proxying(origin)
        .threads(threads)
        .set("server.shutdown_grace", "300s")
        .toml()
}

/// Polls until a TCP connect to `addr` is refused, up to [`HANG`].
async fn wait_until_refused(addr: SocketAddr) {
    let refused = async {
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Err(_) => return,
                // Accepted into a backlog that is about to go away; drop it.
                Ok(s) => drop(s),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(HANG, refused)
        .await
        .expect("new connections are refused after shutdown begins");
}

/// Stops the proxy off the async threads; panics if that hangs.
async fn stop(proxy: Proxy) {
    tokio::time::timeout(HANG, tokio::task::spawn_blocking(move || proxy.stop()))
        .await
        .expect("stop returns once connections are done")
        .expect("stop does not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_response_completes_while_new_connections_are_refused() {
    let (arrived_tx, mut arrived_rx) = mpsc::channel::<()>(1);
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release_rx)));
    let origin = backend(move |_req| {
        let arrived = arrived_tx.clone();
        let release = release.clone();
        async move {
            let (mut tx, body) = BodyChannel::new();
            let rx = release.lock().unwrap().take().expect("one request");
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"first part;")).await;
                let _ = rx.await;
                tx.send(Bytes::from_static(b"second part")).await;
            });
            arrived.send(()).await.expect("test is waiting");
            Response::new(body)
        }
    });
    let proxy = Proxy::start(&config(origin.addr, 2));
    let addr = proxy.addr;

    // Raw, kept-alive: the client would hold the connection open forever,
    // so only the proxy can close it.
    let mut conn = RawConn::connect(addr).await;
    conn.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n").await;
    tokio::time::timeout(HANG, arrived_rx.recv())
        .await
        .expect("request reached the backend")
        .expect("backend alive");
    conn.wait_for(b"first part;").await;

    proxy.running().shutdown();
    wait_until_refused(addr).await;

    release_tx.send(()).expect("backend still waiting");
    let resp = conn.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "first part;second part");
    // Its exchange done, the connection is closed by the proxy.
    let extra = conn.read_to_close().await;
    assert!(extra.is_empty(), "unexpected bytes: {extra:?}");

    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kept_alive_connections_are_closed_on_shutdown() {
    let origin = backend(|_req| async { text(200, "ok") });
    let proxy = Proxy::start(&config(origin.addr, 2));
    // One finished exchange, the connection kept alive and idle.
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let r = conn.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");

    proxy.running().shutdown();
    // The proxy closes it (well before the grace period: read_to_close
    // gives up at HANG).
    let extra = conn.read_to_close().await;
    assert!(extra.is_empty(), "unexpected bytes: {extra:?}");
    stop(proxy).await;
}

/// Whether process `pid` has a handler installed for SIGTERM (Linux: bit 14
/// of `SigCgt` in /proc/PID/status).
fn catches_sigterm(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_then_exits_zero_on_sigterm() {
    let origin = backend(|_req| async { text(200, "from origin") });
    let upstream = format!("http://{}", origin.addr);
    let mut tidegate = Binary::start(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--log-level",
        "info",
        "--threads",
        "2",
    ]);
    let addr = tidegate.listening().await;
    assert_ne!(addr.port(), 0);
    // The handler is in place before "listening" is printed, so a SIGTERM
    // sent at once drains instead of killing the process.
    assert!(
        catches_sigterm(tidegate.pid),
        "SIGTERM handler installed before listening"
    );

    let (status, headers, body) = get(addr, "/").await;
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), b"from origin");
    assert_eq!(headers.get("via").unwrap(), "1.1 tidegate");

    tidegate.signal(Signal::TERM);
    let (exit, log) = tidegate.wait().await;
    assert!(exit.success(), "exit status {exit:?}; log:\n{log}");
    assert!(
        log.contains("SIGTERM: shutting down gracefully"),
        "log:\n{log}"
    );
    assert!(log.contains("stopped"), "log:\n{log}");
}
