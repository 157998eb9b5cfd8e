//! Global rate limits (`backend = "redis"`) against real `redis-server`s
//! on free ports: three instances share one budget, within 5%; with Redis
//! stopped, `on_error = "allow"` falls back to each instance's own limit
//! and `deny` refuses with 503, nothing hangs, and the global limit is
//! back once Redis is; Redis slower than the Redis client's own default
//! timeouts but within `timeout` still decides; a Redis Cluster holds the
//! limit too; `tidegate
//! check` names bad Redis fields. The rates are per hour: no refill
//! happens during a test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::common::config::{Route, TestConfig};
use crate::common::*;
use http::Request;
use http_body_util::BodyExt;

/// A `redis-server` in its own temp dir, killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Redis {
    fn start() -> Redis {
        Redis::with(&[])
    }

    /// On a free port (below 55536: a cluster node's bus is port + 10000).
    fn with(extra: &[&str]) -> Redis {
        for _ in 0..20 {
            let port = loop {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let p = l.local_addr().unwrap().port();
                if p < 55_000 {
                    break p;
                }
            };
            let dir = std::env::temp_dir()
                .join(format!("tidegate-test-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut r = Redis {
                child: None,
                port,
                dir,
                extra: extra.iter().map(|s| s.to_string()).collect(),
            };
            if r.spawn() {
                return r;
            }
        }
        panic!("no redis-server started");
    }

    /// Starts the server on its port: whether it answers.
    fn spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let deadline = std::time::Instant::now() + HANG;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // the port was taken meanwhile
            }
            if self.cli(&["ping"]).trim() == "PONG" {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server on {} never answered", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill -{signal} {pid}");
    }

    fn restart(&mut self) {
        assert!(self.spawn(), "redis-server restarts on {}", self.port);
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Script calls served (EVALSHA and EVAL).
    fn script_calls(&self) -> u64 {
        let stats = self.cli(&["info", "commandstats"]);
        stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// GET `path` on `addr`: the status, bounded by [`HANG`].
async fn get(addr: SocketAddr, path: &str, key: &str) -> u16 {
    let req = Request::get(path)
        .header("host", "test.local")
        .header("x-k", key)
        .body(empty())
        .unwrap();
    let resp = tokio::time::timeout(HANG, send(addr, req))
        .await
        .expect("no hang")
        .expect("response");
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

fn ok_backend() -> Backend {
    backend(|_req: Request<hyper::body::Incoming>| async { text(200, "ok") })
}

/// A proxy to `origin` (group `app`, no route yet) with the global limit
/// `api`: `capacity` requests per key (burst capacity − 1, refilled at
/// 1/h).
fn global(origin: SocketAddr, redis: impl Into<toml::Value>, capacity: i64) -> TestConfig {
    TestConfig::new()
        .group("app", [origin])
        .set("rate_limits.api.key", "header:x-k")
        .set("rate_limits.api.rate", "1/h")
        .set("rate_limits.api.burst", capacity - 1)
        .set("rate_limits.api.backend", "redis")
        .set("rate_limits.api.redis", redis)
        .set("rate_limits.api.timeout", "500ms")
}

/// Every path, limited by `api`.
fn all_limited() -> Route {
    Route::to("app").path_prefix("/").set("rate_limit", "api")
}

/// `n` requests for key `k` spread over `proxies` by `clients` concurrent
/// clients: how many were admitted (every other answer must be 429).
async fn load(proxies: &[SocketAddr], k: &str, clients: usize, n: usize) -> usize {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let proxies = proxies.to_vec();
            let k = k.to_string();
            tokio::spawn(async move {
                let mut ok = 0;
                for i in 0..n / clients {
                    match get(proxies[(c + i) % proxies.len()], "/x", &k).await {
                        200 => ok += 1,
                        429 => {}
                        s => panic!("status {s}"),
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_one_budget_within_five_percent() {
    let redis = Redis::start();
    let origin = ok_backend();
    let config = global(origin.addr, redis.url(), 300)
        .route(all_limited())
        .toml();
    let proxies: Vec<_> = (0..3).map(|_| Proxy::start(&config)).collect();
    let addrs: Vec<_> = proxies.iter().map(|p| p.addr).collect();
    let before = redis.script_calls();
    // 900 requests, 3 per instance's budget alone: a local limit would
    // admit 900.
    let admitted = load(&addrs, "k", 9, 900).await;
    let calls = redis.script_calls() - before;
    eprintln!("admitted {admitted} of 900 (budget 300); {calls} Redis script calls");
    assert!((285..=300).contains(&admitted), "admitted {admitted}");
    // Leases and recorded refusals: far fewer round trips than requests.
    assert!(calls < 300, "{calls} Redis calls for 900 requests");
    // Another key has its own budget.
    assert_eq!(get(addrs[0], "/x", "other").await, 200);
}

/// A burst of one key's requests while its lease is empty: one request
/// per worker thread asks Redis, the others wait for its answer and
/// take from the new lease, so the round trips are bounded by the
/// threads and the batches, not by the requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_one_key_asks_redis_once_per_thread_and_batch() {
    const BURST: usize = 120;
    const THREADS: u64 = 2;
    let redis = Redis::start();
    let origin = ok_backend();
    // Capacity 2000: leases of 100 (5%), no request refused.
    let config = global(origin.addr, redis.url(), 2000)
        .set("rate_limits.api.timeout", "10s")
        .threads(THREADS as usize)
        .route(all_limited())
        .toml();
    let proxy = Proxy::start(&config);
    // Each thread's connection made and the script loaded (another key).
    for _ in 0..8 {
        assert_eq!(get(proxy.addr, "/x", "warm").await, 200);
    }
    let before = redis.script_calls();
    // Redis holds every command for a while, so that the whole burst
    // reaches the proxy before the first answer (the worst case; the
    // bound below holds whatever the timing).
    assert_eq!(redis.cli(&["client", "pause", "300", "all"]).trim(), "OK");
    let burst: Vec<_> = (0..BURST)
        .map(|_| {
            let addr = proxy.addr;
            tokio::spawn(async move { get(addr, "/x", "burst").await })
        })
        .collect();
    let mut admitted = 0;
    for b in burst {
        admitted += usize::from(b.await.unwrap() == 200);
    }
    let calls = redis.script_calls() - before;
    eprintln!(
        "{BURST} concurrent requests of one key: {admitted} admitted, {calls} Redis script calls"
    );
    // Asked all at once, the batches would take the whole budget.
    assert_eq!(admitted, BURST, "{calls} Redis calls");
    // Every answer grants at least a lease (100) to its thread: one
    // round per thread, and a second if the first lease ran out.
    assert!(
        calls <= 2 * THREADS,
        "{calls} Redis calls for {BURST} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_follows_on_error_and_the_global_limit_resumes() {
    let mut redis = Redis::start();
    let origin = ok_backend();
    // `/a`: on_error allow; `/d`: on_error deny. 3 per key each.
    let config = global(origin.addr, redis.url(), 3)
        .set("rate_limits.d.key", "header:x-k")
        .set("rate_limits.d.rate", "1/h")
        .set("rate_limits.d.burst", 2)
        .set("rate_limits.d.backend", "redis")
        .set("rate_limits.d.redis", redis.url())
        .set("rate_limits.d.on_error", "deny")
        .route(Route::to("app").path("/d").set("rate_limit", "d"))
        .route(all_limited());
    let proxy = Proxy::start(&config.toml());
    let p = proxy.addr;
    for _ in 0..3 {
        assert_eq!(get(p, "/a", "k").await, 200);
    }
    assert_eq!(get(p, "/a", "k").await, 429);
    assert_eq!(get(p, "/d", "k").await, 200);

    redis.stop();
    // deny: refused, at once (each request bounded by HANG).
    for _ in 0..5 {
        assert_eq!(get(p, "/d", "k").await, 503);
    }
    // allow: once the recorded refusal ends, the instance's own limit of
    // 3 applies, then 429.
    tokio::time::timeout(HANG, async {
        while get(p, "/a", "k").await != 200 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the local fallback admits");
    for _ in 0..2 {
        assert_eq!(get(p, "/a", "k").await, 200);
    }
    assert_eq!(get(p, "/a", "k").await, 429);

    // Redis back (empty): within about a second, the limits are global
    // again: `/d` admits (it refused all along), `/a` admits past its
    // exhausted local fallback.
    redis.restart();
    tokio::time::timeout(HANG, async {
        while get(p, "/d", "k").await != 200 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("deny's limit back on Redis");
    assert_eq!(get(p, "/d", "k").await, 200);
    assert_eq!(get(p, "/d", "k").await, 200);
    assert_eq!(get(p, "/d", "k").await, 429, "Redis's budget of 3");
    tokio::time::timeout(HANG, async {
        while get(p, "/a", "k").await != 200 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("allow's limit back on Redis");
    assert!(!redis
        .cli(&["--scan", "--pattern", "tidegate:rl:*"])
        .is_empty());
}

/// A limit's `timeout` is the only bound on Redis: the client's own
/// (500 ms per response, 1 s per connection in the `redis` crate's
/// defaults) must not cut a slower answer short. Redis paused for 2 s
/// with `timeout = "4s"` and `on_error = "deny"`: the request waits and
/// gets Redis's verdict (200, then 429 past the budget), never a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_slower_than_the_clients_defaults_but_within_timeout_decides() {
    let redis = Redis::start();
    let origin = ok_backend();
    // 3 per key; each request asks Redis (a lease of 1).
    let config = global(origin.addr, redis.url(), 3)
        .threads(1)
        .set("rate_limits.api.timeout", "4s")
        .set("rate_limits.api.on_error", "deny")
        .route(all_limited());
    let proxy = Proxy::start(&config.toml());
    let p = proxy.addr;
    // `p`'s worker has its connection to Redis; `fresh`'s connects while
    // Redis is paused.
    assert_eq!(get(p, "/x", "k").await, 200);
    let fresh = Proxy::start(&config.toml());
    redis.signal("STOP");
    let answers = [
        tokio::spawn(get(p, "/x", "k")),
        tokio::spawn(get(fresh.addr, "/x", "k")),
    ];
    // The stimulus, not a synchronisation: Redis answers 2 s late
    // whenever the requests reach it.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    redis.signal("CONT");
    for (answer, who) in answers.into_iter().zip(["connected", "connecting"]) {
        let status = answer.await.unwrap();
        assert_eq!(status, 200, "{who}: Redis's verdict, not on_error's");
    }
    assert_eq!(get(p, "/x", "k").await, 429, "Redis's budget of 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_cluster_holds_the_limit() {
    let nodes: Vec<Redis> = (0..3)
        .map(|_| {
            Redis::with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    until("the cluster is ok on every node", || {
        nodes
            .iter()
            .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
    })
    .await;
    let urls: Vec<String> = nodes.iter().map(Redis::url).collect();
    let origin = ok_backend();
    let config = global(origin.addr, urls, 40).route(all_limited()).toml();
    let proxies: Vec<_> = (0..2).map(|_| Proxy::start(&config)).collect();
    let proxies: Vec<_> = proxies.iter().map(|p| p.addr).collect();
    // Six keys, spread over the cluster's slots: 40 each, of 100 sent.
    for k in ["a", "b", "c", "d", "e", "f"] {
        let admitted = load(&proxies, k, 4, 100).await;
        assert!((38..=40).contains(&admitted), "key {k}: {admitted}");
    }
    let keys: usize = nodes
        .iter()
        .map(|n| n.cli(&["dbsize"]).trim().parse::<usize>().unwrap())
        .sum();
    assert_eq!(keys, 6);
    assert!(
        nodes
            .iter()
            .filter(|n| n.cli(&["dbsize"]).trim() != "0")
            .count()
            >= 2,
        "the keys are spread over the nodes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_redis_fields_are_refused_by_check_with_their_line_and_field() {
    let toml = r#"
[[listeners]]
address = "127.0.0.1:8080"

[rate_limits.a]
rate = "10/s"
backend = "memcached"

[rate_limits.b]
rate = "10/s"
backend = "redis"
redis = "http://127.0.0.1:6379"
on_error = "maybe"
timeout = "soon"

[rate_limits.c]
rate = "10/s"
on_error = "deny"

[rate_limits.d]
rate = "10/s"
backend = "redis"

[[routes]]
upstream = "app"

[upstreams.app]
servers = ["http://127.0.0.1:9000"]
"#;
    check_refuses(
        toml,
        &[
            "{f}:7: rate_limits.a.backend: `memcached`",
            "{f}:12: rate_limits.b.redis: `http://127.0.0.1:6379`",
            "{f}:13: rate_limits.b.on_error: `maybe`",
            "{f}:14: rate_limits.b.timeout: `soon`",
            "{f}:18: rate_limits.c.on_error: applies only with backend = \"redis\"",
            "{f}:22: rate_limits.d.backend: \"redis\" needs `redis`",
        ],
    )
    .await;
}
