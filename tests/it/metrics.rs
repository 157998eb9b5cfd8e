//! The metrics beyond request counts, each after traffic that must move
//! it by a known amount: upstream connections (opened, reused, idle, in
//! flight), connect and response-head histograms, connect failures,
//! retries, the retry budget, `max_pending` refusals, `Retry-After`
//! back-offs, ejections, health transitions; client connections by
//! protocol and TLS version, TLS handshake failures by reason, HTTP/2
//! streams and GOAWAYs, bytes in and out.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::Request;
use tokio::sync::Notify;

use crate::admin::{admin_get, value};
use crate::common::config::{Route, TestConfig};
use crate::common::pki::Ca;
use crate::common::*;
use crate::retry::resetting;

/// Scrapes until every `(series, value)` of `want` holds (a count lands
/// as its request ends, just after the client has the response); the
/// last text.
async fn scrape_until(proxy: &Proxy, want: &[(String, f64)]) -> String {
    let mut last = String::new();
    let done = tokio::time::timeout(HANG, async {
        loop {
            let (status, text) = admin_get(proxy, "/metrics", &[]).await;
            assert_eq!(status, 200);
            if want.iter().all(|(s, v)| value(&text, s) == Some(*v)) {
                return text;
            }
            last = text;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    done.unwrap_or_else(|_| {
        let missing: Vec<_> = want
            .iter()
            .filter(|(s, v)| value(&last, s) != Some(*v))
            .map(|(s, v)| format!("{s} want {v} got {:?}", value(&last, s)))
            .collect();
        panic!("never matched: {missing:#?}")
    })
}

fn server(name: &str, group: &str, addr: impl std::fmt::Display) -> String {
    format!("{name}{{group=\"{group}\",server=\"{addr}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_metrics_count_exactly() {
    // `/busy` answers 429 with Retry-After; `/hold` waits for `release`.
    let release = Arc::new(Notify::new());
    let holding = Arc::new(Notify::new());
    let (r, h) = (release.clone(), holding.clone());
    let origin = backend(move |req: Request<hyper::body::Incoming>| {
        let (release, holding) = (r.clone(), h.clone());
        async move {
            match req.uri().path() {
                "/busy" => {
                    let mut resp = text(429, "slow down");
                    resp.headers_mut()
                        .insert("retry-after", http::HeaderValue::from_static("30"));
                    resp
                }
                "/hold" => {
                    holding.notify_one();
                    release.notified().await;
                    text(200, "held")
                }
                _ => text(200, "hello"),
            }
        }
    });
    let resets = Arc::new(AtomicUsize::new(0));
    let bad = resetting(resets.clone());
    let bad2 = resetting(resets.clone());
    let ((dead, _held), (unchecked, _held2)) = (dead_port(), dead_port());
    let proxy = Proxy::start(
        &TestConfig::new()
            .threads(1)
            .set("admin.address", "127.0.0.1:0")
            .route(Route::to("flaky").path_prefix("/flaky"))
            .route(Route::to("doomed").path_prefix("/doomed"))
            .route(Route::to("calm").path_prefix("/busy"))
            .route(Route::to("tight").path_prefix("/hold"))
            .route(Route::to("ejecting").path_prefix("/eject"))
            .route(Route::to("checked").path_prefix("/checked"))
            .group("flaky", [bad.addr, origin.addr])
            .set("upstreams.flaky.balance", "round_robin")
            .set("upstreams.flaky.outlier.consecutive_failures", 0)
            .set("upstreams.flaky.retry.attempts", 2)
            .group("doomed", [bad.addr, bad2.addr])
            .set("upstreams.doomed.outlier.consecutive_failures", 0)
            .set("upstreams.doomed.retry.budget_percent", 0)
            .set("upstreams.doomed.retry.min_per_second", 0)
            .group("calm", [origin.addr])
            .group("tight", [origin.addr])
            .set("upstreams.tight.max_connections", 1)
            .set("upstreams.tight.max_pending", 0)
            .group("ejecting", [dead])
            .set("upstreams.ejecting.outlier.consecutive_failures", 1)
            .set("upstreams.ejecting.outlier.max_ejected_percent", 100)
            .group("checked", [unchecked])
            .set("upstreams.checked.health.interval", "50ms")
            .set("upstreams.checked.health.unhealthy_threshold", 1)
            .toml(),
    );
    let p = proxy.addr;
    // Round-robin: every other request goes first to the server that
    // resets; each of those is retried on the origin.
    for _ in 0..10 {
        assert_eq!(get(p, "/flaky").await.0, 200);
    }
    // Servers that reset and no retry budget: never retried.
    for _ in 0..4 {
        assert_eq!(get(p, "/doomed").await.0, 502);
    }
    assert_eq!(get(p, "/busy").await.0, 429);
    assert_eq!(get(p, "/eject").await.0, 502);

    // One request holds the only connection `tight` allows; the next
    // finds no room and no queue: 503.
    let held = tokio::spawn(async move { get(p, "/hold").await.0 });
    holding.notified().await;
    let in_flight = server("tidegate_upstream_connections_active", "tight", origin.addr);
    scrape_until(&proxy, &[(in_flight.clone(), 1.0)]).await;
    assert_eq!(get(p, "/hold").await.0, 503);
    release.notify_one();
    assert_eq!(held.await.unwrap(), 200);

    let (o, b) = (origin.addr, bad.addr);
    let want = [
        (server("tidegate_upstream_retries_total", "flaky", b), 5.0),
        (
            format!("tidegate_upstream_responses_total{{group=\"flaky\",server=\"{o}\",code=\"2xx\"}}"),
            10.0,
        ),
        (
            server("tidegate_upstream_header_duration_seconds_count", "flaky", o),
            10.0,
        ),
        (
            "tidegate_upstream_retry_budget_exhausted_total{group=\"doomed\"}".to_string(),
            4.0,
        ),
        (server("tidegate_upstream_backoffs_total", "calm", o), 1.0),
        (server("tidegate_upstream_pending_refused_total", "tight", o), 1.0),
        (in_flight, 0.0),
        (server("tidegate_upstream_connect_failures_total", "ejecting", dead), 1.0),
        (server("tidegate_upstream_ejections_total", "ejecting", dead), 1.0),
        (
            format!("tidegate_upstream_health_transitions_total{{group=\"checked\",server=\"{unchecked}\",to=\"down\"}}"),
            1.0,
        ),
    ];
    let text = scrape_until(&proxy, &want).await;
    // Every new connection was timed once; a request not on a new
    // connection went on a pooled one.
    let opened = value(
        &text,
        &server("tidegate_upstream_connections_opened_total", "flaky", o),
    )
    .expect("opened");
    let timed = value(
        &text,
        &server(
            "tidegate_upstream_connect_duration_seconds_count",
            "flaky",
            o,
        ),
    );
    assert_eq!(timed, Some(opened));
    let reused = value(
        &text,
        &server("tidegate_upstream_connections_reused_total", "flaky", o),
    )
    .unwrap_or(0.0);
    assert!(
        opened >= 1.0 && reused >= 1.0,
        "opened {opened}, reused {reused}"
    );
    assert_eq!(opened + reused, 10.0);
    // The pool's sweep (about once a second) reports the idle ones.
    let idle = server("tidegate_upstream_connections_idle", "flaky", o);
    tokio::time::timeout(HANG, async {
        while value(&admin_get(&proxy, "/metrics", &[]).await.1, &idle).unwrap_or(0.0) < 1.0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("an idle connection is reported");
    assert!(resets.load(Ordering::SeqCst) >= 9);
    crate::admin::promtool(&text);
}

/// curl, quiet, bounded, never through a proxy from the environment.
fn curl(args: &[&str]) -> Command {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--fail",
        "--noproxy",
        "*",
        "--max-time",
        "60",
        "-o",
        "/dev/null",
    ]);
    c.args(args);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_by_protocol_tls_failures_streams_and_goaways() {
    let origin = backend(|_req: Request<hyper::body::Incoming>| async { text(200, "hello") });
    let ca = Ca::new("metrics test CA");
    let leaf = ca.server(&["localhost"]);
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .threads(1)
            .set("admin.address", "127.0.0.1:0")
            .set("limits.max_requests_per_connection", 2)
            .listener("127.0.0.1:0")
            .listener_tls(&[(leaf.cert_file.arg(), leaf.key_file.arg())])
            .toml(),
    );
    let addrs = proxy.running().local_addrs().to_vec();
    let (plain, tls) = (addrs[0], addrs[1]);
    let url = |scheme: &str, a: std::net::SocketAddr| format!("{scheme}://localhost:{}/", a.port());
    let resolve = |a: std::net::SocketAddr| format!("localhost:{}:127.0.0.1", a.port());
    // HTTP/1.1 in the clear; h2c: two requests on a connection that
    // takes two (then GOAWAY), and one more on a second connection.
    let h1 = url("http", plain);
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_command(curl(&args)).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(vec!["--resolve".into(), resolve(plain), h1.clone()]).await;
    // (h2load: curl 7.88 fails a request it sent before a graceful
    // GOAWAY whose stream the server still answers.)
    for n in ["2", "1"] {
        let mut h2load = Command::new("h2load");
        h2load.args(["-n", n, "-c", "1", &h1]);
        let out = run_command(h2load).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("{n} succeeded")), "{text}");
    }
    // TLS 1.2 with HTTP/1.1, TLS 1.3 with HTTP/2.
    let https = url("https", tls);
    let ca_file = ca.file.arg().to_string();
    run(vec![
        "--cacert".into(),
        ca_file.clone(),
        "--resolve".into(),
        resolve(tls),
        "--http1.1".into(),
        "--tlsv1.2".into(),
        "--tls-max".into(),
        "1.2".into(),
        https.clone(),
    ])
    .await;
    run(vec![
        "--cacert".into(),
        ca_file,
        "--resolve".into(),
        resolve(tls),
        "--http2".into(),
        "--tlsv1.3".into(),
        https,
    ])
    .await;
    // Two failed handshakes: one closed at once, one that speaks HTTP.
    drop(tokio::net::TcpStream::connect(tls).await.unwrap());
    let mut c = RawConn::connect(tls).await;
    c.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    c.read_to_close().await;

    let l = "listener=\"127.0.0.1:0\"";
    let conn = |p: &str, t: &str| {
        format!("tidegate_connections_handled_total{{{l},protocol=\"{p}\",tls=\"{t}\"}}")
    };
    let active = |p: &str, t: &str| {
        format!("tidegate_connections_active{{{l},protocol=\"{p}\",tls=\"{t}\"}}")
    };
    let want = [
        (conn("http/1.1", "none"), 1.0),
        (conn("h2", "none"), 2.0),
        (conn("http/1.1", "TLSv1.2"), 1.0),
        (conn("h2", "TLSv1.3"), 1.0),
        (active("http/1.1", "none"), 0.0),
        (active("h2", "none"), 0.0),
        (active("h2", "TLSv1.3"), 0.0),
        (format!("tidegate_http2_streams_total{{{l}}}"), 4.0),
        (format!("tidegate_http2_goaways_sent_total{{{l}}}"), 1.0),
        (
            format!("tidegate_tls_handshake_failures_total{{{l},reason=\"eof\"}}"),
            1.0,
        ),
        (
            format!("tidegate_tls_handshake_failures_total{{{l},reason=\"invalid_message\"}}"),
            1.0,
        ),
        (
            format!("tidegate_requests_total{{{l},route=\"routes[0]\",code=\"2xx\"}}"),
            6.0,
        ),
    ];
    let text = scrape_until(&proxy, &want).await;
    for series in ["tidegate_received_bytes_total", "tidegate_sent_bytes_total"] {
        let n = value(&text, &format!("{series}{{{l}}}")).unwrap_or(0.0);
        // Six requests and their responses, at least 16 bytes each way.
        assert!(n >= 6.0 * 16.0, "{series} {n}");
    }
    crate::admin::promtool(&text);
}
