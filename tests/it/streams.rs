//! `[[streams]]`: L4 (TCP) proxying. Bytes both ways with half-closes
//! passed on; balancing, passive and active (TCP) health; the connect
//! and idle timeouts; `access`, the listener's `max_connections` and
//! `max_connections_per_ip`, a server's `max_connections`; the PROXY
//! protocol in (v1, v2; trusted peers only; required, optional, late) and
//! out (v1, v2); TLS terminated, passed through by SNI (exact, wildcard,
//! ALPN, default, none; the ClientHello's 16 KiB cap and
//! `preread_timeout`), or handed to an HTTP listener's TLS; TLS to
//! servers; one access-log line and the session metrics (outcome,
//! duration, bytes) per connection. Clients
//! are raw sockets, rustls, `openssl s_client -servername` and `curl
//! --resolve`; servers are in-process.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use http::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::admin::{admin_get, closed_port, value};
use crate::common::pki::{Ca, Client};
use crate::common::tls_origin::{tls_origin, Origin, TlsOrigin};
use crate::common::*;

/// Reads everything the server sends, then answers it all back, then
/// closes: an answer that needs the client's half-close.
fn echo_after_eof() -> Backend {
    raw_backend(|mut s: TcpStream| async move {
        let mut got = Vec::new();
        if s.read_to_end(&mut got).await.is_ok() {
            let _ = s.write_all(&got).await;
            let _ = s.shutdown().await;
        }
    })
}

/// Says its name at once, then waits for the client to close.
fn named(name: &'static str) -> Backend {
    raw_backend(move |mut s: TcpStream| async move {
        let _ = s.write_all(name.as_bytes()).await;
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    })
}

/// The first line it got (a PROXY header), then echo.
fn header_echo() -> Backend {
    raw_backend(|mut s: TcpStream| async move {
        let mut got = Vec::new();
        let mut b = [0u8; 1];
        while !got.ends_with(b"\r\n") {
            if s.read(&mut b).await.unwrap_or(0) == 0 {
                return;
            }
            got.push(b[0]);
        }
        let _ = s.write_all(&got).await;
        let mut rest = [0u8; 4096];
        while let Ok(n) = s.read(&mut rest).await {
            if n == 0 || s.write_all(&rest[..n]).await.is_err() {
                break;
            }
        }
    })
}

/// A config with a `[server]` table and these sections.
fn config(sections: &str) -> String {
    format!("[server]\nthreads = 2\nlog_level = \"error\"\nshutdown_grace = \"10s\"\n{sections}")
}

/// Connects, sends `data`, half-closes, reads to the end.
async fn exchange_bytes(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    tokio::time::timeout(HANG, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(data).await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        got
    })
    .await
    .expect("the stream ends")
}

/// What a client reads before the stream closes (nothing sent).
async fn read_all(addr: SocketAddr) -> Vec<u8> {
    tokio::time::timeout(HANG, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        got
    })
    .await
    .expect("the stream ends")
}

