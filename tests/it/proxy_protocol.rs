//! PROXY protocol on a listener (`proxy_protocol = { from, mode, timeout }`):
//! a trusted peer's v1 or v2 header names the client, which is then the
//! client everywhere (`X-Forwarded-For` upstream, the `access` rules, the
//! access log, rate-limit keys); a peer that is not trusted is not read;
//! a required header that is missing, invalid or late closes the
//! connection. Sent to servers: v1, v2 with the name and protocol the
//! client's TLS settled. With raw headers, curl's `--haproxy-protocol`
//! (over TLS), and HAProxy's `send-proxy` and `send-proxy-v2` in front
//! and `accept-proxy` behind as real peers.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use http::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::config::{Route, TestConfig};
use crate::common::*;

/// Answers with the `X-Forwarded-For` it received.
fn xff_backend() -> Backend {
    backend(|req: Request<hyper::body::Incoming>| async move {
        let xff = req
            .headers()
            .get("x-forwarded-for")
            .map_or("-".to_string(), |v| v.to_str().unwrap().to_string());
        Response::new(full(xff))
    })
}

/// `proxy_protocol = { from = [...], mode = "...", timeout = "..." }`.
fn pp(from: &[&str], mode: &str, timeout: &str) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert(
        "from".into(),
        from.iter()
            .map(|s| toml::Value::from(*s))
            .collect::<Vec<_>>()
            .into(),
    );
    t.insert("mode".into(), mode.into());
    t.insert("timeout".into(), timeout.into());
    toml::Value::Table(t)
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// A GET (closing) on `s`: the whole answer.
async fn answer(s: &mut TcpStream) -> String {
    s.write_all(GET).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(HANG, s.read_to_string(&mut out))
        .await
        .expect("answered")
        .unwrap();
    out
}

