//! Service discovery: upstream servers given by DNS name, against an
//! in-process DNS server on 127.0.0.1 whose answers the tests change, and
//! backends on several loopback addresses sharing one port.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::{rdata::A, RData, Record, RecordType};

/// What the DNS server answers for a name.
#[derive(Clone, Debug)]
enum Reply {
    Addrs(Vec<Ipv4Addr>),
    NxDomain,
    ServFail,
}

/// A UDP DNS server answering from a table; stopped on drop.
struct Dns {
    addr: SocketAddr,
    table: Arc<Mutex<HashMap<String, Reply>>>,
    queries: Arc<AtomicUsize>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Dns {
    fn start() -> Dns {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("dns runtime");
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind dns");
        sock.set_nonblocking(true).expect("nonblocking");
        let addr = sock.local_addr().expect("dns addr");
        let table: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let queries = Arc::new(AtomicUsize::new(0));
        let (t, q) = (table.clone(), queries.clone());
        rt.spawn(async move {
            let sock = tokio::net::UdpSocket::from_std(sock).expect("udp socket");
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                q.fetch_add(1, Ordering::SeqCst);
                let reply = answer(&query, &t);
                if let Ok(bytes) = reply.to_vec() {
                    let _ = sock.send_to(&bytes, peer).await;
                }
            }
        });
        Dns {
            addr,
            table,
            queries,
            rt: Some(rt),
        }
    }

    fn set(&self, name: &str, reply: Reply) {
        self.table.lock().unwrap().insert(name.to_string(), reply);
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

/// A, 1 s TTL, from the table; AAAA: none (NOERROR, empty).
fn answer(query: &Message, table: &Mutex<HashMap<String, Reply>>) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    let Some(q) = query.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    reply.add_query(q.clone());
    let name = q
        .name()
        .to_string()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let found = table.lock().unwrap().get(&name).cloned();
    match found {
        None | Some(Reply::NxDomain) => reply.metadata.response_code = ResponseCode::NXDomain,
        Some(Reply::ServFail) => reply.metadata.response_code = ResponseCode::ServFail,
        Some(Reply::Addrs(ips)) => {
            if q.query_type() == RecordType::A {
                for ip in ips {
                    reply.add_answer(Record::from_rdata(q.name().clone(), 1, RData::A(A(ip))));
                }
            }
        }
    }
    reply
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Holds `/slow` requests until released.
#[derive(Clone)]
struct Gate {
    arrived: Arc<AtomicUsize>,
    open: Arc<tokio::sync::Semaphore>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            arrived: Arc::default(),
            open: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }
}

fn backends(lasts: &[u8]) -> (u16, Vec<Backend>) {
    backends_gated(lasts, Gate::default())
}

/// One backend per address 127.0.0.N, all on the same port, each answering
/// with its address (`/slow` once `gate` lets it). The port is the one the
/// first address got; where it is taken on another, another is tried.
fn backends_gated(lasts: &[u8], gate: Gate) -> (u16, Vec<Backend>) {
    'port: for _ in 0..50 {
        let first = std::net::TcpListener::bind((ip(lasts[0]), 0)).expect("bind");
        let port = first.local_addr().expect("addr").port();
        let mut listeners = vec![first];
        for last in &lasts[1..] {
            match std::net::TcpListener::bind((ip(*last), port)) {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'port,
            }
        }
        let backends = listeners
            .into_iter()
            .map(|l| {
                l.set_nonblocking(true).expect("nonblocking");
                let addr = l.local_addr().expect("addr");
                let name = addr.ip().to_string();
                let gate = gate.clone();
                backend_on((l, addr), move |req| {
                    let (name, gate) = (name.clone(), gate.clone());
                    async move {
                        if req.uri().path() == "/slow" {
                            gate.arrived.fetch_add(1, Ordering::SeqCst);
                            if let Ok(p) = gate.open.acquire().await {
                                p.forget();
                            }
                        }
                        text(200, &name)
                    }
                })
            })
            .collect();
        return (port, backends);
    }
    panic!("no port free on every loopback address");
}

fn config(dns: &Dns, port: u16, refresh: (&str, &str)) -> String {
    format!(
        r#"
[server]
threads = 2
log_level = "warn"

[[listeners]]
address = "127.0.0.1:0"

[[routes]]
upstream = "app"

[upstreams.app]
servers = ["http://app.test:{port}"]
balance = "round_robin"

[dns]
resolvers = ["{}"]
min_refresh = "{}"
max_refresh = "{}"
"#,
        dns.addr, refresh.0, refresh.1
    )
}

/// Which backends a batch of requests reached. With round-robin, 20
/// requests over 2 threads reach every server of the config in force.
async fn reached(proxy: &Proxy) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let (status, _, body) = get(proxy.addr, "/").await;
        assert_eq!(status, 200, "{body:?}");
        seen.insert(String::from_utf8_lossy(&body).into_owned());
    }
    seen
}

