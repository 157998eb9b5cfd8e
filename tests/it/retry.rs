//! Retries: a request that fails before any response byte goes to another
//! server when that is safe; never a non-idempotent or streamed one; and a
//! budget keeps retries from multiplying an outage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::*;
use http::Request;
use http_body_util::BodyExt;

/// Reads each request head, then closes the connection unanswered.
pub(crate) fn resetting(accepted: Arc<AtomicUsize>) -> Backend {
    raw_backend(move |mut stream| {
        accepted.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut buf = Vec::new();
            let _ = read_request_head(&mut stream, &mut buf).await;
        }
    })
}

/// Answers `METHOD bytes-received`; counts requests by method.
fn echoing(seen: Arc<AtomicUsize>) -> Backend {
    backend(move |req: Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            let m = req.method().clone();
            let n = req.into_body().collect().await.unwrap().to_bytes().len();
            text(200, &format!("{m} {n}"))
        }
    })
}

fn config(servers: &[&Backend], extra: &str) -> String {
    group_config(
        &quoted(servers),
        &format!(
            "balance = \"round_robin\"\n[upstreams.app.outlier]\nconsecutive_failures = 0\n{extra}"
        ),
    )
}

async fn request(addr: std::net::SocketAddr, method: &str, body: Body) -> (u16, String) {
    let (status, _, text) = exchange(addr, method, "t", "/", &[], body).await;
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resetting_server_is_retried_away_from() {
    let resets = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let (bad, good) = (resetting(resets.clone()), echoing(seen.clone()));
    let proxy = Proxy::start(&config(&[&bad, &good], ""));
    for _ in 0..10 {
        assert_eq!(
            request(proxy.addr, "GET", empty()).await,
            (200, "GET 0".into())
        );
    }
    // A small PUT is read ahead and kept, so it can go again whole.
    for _ in 0..4 {
        let (status, body) = request(proxy.addr, "PUT", full(vec![b'x'; 1000])).await;
        assert_eq!((status, body.as_str()), (200, "PUT 1000"));
    }
    assert!(
        resets.load(Ordering::SeqCst) >= 5,
        "the bad server was tried"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 14);
}

/// A request that goes again to another server carries the same ID and
/// `traceparent` as its first try did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_keeps_its_request_id_and_traceparent() {
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = heads.clone();
    let bad = raw_backend(move |mut stream| {
        let kept = kept.clone();
        async move {
            let mut buf = Vec::new();
            if let Some(head) = read_request_head(&mut stream, &mut buf).await {
                kept.lock().unwrap().push(head.to_ascii_lowercase());
            }
        }
    });
    let good = backend(|req: Request<hyper::body::Incoming>| async move {
        let all = |n: &str| all_values(req.headers(), n);
        text(200, &format!("{} {}", all("x-req"), all("traceparent")))
    });
    let extra = "[tracing]\notlp_endpoint = \"http://127.0.0.1:9/v1/traces\"\nsample_ratio = 0.0";
    let toml = config(&[&bad, &good], extra).replace(
        "address = \"127.0.0.1:0\"\n",
        "address = \"127.0.0.1:0\"\nrequest_id = { header = \"x-req\" }\n",
    );
    let proxy = Proxy::start(&toml);
    let mut answered = Vec::new();
    for _ in 0..4 {
        let (status, h, body) = exchange(proxy.addr, "GET", "t", "/", &[], empty()).await;
        assert_eq!(status, 200);
        let (id, tp) = body.split_once(' ').unwrap();
        assert_eq!((id, tp.len()), (h["x-req"].to_str().unwrap(), 55));
        answered.push((id.to_string(), tp.to_string()));
    }
    // Round robin: half of them went to the bad server first, with the
    // same two fields as their second try.
    let heads = heads.lock().unwrap().clone();
    assert!(!heads.is_empty(), "the bad server was tried");
    for head in &heads {
        assert!(
            answered
                .iter()
                .any(|(id, tp)| head.contains(&format!("x-req: {id}\r\n"))
                    && head.contains(&format!("traceparent: {tp}\r\n"))),
            "{head:?} against {answered:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_and_streamed_requests_are_not_retried() {
    let resets = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let (bad, good) = (resetting(resets.clone()), echoing(seen.clone()));
    let proxy = Proxy::start(&config(&[&bad, &good], ""));
    let mut failed = 0;
    for _ in 0..6 {
        let (status, _) = request(proxy.addr, "POST", full("data")).await;
        failed += usize::from(status == 502);
    }
    // A PUT too large to keep streams, and is not retried either.
    for _ in 0..4 {
        let big = stream_body(3, 200_000, 16_384);
        let (status, _) = request(proxy.addr, "PUT", big).await;
        failed += usize::from(status == 502);
    }
    // Round-robin sent half to the bad server; none went again.
    assert_eq!(failed, 5);
    assert_eq!(seen.load(Ordering::SeqCst), 5);
}

/// A connection refused is known before anything was sent: even a POST
/// goes on to the next server (nginx's `proxy_next_upstream error`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_sends_even_a_post_on() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let seen = Arc::new(AtomicUsize::new(0));
    let good = echoing(seen.clone());
    let proxy = Proxy::start(&group_config(
        &format!("\"{dead}\", \"{}\"", good.addr),
        "balance = \"round_robin\"\n[upstreams.app.outlier]\nconsecutive_failures = 0\n",
    ));
    for _ in 0..6 {
        let (status, body) = request(proxy.addr, "POST", full("data")).await;
        assert_eq!((status, body.as_str()), (200, "POST 4"));
    }
    assert_eq!(seen.load(Ordering::SeqCst), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_retries_when_every_server_fails() {
    let tries = Arc::new(AtomicUsize::new(0));
    let (a, b) = (resetting(tries.clone()), resetting(tries.clone()));
    let proxy = Proxy::start(&config(
        &[&a, &b],
        "[upstreams.app.retry]\nattempts = 2\nbudget_percent = 20\nmin_per_second = 1\n",
    ));
    let started = std::time::Instant::now();
    for _ in 0..100 {
        assert_eq!(request(proxy.addr, "GET", empty()).await.0, 502);
    }
    let seconds = started.elapsed().as_secs() as usize + 1;
    let total = tries.load(Ordering::SeqCst);
    // 100 first tries; retries at most 20% of them plus the floor.
    assert!(total > 100, "some requests were retried ({total})");
    assert!(
        total <= 100 + 20 + 1 + seconds,
        "{total} tries for 100 requests"
    );
}