/// A proxy to `origin` whose listener takes headers from `from`.
fn behind(origin: &Backend, from: &[&str], mode: &str, timeout: &str) -> Proxy {
    Proxy::start(
        &TestConfig::proxying(origin.addr)
            .listener_set("proxy_protocol", pp(from, mode, timeout))
            .toml(),
    )
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// `header` then a GET, on one connection: the response's status line and
/// body ("" when the connection was closed without one).
async fn after(addr: SocketAddr, header: &[u8]) -> (String, String) {
    let text = raw(addr, &[header, GET].concat()).await;
    let status = text.lines().next().unwrap_or("").to_string();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

const V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: `command` 0 (LOCAL) or 1 (PROXY), family 0x10 (IPv4) or
/// 0x20 (IPv6), addresses and ports, and an authority TLV.
fn v2(command: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
    let tlv = [0x02, 0x00, 0x06, b'a', b'.', b't', b'e', b's', b't'];
    let mut h = V2.to_vec();
    h.extend_from_slice(&[0x20 | command, family | 1]);
    h.extend_from_slice(&((addrs.len() + tlv.len()) as u16).to_be_bytes());
    h.extend_from_slice(addrs);
    h.extend_from_slice(&tlv);
    h
}

fn v2_ipv6(src: &str, port: u16) -> Vec<u8> {
    let src: std::net::Ipv6Addr = src.parse().unwrap();
    let dst: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    let mut a = src.octets().to_vec();
    a.extend_from_slice(&dst.octets());
    a.extend_from_slice(&port.to_be_bytes());
    a.extend_from_slice(&443u16.to_be_bytes());
    v2(1, 0x20, &a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_peers_v1_and_v2_headers_name_the_client_everywhere() {
    let origin = xff_backend();
    let log = TempFile::new("access.log");
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .log_level("error")
            .set("server.access_log", log.arg())
            .listener_set("proxy_protocol", pp(&["127.0.0.0/8"], "required", "10s"))
            .listener_set(
                "access",
                vec!["deny 198.51.100.0/24".to_string(), "allow all".to_string()],
            )
            .toml(),
    );
    let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n";
    assert_eq!(
        after(proxy.addr, v1).await,
        ("HTTP/1.1 200 OK".into(), "192.0.2.7".into())
    );
    assert_eq!(
        after(proxy.addr, &v2_ipv6("2001:db8::7", 4000)).await,
        ("HTTP/1.1 200 OK".into(), "2001:db8::7".into())
    );
    // The access rules see the carried address.
    let denied = b"PROXY TCP4 198.51.100.9 198.51.100.1 1234 443\r\n";
    assert!(after(proxy.addr, denied)
        .await
        .0
        .starts_with("HTTP/1.1 403"));
    // A header longer than the proxy's first look (a 2,000-byte NOOP TLV).
    let addrs = [192, 0, 2, 8, 198, 51, 100, 1, 0x0f, 0xa1, 0x01, 0xbb];
    let mut long = V2.to_vec();
    long.extend_from_slice(&[0x21, 0x11]);
    long.extend_from_slice(&((addrs.len() + 3 + 2000) as u16).to_be_bytes());
    long.extend_from_slice(&addrs);
    long.extend_from_slice(&[0x04, 0x07, 0xd0]);
    long.extend_from_slice(&[0u8; 2000]);
    assert_eq!(
        after(proxy.addr, &long).await,
        ("HTTP/1.1 200 OK".into(), "192.0.2.8".into())
    );
    // LOCAL (a load balancer's own health check) and UNKNOWN: the peer.
    let local = v2(0, 0x10, &[127, 0, 0, 9, 127, 0, 0, 1, 0, 1, 0, 2]);
    assert_eq!(after(proxy.addr, &local).await.1, "127.0.0.1");
    assert_eq!(after(proxy.addr, b"PROXY UNKNOWN\r\n").await.1, "127.0.0.1");
    // A header in pieces (the first one too short to tell) is read whole.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for piece in [&v1[..3], &v1[3..20], &v1[20..]] {
        s.write_all(piece).await.unwrap();
        s.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    let out = answer(&mut s).await;
    assert!(out.ends_with("\r\n\r\n192.0.2.7"), "{out}");
    // The log names the carried clients, with their ports.
    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    let text = std::fs::read_to_string(&log.path).unwrap();
    let mut clients: Vec<&str> = text.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
    clients.sort();
    assert_eq!(clients.len(), 7, "{text}");
    assert!(clients.contains(&"192.0.2.7:51000"), "{clients:?}");
    assert!(clients.contains(&"192.0.2.8:4001"), "{clients:?}");
    assert!(clients.contains(&"[2001:db8::7]:4000"), "{clients:?}");
    assert!(clients.contains(&"198.51.100.9:1234"), "{clients:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_invalid_or_late_headers_close_a_required_listeners_connection() {
    let origin = xff_backend();
    let required = behind(&origin, &["127.0.0.1"], "required", "300ms");
    let closed = (String::new(), String::new());
    assert_eq!(after(required.addr, b"").await, closed);
    assert_eq!(
        after(required.addr, b"PROXY TCP4 nope 1.2.3.4 1 2\r\n").await,
        closed
    );
    assert_eq!(
        after(required.addr, b"PROXY TCP9 1.2.3.4 1.2.3.4 1 2\r\n").await,
        closed
    );
    // A v2 header claiming more than 4 KiB is refused before it comes.
    let mut long = V2.to_vec();
    long.extend_from_slice(&[0x21, 0x11, 0x20, 0x00]);
    assert_eq!(after(required.addr, &long).await, closed);
    // A peer that sends nothing is closed once the timeout passes (the
    // read ends: no hang).
    let mut idle = TcpStream::connect(required.addr).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(HANG, idle.read_to_end(&mut buf))
        .await
        .expect("closed after the header timeout");
    assert_eq!((n.ok(), buf.len()), (Some(0), 0));
    // The listener still serves.
    let v1 = b"PROXY TCP4 192.0.2.8 198.51.100.1 1 2\r\n";
    assert_eq!(after(required.addr, v1).await.1, "192.0.2.8");
}

/// The header's timeout ends with the header: the request head that
/// follows has the listener's `client_header` time from the accept (the
/// set-up's one timer, armed while the header was awaited, is moved on,
/// not left at the header's deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_the_header_has_the_head_timeout_not_the_headers() {
    use std::time::Duration;
    let origin = xff_backend();
    let mut timeouts = toml::Table::new();
    timeouts.insert("client_header".into(), "6s".into());
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .listener_set("proxy_protocol", pp(&["127.0.0.1"], "required", "1s"))
            .set("timeouts", toml::Value::Table(timeouts))
            .toml(),
    );
    // The header comes while the proxy waits for it (its timer armed);
    // the request well after the header's second, well before the head's
    // six: served.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"PROXY TCP4 192.0.2.9 198.51.100.1 1 2\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = answer(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(text.ends_with("192.0.2.9"), "{text:?}");
    // A header and then nothing: closed at the head's deadline (no hang).
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.9 198.51.100.1 1 2\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(HANG, s.read_to_end(&mut buf))
        .await
        .expect("closed after the head timeout");
    assert_eq!((n.ok(), buf.len()), (Some(0), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_header_may_be_left_out_and_an_untrusted_peers_is_never_read() {
    let origin = xff_backend();
    let optional = behind(&origin, &["127.0.0.1"], "optional", "10s");
    assert_eq!(after(optional.addr, b"").await.1, "127.0.0.1");
    let v1 = b"PROXY TCP4 192.0.2.9 198.51.100.1 1 2\r\n";
    assert_eq!(after(optional.addr, v1).await.1, "192.0.2.9");
    // A POST's "P" is not a header's.
    let post = raw(
        optional.addr,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        post.starts_with("HTTP/1.1 200") && post.ends_with("127.0.0.1"),
        "{post}"
    );
    // From a peer not in `from`, a header is a bad request.
    let untrusted = behind(&origin, &["10.0.0.0/8"], "required", "10s");
    assert!(after(untrusted.addr, v1)
        .await
        .0
        .starts_with("HTTP/1.1 400"));
    assert_eq!(after(untrusted.addr, b"").await.1, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sends_its_header_before_tls() {
    let origin = xff_backend();
    let leaf = crate::common::pki::Leaf::self_signed(&["localhost"]);
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .listener_tls(&[(leaf.cert_file.arg(), leaf.key_file.arg())])
            .listener_set("proxy_protocol", pp(&["127.0.0.1"], "required", "10s"))
            .toml(),
    );
    let url = format!("https://localhost:{}/", proxy.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", proxy.addr.port());
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["-sk", "--max-time", "20", "--resolve", &resolve])
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl runs")
    };
    let with = curl(&["--haproxy-protocol", "--http2"]);
    assert!(with.status.success(), "{with:?}");
    assert_eq!(String::from_utf8_lossy(&with.stdout), "127.0.0.1");
    // Without its header the TLS handshake never starts.
    let without = curl(&[]);
    assert!(!without.status.success(), "{without:?}");
}

/// HAProxy in TCP mode on a free port, in front of `to`, sending `send`
/// (`send-proxy` or `send-proxy-v2`); killed on drop.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    _cfg: TempFile,
}

impl Haproxy {
    async fn start(to: SocketAddr, send: &str) -> Haproxy {
        Haproxy::with_config(|addr| {
            format!(
                "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 10s\n  \
                 timeout client 30s\n  timeout server 30s\nfrontend fe\n  bind {addr}\n  \
                 default_backend be\nbackend be\n  server t {to} {send}\n"
            )
        })
        .await
    }

    /// HAProxy with the config `cfg` makes for its listening address.
    async fn with_config(cfg: impl Fn(SocketAddr) -> String) -> Haproxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let cfg = TempFile::with("haproxy.cfg", cfg(addr).as_bytes());
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&cfg.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy runs (apt-get install haproxy)");
        tokio::time::timeout(HANG, async {
            while TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("haproxy listens");
        Haproxy {
            child,
            addr,
            _cfg: cfg,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_with_send_proxy_v2_and_v1() {
    let origin = xff_backend();
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .listener_set("proxy_protocol", pp(&["127.0.0.1"], "required", "10s"))
            .listener_set(
                "access",
                vec!["deny 127.0.0.6".to_string(), "allow all".to_string()],
            )
            .toml(),
    );
    for send in ["send-proxy-v2", "send-proxy"] {
        let haproxy = Haproxy::start(proxy.addr, send).await;
        // Clients on other loopback addresses than HAProxy's own.
        for (from, want) in [("127.0.0.5", "200"), ("127.0.0.6", "403")] {
            let out = answer(&mut connect_from(from, haproxy.addr).await).await;
            assert!(
                out.starts_with(&format!("HTTP/1.1 {want}")),
                "{send} {from}: {out}"
            );
            if want == "200" {
                assert!(out.ends_with("\r\n\r\n127.0.0.5"), "{send}: {out}");
            }
        }
    }
}

#[test]
fn the_example_loads_and_bad_settings_are_refused_with_their_field() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/proxy-protocol.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let config = tidegate::config::Config::from_toml(&text, path).expect("the example loads");
    let pp = config.listeners[0].proxy_protocol.as_ref().expect("read");
    assert_eq!(pp.from.len(), 2);
    assert!(pp.trusts("10.1.2.3".parse().unwrap()) && !pp.trusts("192.0.2.1".parse().unwrap()));
    let base =
        "[upstreams.app]\nservers = [\"127.0.0.1:2\"]\n[[listeners]]\naddress = \"127.0.0.1:1\"\n";
    for (setting, want) in [
        ("{ from = [] }", "listeners[0].proxy_protocol.from"),
        (
            "{ from = [\"10.0.0.1/8\"] }",
            "listeners[0].proxy_protocol.from[0]",
        ),
        (
            "{ from = [\"::1\"], timeout = \"2m\" }",
            "listeners[0].proxy_protocol.timeout",
        ),
        ("{ from = [\"::1\"], mode = \"sometimes\" }", "sometimes"),
        ("{ from = [\"::1\"], version = 2 }", "version"),
    ] {
        let toml = format!("{base}proxy_protocol = {setting}\n");
        let err = tidegate::config::Config::from_toml(&toml, "t.toml")
            .expect_err(setting)
            .to_string();
        assert!(
            err.contains(want) && err.contains("t.toml"),
            "{setting}: {err}"
        );
    }
}

/// HAProxy in HTTP mode on a free port, taking PROXY headers
/// (`accept-proxy`) in front of `to`: it tells the backend what the
/// header said (`x-pp-src`, `x-pp-dst`, `x-pp-authority`).
async fn haproxy_accepting(to: SocketAddr) -> Haproxy {
    Haproxy::with_config(|addr| {
        format!(
            "global\n  maxconn 100\ndefaults\n  mode http\n  timeout connect 10s\n  \
             timeout client 30s\n  timeout server 30s\nfrontend fe\n  bind {addr} accept-proxy\n  \
             http-request set-header x-pp-src %[src]:%[src_port]\n  \
             http-request set-header x-pp-dst %[dst]:%[dst_port]\n  \
             http-request set-header x-pp-authority %[fc_pp_authority]\n  \
             default_backend be\nbackend be\n  server o {to}\n"
        )
    })
    .await
}

/// Answers with what HAProxy said of the header.
fn pp_echo() -> Backend {
    backend(|req: Request<hyper::body::Incoming>| async move {
        let h = |n: &str| {
            req.headers()
                .get(n)
                .map_or("-", |v| v.to_str().unwrap())
                .to_string()
        };
        Response::new(full(format!(
            "{} {} {}",
            h("x-pp-src"),
            h("x-pp-dst"),
            h("x-pp-authority")
        )))
    })
}

/// `n` keep-alive GETs on `s`, each answer's body.
async fn gets(s: &mut TcpStream, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            tokio::time::timeout(HANG, s.read_exact(&mut b))
                .await
                .expect("answered")
                .unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.parse().unwrap())
            })
            .expect("a length");
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        out.push(String::from_utf8(body).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_open_with_a_header_naming_their_one_client() {
    let origin = pp_echo();
    for version in ["v2", "v1"] {
        let haproxy = haproxy_accepting(origin.addr).await;
        let proxy = Proxy::start(
            &TestConfig::proxying(haproxy.addr)
                .set("upstreams.app.proxy_protocol", version)
                .set("upstreams.app.protocol", "http1")
                .toml(),
        );
        // Two clients on their own addresses, their requests interleaved
        // on kept-alive connections: each upstream connection serves the
        // client connection that opened it, never the other's.
        let (mut a, mut b) = (
            connect_from("127.0.0.5", proxy.addr).await,
            connect_from("127.0.0.6", proxy.addr).await,
        );
        let (pa, pb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let dst = format!("{}", proxy.addr);
        for _ in 0..3 {
            for (s, peer) in [(&mut a, pa), (&mut b, pb)] {
                let got = gets(s, 2).await;
                for g in got {
                    // (No TLS: no authority; HAProxy says "".)
                    assert_eq!(g, format!("{peer} {dst} "), "{version}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_v2_carries_the_server_name_and_checks_send_local() {
    let origin = pp_echo();
    let haproxy = haproxy_accepting(origin.addr).await;
    // The health check's first bytes, seen by a raw server.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let record = seen.clone();
    let checked = raw_backend(move |mut s: TcpStream| {
        let record = record.clone();
        async move {
            let mut first = vec![0u8; 16];
            if s.read_exact(&mut first).await.is_ok() {
                record.lock().unwrap().push(first);
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        }
    });
    let leaf = crate::common::pki::Leaf::self_signed(&["a.test"]);
    let proxy = Proxy::start(
        &TestConfig::proxying(haproxy.addr)
            .set("upstreams.app.proxy_protocol", "v2")
            .set("upstreams.app.protocol", "http1")
            .group("checked", [checked.addr])
            .set("upstreams.checked.proxy_protocol", "v2")
            .set("upstreams.checked.health.path", "/")
            .set("upstreams.checked.health.interval", "50ms")
            .listener_tls(&[(leaf.cert_file.arg(), leaf.key_file.arg())])
            .toml(),
    );
    let port = proxy.addr.port();
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "20", "--http1.1", "--resolve"])
        .arg(format!("a.test:{port}:127.0.0.1"))
        .arg(format!("https://a.test:{port}/"))
        .output()
        .expect("curl runs");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        body.starts_with("127.0.0.1:") && body.ends_with(&format!(" {} a.test", proxy.addr)),
        "{body} {out:?}"
    );
    until("a health check", || !seen.lock().unwrap().is_empty()).await;
    let first = seen.lock().unwrap()[0].clone();
    // The v2 signature, version 2 LOCAL, no addresses.
    assert_eq!(&first[..12], V2);
    assert_eq!(first[12], 0x20, "{first:?}");
}

#[test]
fn http2_upstreams_refuse_proxy_protocol() {
    let base = "[[listeners]]\naddress = \"127.0.0.1:1\"\n";
    for (servers, protocol) in [
        ("\"http://127.0.0.1:2\"", "\"h2\""),
        ("\"https://127.0.0.1:2\"", "\"auto\""),
    ] {
        let toml = format!(
            "{base}[upstreams.app]\nservers = [{servers}]\nprotocol = {protocol}\nproxy_protocol = \"v1\"\n"
        );
        let err = tidegate::config::Config::from_toml(&toml, "t.toml")
            .expect_err(protocol)
            .to_string();
        assert!(err.contains("upstreams.app.proxy_protocol"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_carried_client_is_the_rate_limit_key() {
    let origin = xff_backend();
    let proxy = Proxy::start(
        &TestConfig::new()
            .group("app", [origin.addr])
            .set("rate_limits.per_client.key", "client_ip")
            .set("rate_limits.per_client.rate", "1/m")
            .route(Route::to("app").set("rate_limit", "per_client"))
            .listener_set("proxy_protocol", pp(&["127.0.0.0/8"], "required", "10s"))
            .toml(),
    );
    let a = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n";
    let b = b"PROXY TCP4 192.0.2.8 198.51.100.1 51000 443\r\n";
    // Each carried client has its own budget, though every connection
    // comes from the same peer.
    assert!(after(proxy.addr, a).await.0.starts_with("HTTP/1.1 200"));
    assert!(after(proxy.addr, a).await.0.starts_with("HTTP/1.1 429"));
    assert!(after(proxy.addr, b).await.0.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_v2_carries_the_protocol_alpn_settled() {
    // A server that reads the v2 header and answers with its TLVs.
    let origin = raw_backend(|mut s: TcpStream| async move {
        let Some(h) = read_pp_v2(&mut s).await else {
            return;
        };
        let mut head = Vec::new();
        if read_request_head(&mut s, &mut head).await.is_none() {
            return;
        }
        // PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY.
        let body = format!("{} {}", h.tlv(0x01), h.tlv(0x02));
        let _ = s
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
    });
    let leaf = crate::common::pki::Leaf::self_signed(&["a.test"]);
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .set("upstreams.app.proxy_protocol", "v2")
            .set("upstreams.app.protocol", "http1")
            .listener_tls(&[(leaf.cert_file.arg(), leaf.key_file.arg())])
            .toml(),
    );
    let port = proxy.addr.port();
    for (flag, alpn) in [("--http1.1", "http/1.1"), ("--http2", "h2")] {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "20", flag, "--resolve"])
            .arg(format!("a.test:{port}:127.0.0.1"))
            .arg(format!("https://a.test:{port}/"))
            .output()
            .expect("curl runs");
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(body, format!("{alpn} a.test"), "{out:?}");
    }
}
