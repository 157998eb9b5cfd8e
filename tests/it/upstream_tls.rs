//! `https://` upstreams: verification against a CA file, refusal (502, with
//! rustls' reason) of unknown issuers and wrong names, the testing-only
//! skip, SNI, client certificates (mTLS), health checks over TLS.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::pki::{Ca, Leaf};
use crate::common::tls_origin::*;
use crate::common::*;

fn https(o: &Origin) -> String {
    format!("\"https://{}\"", o.addr)
}

fn tls_table(keys: &str) -> String {
    format!("[upstreams.app.tls]\n{keys}")
}

fn ca_file(ca: &Ca) -> String {
    format!("ca_file = \"{}\"", ca.file.arg())
}

/// What the proxy says (as its log line would) when it cannot connect to
/// the group's first server.
async fn connect_error(toml: &str, addr: std::net::SocketAddr) -> String {
    let config = tidegate::Config::from_toml(toml, "t.toml").expect("valid config");
    let upstreams = tidegate::upstream::registry::Registry::default()
        .build(&config)
        .expect("built");
    let server = &upstreams.groups[0].servers[0];
    match tidegate::upstream::open(addr, server.tls.as_ref(), HANG, None).await {
        Ok(_) => panic!("connected"),
        Err(e) => {
            assert_eq!(e.status(), 502, "{e}");
            e.chain()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_verified_against_a_ca_file() {
    let ca = Ca::new("test ca");
    let leaf = ca.server(&["127.0.0.1"]);
    let origin = tls_origin(
        TlsOrigin {
            leaf: &leaf,
            alpn: &["http/1.1"],
            client_ca: None,
        },
        version_answer,
    );
    let proxy = Proxy::start(&config(1, &https(&origin), &tls_table(&ca_file(&ca))));
    for _ in 0..3 {
        let (status, _, body) = get(proxy.addr, "/").await;
        assert_eq!(status, 200);
        assert_eq!(body, "HTTP/1.1");
    }
    // Kept alive and reused over TLS.
    assert_eq!(origin.seen.connections.load(Ordering::SeqCst), 1);
    // An IP address is no SNI name: none is sent.
    assert_eq!(*origin.seen.sni.lock().unwrap(), vec![None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_issuer_is_refused_with_502_and_the_reason() {
    let ca = Ca::new("real ca");
    let other = Ca::new("other ca");
    let leaf = other.server(&["127.0.0.1"]);
    let origin = tls_origin(
        TlsOrigin {
            leaf: &leaf,
            alpn: &[],
            client_ca: None,
        },
        version_answer,
    );
    let toml = config(1, &https(&origin), &tls_table(&ca_file(&ca)));
    let proxy = Proxy::start(&toml);
    let (status, _, _) = get(proxy.addr, "/").await;
    assert_eq!(status, 502);
    let err = connect_error(&toml, origin.addr).await;
    assert!(
        err.contains("TLS handshake failed: invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_another_name_is_refused_with_502() {
    let ca = Ca::new("test ca");
    let leaf = ca.server(&["other.test"]);
    let origin = tls_origin(
        TlsOrigin {
            leaf: &leaf,
            alpn: &[],
            client_ca: None,
        },
        version_answer,
    );
    let toml = config(
        1,
        &https(&origin),
        &tls_table(&format!("{}\nserver_name = \"backend.test\"", ca_file(&ca))),
    );
    let proxy = Proxy::start(&toml);
    let (status, _, _) = get(proxy.addr, "/").await;
    assert_eq!(status, 502);
    let err = connect_error(&toml, origin.addr).await;
    assert!(
        err.contains("TLS handshake failed: invalid peer certificate"),
        "{err}"
    );
    assert!(err.contains("backend.test"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_verification_accepts_a_self_signed_certificate() {
    let leaf = Leaf::self_signed(&["anything.test"]);
    let origin = tls_origin(
        TlsOrigin {
            leaf: &leaf,
            alpn: &[],
            client_ca: None,
        },
        version_answer,
    );
    let proxy = Proxy::start(&config(
        1,
        &https(&origin),
        &tls_table("insecure_skip_verify_for_testing_only = true"),
    ));
    let (status, _, body) = get(proxy.addr, "/").await;
    assert_eq!(status, 200);
    assert_eq!(body, "HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_is_the_configured_server_name() {
    let ca = Ca::new("test ca");
    let leaf = ca.server(&["backend.test"]);
    let origin = tls_origin(
        TlsOrigin {
            leaf: &leaf,
            alpn: &[],
            client_ca: None,
        },
        version_answer,
    );
    let proxy = Proxy::start(&config(
        1,
        &https(&origin),
        &tls_table(&format!("{}\nserver_name = \"backend.test\"", ca_file(&ca))),
    ));
    let (status, _, _) = get(proxy.addr, "/").await;
    assert_eq!(status, 200);
    assert_eq!(
        *origin.seen.sni.lock().unwrap(),
        vec![Some("backend.test".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_for_an_upstream_that_requires_one() {
    let ca = Ca::new("server ca");
    let clients = Ca::new("client ca");
    let leaf = ca.server(&["127.0.0.1"]);
    let client = clients.client("proxy.test");
    let origin = tls_origin(
        TlsOrigin {
            leaf: &leaf,
            alpn: &[],
            client_ca: Some(&clients),
        },
        version_answer,
    );
    let with_cert = Proxy::start(&config(
        1,
        &https(&origin),
        &tls_table(&format!(
            "{}\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            ca_file(&ca),
            client.cert_file.arg(),
            client.key_file.arg()
        )),
    ));
    let (status, _, body) = get(with_cert.addr, "/").await;
    assert_eq!(status, 200);
    assert_eq!(body, "HTTP/1.1");

    let without = Proxy::start(&config(1, &https(&origin), &tls_table(&ca_file(&ca))));
    let (status, _, _) = get(without.addr, "/").await;
    assert_eq!(status, 502);
    let refused = origin.seen.refused.lock().unwrap().clone();
    assert!(
        refused.iter().any(|e| e.contains("certificate")),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_use_tls_for_https_groups() {
    let ca = Ca::new("test ca");
    let leaf = ca.server(&["127.0.0.1"]);
    let checks = Arc::new(AtomicUsize::new(0));
    let c = checks.clone();
    let origin = tls_origin(
        TlsOrigin {
            leaf: &leaf,
            alpn: &[],
            client_ca: None,
        },
        move |req: http::Request<hyper::body::Incoming>| {
            let c = c.clone();
            async move {
                if req.uri().path() == "/healthz" {
                    c.fetch_add(1, Ordering::SeqCst);
                }
                text(200, "ok")
            }
        },
    );
    let proxy = Proxy::start(&config(
        1,
        &https(&origin),
        &format!(
            "{}\n[upstreams.app.health]\npath = \"/healthz\"\ninterval = \"20ms\"\n\
             unhealthy_threshold = 1\n",
            tls_table(&ca_file(&ca))
        ),
    ));
    // The origin speaks only TLS: a check it answered came over TLS.
    tokio::time::timeout(HANG, async {
        while checks.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("health checks arrive");
    // Checks that failed would have taken the only server out (503).
    let (status, _, _) = get(proxy.addr, "/").await;
    assert_eq!(status, 200);
}

#[test]
fn tls_config_errors_name_the_field() {
    let ca = Ca::new("test ca");
    let cases = [
        (
            "\"http://127.0.0.1:1\"",
            "[upstreams.app.tls]\nca_file = \"x\"",
            "upstreams.app.tls: TLS settings need https://",
        ),
        (
            "\"https://127.0.0.1:1\", \"127.0.0.1:2\"",
            "",
            "upstreams.app.servers: mixes http:// and https://",
        ),
        (
            "\"https://127.0.0.1:1\"",
            "[upstreams.app.tls]\nca_file = \"/nonexistent/ca.pem\"",
            "upstreams.app.tls.ca_file: `/nonexistent/ca.pem`: cannot read",
        ),
        (
            "\"https://127.0.0.1:1\"",
            &format!(
                "[upstreams.app.tls]\n{}\nclient_cert = \"{}\"",
                ca_file(&ca),
                ca.file.arg()
            ),
            "upstreams.app.tls.client_key: client_cert needs client_key",
        ),
        (
            "\"https://127.0.0.1:1\"",
            "protocol = \"h3\"",
            "upstreams.app.protocol: unknown variant `h3`, expected one of `http1`, `h2`, `auto`",
        ),
    ];
    for (servers, extra, want) in cases {
        // Loading checks the text; putting it into service reads the files.
        let err = tidegate::Config::from_toml(&config(1, servers, extra), "t.toml")
            .and_then(tidegate::check)
            .err()
            .unwrap_or_else(|| panic!("accepted: {extra}"))
            .to_string();
        assert!(err.contains(want), "{err}\nwanted: {want}");
    }
}