/// The proxy's access log lines once it stopped.
async fn stop_and_read(proxy: Proxy, log: &TempFile) -> Vec<String> {
    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    std::fs::read_to_string(&log.path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_flow_both_ways_half_closes_pass_on_and_each_connection_logs_a_line() {
    let origin = echo_after_eof();
    let log = TempFile::new("streams.log");
    let admin = closed_port();
    let proxy = Proxy::start(&config(&format!(
        "access_log = \"{}\"\n[admin]\naddress = \"{admin}\"\n\
         [[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"db\"\n\
         [upstreams.db]\nservers = [\"{}\"]\n",
        log.arg(),
        origin.addr
    )));
    // 3 MiB one way, answered only after the client's half-close.
    let mut data = vec![0u8; 3 << 20];
    Stream::new(7).fill(&mut data);
    let got = exchange_bytes(proxy.addr, &data).await;
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the bytes came back changed");
    assert_eq!(exchange_bytes(proxy.addr, b"ping").await, b"ping");
    // The metrics: both sessions timed, the listener's bytes each way.
    let at = "{listener=\"127.0.0.1:0\"}";
    let text = tokio::time::timeout(HANG, async {
        loop {
            let (_, text) = admin_get(&proxy, "/metrics", &[]).await;
            let count = format!("tidegate_stream_session_duration_seconds_count{at}");
            if value(&text, &count) == Some(2.0) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("both sessions timed");
    let both = (3 << 20) as f64 + 4.0;
    for name in ["tidegate_received_bytes_total", "tidegate_sent_bytes_total"] {
        assert_eq!(
            value(&text, &format!("{name}{at}")),
            Some(both),
            "{name}\n{text}"
        );
    }
    let sum = value(
        &text,
        &format!("tidegate_stream_session_duration_seconds_sum{at}"),
    );
    assert!(sum.is_some_and(|s| s > 0.0), "{text}");
    let lines = stop_and_read(proxy, &log).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let fields: Vec<Vec<&str>> = lines.iter().map(|l| l.split(' ').collect()).collect();
    let big = fields
        .iter()
        .find(|f| f[5] == (3 << 20).to_string())
        .expect("the 3 MiB line");
    assert_eq!(big[2], "\"TCP");
    assert_eq!(big[3], "127.0.0.1:0\"");
    assert_eq!(big[4..7], ["200", "3145728", "3145728"]);
    assert_eq!(big[7], origin.addr.to_string());
    let seconds: f64 = big[8].parse().expect("the duration in seconds");
    assert!(seconds > 0.0, "{big:?}");
    assert_eq!(big[9], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_are_balanced_and_a_dead_one_is_skipped_then_ejected() {
    let (a, b) = (named("A"), named("B"));
    let (dead, _held) = dead_port();
    let admin = closed_port();
    let proxy = Proxy::start(&config(&format!(
        "[admin]\naddress = \"{admin}\"\n\
         [[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         [upstreams.app]\nservers = [\"{}\", \"{dead}\", \"{}\"]\nbalance = \"round_robin\"\n\
         [upstreams.app.outlier]\nconsecutive_failures = 1\n",
        a.addr, b.addr
    )));
    let mut seen = Vec::new();
    for _ in 0..8 {
        let got = read_first(proxy.addr).await;
        seen.push(got);
    }
    // Every connection got a live server; both took some.
    assert!(seen.iter().all(|s| s == "A" || s == "B"), "{seen:?}");
    assert!(
        seen.iter().any(|s| s == "A") && seen.iter().any(|s| s == "B"),
        "{seen:?}"
    );
    // One failed connect ejected the dead server: it was tried once
    // per thread at most.
    let (_, text) = admin_get(&proxy, "/metrics", &[]).await;
    let failed = value(
        &text,
        &format!("tidegate_upstream_connect_failures_total{{group=\"app\",server=\"{dead}\"}}"),
    )
    .unwrap_or(0.0);
    assert!((1.0..=2.0).contains(&failed), "{failed}\n{text}");
}

/// The first bytes a server says on a new stream connection.
async fn read_first(addr: SocketAddr) -> String {
    tokio::time::timeout(HANG, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut b = [0u8; 16];
        let n = s.read(&mut b).await.unwrap();
        String::from_utf8_lossy(&b[..n]).into_owned()
    })
    .await
    .expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_tcp_checks_take_a_refusing_server_out() {
    let a = named("A");
    let (dead, _held) = dead_port();
    let admin = closed_port();
    // No passive ejection: only the checks can take it out. The group is
    // used by streams alone, so its checks are TCP connects.
    let proxy = Proxy::start(&config(&format!(
        "[admin]\naddress = \"{admin}\"\n\
         [[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         [upstreams.app]\nservers = [\"{}\", \"{dead}\"]\nbalance = \"round_robin\"\n\
         [upstreams.app.outlier]\nconsecutive_failures = 0\n\
         [upstreams.app.health]\ninterval = \"50ms\"\nunhealthy_threshold = 1\n",
        a.addr
    )));
    let down = format!("tidegate_upstream_server_up{{group=\"app\",server=\"{dead}\"}}");
    let up = format!(
        "tidegate_upstream_server_up{{group=\"app\",server=\"{}\"}}",
        a.addr
    );
    let text = tokio::time::timeout(HANG, async {
        loop {
            let (_, text) = admin_get(&proxy, "/metrics", &[]).await;
            if value(&text, &down) == Some(0.0) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the check takes the dead server out");
    assert_eq!(value(&text, &up), Some(1.0), "{text}");
    let failed =
        format!("tidegate_upstream_connect_failures_total{{group=\"app\",server=\"{dead}\"}}");
    let before = value(&text, &failed).unwrap_or(0.0);
    for _ in 0..4 {
        assert_eq!(read_first(proxy.addr).await, "A");
    }
    let (_, text) = admin_get(&proxy, "/metrics", &[]).await;
    assert_eq!(value(&text, &failed).unwrap_or(0.0), before, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_close_and_the_outcome_is_logged_and_counted() {
    let origin = echo_after_eof();
    let log = TempFile::new("streams-idle.log");
    let admin = closed_port();
    let proxy = Proxy::start(&config(&format!(
        "access_log = \"{}\"\naccess_log_format = \"json\"\n[admin]\naddress = \"{admin}\"\n\
         [[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"db\"\nidle_timeout = \"200ms\"\n\
         [upstreams.db]\nservers = [\"{}\"]\n",
        log.arg(),
        origin.addr
    )));
    assert_eq!(read_all(proxy.addr).await, b"");
    let series =
        "tidegate_stream_sessions_total{listener=\"127.0.0.1:0\",outcome=\"idle_timeout\"}";
    tokio::time::timeout(HANG, async {
        loop {
            let (_, text) = admin_get(&proxy, "/metrics", &[]).await;
            if value(&text, series) == Some(1.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the session counted");
    let lines = stop_and_read(proxy, &log).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["outcome"], "idle_timeout");
    assert_eq!(v["status"], 200);
    assert_eq!(v["protocol"], "TCP");
    assert_eq!(v["upstream"], origin.addr.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_in_and_out_access_rules_and_the_per_ip_cap() {
    let origin = header_echo();
    let log = TempFile::new("streams-pp.log");
    let proxy = Proxy::start(&config(&format!(
        "access_log = \"{}\"\n\
         [[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"db\"\n\
         proxy_protocol = {{ from = [\"127.0.0.0/8\"] }}\n\
         access = [\"deny 192.0.2.66\", \"allow all\"]\nmax_connections_per_ip = 1\n\
         [upstreams.db]\nservers = [\"{}\"]\nproxy_protocol = \"v1\"\n",
        log.arg(),
        origin.addr
    )));
    // The access rules see the carried client.
    let denied = "PROXY TCP4 192.0.2.66 198.51.100.1 1234 5432\r\nhello";
    assert_eq!(exchange_bytes(proxy.addr, denied.as_bytes()).await, b"");
    let v1 = "PROXY TCP4 192.0.2.7 198.51.100.1 51000 5432\r\n";
    // (Until the denied connection's place is given back, the per-IP cap
    // closes the next one: connect again until served.)
    let held = tokio::time::timeout(HANG, async {
        loop {
            let mut s = TcpStream::connect(proxy.addr).await.unwrap();
            s.write_all(format!("{v1}hello").as_bytes()).await.unwrap();
            let mut got = vec![0u8; v1.len() + 5];
            if s.read_exact(&mut got).await.is_ok() {
                // The server was told the carried client and where it
                // connected, then got the bytes.
                assert_eq!(String::from_utf8_lossy(&got), format!("{v1}hello"));
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    // While it is open, a second connection from the same address (the
    // load balancer's: admission comes before the header) is closed.
    assert_eq!(read_all(proxy.addr).await, b"");
    drop(held);
    let lines = stop_and_read(proxy, &log).await;
    let clients: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[1], f[4])
        })
        .collect();
    assert!(clients.contains(&("192.0.2.7:51000", "200")), "{lines:?}");
    assert!(clients.contains(&("192.0.2.66:1234", "403")), "{lines:?}");
}

/// Two TLS origins answering their names, and the CA that signed them.
fn origins(ca: &Ca) -> (Origin, Origin) {
    let leaf_a = ca.server(&["a.test", "*.wild.test"]);
    let leaf_b = ca.server(&["b.test"]);
    let serve = |name: &'static str| {
        move |_req: Request<hyper::body::Incoming>| async move { Response::new(full(name)) }
    };
    (
        tls_origin(
            TlsOrigin {
                leaf: &leaf_a,
                alpn: &["http/1.1"],
                client_ca: None,
            },
            serve("origin A"),
        ),
        tls_origin(
            TlsOrigin {
                leaf: &leaf_b,
                alpn: &["http/1.1"],
                client_ca: None,
            },
            serve("origin B"),
        ),
    )
}

/// `GET /` over TLS to `addr` naming `sni`: the body, or why not.
async fn tls_get(ca: &Ca, addr: SocketAddr, sni: &str) -> Result<String, String> {
    let client = Client::trusting(ca).alpn(&[b"http/1.1"]);
    let io = tokio::time::timeout(HANG, client.connect(addr, sni))
        .await
        .map_err(|_| "hang".to_string())?
        .map_err(|e| e.to_string())?;
    let req = Request::get("/").header("host", sni).body(empty()).unwrap();
    let (status, _, body) = crate::common::pki::request(io, false, req)
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(status, 200);
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_routes_pass_tls_through_by_exact_and_wildcard_name() {
    let ca = Ca::new("stream test CA");
    let (a, b) = origins(&ca);
    let log = TempFile::new("streams-sni.log");
    let proxy = Proxy::start(&config(&format!(
        "access_log = \"{}\"\n\
         [[streams]]\naddress = \"127.0.0.1:0\"\n\
         sni = [{{ names = [\"a.test\", \"*.wild.test\"], upstream = \"a\" }}, {{ names = [\"b.test\"], upstream = \"b\" }}]\n\
         [upstreams.a]\nservers = [\"{}\"]\n[upstreams.b]\nservers = [\"{}\"]\n",
        log.arg(),
        a.addr,
        b.addr
    )));
    // The client's TLS is the origin's own (its certificate verified
    // for the name): Tidegate only read the ClientHello.
    assert_eq!(
        tls_get(&ca, proxy.addr, "a.test").await.unwrap(),
        "origin A"
    );
    assert_eq!(
        tls_get(&ca, proxy.addr, "b.test").await.unwrap(),
        "origin B"
    );
    assert_eq!(
        tls_get(&ca, proxy.addr, "x.wild.test").await.unwrap(),
        "origin A"
    );
    // No route and no default: closed.
    assert!(tls_get(&ca, proxy.addr, "c.test").await.is_err());
    // Not TLS at all: closed.
    assert_eq!(
        exchange_bytes(proxy.addr, b"GET / HTTP/1.1\r\n\r\n").await,
        b""
    );
    // openssl, verifying origin B's certificate for its name.
    let port = proxy.addr.port();
    let ca_file = ca.file.arg().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", "b.test", "-verify_hostname", "b.test"])
            .args(["-CAfile", &ca_file, "-verify_return_error", "-brief"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verification: OK"), "{text}");
    let lines = stop_and_read(proxy, &log).await;
    let statuses: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[4], f[f.len() - 1])
        })
        .collect();
    assert!(statuses.contains(&("200", "a.test")), "{lines:?}");
    assert!(statuses.contains(&("200", "x.wild.test")), "{lines:?}");
    assert!(statuses.contains(&("400", "c.test")), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" 400 ") && l.ends_with(" -")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_upstream_takes_other_names_and_a_name_of_ours_goes_to_the_http_listener() {
    let ca = Ca::new("stream test CA");
    let (a, b) = origins(&ca);
    let ours = ca.server(&["app.test"]);
    let proxy = Proxy::start(&config(&format!(
        "[[listeners]]\naddress = \"127.0.0.3:0\"\n\
         [listeners.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\
         [[routes]]\nrespond = {{ status = 200, body = \"from the HTTP listener\" }}\n\
         [[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"b\"\n\
         sni = [{{ names = [\"a.test\"], upstream = \"a\" }}, {{ names = [\"app.test\"], listener = \"127.0.0.3:0\" }}]\n\
         [upstreams.a]\nservers = [\"{}\"]\n[upstreams.b]\nservers = [\"{}\"]\n",
        ours.cert_file.arg(),
        ours.key_file.arg(),
        a.addr,
        b.addr
    )));
    let stream = proxy.running().local_addrs()[1];
    assert_eq!(tls_get(&ca, stream, "a.test").await.unwrap(), "origin A");
    assert_eq!(tls_get(&ca, stream, "b.test").await.unwrap(), "origin B");
    // Handed to the HTTP listener: Tidegate's own certificate, its routes.
    assert_eq!(
        tls_get(&ca, stream, "app.test").await.unwrap(),
        "from the HTTP listener"
    );
    // curl, HTTP/2 by ALPN through the hand-over.
    let port = stream.port();
    let ca_file = ca.file.arg().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--http2", "--cacert", &ca_file])
            .args(["--resolve", &format!("app.test:{port}:127.0.0.1")])
            .args(["-w", " %{http_version}"])
            .arg(format!("https://app.test:{port}/"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from the HTTP listener 2",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_terminates_tls_and_routes_by_the_name_it_settled() {
    let ca = Ca::new("stream test CA");
    let leaf = ca.server(&["db.test", "cache.test"]);
    let db = echo_after_eof();
    let cache = named("cache");
    let proxy = Proxy::start(&config(&format!(
        "[[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"db\"\n\
         sni = [{{ names = [\"cache.test\"], upstream = \"cache\" }}]\n\
         [streams.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\
         [upstreams.db]\nservers = [\"{}\"]\n[upstreams.cache]\nservers = [\"{}\"]\n",
        leaf.cert_file.arg(),
        leaf.key_file.arg(),
        db.addr,
        cache.addr
    )));
    let client = Client::trusting(&ca).alpn(&[]);
    let mut io = client.connect(proxy.addr, "db.test").await.unwrap();
    io.write_all(b"over TLS").await.unwrap();
    // close_notify, then the TCP half-close: the server sees its end.
    io.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(HANG, io.read_to_end(&mut got))
        .await
        .unwrap()
        .ok();
    assert_eq!(got, b"over TLS");
    let mut io = client.connect(proxy.addr, "cache.test").await.unwrap();
    let mut b = [0u8; 5];
    tokio::time::timeout(HANG, io.read_exact(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&b, b"cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_written_https_get_tls_without_alpn() {
    let ca = Ca::new("stream test CA");
    let leaf = ca.server(&["localhost"]);
    let origin = tls_origin(
        TlsOrigin {
            leaf: &leaf,
            alpn: &["http/1.1"],
            client_ca: None,
        },
        |_req: Request<hyper::body::Incoming>| async move { Response::new(full("over TLS")) },
    );
    let proxy = Proxy::start(&config(&format!(
        "[[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"secure\"\n\
         [upstreams.secure]\nservers = [\"https://localhost:{}\"]\n\
         [upstreams.secure.tls]\nca_file = \"{}\"\n",
        origin.addr.port(),
        ca.file.arg()
    )));
    let (status, _, body) = get(proxy.addr, "/").await;
    assert_eq!((status, &body[..]), (200, &b"over TLS"[..]));
    assert_eq!(
        *origin.seen.sni.lock().unwrap(),
        [Some("localhost".to_string())]
    );
    assert_eq!(*origin.seen.alpn.lock().unwrap(), [None]);
}

#[test]
fn config_errors_name_the_stream_field() {
    let err = |text: &str| match tidegate::Config::from_toml(text, "t.toml") {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    };
    let g = "[upstreams.db]\nservers = [\"127.0.0.1:2\"]\n[upstreams.h2]\nservers = [\"127.0.0.1:3\"]\nprotocol = \"h2\"\n";
    let cases = [
        (
            "address = \"x\"\nupstream = \"db\"",
            "streams[0].address: `x`",
        ),
        (
            "address = \"127.0.0.1:1\"",
            "streams[0].upstream: a stream needs `upstream`",
        ),
        (
            "address = \"127.0.0.1:1\"\nupstream = \"nope\"",
            "streams[0].upstream: no upstream group named `nope`",
        ),
        (
            "address = \"127.0.0.1:1\"\nupstream = \"h2\"",
            "streams[0].upstream: `h2` speaks HTTP/2",
        ),
        (
            "address = \"127.0.0.1:1\"\nsni = [{ names = [\"a b\"], upstream = \"db\" }]",
            "streams[0].sni[0].names[0]: `a b`",
        ),
        (
            "address = \"127.0.0.1:1\"\nsni = [{ names = [\"a\"], listener = \"127.0.0.1:9\" }]",
            "streams[0].sni[0].listener: no [[listeners]] entry has the address 127.0.0.1:9",
        ),
        (
            "address = \"127.0.0.1:1\"\nsni = [{ names = [\"a\"] }]",
            "streams[0].sni[0].upstream: give one of",
        ),
        (
            "address = \"127.0.0.1:1\"\nupstream = \"db\"\nalpn = [\"x\"]",
            "streams[0].alpn: is offered when the stream terminates TLS",
        ),
        (
            "address = \"127.0.0.1:1\"\nupstream = \"db\"\npreread_timeout = \"2m\"",
            "streams[0].preread_timeout: at most 60s",
        ),
        (
            "address = \"127.0.0.1:1\"\nupstream = \"db\"\nidle = \"1s\"",
            "unknown field `idle`",
        ),
    ];
    for (stream, want) in cases {
        let e = err(&format!("[[streams]]\n{stream}\n{g}"));
        assert!(e.contains(want), "{stream}: {e}");
    }
    // A TCP check has no request to make.
    let e = err(&format!(
        "[[streams]]\naddress = \"127.0.0.1:1\"\nupstream = \"db\"\n{g}[upstreams.db.health]\npath = \"/h\"\n"
    ));
    assert!(
        e.contains("upstreams.db.health.path: only applies to `type = \"http\"` checks"),
        "{e}"
    );
    // A stream's port beside a listener's.
    let e = err(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:7000\"\n[[routes]]\nupstream = \"db\"\n\
         [[streams]]\naddress = \"127.0.0.1:7000\"\nupstream = \"db\"\n{g}"
    ));
    assert!(
        e.contains("streams[0].address: 127.0.0.1:7000 overlaps"),
        "{e}"
    );
    // Streams alone need no route.
    tidegate::Config::from_toml(
        &format!("[[streams]]\naddress = \"127.0.0.1:1\"\nupstream = \"db\"\n{g}"),
        "t.toml",
    )
    .unwrap();
}

#[test]
fn the_example_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/streams.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let config = tidegate::config::Config::from_toml(&text, path).expect("the example loads");
    let streams: Vec<_> = config
        .listeners
        .iter()
        .filter(|l| l.stream.is_some())
        .collect();
    assert_eq!(streams.len(), 3);
    let db = config.upstreams.iter().find(|g| g.name == "db").unwrap();
    assert_eq!(
        db.health.as_ref().unwrap().kind,
        tidegate::config::CheckKind::Tcp
    );
    let web = config.upstreams.iter().find(|g| g.name == "web").unwrap();
    assert!(web.health.is_none());
}

/// openssl's ClientHello naming a.test and offering `postgresql` and
/// `h2` (fuzz/corpus/client_hello).
fn openssl_hello() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/client_hello/openssl-alpn"
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_in_pieces_is_read_whole_and_passed_on_first() {
    let hello = openssl_hello();
    // The server gets the ClientHello's bytes first and unchanged.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let want = hello.len();
    let origin = raw_backend(move |mut s: TcpStream| {
        let tx = tx.clone();
        async move {
            let mut got = vec![0u8; want];
            if s.read_exact(&mut got).await.is_ok() {
                let _ = tx.send(got);
            }
        }
    });
    let other = named("other");
    let proxy = Proxy::start(&config(&format!(
        "[[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"other\"\n\
         sni = [{{ names = [\"a.test\"], alpn = [\"postgresql\"], upstream = \"a\" }}]\n\
         [upstreams.a]\nservers = [\"{}\"]\n[upstreams.other]\nservers = [\"{}\"]\n",
        origin.addr, other.addr
    )));
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for piece in [&hello[..3], &hello[3..100], &hello[100..]] {
        s.write_all(piece).await.unwrap();
        s.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    let got = tokio::time::timeout(HANG, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(got == hello, "the ClientHello changed on the way");
    // A route whose ALPN protocols the client does not offer is passed
    // over: the name alone does not take it.
    let proxy = Proxy::start(&config(&format!(
        "[[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"other\"\n\
         sni = [{{ names = [\"a.test\"], alpn = [\"http/1.1\"], upstream = \"a\" }}]\n\
         [upstreams.a]\nservers = [\"{}\"]\n[upstreams.other]\nservers = [\"{}\"]\n",
        origin.addr, other.addr
    )));
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&hello).await.unwrap();
    let mut name = [0u8; 5];
    tokio::time::timeout(HANG, s.read_exact(&mut name))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(&name, b"other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_open_streams_and_moves_new_ones() {
    let (a, b) = (named("A"), named("B"));
    let stream = |group: &str, extra: &str| {
        config(&format!(
            "[[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"{group}\"\n{extra}\
             [upstreams.a]\nservers = [\"{}\"]\n[upstreams.b]\nservers = [\"{}\"]\n",
            a.addr, b.addr
        ))
    };
    let mut proxy = Proxy::start(&stream("a", ""));
    let addr = proxy.addr;
    // A stream open across the reload.
    let mut open = TcpStream::connect(addr).await.unwrap();
    let mut hello = [0u8; 1];
    tokio::time::timeout(HANG, open.read_exact(&mut hello))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&hello, b"A");
    tokio::task::block_in_place(|| {
        proxy.reload(&stream(
            "b",
            "[[streams]]\naddress = \"127.0.0.2:0\"\nupstream = \"a\"\n",
        ))
    });
    // The same port (kept: same address) now goes to B; the new stream to A.
    assert_eq!(read_first(addr).await, "B");
    let added = proxy.running().local_addrs()[1];
    assert_eq!(read_first(added).await, "A");
    // The open one still carries bytes, to A, until it closes.
    open.write_all(b"still here").await.unwrap();
    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(HANG, open.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_hangs_times_out_and_the_next_server_takes_the_stream() {
    let b = named("B");
    let (hung, _queue) = hung_port();
    let admin = closed_port();
    let log = TempFile::new("streams-connect.log");
    // No ejection: every other connection tries the hung server first.
    let proxy = Proxy::start(&config(&format!(
        "access_log = \"{}\"\n[admin]\naddress = \"{admin}\"\n\
         [[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"app\"\nconnect_timeout = \"200ms\"\n\
         [[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"hung\"\nconnect_timeout = \"200ms\"\n\
         [upstreams.app]\nservers = [\"{hung}\", \"{}\"]\nbalance = \"round_robin\"\n\
         [upstreams.app.outlier]\nconsecutive_failures = 0\n\
         [upstreams.hung]\nservers = [\"{hung}\"]\n",
        log.arg(),
        b.addr
    )));
    for _ in 0..4 {
        assert_eq!(read_first(proxy.addr).await, "B");
    }
    let (_, text) = admin_get(&proxy, "/metrics", &[]).await;
    let failed = value(
        &text,
        &format!("tidegate_upstream_connect_failures_total{{group=\"app\",server=\"{hung}\"}}"),
    );
    assert!(failed.is_some_and(|n| n >= 1.0), "{text}");
    // With no other server, the client is closed once the wait ends.
    let only_hung = proxy.running().local_addrs()[1];
    assert_eq!(read_all(only_hung).await, b"");
    let lines = stop_and_read(proxy, &log).await;
    let failed: Vec<&String> = lines.iter().filter(|l| l.contains(" 502 ")).collect();
    assert_eq!(failed.len(), 1, "{lines:?}");
    assert!(failed[0].contains(" no_upstream"), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_listener_closes_the_newcomer_after_its_wait() {
    let b = named("B");
    let proxy = Proxy::start(&config(&format!(
        "[timeouts]\nclient_header = \"300ms\"\n\
         [[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"app\"\nmax_connections = 1\n\
         [upstreams.app]\nservers = [\"{}\"]\n",
        b.addr
    )));
    // The listener's one place is taken: the next connection waits, is
    // never proxied, and is closed.
    one_place_taken_then_given_back(proxy.addr).await;
}

/// While one stream to server "B" is open, the next connection is closed
/// unserved; once it closes, a new one is served again.
async fn one_place_taken_then_given_back(addr: SocketAddr) {
    let mut held = TcpStream::connect(addr).await.unwrap();
    let mut name = [0u8; 1];
    held.read_exact(&mut name).await.unwrap();
    assert_eq!(&name, b"B");
    assert_eq!(read_all(addr).await, b"");
    drop(held);
    tokio::time::timeout(HANG, async {
        while read_first(addr).await != "B" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("served again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_max_connections_counts_its_open_streams() {
    let b = named("B");
    let log = TempFile::new("streams-server-cap.log");
    let proxy = Proxy::start(&config(&format!(
        "access_log = \"{}\"\n\
         [[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         [upstreams.app]\nservers = [\"{}\"]\nmax_connections = 1\n",
        log.arg(),
        b.addr
    )));
    // The server's one place is the open stream's: the next is closed.
    one_place_taken_then_given_back(proxy.addr).await;
    let lines = stop_and_read(proxy, &log).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" 502 ") && l.contains(" no_upstream")),
        "{lines:?}"
    );
}

/// A stream listener with SNI routes, a JSON access log, and
/// `preread_timeout`.
fn sni_proxy(log: &TempFile, other: &Backend, preread: &str) -> Proxy {
    Proxy::start(&config(&format!(
        "access_log = \"{}\"\naccess_log_format = \"json\"\n\
         [[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"other\"\npreread_timeout = \"{preread}\"\n\
         sni = [{{ names = [\"a.test\"], upstream = \"other\" }}]\n\
         [upstreams.other]\nservers = [\"{}\"]\n",
        log.arg(),
        other.addr
    )))
}

/// The outcomes of the JSON access log's lines.
fn outcomes(lines: &[String]) -> Vec<(u64, String)> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["status"].as_u64().unwrap(),
                v["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_past_16_kib_is_refused_without_waiting_for_the_rest() {
    let other = named("other");
    let log = TempFile::new("streams-preread-cap.log");
    // The longest wait there is: only the cap can end this preread early.
    let proxy = sni_proxy(&log, &other, "60s");
    // A ClientHello of 20,000 bytes over two records; 16,494 of them
    // sent, the connection left open.
    let mut hello = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x4e, 0x20];
    hello.resize(5 + 16384, 0);
    hello.extend_from_slice(&[0x16, 0x03, 0x01, 0x0e, 0x24]);
    hello.extend_from_slice(&[0u8; 100]);
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let _ = s.write_all(&hello).await;
    let mut got = Vec::new();
    tokio::time::timeout(HANG / 2, s.read_to_end(&mut got))
        .await
        .expect("closed at the cap, not at the preread's end")
        .ok();
    assert_eq!(got, b"");
    let lines = stop_and_read(proxy, &log).await;
    assert_eq!(outcomes(&lines), [(400, "bad_client_hello".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_late_past_preread_timeout_is_closed() {
    let other = named("other");
    let log = TempFile::new("streams-preread-late.log");
    let proxy = sni_proxy(&log, &other, "300ms");
    // A record header's first bytes, then nothing.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(HANG, s.read_to_end(&mut got))
        .await
        .expect("closed")
        .ok();
    assert_eq!(got, b"");
    let lines = stop_and_read(proxy, &log).await;
    assert_eq!(outcomes(&lines), [(400, "bad_client_hello".into())]);
}

/// Reads a v2 header, says `what` of it and a line's end, then echoes.
fn v2_says(what: fn(&PpV2) -> String) -> Backend {
    raw_backend(move |mut s: TcpStream| async move {
        let Some(h) = read_pp_v2(&mut s).await else {
            return;
        };
        let _ = s.write_all(format!("{}\n", what(&h)).as_bytes()).await;
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        let _ = s.write_all(&rest).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_listeners_read_proxy_headers_only_from_trusted_peers() {
    let (v2, v1) = (v2_says(|h| h.addresses.clone()), header_echo());
    let proxy = Proxy::start(&config(&format!(
        "[[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"v2\"\n\
         proxy_protocol = {{ from = [\"127.0.0.0/8\"], mode = \"required\", timeout = \"300ms\" }}\n\
         [[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"v1\"\n\
         proxy_protocol = {{ from = [\"192.0.2.0/24\"] }}\n\
         [[streams]]\naddress = \"127.0.0.1:0\"\nupstream = \"v1\"\n\
         proxy_protocol = {{ from = [\"127.0.0.0/8\"], mode = \"optional\" }}\n\
         [upstreams.v2]\nservers = [\"{}\"]\nproxy_protocol = \"v2\"\n\
         [upstreams.v1]\nservers = [\"{}\"]\nproxy_protocol = \"v1\"\n",
        v2.addr, v1.addr
    )));
    let addrs = proxy.running().local_addrs();
    let (required, untrusted, optional) = (addrs[0], addrs[1], addrs[2]);
    // A trusted peer's v2 header names the client, which the server's
    // own v2 header then carries.
    let (client, dst) = (
        "192.0.2.7:51000".parse().unwrap(),
        "198.51.100.1:5432".parse().unwrap(),
    );
    let got = exchange_bytes(required, &[pp_v2(client, dst), b"hello".to_vec()].concat()).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("{client} {dst}\nhello")
    );
    // Required: none, or none in time, closes the connection.
    assert_eq!(exchange_bytes(required, b"hello").await, b"");
    assert_eq!(read_all(required).await, b"");
    // A peer that is not trusted is not read: its header is data, and
    // the server is told the peer itself.
    let sent = "PROXY TCP4 192.0.2.7 198.51.100.1 51000 5432\r\nhello";
    let got = String::from_utf8(exchange_bytes(untrusted, sent.as_bytes()).await).unwrap();
    assert!(got.starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 "), "{got}");
    assert!(got.ends_with(&format!("\r\n{sent}")), "{got}");
    // Optional: a trusted peer may send none.
    let got = String::from_utf8(exchange_bytes(optional, b"hello").await).unwrap();
    assert!(got.starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 "), "{got}");
    assert!(got.ends_with("\r\nhello"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_through_streams_v2_header_names_the_server_the_client_asked_for() {
    // PP2_TYPE_AUTHORITY and PP2_TYPE_ALPN (none: passed through, no
    // protocol is settled here).
    let origin = v2_says(|h| format!("{} {}", h.tlv(0x02), h.tlv(0x01)));
    let proxy = Proxy::start(&config(&format!(
        "[[streams]]\naddress = \"127.0.0.1:0\"\n\
         sni = [{{ names = [\"a.test\"], upstream = \"a\" }}]\n\
         [upstreams.a]\nservers = [\"{}\"]\nproxy_protocol = \"v2\"\n",
        origin.addr
    )));
    let hello = openssl_hello();
    let got = exchange_bytes(proxy.addr, &hello).await;
    // The header, then the ClientHello as it came.
    assert_eq!(&got[..9], b"a.test -\n");
    assert!(got[9..] == hello[..], "the ClientHello changed on the way");
}
