//! TLS termination and HTTP/2 towards clients: certificates by SNI, ALPN,
//! h2c, 421 for misdirected requests, client certificates, the HTTPS
//! redirect and HSTS, certificates re-read on reload. Real handshakes with
//! rustls clients, certificates made at test time.

use std::net::SocketAddr;

use crate::common::pki::{self, Ca, Client, Leaf};
use crate::common::*;
use http::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers with what it saw: version, host, forwarding fields, the client
/// subject header.
fn echo_backend() -> Backend {
    backend(|req: Request<hyper::body::Incoming>| async move {
        let h = |n: &str| {
            req.headers()
                .get_all(n)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        let out = format!(
            "version={:?}\nhost={}\nproto={}\nvia={}\nsubject={}\ncookie={}\n",
            req.version(),
            h("host"),
            h("x-forwarded-proto"),
            h("via"),
            h("x-client-subject"),
            h("cookie"),
        );
        Response::new(full(out))
    })
}

fn line<'a>(body: &'a str, key: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {body}"))
}

fn certs_toml(certs: &[&Leaf]) -> String {
    certs
        .iter()
        .map(|c| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                c.cert_file.arg(),
                c.key_file.arg()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn tls_config(
    upstream: SocketAddr,
    certs: &[&Leaf],
    listener_extra: &str,
    tls_extra: &str,
) -> String {
    format!(
        r#"
[server]
threads = 2
shutdown_grace = "10s"
log_level = "warn"

[[listeners]]
address = "127.0.0.1:0"
{listener_extra}
[listeners.tls]
certificates = [{certs}]
{tls_extra}

[[routes]]
upstream = "app"

[upstreams.app]
servers = ["{upstream}"]
"#,
        certs = certs_toml(certs),
    )
}

fn get_req(host: &str, path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", host)
        .body(empty())
        .expect("request")
}

/// A request built for an h2 connection: the host goes in :authority.
fn h2_req(authority: &str, path: &str) -> Request<Body> {
    Request::get(format!("https://{authority}{path}"))
        .body(empty())
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_unknown_names_get_the_default() {
    let ca = Ca::new("Test CA");
    let a = ca.server(&["a.test"]);
    let wild = ca.server(&["*.b.test"]);
    let c = ca.server(&["c.test", "www.c.test"]);
    let origin = echo_backend();
    let proxy = Proxy::start(&tls_config(origin.addr, &[&a, &wild, &c], "", ""));

    for (sni, want) in [
        ("a.test", &a),
        ("x.b.test", &wild),
        ("www.c.test", &c),
        ("c.test", &c),
        ("unknown.test", &a),
        ("b.test", &a),
    ] {
        let s = Client::any_cert()
            .connect(proxy.addr, sni)
            .await
            .expect("handshake");
        assert_eq!(pki::peer_cert(&s), want.der, "certificate for SNI {sni}");
    }
    // And a verifying client accepts the chosen certificate.
    let s = Client::trusting(&ca)
        .connect(proxy.addr, "deep.b.test")
        .await
        .expect("verified handshake for a wildcard name");
    let h2 = pki::is_h2(&s);
    let (status, _, body) = pki::request(s, h2, h2_req("deep.b.test", "/"))
        .await
        .expect("request");
    assert_eq!(status, 200);
    assert_eq!(line(&String::from_utf8_lossy(&body), "proto"), "https");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_negotiates_h2_and_http1_both_reach_the_origin() {
    let ca = Ca::new("Test CA");
    let a = ca.server(&["a.test"]);
    let origin = echo_backend();
    let proxy = Proxy::start(&tls_config(origin.addr, &[&a], "", ""));

    // h2 by ALPN.
    let s = Client::trusting(&ca)
        .connect(proxy.addr, "a.test")
        .await
        .expect("tls");
    assert!(pki::is_h2(&s), "h2 negotiated");
    let req = Request::get("https://a.test/h2")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(empty())
        .expect("request");
    let (status, headers, body) = pki::request(s, true, req).await.expect("h2 request");
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200);
    assert_eq!(
        line(&body, "version"),
        "HTTP/1.1",
        "origin hop stays HTTP/1.1"
    );
    assert_eq!(line(&body, "host"), "a.test");
    assert_eq!(line(&body, "proto"), "https");
    assert_eq!(line(&body, "via"), "2 tidegate");
    assert_eq!(line(&body, "cookie"), "a=1; b=2", "h2 cookie fields joined");
    assert!(headers.get("via").is_some());

    // HTTP/1.1 by ALPN, and with no ALPN at all.
    for alpn in [&[&b"http/1.1"[..]][..], &[][..]] {
        let s = Client::trusting(&ca)
            .alpn(alpn)
            .connect(proxy.addr, "a.test")
            .await
            .expect("tls");
        assert!(!pki::is_h2(&s));
        let (status, _, body) = pki::request(s, false, get_req("a.test", "/h1"))
            .await
            .expect("h1 request");
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, 200);
        assert_eq!(line(&body, "via"), "1.1 tidegate");
        assert_eq!(line(&body, "proto"), "https");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_on_one_h2_connection_all_succeed() {
    let ca = Ca::new("Test CA");
    let a = ca.server(&["a.test"]);
    let origin = backend(|req: Request<hyper::body::Incoming>| async move {
        Response::new(full(req.uri().path().to_string()))
    });
    let proxy = Proxy::start(&tls_config(origin.addr, &[&a], "", ""));
    let s = Client::trusting(&ca)
        .connect(proxy.addr, "a.test")
        .await
        .expect("tls");
    let io = hyper_util::rt::TokioIo::new(s);
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            use http_body_util::BodyExt;
            let resp = sender
                .send_request(h2_req("a.test", &format!("/s/{i}")))
                .await
                .expect("response");
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(body, format!("/s/{i}"));
        }));
    }
    for t in tasks {
        tokio::time::timeout(HANG, t)
            .await
            .expect("no hang")
            .expect("stream ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_and_http1_share_a_plain_listener() {
    let origin = echo_backend();
    let proxy = Proxy::to(origin.addr, "");
    let tcp = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let req = Request::get(format!("http://{}/h2c", proxy.addr))
        .body(empty())
        .expect("request");
    let (status, _, body) = pki::request(tcp, true, req).await.expect("h2c request");
    assert_eq!(status, 200);
    assert_eq!(line(&String::from_utf8_lossy(&body), "via"), "2 tidegate");
    assert_eq!(line(&String::from_utf8_lossy(&body), "proto"), "http");

    let (status, _, body) = get(proxy.addr, "/h1").await;
    assert_eq!(status, 200);
    assert_eq!(line(&String::from_utf8_lossy(&body), "via"), "1.1 tidegate");

    // A POST (whose first byte matches the preface's) is still HTTP/1.1.
    let mut c = RawConn::connect(proxy.addr).await;
    c.send(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        .await;
    assert_eq!(c.response().await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_can_be_turned_off() {
    let ca = Ca::new("Test CA");
    let a = ca.server(&["a.test"]);
    let origin = echo_backend();
    let proxy = Proxy::start(&tls_config(origin.addr, &[&a], "http2 = false", ""));
    let s = Client::trusting(&ca)
        .connect(proxy.addr, "a.test")
        .await
        .expect("tls");
    assert!(!pki::is_h2(&s), "h2 not offered");
    let (status, _, _) = pki::request(s, false, get_req("a.test", "/"))
        .await
        .expect("h1");
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_the_certificate_does_not_cover_gets_421() {
    let ca = Ca::new("Test CA");
    let a = ca.server(&["a.test", "alt.test"]);
    let b = ca.server(&["b.test"]);
    let origin = echo_backend();
    let proxy = Proxy::start(&tls_config(origin.addr, &[&a, &b], "", ""));

    let cases = [
        ("a.test", "a.test:443", 200),
        ("a.test", "A.TEST", 200),
        // Same certificate covers both: allowed (h2 connection reuse).
        ("a.test", "alt.test", 200),
        ("a.test", "b.test", 421),
        ("b.test", "a.test", 421),
    ];
    for (sni, host, want) in cases {
        for h2 in [false, true] {
            let alpn: &[&'static [u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
            let s = Client::trusting(&ca)
                .alpn(alpn)
                .connect(proxy.addr, sni)
                .await
                .expect("tls");
            let req = if h2 {
                h2_req(host, "/")
            } else {
                get_req(host, "/")
            };
            let (status, _, _) = pki::request(s, h2, req).await.expect("request");
            assert_eq!(status, want, "SNI {sni}, host {host}, h2 {h2}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_their_subject_goes_upstream() {
    let ca = Ca::new("Server CA");
    let clients = Ca::new("Client CA");
    let stranger_ca = Ca::new("Other CA");
    let a = ca.server(&["a.test"]);
    let alice = clients.client("alice");
    let mallory = stranger_ca.client("mallory");
    let client_ca = &clients.file;
    let origin = echo_backend();
    let proxy = Proxy::start(&tls_config(
        origin.addr,
        &[&a],
        "",
        &format!("client_ca = \"{}\"", client_ca.arg()),
    ));

    // With a valid certificate: through, with the verified subject; a
    // subject header the client sends itself is replaced.
    let s = Client::trusting(&ca)
        .alpn(&[b"http/1.1"])
        .with_cert(&alice)
        .connect(proxy.addr, "a.test")
        .await
        .expect("tls");
    let req = Request::get("/")
        .header("host", "a.test")
        .header("x-client-subject", "CN=admin")
        .body(empty())
        .expect("request");
    let (status, _, body) = pki::request(s, false, req).await.expect("request");
    assert_eq!(status, 200);
    let subject = line(&String::from_utf8_lossy(&body), "subject").to_string();
    assert!(subject.contains("CN=alice"), "subject {subject}");
    assert!(!subject.contains("admin"));

    // Without one, or with one from another CA: refused.
    for client in [
        Client::trusting(&ca).alpn(&[b"http/1.1"]),
        Client::trusting(&ca)
            .alpn(&[b"http/1.1"])
            .with_cert(&mallory),
    ] {
        let refused = async {
            let s = client.connect(proxy.addr, "a.test").await?;
            pki::request(s, false, get_req("a.test", "/"))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        };
        let r = tokio::time::timeout(HANG, refused).await.expect("no hang");
        assert!(r.is_err(), "client without a valid certificate got {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates_let_anonymous_clients_in_without_a_subject() {
    let ca = Ca::new("Server CA");
    let clients = Ca::new("Client CA");
    let a = ca.server(&["a.test"]);
    let bob = clients.client("bob");
    let client_ca = &clients.file;
    let origin = echo_backend();
    let proxy = Proxy::start(&tls_config(
        origin.addr,
        &[&a],
        "",
        &format!(
            "client_ca = \"{}\"\nclient_auth = \"optional\"\nclient_subject_header = \"X-Client-Subject\"",
            client_ca.arg()
        ),
    ));
    let s = Client::trusting(&ca)
        .alpn(&[b"http/1.1"])
        .connect(proxy.addr, "a.test")
        .await
        .expect("tls");
    let req = Request::get("/")
        .header("host", "a.test")
        .header("x-client-subject", "CN=forged")
        .body(empty())
        .expect("request");
    let (status, _, body) = pki::request(s, false, req).await.expect("anonymous");
    assert_eq!(status, 200);
    assert_eq!(line(&String::from_utf8_lossy(&body), "subject"), "");

    let s = Client::trusting(&ca)
        .with_cert(&bob)
        .connect(proxy.addr, "a.test")
        .await
        .expect("tls");
    let (_, _, body) = pki::request(s, true, h2_req("a.test", "/"))
        .await
        .expect("bob");
    assert!(line(&String::from_utf8_lossy(&body), "subject").contains("CN=bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_listener_redirects_to_https_and_tls_adds_hsts() {
    let ca = Ca::new("Test CA");
    let a = ca.server(&["a.test"]);
    let origin = echo_backend();
    let config = format!(
        r#"
[server]
threads = 1
log_level = "warn"

[[listeners]]
address = "127.0.0.1:0"
redirect_https = 8443

[[listeners]]
address = "127.0.0.1:0"
hsts = "max-age=63072000; includeSubDomains"
[listeners.tls]
certificates = [{certs}]

[[listeners]]
address = "127.0.0.1:0"
redirect_https = 443

[[routes]]
upstream = "app"

[upstreams.app]
servers = ["{upstream}"]
"#,
        certs = certs_toml(&[&a]),
        upstream = origin.addr,
    );
    let proxy = Proxy::start(&config);
    let addrs = proxy.running().local_addrs().to_vec();

    let mut c = RawConn::connect(addrs[0]).await;
    c.send(b"GET /x?y=1 HTTP/1.1\r\nHost: a.test:8080\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://a.test:8443/x?y=1"));
    assert!(
        !r.has("strict-transport-security"),
        "no HSTS over plain HTTP"
    );
    c.send(b"POST /form HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 308, "other methods keep method and body");
    assert_eq!(r.header("location"), Some("https://a.test:8443/form"));

    let mut c = RawConn::connect(addrs[2]).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(
        c.response().await.header("location"),
        Some("https://a.test/"),
        "port 443 is left out"
    );

    let s = Client::trusting(&ca)
        .connect(addrs[1], "a.test")
        .await
        .expect("tls");
    let (status, headers, _) = pki::request(s, true, h2_req("a.test", "/"))
        .await
        .expect("h2");
    assert_eq!(status, 200);
    assert_eq!(
        headers
            .get("strict-transport-security")
            .map(|v| v.as_bytes()),
        Some(&b"max-age=63072000; includeSubDomains"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rereads_certificates() {
    let ca = Ca::new("Test CA");
    let first = ca.server(&["a.test"]);
    let second = ca.server(&["a.test"]);
    let cert = TempFile::with("live-cert.pem", first.cert_pem.as_bytes());
    let key = TempFile::with("live-key.pem", first.key_pem.as_bytes());
    let origin = echo_backend();
    let config = |c: &TempFile, k: &TempFile| {
        config_to(origin.addr, "")
            .replace(
                "address = \"127.0.0.1:0\"",
                &format!(
                    "address = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]",
                    c.arg(),
                    k.arg()
                ),
            )
    };
    let mut proxy = Proxy::start(&config(&cert, &key));
    let s = Client::trusting(&ca)
        .connect(proxy.addr, "a.test")
        .await
        .expect("tls");
    assert_eq!(pki::peer_cert(&s), first.der);

    std::fs::write(cert.arg(), &second.cert_pem).expect("write cert");
    std::fs::write(key.arg(), &second.key_pem).expect("write key");
    proxy.reload(&config(&cert, &key));
    let s2 = Client::trusting(&ca)
        .connect(proxy.addr, "a.test")
        .await
        .expect("tls");
    assert_eq!(
        pki::peer_cert(&s2),
        second.der,
        "new connections get the new certificate"
    );
    // The connection made before the reload still works.
    let (status, _, _) = pki::request(s, true, h2_req("a.test", "/"))
        .await
        .expect("old conn");
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_cut_off() {
    let ca = Ca::new("Test CA");
    let a = ca.server(&["a.test"]);
    let origin = echo_backend();
    let mut config = tls_config(origin.addr, &[&a], "", "");
    config.push_str("\n[timeouts]\ntls_handshake = \"300ms\"\n");
    let proxy = Proxy::start(&config);
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    // Half a ClientHello record header, then nothing.
    tcp.write_all(&[0x16, 0x03]).await.expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(HANG, tcp.read(&mut buf))
        .await
        .expect("closed before the hang bound")
        .unwrap_or(0);
    assert_eq!(n, 0, "proxy closed the connection");
}

#[test]
fn bad_tls_config_is_refused_with_file_field_and_reason() {
    let ca = Ca::new("Test CA");
    let a = ca.server(&["a.test"]);
    let b = ca.server(&["b.test"]);
    let upstream: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    // Loading checks the text; putting it into service reads the files.
    let err = |toml: &str| {
        tidegate::Config::from_toml(toml, "bad.toml")
            .and_then(tidegate::check)
            .expect_err("refused")
            .to_string()
    };
    let missing =
        tls_config(upstream, &[&a], "", "").replace(a.cert_file.arg(), "/nonexistent/cert.pem");
    let e = err(&missing);
    assert!(
        e.contains("bad.toml")
            && e.contains("listeners[0].tls")
            && e.contains("/nonexistent/cert.pem"),
        "{e}"
    );

    let mismatched =
        tls_config(upstream, &[&a], "", "").replace(a.key_file.arg(), b.key_file.arg());
    let e = err(&mismatched);
    assert!(e.contains("listeners[0].tls") && e.contains("key"), "{e}");

    let e = err(&tls_config(upstream, &[&a], "", "min_version = \"1.1\""));
    assert!(e.contains("listeners[0].tls.min_version"), "{e}");

    let e = err(&tls_config(
        upstream,
        &[&a],
        "",
        "client_auth = \"optional\"",
    ));
    assert!(e.contains("client_ca"), "{e}");

    let e = err(&config_to(upstream, "").replace(
        "address = \"127.0.0.1:0\"",
        "address = \"127.0.0.1:0\"\nhsts = \"max-age=1\"",
    ));
    assert!(e.contains("listeners[0].hsts"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_12_and_13_are_accepted_and_min_version_holds() {
    let ca = Ca::new("Test CA");
    let a = ca.server(&["a.test"]);
    let origin = echo_backend();
    let proxy = Proxy::start(&tls_config(origin.addr, &[&a], "", ""));
    let s = Client::trusting(&ca)
        .connect(proxy.addr, "a.test")
        .await
        .expect("tls 1.3");
    assert_eq!(pki::version(&s), Some(rustls::ProtocolVersion::TLSv1_3));
    let s = Client::trusting(&ca)
        .tls12()
        .connect(proxy.addr, "a.test")
        .await
        .expect("tls 1.2");
    assert_eq!(pki::version(&s), Some(rustls::ProtocolVersion::TLSv1_2));
    let h2 = pki::is_h2(&s);
    let (status, _, _) = pki::request(s, h2, h2_req("a.test", "/"))
        .await
        .expect("request");
    assert_eq!(status, 200);

    let strict = Proxy::start(&tls_config(origin.addr, &[&a], "", "min_version = \"1.3\""));
    let r = Client::trusting(&ca)
        .tls12()
        .connect(strict.addr, "a.test")
        .await;
    assert!(
        r.is_err(),
        "a TLS 1.2 client is refused when min_version is 1.3"
    );
    Client::trusting(&ca)
        .connect(strict.addr, "a.test")
        .await
        .expect("TLS 1.3 still accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_stream_and_header_limits_are_advertised_and_enforced() {
    let origin = echo_backend();
    let config = config_to(origin.addr, "[limits]\nmax_request_head_bytes = 4096\n").replace(
        "address = \"127.0.0.1:0\"",
        "address = \"127.0.0.1:0\"\nmax_concurrent_streams = 7",
    );
    let proxy = Proxy::start(&config);

    let tcp = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::pin!(conn);
    let exchange = async {
        let mut client = client.ready().await.expect("ready");
        let req = Request::get(format!("http://{}/", proxy.addr))
            .body(())
            .expect("request");
        let (resp, _) = client.send_request(req, true).expect("send");
        resp.await.expect("response").status()
    };
    let status = tokio::select! {
        s = exchange => s,
        r = &mut conn => panic!("connection ended first: {r:?}"),
    };
    assert_eq!(status, 200);
    assert_eq!(
        conn.max_concurrent_send_streams(),
        7,
        "SETTINGS_MAX_CONCURRENT_STREAMS"
    );

    // A header list past max_request_head_bytes is refused.
    let tcp = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let req = Request::get(format!("http://{}/", proxy.addr))
        .header("x-big", "a".repeat(8192))
        .body(empty())
        .expect("request");
    // Refused with 431, or at the stream level: either way not proxied.
    if let Ok((status, _, _)) = pki::request(tcp, true, req).await {
        assert_eq!(status, 431, "oversized header list");
    }
}
