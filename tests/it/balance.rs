//! Balancing on real in-process backends: weights, latency awareness,
//! consistent hashing, and Retry-After back-off.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;
use http::Request;

/// An origin answering its name; `delay` before each answer.
fn named(name: &'static str, delay: Duration) -> Backend {
    backend(move |_req: Request<hyper::body::Incoming>| async move {
        if !delay.is_zero() {
            // Injected latency: the condition under test, not synchronisation.
            tokio::time::sleep(delay).await;
        }
        text(200, name)
    })
}

fn config(servers: &str, balance: &str) -> String {
    group_config(servers, balance)
}

async fn name_for(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, _, body) = exchange(addr, "GET", "t", "/", headers, empty()).await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_respects_weights() {
    let (a, b, c) = (
        named("a", Duration::ZERO),
        named("b", Duration::ZERO),
        named("c", Duration::ZERO),
    );
    let proxy = Proxy::start(&config(
        &format!(
            r#"{{ address = "{}", weight = 3 }}, "{}", "{}""#,
            a.addr, b.addr, c.addr
        ),
        r#"balance = "round_robin""#,
    ));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..50 {
        *counts.entry(name_for(proxy.addr, &[]).await.1).or_default() += 1;
    }
    assert_eq!(counts["a"], 30, "{counts:?}");
    assert_eq!(counts["b"], 10, "{counts:?}");
    assert_eq!(counts["c"], 10, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_balancer_avoids_a_slow_server() {
    let fast = named("fast", Duration::ZERO);
    let slow = named("slow", Duration::from_millis(150));
    // No `balance`: peak EWMA with two random choices.
    let proxy = Proxy::start(&config(&format!(r#""{}", "{}""#, fast.addr, slow.addr), ""));
    let mut to_slow = 0;
    for _ in 0..40 {
        if name_for(proxy.addr, &[]).await.1 == "slow" {
            to_slow += 1;
        }
    }
    // It may try the slow one before it has measured it, then avoids it.
    assert!(to_slow <= 2, "{to_slow} of 40 went to the slow server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_keys_and_moves_few_when_a_server_leaves() {
    let names = ["a", "b", "c", "d"];
    let backends: Vec<Backend> = names.iter().map(|n| named(n, Duration::ZERO)).collect();
    let list = |n: usize| {
        backends[..n]
            .iter()
            .map(|b| format!("\"{}\"", b.addr))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let balance = "balance = \"hash\"\nhash_key = \"header:x-user\"";
    let four = Proxy::start(&config(&list(4), balance));
    let three = Proxy::start(&config(&list(3), balance));
    let mut moved = 0;
    let keys = 200;
    for k in 0..keys {
        let user = format!("user-{k}");
        let h = [("x-user", user.as_str())];
        let before = name_for(four.addr, &h).await.1;
        // Stable: the same key, the same server.
        assert_eq!(name_for(four.addr, &h).await.1, before);
        let after = name_for(three.addr, &h).await.1;
        if before == "d" {
            moved += 1;
        } else {
            assert_eq!(before, after, "{user} moved though its server stayed");
        }
    }
    let share = moved as f64 / keys as f64;
    assert!(
        (0.1..0.4).contains(&share),
        "{moved} of {keys} keys were on the removed server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_backs_a_server_off() {
    let busy = backend(|_req| async {
        let mut r = text(503, "busy");
        r.headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("120"));
        r
    });
    let ok = named("ok", Duration::ZERO);
    let proxy = Proxy::start(&config(
        &format!(r#""{}", "{}""#, busy.addr, ok.addr),
        r#"balance = "round_robin""#,
    ));
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(name_for(proxy.addr, &[]).await.0);
    }
    // At most the first request meets the busy server; after its
    // Retry-After, everything goes to the other.
    let busy_answers = statuses.iter().filter(|&&s| s == 503).count();
    assert!(busy_answers <= 1, "{statuses:?}");
    assert!(statuses[1..].iter().all(|&s| s == 200), "{statuses:?}");
}
