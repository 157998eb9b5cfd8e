//! ACME certificates against Debian's `pebble` (a real RFC 8555 server),
//! with `pebble-challtestsrv` as its DNS (every name is 127.0.0.1): a
//! certificate obtained through TLS-ALPN-01 and through HTTP-01, served,
//! verified by curl against pebble's root and renewed; two instances on
//! one storage (one orders, the other answers the challenge and serves
//! the result, and takes over when the first stops); a renewal whose
//! challenge fails keeps the certificate served.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::binary::Binary;
use crate::common::pki::{peer_cert, Ca, Client};
use crate::common::*;

/// A port free now (the programs started next bind it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// What `start` makes of a port free now; tried again with another while
/// it says `None` (the port, or one pebble chose, was taken meanwhile by
/// another test).
fn on_a_free_port<T>(mut start: impl FnMut(u16) -> Option<T>) -> T {
    for _ in 0..10 {
        if let Some(t) = start(free_port()) {
            return t;
        }
    }
    panic!("ten ports in a row were taken before they could be bound");
}

/// The port of a running instance's TLS listener (its second).
fn tls_port(p: &Proxy) -> u16 {
    p.running().local_addrs()[1].port()
}

/// `pebble` and its DNS, killed on drop.
struct Pebble {
    children: Vec<Child>,
    dir: Dir,
    /// pebble's HTTPS listener and its management listener.
    port: u16,
    management: u16,
    /// The CA file pebble's own HTTPS chains to (for `[acme] ca`).
    ca: std::path::PathBuf,
}

