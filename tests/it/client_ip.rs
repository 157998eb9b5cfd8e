//! The real client address (`trusted_proxies`, `real_ip_header`) and the
//! `access` rules of listeners and routes: a trusted peer's
//! `X-Forwarded-For` (or `Forwarded`) names the client, an untrusted
//! one's is not believed; that one address is what the rules, the access
//! log and hash balancing see, while the `X-Forwarded-For` sent upstream
//! keeps its chain and appends the peer.

use std::net::SocketAddr;

use crate::common::config::{Route, TestConfig};
use crate::common::*;
use http::{Request, Response};

/// Answers with the `X-Forwarded-For` it received (`-` for none).
fn xff_backend(name: &'static str) -> Backend {
    backend(move |req: Request<hyper::body::Incoming>| async move {
        let xff: Vec<String> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let mut resp = Response::new(full(if xff.is_empty() {
            "-".to_string()
        } else {
            xff.join(" | ")
        }));
        resp.headers_mut()
            .insert("x-server", http::HeaderValue::from_static(name));
        resp
    })
}

/// GET `path` on `addr` with extra request fields: status, the
/// answering server's name, body.
async fn get_with(addr: SocketAddr, path: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
    let (status, head, body) = exchange(addr, "GET", "test.local", path, fields, empty()).await;
    let server = head
        .get("x-server")
        .map_or("", |v| v.to_str().unwrap())
        .to_string();
    (status, server, body)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The access log's client field of every line, after stopping `proxy`
/// (which flushes the log).
async fn logged_clients(proxy: Proxy, log: &TempFile) -> Vec<String> {
    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    let text = std::fs::read_to_string(&log.path).expect("log written");
    text.lines()
        .map(|l| l.split(' ').nth(1).expect("a client field").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_not_believed() {
    let origin = xff_backend("a");
    // 127.0.0.1 is not in the trusted set; the spoofed address would be
    // allowed, the peer is not.
    let spoof = [("x-forwarded-for", "203.0.113.9")];
    let guarded = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .listener_set("trusted_proxies", strings(&["10.0.0.0/8"]))
            .listener_set("access", strings(&["allow 203.0.113.9", "deny all"]))
            .toml(),
    );
    assert_eq!(get_with(guarded.addr, "/", &spoof).await.0, 403);
    // Without rules the request goes up: the chain kept, the peer
    // appended; the log names the peer.
    let log = TempFile::new("access.log");
    let open = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .log_level("error")
            .set("server.access_log", log.arg())
            .listener_set("trusted_proxies", strings(&["10.0.0.0/8"]))
            .toml(),
    );
    let (status, _, seen) = get_with(open.addr, "/", &spoof).await;
    assert_eq!((status, seen.as_str()), (200, "203.0.113.9, 127.0.0.1"));
    let clients = logged_clients(open, &log).await;
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert!(
        clients[0].starts_with("127.0.0.1:") && clients[0] != "127.0.0.1:0",
        "{clients:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_peer_names_the_client_past_every_trusted_hop() {
    let origin = xff_backend("a");
    let log = TempFile::new("access.log");
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .log_level("error")
            .set("server.access_log", log.arg())
            .listener_set(
                "trusted_proxies",
                strings(&["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]),
            )
            .listener_set("access", strings(&["deny 198.51.100.0/24"]))
            .toml(),
    );
    // The rightmost untrusted address, past two trusted hops in two
    // fields; what went up is the chain and the peer.
    let (status, _, seen) = get_with(
        proxy.addr,
        "/",
        &[
            ("x-forwarded-for", "198.51.100.1, 203.0.113.9"),
            ("x-forwarded-for", "10.1.2.3, 2001:db8::7"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        seen,
        "198.51.100.1, 203.0.113.9, 10.1.2.3, 2001:db8::7, 127.0.0.1"
    );
    // The address the rules see is the believed one.
    let hop = [("x-forwarded-for", "203.0.113.9, 198.51.100.1, 10.0.0.1")];
    assert_eq!(get_with(proxy.addr, "/", &hop).await.0, 403);
    // Garbage where the walk reads: the peer (which the rules allow).
    let bad = [("x-forwarded-for", "198.51.100.1, nonsense, 10.0.0.1")];
    assert_eq!(get_with(proxy.addr, "/", &bad).await.0, 200);
    // One line per request, the denied one too (in the order the
    // threads' buffers were flushed: sorted here).
    let mut clients = logged_clients(proxy, &log).await;
    clients.sort();
    assert_eq!(clients.len(), 3, "{clients:?}");
    assert!(clients[0].starts_with("127.0.0.1:"), "{clients:?}");
    assert_eq!(clients[1..], ["198.51.100.1:0", "203.0.113.9:0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarded_field_when_configured() {
    let origin = xff_backend("a");
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .listener_set("trusted_proxies", strings(&["127.0.0.0/8", "10.0.0.0/8"]))
            .listener_set("real_ip_header", "forwarded")
            .listener_set("access", strings(&["allow 2001:db8::/32", "deny all"]))
            .toml(),
    );
    let v6 = [(
        "forwarded",
        r#"for=192.0.2.1, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.3"#,
    )];
    let (status, _, seen) = get_with(proxy.addr, "/", &v6).await;
    assert_eq!(status, 200);
    // X-Forwarded-For upstream: the peer, as ever.
    assert_eq!(seen, "127.0.0.1");
    for denied in [
        "for=2001:db8::1, for=192.0.2.1",
        "for=\"[2001:db8::1]\", for=unknown",
        "for=_hidden",
    ] {
        let f = [("forwarded", denied)];
        assert_eq!(get_with(proxy.addr, "/", &f).await.0, 403, "{denied}");
    }
    // X-Forwarded-For is not read in this mode.
    let xff = [("x-forwarded-for", "2001:db8::1")];
    assert_eq!(get_with(proxy.addr, "/", &xff).await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_balancing_hashes_the_real_client() {
    let (a, b) = (xff_backend("a"), xff_backend("b"));
    let config = |trusted: &[&str]| {
        TestConfig::new()
            .group("app", [a.addr, b.addr])
            .set("upstreams.app.balance", "hash")
            .route(Route::to("app"))
            .listener_set("trusted_proxies", strings(trusted))
            .toml()
    };
    let trusting = Proxy::start(&config(&["127.0.0.1"]));
    let not = Proxy::start(&config(&["10.0.0.0/8"]));
    let mut servers = std::collections::BTreeSet::new();
    let mut untrusted = std::collections::BTreeSet::new();
    for i in 1..=32 {
        let client = format!("203.0.113.{i}");
        let h = [("x-forwarded-for", client.as_str())];
        let (status, first, _) = get_with(trusting.addr, "/", &h).await;
        assert_eq!(status, 200);
        // The same client, the same server.
        assert_eq!(get_with(trusting.addr, "/", &h).await.1, first);
        servers.insert(first);
        untrusted.insert(get_with(not.addr, "/", &h).await.1);
    }
    assert_eq!(servers.len(), 2, "32 clients all on {servers:?}");
    assert_eq!(untrusted.len(), 1, "one peer, spread over {untrusted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_on_listeners_and_routes_first_match_wins() {
    let origin = xff_backend("a");
    let rules = |r: &[&str]| strings(r);
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .listener_set(
                "access",
                rules(&["deny 127.0.0.2", "allow 127.0.0.0/8", "deny all"]),
            )
            .route(
                Route::to("app")
                    .path_prefix("/private")
                    .set("access", rules(&["allow 10.0.0.0/8", "deny all"])),
            )
            .route(
                Route::to("app")
                    .path_prefix("/first-allow")
                    .set("access", rules(&["allow 127.0.0.1", "deny 127.0.0.0/8"])),
            )
            .route(
                Route::to("app")
                    .path_prefix("/first-deny")
                    .set("access", rules(&["deny 127.0.0.0/8", "allow 127.0.0.1"])),
            )
            .route(
                Route::respond(204)
                    .path_prefix("/fixed")
                    .set("access", rules(&["deny ::ffff:127.0.0.1/128"])),
            )
            .toml(),
    );
    let status = |path: &'static str| {
        let addr = proxy.addr;
        async move { get_with(addr, path, &[]).await.0 }
    };
    assert_eq!(status("/open").await, 200);
    assert_eq!(status("/private").await, 403);
    assert_eq!(status("/first-allow").await, 200);
    assert_eq!(status("/first-deny").await, 403);
    // An IPv4-mapped rule holds the IPv4 client too.
    assert_eq!(status("/fixed").await, 403);

    // The proxy's own 403: plain text, or gRPC's PERMISSION_DENIED.
    let plain = parse_raw(
        &raw(
            proxy.addr,
            b"GET /private HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(plain.status, 403);
    assert_eq!(plain.text(), "403 Forbidden\n");
    let grpc = parse_raw(
        &raw(
            proxy.addr,
            b"POST /private/pkg.Svc/Call HTTP/1.1\r\nHost: t\r\nContent-Type: application/grpc\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(grpc.status, 200);
    assert_eq!(grpc.header("grpc-status"), Some("7"));

    // The listener's rules come first: a denied listener denies every route.
    let closed = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .listener_set("access", rules(&["deny all", "allow 127.0.0.1"]))
            .route(Route::respond(204).path("/fixed"))
            .toml(),
    );
    assert_eq!(get_with(closed.addr, "/", &[]).await.0, 403);
    assert_eq!(get_with(closed.addr, "/fixed", &[]).await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_rules_hold_ipv6_clients() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let origin = xff_backend("a");
    let proxy = |rules: &[&str]| {
        Proxy::start(
            &TestConfig::proxying(origin.addr)
                .listeners_at(&["[::1]:0"])
                .listener_set("access", strings(rules))
                .toml(),
        )
    };
    let allowed = proxy(&["allow ::1/128", "deny all"]);
    let (status, _, seen) = get_with(allowed.addr, "/", &[]).await;
    assert_eq!((status, seen.as_str()), (200, "::1"));
    let denied = proxy(&["allow 127.0.0.0/8", "deny ::/0"]);
    assert_eq!(get_with(denied.addr, "/", &[]).await.0, 403);
    // An IPv4 rule does not hold an IPv6 client.
    let v4_only = proxy(&["deny 0.0.0.0/0"]);
    assert_eq!(get_with(v4_only.addr, "/", &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_blocks_are_refused_by_check_with_their_line_and_field() {
    let toml = r#"
[[listeners]]
address = "127.0.0.1:8080"
trusted_proxies = ["10.0.0.0/8", "10.0.0.0/33"]
access = ["allow ::1", "allow 10.1.0.0/8"]

[[routes]]
upstream = "app"
access = [
  "deny all",
  "permit 192.0.2.1",
]

[upstreams.app]
servers = ["http://127.0.0.1:9000"]
"#;
    let err = check_refuses(
        toml,
        &[
            "{f}:4: listeners[0].trusted_proxies[1]: `10.0.0.0/33`",
            "{f}:5: listeners[0].access[1]: `10.1.0.0/8` has bits set",
            "{f}:11: routes[0].access[1]: `permit 192.0.2.1`",
        ],
    )
    .await;
    assert_eq!(err.trim_end().lines().count(), 3, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_listener_rules_to_the_next_request_on_a_kept_alive_connection() {
    let origin = xff_backend("a");
    let config = |trusted: &[&str], rules: &[&str]| {
        TestConfig::proxying(origin.addr)
            .listener_set("trusted_proxies", strings(trusted))
            .listener_set("access", strings(rules))
            .toml()
    };
    let mut proxy = Proxy::start(&config(&["10.0.0.0/8"], &["allow all"]));
    let mut conn = RawConn::connect(proxy.addr).await;
    let request = b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n";
    conn.send(request).await;
    assert_eq!(conn.response().await.status, 200);
    // Now the peer is trusted and its client denied.
    proxy.reload(&config(&["127.0.0.1"], &["deny 203.0.113.0/24"]));
    conn.send(request).await;
    assert_eq!(conn.response().await.status, 403);
    proxy.reload(&config(&["127.0.0.1"], &[]));
    conn.send(request).await;
    let resp = conn.response().await;
    assert_eq!(
        (resp.status, resp.text()),
        (200, "203.0.113.9, 127.0.0.1".to_string())
    );
}
