//! Per-server limits: past `max_connections` requests wait, up to
//! `max_pending`; past both, 503 at once; all threads share the count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_server_queues_then_fails_fast() {
    let arrived = Arc::new(AtomicUsize::new(0));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let seen = arrived.clone();
    let origin = backend(move |_req| {
        let (seen, mut release) = (seen.clone(), release_rx.clone());
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            while !*release.borrow_and_update() {
                if release.changed().await.is_err() {
                    break;
                }
            }
            text(200, "done")
        }
    });
    let proxy = Proxy::to(
        origin.addr,
        "max_connections = 2\nmax_pending = 1\n[timeouts]\nupstream_connect = \"30s\"\n",
    );
    let addr = proxy.addr;
    let ask = move || tokio::spawn(async move { get(addr, "/").await });

    let held = [ask(), ask()];
    tokio::time::timeout(HANG, async {
        while arrived.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("two requests at the origin");

    // One of these waits for a turn; the other finds the queue full.
    let (third, fourth) = (ask(), ask());
    let first_done = tokio::time::timeout(HANG, async {
        loop {
            if third.is_finished() || fourth.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    first_done.await.expect("one answered at once");
    let (fast, slow) = if third.is_finished() {
        (third, fourth)
    } else {
        (fourth, third)
    };
    let (status, _, body) = fast.await.unwrap();
    assert_eq!(
        (status, body.as_ref()),
        (503, &b"503 Service Unavailable\n"[..])
    );
    assert_eq!(
        arrived.load(Ordering::SeqCst),
        2,
        "nothing past the limit reached the origin"
    );

    release_tx.send(true).unwrap();
    for h in held.into_iter().chain([slow]) {
        let (status, _, body) = tokio::time::timeout(HANG, h).await.unwrap().unwrap();
        assert_eq!((status, body.as_ref()), (200, &b"done"[..]));
    }
    assert_eq!(arrived.load(Ordering::SeqCst), 3);
}
