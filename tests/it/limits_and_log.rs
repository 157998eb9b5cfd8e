//! The connection limit holds new connections back until one closes, and
//! the access log writes one line per request with every field.

use std::time::Duration;

use crate::common::config::{Route, TestConfig};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_while_none_is_idle() {
    // Requests to `/hold` wait until the test lets them go.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let held = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let arrived = held.clone();
    let origin = backend(move |req: http::Request<hyper::body::Incoming>| {
        let mut rx = rx.clone();
        let arrived = arrived.clone();
        async move {
            if req.uri().path() == "/hold" {
                arrived.add_permits(1);
                let _ = rx.wait_for(|go| *go).await;
            }
            text(200, "ok")
        }
    });
    let proxy = Proxy::to(origin.addr, "[limits]\nmax_connections = 2\n");

    // Two connections, each with a request in flight: neither is idle.
    let mut a = RawConn::connect(proxy.addr).await;
    let mut b = RawConn::connect(proxy.addr).await;
    for c in [&mut a, &mut b] {
        c.send(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n").await;
    }
    tokio::time::timeout(HANG, held.acquire_many(2))
        .await
        .expect("both requests reach the origin")
        .expect("open")
        .forget();

    // A third is accepted by the kernel but not served while they stay.
    let mut third = RawConn::connect(proxy.addr).await;
    third.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let early = tokio::time::timeout(Duration::from_millis(500), third.response()).await;
    assert!(early.is_err(), "served past max_connections");

    // Their requests end: the two turn idle, one makes room, and the
    // waiting connection is served. Nothing failed.
    tx.send(true).unwrap();
    for c in [&mut a, &mut b] {
        assert_eq!(c.response().await.status, 200);
    }
    let r = tokio::time::timeout(HANG, third.response())
        .await
        .expect("served once a place is free");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_line_per_request() {
    let origin = backend(|req: http::Request<hyper::body::Incoming>| async move {
        match req.uri().path() {
            "/missing" => text(404, "nope"),
            _ => text(200, "hello"),
        }
    });
    let log = TempFile::new("access.log");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .log_level("error")
            .set("server.access_log", log.arg())
            .route(Route::to("dead").path_prefix("/dead"))
            .group("dead", [dead])
            .toml(),
    );
    let addr = proxy.addr;
    assert_eq!(get(addr, "/a?x=1").await.0, 200);
    assert_eq!(get(addr, "/missing").await.0, 404);
    assert_eq!(get(addr, "/dead").await.0, 502);
    // Stopping flushes the per-thread buffers.
    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();

    let text = std::fs::read_to_string(&log.path).expect("log written");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let find = |needle: &str| {
        *lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle}: {text}"))
    };
    // time client "request line" status bytes upstream seconds outcome
    let ok: Vec<&str> = find("\"GET /a?x=1 HTTP/1.1\"").split(' ').collect();
    assert!(ok[0].ends_with('Z') && ok[0].contains('T'), "{ok:?}");
    assert!(ok[1].starts_with("127.0.0.1:"), "{ok:?}");
    assert_eq!(&ok[5..8], ["200", "5", &origin.addr.to_string()]);
    assert!(ok[8].parse::<f64>().is_ok(), "{ok:?}");
    assert_eq!(ok[9], "done");

    let missing: Vec<&str> = find("/missing").split(' ').collect();
    assert_eq!(&missing[5..7], ["404", "4"]);

    let dead_line: Vec<&str> = find("/dead").split(' ').collect();
    assert_eq!(dead_line[5], "502");
    assert_eq!(dead_line[7], dead.to_string());
    assert_eq!(dead_line[9], "error");
}