fn set_of(lasts: &[u8]) -> BTreeSet<String> {
    lasts.iter().map(|l| ip(*l).to_string()).collect()
}

/// Sends batches until one reaches exactly `want`, bounded by HANG.
async fn until_reached(proxy: &Proxy, want: &[u8]) {
    let want = set_of(want);
    let mut last = BTreeSet::new();
    let found = tokio::time::timeout(HANG, async {
        loop {
            last = reached(proxy).await;
            if last == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "never reached exactly {want:?}; last {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_address_gets_traffic_and_changes_are_followed() {
    let (port, _backends) = backends(&[2, 3, 4]);
    let dns = Dns::start();
    dns.set("app.test", Reply::Addrs(vec![ip(2), ip(3)]));
    let proxy = Proxy::start(&config(&dns, port, ("100ms", "500ms")));
    assert_eq!(reached(&proxy).await, set_of(&[2, 3]));

    dns.set("app.test", Reply::Addrs(vec![ip(2), ip(3), ip(4)]));
    until_reached(&proxy, &[2, 3, 4]).await;

    dns.set("app.test", Reply::Addrs(vec![ip(4), ip(2)]));
    until_reached(&proxy, &[2, 4]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_an_address_that_went_away() {
    let gate = Gate::default();
    let (port, _backends) = backends_gated(&[2, 3], gate.clone());
    let dns = Dns::start();
    dns.set("app.test", Reply::Addrs(vec![ip(2)]));
    let proxy = Proxy::start(&config(&dns, port, ("100ms", "500ms")));
    let addr = proxy.addr;
    let slow = tokio::spawn(async move { get(addr, "/slow").await });
    tokio::time::timeout(HANG, async {
        while gate.arrived.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the slow request reaches 127.0.0.2");

    dns.set("app.test", Reply::Addrs(vec![ip(3)]));
    until_reached(&proxy, &[3]).await;
    gate.open.add_permits(1);
    let (status, _, body) = tokio::time::timeout(HANG, slow)
        .await
        .expect("no hang")
        .expect("task");
    assert_eq!((status, body.as_ref()), (200, &b"127.0.0.2"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_name_keeps_its_last_addresses() {
    let (port, _backends) = backends(&[2, 3]);
    let dns = Dns::start();
    dns.set("app.test", Reply::Addrs(vec![ip(2), ip(3)]));
    let proxy = Proxy::start(&config(&dns, port, ("100ms", "500ms")));
    assert_eq!(reached(&proxy).await, set_of(&[2, 3]));

    for failure in [Reply::NxDomain, Reply::ServFail] {
        dns.set("app.test", failure);
        // Several refreshes fail (each asks for A and AAAA)...
        let asked = dns.queries();
        tokio::time::timeout(HANG, async {
            while dns.queries() < asked + 6 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the proxy keeps asking");
        // ...and the last known addresses still serve.
        assert_eq!(reached(&proxy).await, set_of(&[2, 3]));
    }

    // When the name resolves again, its new answer is followed.
    dns.set("app.test", Reply::Addrs(vec![ip(3)]));
    until_reached(&proxy, &[3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_resolves_names_again() {
    let (port, _backends) = backends(&[2, 3]);
    let dns = Dns::start();
    dns.set("app.test", Reply::Addrs(vec![ip(2)]));
    // No background refresh within the test.
    let toml = config(&dns, port, ("1h", "1h"));
    let mut proxy = Proxy::start(&toml);
    assert_eq!(reached(&proxy).await, set_of(&[2]));
    dns.set("app.test", Reply::Addrs(vec![ip(3)]));
    assert_eq!(reached(&proxy).await, set_of(&[2]));
    proxy.reload(&toml);
    until_reached(&proxy, &[3]).await;
}

#[test]
fn a_name_that_does_not_resolve_at_start_is_a_config_error() {
    let dns = Dns::start();
    dns.set("other.test", Reply::Addrs(vec![ip(2)]));
    let toml = config(&dns, 8080, ("1s", "5m"));
    let build = |toml: &str| {
        let config = tidegate::Config::from_toml(toml, "test.toml").expect("valid");
        tidegate::upstream::registry::Registry::default().build(&config)
    };
    let err = |toml: &str| {
        build(toml)
            .expect_err("app.test does not resolve")
            .to_string()
    };
    let e = err(&toml);
    assert_eq!(
        e,
        "test.toml:13: upstreams.app.servers[0]: `app.test:8080` does not resolve: \
         no such name (NXDOMAIN)"
    );
    dns.set("app.test", Reply::ServFail);
    let e = err(&toml);
    assert!(
        e.ends_with("does not resolve: the name server answered Server Failure (2)"),
        "{e}"
    );

    // A name answered with an address is fine; IP literals ask nothing.
    dns.set("app.test", Reply::Addrs(vec![ip(2)]));
    let c = build(&toml).expect("resolves");
    let s = &c.groups[0].servers;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].addr, SocketAddr::new(IpAddr::V4(ip(2)), 8080));
    assert_eq!(s[0].authority, "app.test:8080");
}
