//! Local rate limits (`[rate_limits.NAME]`, a route's `rate_limit`):
//! slow rates, so that no test's result hangs on timing; the burst passes,
//! the next request gets 429 with `Retry-After` and the `RateLimit-Policy`
//! and `RateLimit` fields, keys are limited apart, a request without its
//! key part and a route without the limit are not limited, a gRPC call
//! gets RESOURCE_EXHAUSTED, `delay` mode lets the burst through (late) and
//! refuses beyond it, and `tidegate check` names bad fields.

use std::net::SocketAddr;

use crate::common::config::{Route, TestConfig};
use crate::common::*;
use http::Request;

/// GET `path` with request fields: status and head.
async fn get_with(addr: SocketAddr, path: &str, fields: &[(&str, &str)]) -> (u16, http::HeaderMap) {
    let (status, head, _) = fetch(addr, "GET", "test.local", path, fields, empty()).await;
    (status, head)
}

fn ok_backend() -> Backend {
    backend(|_req: Request<hyper::body::Incoming>| async { text(200, "ok") })
}

/// `/api/` limited by `per_key` (X-Api-Key, 1/m, burst 3); `/` not.
fn limited(origin: SocketAddr) -> TestConfig {
    TestConfig::proxying(origin)
        .set("rate_limits.per_key.key", "header:X-Api-Key")
        .set("rate_limits.per_key.rate", "1/m")
        .set("rate_limits.per_key.burst", 3)
        .route(
            Route::to("app")
                .path_prefix("/api/")
                .set("rate_limit", "per_key"),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_burst_passes_then_429_with_retry_after_and_ratelimit_fields() {
    let origin = ok_backend();
    let proxy = Proxy::start(&limited(origin.addr).toml());
    let a = [("x-api-key", "a")];
    for i in 0..4 {
        let (status, head) = get_with(proxy.addr, "/api/x", &a).await;
        assert_eq!(status, 200, "request {i}: {head:?}");
    }
    let (status, head) = get_with(proxy.addr, "/api/x", &a).await;
    assert_eq!(status, 429, "{head:?}");
    let retry: u64 = head["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(head["ratelimit-policy"], "\"per_key\";q=1;w=60");
    let state = head["ratelimit"].to_str().unwrap();
    assert!(state.starts_with("\"per_key\";r=0;t="), "{state}");

    // Another key has its own budget; no key, no limit; another route,
    // no limit.
    let (status, _) = get_with(proxy.addr, "/api/x", &[("x-api-key", "b")]).await;
    assert_eq!(status, 200);
    for _ in 0..6 {
        assert_eq!(get_with(proxy.addr, "/api/x", &[]).await.0, 200);
        assert_eq!(get_with(proxy.addr, "/other", &a).await.0, 200);
    }

    // A gRPC call over its limit: RESOURCE_EXHAUSTED.
    let (status, head) = get_with(
        proxy.addr,
        "/api/x",
        &[("x-api-key", "a"), ("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(status, 200, "{head:?}");
    assert_eq!(head["grpc-status"], "8", "{head:?}");
    assert!(head.contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_is_the_default_key() {
    let origin = ok_backend();
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .set("rate_limits.one.rate", "1/m")
            .route(Route::to("app").path("/one").set("rate_limit", "one"))
            .toml(),
    );
    assert_eq!(get_with(proxy.addr, "/one", &[]).await.0, 200);
    assert_eq!(
        get_with(proxy.addr, "/one", &[("x-api-key", "z")]).await.0,
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_unchanged_limits_state() {
    let origin = ok_backend();
    let config = limited(origin.addr);
    let mut proxy = Proxy::start(&config.toml());
    let a = [("x-api-key", "a")];
    for _ in 0..4 {
        assert_eq!(get_with(proxy.addr, "/api/x", &a).await.0, 200);
    }
    assert_eq!(get_with(proxy.addr, "/api/x", &a).await.0, 429);
    // Another route added; `per_key` as it was.
    proxy.reload(&config.route(Route::respond(204).path("/new")).toml());
    tokio::time::timeout(HANG, async {
        while get_with(proxy.addr, "/new", &[]).await.0 != 204 {}
    })
    .await
    .expect("the new config serving");
    assert_eq!(get_with(proxy.addr, "/api/x", &a).await.0, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_mode_lets_the_burst_through_and_refuses_beyond_it() {
    let origin = ok_backend();
    // One per 2 s, burst 1: of three requests at once, one goes, one
    // waits its turn and goes, one is refused.
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .set("rate_limits.slow.rate", "30/m")
            .set("rate_limits.slow.burst", 1)
            .set("rate_limits.slow.mode", "delay")
            .route(Route::to("app").path("/d").set("rate_limit", "slow"))
            .toml(),
    );
    let addr = proxy.addr;
    let (a, b, c) = tokio::join!(
        get_with(addr, "/d", &[]),
        get_with(addr, "/d", &[]),
        get_with(addr, "/d", &[])
    );
    let mut statuses = [a.0, b.0, c.0];
    statuses.sort();
    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_limits_are_refused_by_check_with_their_line_and_field() {
    let toml = r#"
[[listeners]]
address = "127.0.0.1:8080"

[rate_limits.per_client]
key = ["client_ip", "cookie:"]
rate = "10/day"

[[routes]]
upstream = "app"
rate_limit = "per_client"

[[routes]]
path = "/x"
upstream = "app"
rate_limit = ["nope"]

[upstreams.app]
servers = ["http://127.0.0.1:9000"]
"#;
    check_refuses(
        toml,
        &[
            "{f}:6: rate_limits.per_client.key: `cookie:`",
            "{f}:7: rate_limits.per_client.rate: `10/day`",
            "{f}:16: routes[1].rate_limit: no [rate_limits.nope] table",
        ],
    )
    .await;
}