impl Pebble {
    /// Validates HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of
    /// 127.0.0.1; certificates live `validity` seconds (pebble's default
    /// of five years when `None`). `None` if it exited (a port it chose
    /// was taken meanwhile).
    fn start(http_port: u16, tls_port: u16, validity: Option<u64>) -> Option<Pebble> {
        let dir = Dir::new("pebble");
        let ca = Ca::new("pebble's test CA");
        let leaf = ca.server(&["localhost", "127.0.0.1"]);
        std::fs::write(dir.join("ca.pem"), std::fs::read(&ca.file.path).unwrap()).unwrap();
        std::fs::write(dir.join("cert.pem"), &leaf.cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &leaf.key_pem).unwrap();
        let (dns, dns_admin, port, management) =
            (free_port(), free_port(), free_port(), free_port());
        let mut config = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("cert.pem"),
            "privateKey": dir.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(v) = validity {
            config["certificateValidityPeriod"] = v.into();
        }
        std::fs::write(
            dir.join("pebble.json"),
            serde_json::json!({ "pebble": config }).to_string(),
        )
        .unwrap();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_admin}")])
            .stdout(log("dns.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv runs (apt-get install pebble)");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // No random sleeps, no nonce rejections, and a new challenge
            // for every order (no authorization reuse).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble runs (apt-get install pebble)");
        let mut p = Pebble {
            children: vec![challtestsrv, pebble],
            ca: dir.join("ca.pem"),
            dir,
            port,
            management,
        };
        let deadline = std::time::Instant::now() + HANG;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", dns_admin)).is_err()
        {
            if p.children
                .iter_mut()
                .any(|c| c.try_wait().ok().flatten().is_some())
            {
                return None;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pebble never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(p)
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The root pebble issues under (made at its start), as a PEM file.
    fn root(&self) -> std::path::PathBuf {
        let path = self.dir.join("root.pem");
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        let out = Command::new("curl")
            .args(["-sSf", "--cacert"])
            .arg(&self.ca)
            .arg(&url)
            .output()
            .expect("curl runs");
        std::fs::write(&path, ok(&out)).unwrap();
        path
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The config of an instance: a plain listener on `http` (redirecting to
/// HTTPS), a TLS one on `https` with two names from ACME (port 0: any),
/// an admin listener, a fixed answer; `acme`: more of the `[acme]` table.
fn config(pebble: &Pebble, storage: &std::path::Path, http: u16, https: u16, acme: &str) -> String {
    format!(
        r#"
[server]
threads = 1

[admin]
address = "127.0.0.1:0"

[[listeners]]
address = "127.0.0.1:{http}"
redirect_https = 443

[[listeners]]
address = "127.0.0.1:{https}"
tls = {{ acme = ["a.tidegate.test", "b.tidegate.test"] }}

[[routes]]
respond = {{ status = 200, body = "hello\n" }}

[acme]
directory = "{}"
ca = "{}"
storage = "{}"
retry = "1s"
lock_timeout = "3s"
{acme}
"#,
        pebble.directory(),
        pebble.ca.display(),
        storage.display()
    )
}

/// The certificate `https` serves for `name`, as DER.
async fn served(https: u16, name: &str) -> Option<Vec<u8>> {
    let addr: SocketAddr = ([127, 0, 0, 1], https).into();
    let s = Client::any_cert().connect(addr, name).await.ok()?;
    Some(peer_cert(&s).to_vec())
}

/// Waits until `https` serves `name` a certificate other than `not`
/// (`None`: any), and returns it.
async fn served_other(https: u16, name: &str, not: Option<&[u8]>, pebble: &Pebble) -> Vec<u8> {
    let deadline = std::time::Instant::now() + HANG;
    loop {
        if let Some(c) = served(https, name).await {
            if Some(c.as_slice()) != not {
                return c;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new certificate for {name}; pebble's log:\n{}",
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The issuer's common name of a DER certificate, and its serial.
fn issuer_and_serial(der: &[u8]) -> (String, String) {
    let (_, c) = x509_parser::parse_x509_certificate(der).expect("certificate");
    (c.issuer().to_string(), c.raw_serial_as_string())
}

async fn metrics(p: &Proxy) -> String {
    let admin = p.running().admin_addr().expect("admin listener");
    let (status, _, body) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}

/// a.tidegate.test's orders that ended with a certificate, in `metrics`.
fn orders_ok(metrics: &str) -> Option<f64> {
    value(
        metrics,
        "tidegate_acme_orders_total{name=\"a.tidegate.test\",result=\"ok\"}",
    )
}

/// Waits until instance `who` holds the storage's lock.
async fn holds_the_lock(p: &Proxy, who: &str) {
    let deadline = std::time::Instant::now() + HANG;
    while value(&metrics(p).await, "tidegate_acme_lock_held ") != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "{who} never held the lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the metric line that starts with `prefix`.
fn value(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// curl, trusting only pebble's root, fetches `/` from `name` on `https`.
fn curl_verified(root: &std::path::Path, name: &str, https: u16) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(root)
        .args(["--resolve", &format!("{name}:{https}:127.0.0.1")])
        .arg(format!("https://{name}:{https}/"))
        .output()
        .expect("curl runs");
    ok(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_obtains_serves_verifies_and_renews() {
    let storage = Dir::new("acme");
    // Certificates of 30 seconds: renewed after about 20. pebble looks
    // for TLS-ALPN-01 on the instance's TLS port (and HTTP-01 nowhere).
    let (pebble, p, https) = on_a_free_port(|https| {
        let pebble = Pebble::start(free_port(), https, Some(30))?;
        let p = Proxy::try_start(&config(&pebble, &storage.0, 0, https, "")).ok()?;
        Some((pebble, p, https))
    });

    let first = served_other(https, "a.tidegate.test", None, &pebble).await;
    let (issuer, serial) = issuer_and_serial(&first);
    assert!(issuer.contains("Pebble Intermediate"), "{issuer}");
    // The account and the certificate (with its key) are on disk, for
    // the owner alone.
    let accounts: Vec<String> = std::fs::read_dir(&storage.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("account-") && n.ends_with(".json"))
        .collect();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    let account: serde_json::Value =
        serde_json::from_slice(&std::fs::read(storage.join(&accounts[0])).unwrap())
            .expect("the account is JSON");
    assert!(
        account.as_object().is_some_and(|o| !o.is_empty()),
        "{account}"
    );
    for file in [accounts[0].as_str(), "certificates/a.tidegate.test.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(storage.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    // curl verifies the chain served against pebble's root.
    assert_eq!(
        curl_verified(&pebble.root(), "a.tidegate.test", https),
        "hello\n"
    );
    // Each name has a certificate of its own.
    let b = served_other(https, "b.tidegate.test", Some(&first), &pebble).await;
    assert_ne!(issuer_and_serial(&b).1, serial);

    let m = metrics(&p).await;
    assert_eq!(value(&m, "tidegate_acme_lock_held "), Some(1.0), "{m}");
    assert!(orders_ok(&m).is_some_and(|v| v >= 1.0), "{m}");
    let expiry = value(
        &m,
        "tidegate_acme_certificate_expiry_timestamp_seconds{name=\"a.tidegate.test\"}",
    )
    .expect("expiry gauge");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now - 5.0 && expiry < now + 60.0,
        "{expiry} vs {now}"
    );
    // The status page shows the same.
    let admin = p.running().admin_addr().expect("admin listener");
    let (_, _, body) = get(admin, "/status.json").await;
    let status: serde_json::Value = serde_json::from_slice(&body).expect("status.json");
    assert_eq!(status["acme"]["lock_held"], true, "{status}");
    let names = status["acme"]["names"].as_array().expect("names");
    assert_eq!(names[0]["name"], "a.tidegate.test", "{status}");
    assert!(names[0]["expires"].as_u64().is_some(), "{status}");
    let (_, _, page) = get(admin, "/status").await;
    let page = String::from_utf8_lossy(&page);
    assert!(page.contains("ACME certificates") && page.contains("a.tidegate.test"));

    // Renewed at two thirds of its life, swapped in without a restart.
    let renewed = served_other(https, "a.tidegate.test", Some(&first), &pebble).await;
    let (issuer, new_serial) = issuer_and_serial(&renewed);
    assert!(issuer.contains("Pebble Intermediate"), "{issuer}");
    assert_ne!(new_serial, serial);
    // (Through TLS-ALPN-01 only: pebble's HTTP-01 port has no listener.)
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_answered_by_another_instance_which_serves_the_result_and_takes_over() {
    let storage = Dir::new("acme-shared");
    let challenge = "challenge = \"http-01\"";
    // The CA looks at instance B's plain listener only (B starts later,
    // on the port pebble was given, held by a placeholder until then).
    let (pebble, placeholder, http_b) = on_a_free_port(|http_b| {
        let placeholder = std::net::TcpListener::bind(("127.0.0.1", http_b)).ok()?;
        let pebble = Pebble::start(http_b, free_port(), None)?;
        Some((pebble, placeholder, http_b))
    });
    let a = Proxy::start(&config(&pebble, &storage.0, 0, 0, challenge));
    let https_a = tls_port(&a);
    // A holds the lock before B starts (so A orders).
    holds_the_lock(&a, "A").await;
    drop(placeholder);
    let b = Proxy::start(&config(&pebble, &storage.0, http_b, 0, challenge));
    let https_b = tls_port(&b);

    // A's order is validated on B, which read A's answer from the storage.
    let from_a = served_other(https_a, "a.tidegate.test", None, &pebble).await;
    let from_b = served_other(https_b, "a.tidegate.test", None, &pebble).await;
    assert_eq!(from_a, from_b, "both instances serve the one certificate");
    let mb = metrics(&b).await;
    assert_eq!(value(&mb, "tidegate_acme_lock_held "), Some(0.0), "{mb}");
    assert_eq!(orders_ok(&mb), Some(0.0), "B ordered nothing: {mb}");
    assert_eq!(
        curl_verified(&pebble.root(), "a.tidegate.test", https_b),
        "hello\n"
    );

    // The plain listener answers challenges before its HTTPS redirect:
    // an unknown token is 404, any other path is redirected.
    let addr_b: SocketAddr = ([127, 0, 0, 1], http_b).into();
    let (status, _, _) = get(addr_b, "/.well-known/acme-challenge/unknown-token").await;
    assert_eq!(status, 404);
    let (status, headers, _) = get(addr_b, "/").await;
    assert_eq!(status, 301);
    assert!(headers["location"]
        .to_str()
        .unwrap()
        .starts_with("https://"));

    // A stops and gives the lock up; B takes it.
    a.stop();
    holds_the_lock(&b, "B").await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_renewal_keeps_the_served_certificate_warns_and_counts() {
    let storage = Dir::new("acme-failing");
    // The CA validates HTTP-01 on a port where nothing listens.
    let pebble = on_a_free_port(|port| Pebble::start(port, free_port(), None));
    // A certificate from 2020 to 2030: past two thirds of its life, due.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["a.tidegate.test".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let old = params.self_signed(&key).unwrap();
    std::fs::create_dir_all(storage.join("certificates")).unwrap();
    std::fs::write(
        storage.join("certificates/a.tidegate.test.pem"),
        format!("{}{}", key.serialize_pem(), old.pem()),
    )
    .unwrap();
    let file = TempFile::with(
        "acme.toml",
        config(&pebble, &storage.0, 0, 0, "challenge = \"http-01\"").as_bytes(),
    );
    let mut bin = Binary::start(&["-c", file.arg()]);
    // (Said before the listeners are.)
    let admin = bin.line_with("admin listener on http://").await;
    let admin: std::net::SocketAddr = admin
        .rsplit("http://")
        .next()
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {admin:?}"));
    let https = bin.listening_on("https").await.port();
    let line = bin.line_with("ACME: ordering the certificate failed").await;
    assert!(line.contains("a.tidegate.test"), "{line}");
    assert!(line.contains("the current certificate stays"), "{line}");
    assert!(line.contains("/.well-known/acme-challenge/"), "{line}");
    // Still the old certificate, with no restart.
    assert_eq!(
        served(https, "a.tidegate.test").await.as_deref(),
        Some(old.der().as_ref())
    );
    // Retried (after `retry`, doubled), failing again; each failure
    // counted.
    bin.line_with("ACME: ordering the certificate failed (2 in a row)")
        .await;
    let (_, _, m) = get(admin, "/metrics").await;
    let m = String::from_utf8_lossy(&m);
    let failed = value(
        &m,
        "tidegate_acme_orders_total{name=\"a.tidegate.test\",result=\"failed\"}",
    );
    assert!(failed.is_some_and(|n| n >= 1.0), "{m}");
    assert_eq!(orders_ok(&m), Some(0.0), "{m}");
    assert_eq!(
        served(https, "a.tidegate.test").await.as_deref(),
        Some(old.der().as_ref())
    );
    bin.signal(rustix::process::Signal::TERM);
    let (status, _) = bin.wait().await;
    assert!(status.success());
}

#[test]
fn acme_config_errors_name_the_field() {
    let bad = |toml: &str| -> String {
        tidegate::Config::from_toml(toml, "t.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("accepted:\n{toml}"))
    };
    let base = r#"
[[listeners]]
address = "127.0.0.1:0"
tls = { acme = ["*.example.com", "localhost", "ok.example.com", "OK.example.com"] }
[[routes]]
respond = { status = 200 }
"#;
    let e = bad(base);
    assert!(
        e.contains("listeners[0].tls.acme[0]") && e.contains("DNS-01"),
        "{e}"
    );
    assert!(e.contains("listeners[0].tls.acme[1]"), "{e}");
    assert!(
        e.contains("listeners[0].tls.acme[3]") && e.contains("twice"),
        "{e}"
    );
    let e = bad(&base
        .replace("\"*.example.com\", \"localhost\", ", "")
        .replace(", \"OK.example.com\"", ""));
    assert!(e.contains("no [acme] section"), "{e}");
    let e = bad(&format!(
        "{}\n[acme]\nstorage = \"/tmp/x\"\ndirectory = \"http://ca/dir\"\ncontact = [\"ops@example.com\"]\nchallenge = \"http-01\"\nlock_timeout = \"1s\"\n",
        base.replace("\"*.example.com\", \"localhost\", ", "").replace(", \"OK.example.com\"", "")
    ));
    assert!(e.contains("acme.directory"), "{e}");
    assert!(e.contains("acme.contact[0]"), "{e}");
    assert!(
        e.contains("acme.challenge") && e.contains("plain HTTP listener"),
        "{e}"
    );
    assert!(e.contains("acme.lock_timeout"), "{e}");
    // A stream terminating TLS with no ALPN cannot answer TLS-ALPN-01.
    let stream = r#"
[acme]
storage = "/tmp/x"
[[streams]]
address = "127.0.0.1:0"
upstream = "db"
tls = { acme = ["db.example.com"] }
[upstreams.db]
servers = ["127.0.0.1:1"]
"#;
    let e = bad(stream);
    assert!(
        e.contains("streams[0].tls.acme") && e.contains("ALPN"),
        "{e}"
    );
    // With ALPN of its own, it can.
    let with_alpn = stream.replace("upstream = \"db\"\n", "upstream = \"db\"\nalpn = [\"x\"]\n");
    tidegate::Config::from_toml(&with_alpn, "t.toml").expect("a stream with ALPN");
    let e = bad("[acme]\nstorage = \"/tmp/x\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\nrespond = { status = 200 }\n");
    assert!(e.contains("nothing to order"), "{e}");
}

#[test]
fn the_example_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/acme.toml");
    let config = tidegate::Config::from_file(std::path::Path::new(path)).expect("example loads");
    let acme = config.acme.expect("[acme]");
    assert_eq!(acme.names, ["example.com", "www.example.com"]);
}
