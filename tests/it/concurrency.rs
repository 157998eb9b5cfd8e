//! Many clients at once: every one gets its own correct answer.

use crate::common::*;
use http::Request;
use http_body_util::BodyExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_requests_all_succeed() {
    let origin = backend(|req: Request<hyper::body::Incoming>| async move {
        let id = req.uri().path().trim_start_matches('/').to_string();
        text(200, &format!("reply to {id}"))
    });
    let proxy = Proxy::to(origin.addr, "");
    let addr = proxy.addr;

    // Each client on its own connection, all started before any finishes
    // waiting: the proxy sees 1000 connections at once.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(1000));
    let mut tasks = Vec::new();
    for i in 0..1000u32 {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            barrier.wait().await;
            let req = Request::get(format!("/{i}"))
                .header("host", "t")
                .body(empty())?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, Error>((i, status, body))
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (i, status, body) = tokio::time::timeout(HANG, t)
            .await
            .expect("no hang")
            .expect("task")
            .expect("request succeeds");
        assert_eq!(status, 200, "request {i}");
        assert_eq!(body, format!("reply to {i}"), "request {i}");
        ok += 1;
    }
    assert_eq!(ok, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_clients_reuse_connections_both_sides() {
    // 50 clients × 40 requests each over kept-alive connections.
    let origin =
        backend(|req: Request<hyper::body::Incoming>| async move { text(200, req.uri().path()) });
    let proxy = Proxy::to(origin.addr, "");
    let addr = proxy.addr;
    let mut tasks = Vec::new();
    for c in 0..50u32 {
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            for r in 0..40u32 {
                sender.ready().await?;
                let path = format!("/{c}/{r}");
                let req = Request::get(&path).header("host", "t").body(empty())?;
                let resp = sender.send_request(req).await?;
                assert_eq!(resp.status(), 200);
                let body = resp.into_body().collect().await?.to_bytes();
                assert_eq!(body, path);
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        tokio::time::timeout(HANG, t)
            .await
            .expect("no hang")
            .expect("task")
            .expect("all requests succeed");
    }
}
