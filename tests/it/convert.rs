//! `tidegate convert`, differentially: each nginx configuration kept
//! under `tests/convert/` runs in a real nginx, and its conversion (made by
//! the binary, checked by `tidegate check`) in Tidegate, both in front of
//! the same recording backends; the requests in its `requests` file must
//! get the same status, Location, backend, forwarded path, Host and
//! fields. The differences the README lists as inherent (Tidegate's own
//! X-Forwarded-*/Via, nginx's port in its redirects) are normalised here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::common::pki::{Ca, Client};
use super::common::{backend, Backend, HANG};

/// Fields the backends report back (request fields, lower case).
const RECORDED: &[&str] = &[
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "via",
    "x-env",
    "x-other",
    "x-real-ip",
    "accept-encoding",
    "upgrade",
];

/// Fields Tidegate always sends and nginx only when configured to.
const TIDEGATE_ADDS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "via",
];

/// A backend that answers with what it received, in `x-record`, and its
/// name in `x-backend`; a WebSocket handshake gets a 101.
fn recording(name: &'static str) -> Backend {
    backend(
        move |req: http::Request<hyper::body::Incoming>| async move {
            let mut record = vec![
                format!("method={}", req.method()),
                format!("uri={}", req.uri()),
            ];
            for f in RECORDED {
                let values: Vec<&str> = req
                    .headers()
                    .get_all(*f)
                    .iter()
                    .map(|v| v.to_str().unwrap_or("?"))
                    .collect();
                if !values.is_empty() {
                    record.push(format!("{f}={}", values.join(",")));
                }
            }
            let upgrade = req.headers().contains_key("upgrade");
            let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
            record.push(format!("body={}", body.unwrap_or(0)));
            let mut resp = http::Response::builder()
                .header("x-backend", name)
                .header("x-record", record.join(" | "));
            if upgrade {
                resp = resp
                    .status(101)
                    .header("upgrade", "websocket")
                    .header("connection", "upgrade");
            }
            resp.body(super::common::full("from the backend\n"))
                .unwrap()
        },
    )
}

/// A port free now (nginx needs one written in its file).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `src` copied to a new folder with the placeholders filled in.
fn instantiate(src: &Path, dest: &Path, vars: &[(&str, String)]) {
    std::fs::create_dir_all(dest.join("logs")).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dest.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            instantiate(&entry.path(), &to, vars);
        } else {
            // (Files that are not text, as a .gz, are copied as they are.)
            match String::from_utf8(std::fs::read(entry.path()).unwrap()) {
                Ok(mut text) => {
                    for (k, v) in vars {
                        text = text.replace(k, v);
                    }
                    std::fs::write(to, text).unwrap();
                }
                Err(bytes) => std::fs::write(to, bytes.into_bytes()).unwrap(),
            }
        }
    }
}

/// A temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d =
            std::env::temp_dir().join(format!("tidegate-convert-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// nginx on a configuration folder; killed on drop.
struct Nginx(Child);

impl Nginx {
    async fn start(dir: &Path, addr: SocketAddr) -> Nginx {
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-g")
            .arg(format!(
                "daemon off; master_process off; pid {};",
                dir.join("nginx.pid").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx runs (apt-get install nginx)");
        let nginx = Nginx(child);
        tokio::time::timeout(HANG, async {
            while TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "nginx never listened: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            )
        });
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tidegate ARGS`, run to its end: (success, stdout, stderr).
fn tidegate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("tidegate runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a response shows of its routing.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    location: Option<String>,
    backend: Option<String>,
    record: BTreeMap<String, String>,
    /// `x-` fields the proxy added to the response.
    added: BTreeMap<String, String>,
    /// The body of a fixed 200 answer.
    text: Option<String>,
}

/// Where a proxy listens: its plain listener, and its TLS one (with the
/// CA its certificates come from) if it has one.
struct Target<'a> {
    plain: Option<SocketAddr>,
    tls: Option<(SocketAddr, &'a Ca)>,
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

impl Target<'_> {
    /// A connection for `host` (`https://NAME`: TLS with SNI NAME,
    /// HTTP/1.1 by ALPN).
    async fn connect(&self, host: &str) -> Box<dyn Io> {
        match host.strip_prefix("https://") {
            Some(name) => {
                let (addr, ca) = self.tls.expect("a TLS listener");
                let client = Client::trusting(ca).alpn(&[b"http/1.1"]);
                Box::new(client.connect(addr, name).await.expect("TLS handshake"))
            }
            None => Box::new(
                TcpStream::connect(self.plain.expect("a plain listener"))
                    .await
                    .expect("connect"),
            ),
        }
    }

    /// The protocol ALPN settles on when the client offers h2 and
    /// HTTP/1.1 (on the TLS listener).
    async fn alpn(&self, name: &str) -> Option<Vec<u8>> {
        let (addr, ca) = self.tls?;
        let client = Client::trusting(ca).alpn(&[b"h2", b"http/1.1"]);
        let tls = client.connect(addr, name).await.expect("TLS handshake");
        tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
    }
}

/// One line of a `requests` file: `METHOD HOST PATH [len=N] [xff=A,B]
/// [pp=ADDR]` (a body of N bytes; an `X-Forwarded-For: A, B` field; a
/// PROXY header naming the client ADDR), or `WS HOST
/// PATH` for a WebSocket handshake; a HOST written `https://NAME` goes
/// over TLS with that SNI, HTTP/1.1 by ALPN.
async fn request(to: &Target<'_>, line: &str) -> Seen {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let (method, to_host, path) = (parts[0], parts[1], parts[2]);
    let host = to_host.strip_prefix("https://").unwrap_or(to_host);
    let option = |name: &str| parts.iter().skip(3).find_map(|p| p.strip_prefix(name));
    let len: Option<usize> = option("len=").map(|n| n.parse().unwrap());
    let mut head = if method == "WS" {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        )
    } else {
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: gzip\r\nConnection: close\r\n")
    };
    if let Some(n) = len {
        head.push_str(&format!("Content-Length: {n}\r\n"));
    }
    if let Some(xff) = option("xff=") {
        head.push_str(&format!("X-Forwarded-For: {}\r\n", xff.replace(',', ", ")));
    }
    head.push_str("\r\n");
    // `pp=ADDR`: a PROXY v1 header naming ADDR as the client first.
    if let Some(client) = option("pp=") {
        head.insert_str(0, &format!("PROXY TCP4 {client} 127.0.0.1 40000 80\r\n"));
    }
    let mut bytes = head.into_bytes();
    // Large declared bodies are refused from their length alone.
    if let Some(n) = len.filter(|&n| n <= 100_000) {
        bytes.extend(std::iter::repeat_n(b'x', n));
    }
    let mut s = to.connect(to_host).await;
    s.write_all(&bytes).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(HANG, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            // A 101's head is all there is to read.
            if method == "WS" && out.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{line}: no answer"));
    parse(&String::from_utf8_lossy(&out), method)
}

fn parse(text: &str, method: &str) -> Seen {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let mut fields = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let record = fields
        .get("x-record")
        .map(|r| {
            r.split(" | ")
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let backend = fields.get("x-backend").cloned();
    let added = fields
        .iter()
        .filter(|(k, _)| k.starts_with("x-") && *k != "x-record" && *k != "x-backend")
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(
            fields
                .get("cache-control")
                .map(|v| ("cache-control".into(), v.clone())),
        )
        .collect();
    let text = (status == 200 && backend.is_none() && method != "HEAD").then(|| body.to_string());
    Seen {
        status,
        location: fields.get("location").cloned(),
        backend,
        record,
        added,
        text,
    }
}

/// One configuration: nginx and Tidegate on the same backends, every
/// request compared. `@PORT@` is the configuration's first port (its TLS
/// port when it has TLS), `@PORT2@` a plain one beside it; `@DEAD@` an
/// address that refuses connections; `@DIR@` the copy's own folder (its
/// files each side's own).
async fn differential(name: &str, failures: &mut Vec<String>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/convert")
        .join(name);
    let backends = [recording("a"), recording("b"), recording("c")];
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let vars = |port: u16, port2: u16, dir: &Path| {
        vec![
            ("@DIR@", dir.display().to_string()),
            ("@PORT@", port.to_string()),
            ("@PORT2@", port2.to_string()),
            ("@A@", backends[0].addr.to_string()),
            ("@B@", backends[1].addr.to_string()),
            ("@C@", backends[2].addr.to_string()),
            ("@DEAD@", dead_addr.to_string()),
        ]
    };
    let has_tls = std::fs::read_to_string(src.join("nginx.conf"))
        .unwrap()
        .contains("ssl_certificate");
    let ca = Ca::new("convert");
    let certify = |dir: &Path| {
        if has_tls {
            let leaf = ca.server(&["www.example.com", "api.example.com"]);
            std::fs::create_dir_all(dir.join("certs")).unwrap();
            std::fs::write(dir.join("certs/site.pem"), &leaf.cert_pem).unwrap();
            std::fs::write(dir.join("certs/site.key"), &leaf.key_pem).unwrap();
        }
    };

    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let target = |port: u16, port2: u16| Target {
        plain: Some(at(if has_tls { port2 } else { port })),
        tls: has_tls.then(|| (at(port), &ca)),
    };

    // nginx, on ports found free.
    let theirs = TempDir::new(&format!("{name}-nginx"));
    let (nginx_port, nginx_port2) = (free_port(), free_port());
    instantiate(&src, &theirs.0, &vars(nginx_port, nginx_port2, &theirs.0));
    certify(&theirs.0);
    let _nginx = Nginx::start(&theirs.0, at(nginx_port)).await;
    let nginx_at = target(nginx_port, nginx_port2);

    // Tidegate, from the binary's conversion, on other ports found free
    // (port 0 would merge the configuration's two servers into one
    // listener).
    let ours = TempDir::new(&format!("{name}-tidegate"));
    let (port, port2) = (free_port(), free_port());
    instantiate(&src, &ours.0, &vars(port, port2, &ours.0));
    certify(&ours.0);
    let toml = ours.0.join("tidegate.toml");
    let conf = ours.0.join("nginx.conf");
    let (ok, _, stderr) = tidegate(&[
        "convert",
        conf.to_str().unwrap(),
        "-o",
        toml.to_str().unwrap(),
    ]);
    assert!(ok, "{name}: convert failed: {stderr}");
    let (ok, out, err) = tidegate(&["check", "-c", toml.to_str().unwrap()]);
    assert!(
        ok,
        "{name}: the conversion fails check: {out}{err}\n{}",
        std::fs::read_to_string(&toml).unwrap()
    );
    let config = tidegate::Config::from_file(&toml).expect("loads");
    let running = tidegate::start(config).expect("starts");
    let ours_at = target(port, port2);

    if has_tls {
        for name in ["www.example.com", "api.example.com"] {
            let (theirs, ours) = (nginx_at.alpn(name).await, ours_at.alpn(name).await);
            if theirs != ours {
                failures.push(format!("{name}: ALPN nginx {theirs:?}, Tidegate {ours:?}"));
            }
        }
    }
    let requests = std::fs::read_to_string(src.join("requests")).unwrap();
    for line in requests.lines().filter(|l| !l.trim().is_empty()) {
        let mut nginx = request(&nginx_at, line).await;
        let mut tidegate = request(&ours_at, line).await;
        // nginx puts its own port in the redirects it makes absolute
        // (port_in_redirect).
        nginx.location = nginx
            .location
            .map(|l| l.replace(&format!(":{nginx_port}"), ""));
        for f in TIDEGATE_ADDS {
            if !nginx.record.contains_key(*f) {
                tidegate.record.remove(*f);
            }
        }
        // A received X-Forwarded-For: nginx passes it on as it is unless
        // told otherwise; Tidegate appends the peer.
        if let (Some(n), Some(t)) = (
            nginx.record.get("x-forwarded-for"),
            tidegate.record.get_mut("x-forwarded-for"),
        ) {
            if *t == format!("{n}, 127.0.0.1") {
                t.clone_from(n);
            }
        }
        if nginx != tidegate {
            failures.push(format!(
                "{name}: `{line}`:\n  nginx:    {nginx:?}\n  Tidegate: {tidegate:?}"
            ));
        }
    }
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_config_routes_as_nginx_does() {
    let mut names: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/convert"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    let mut failures = Vec::new();
    for name in names {
        differential(&name, &mut failures).await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn directives_not_converted_are_listed_with_file_and_line() {
    let dir = TempDir::new("skipped");
    std::fs::write(
        dir.0.join("nginx.conf"),
        "events {}\nhttp {\n  include sites/*.conf;\n}\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.0.join("sites")).unwrap();
    std::fs::write(
        dir.0.join("sites/a.conf"),
        "server {\n  listen 8080;\n  location / {\n    proxy_pass http://127.0.0.1:9;\n    fancy_directive on;\n  }\n  include snippets/more.conf;\n}\n",
    )
    .unwrap();
    // A relative include is nginx's conf prefix's (the main file's
    // folder), as Debian's sites-enabled files name snippets/.
    std::fs::create_dir_all(dir.0.join("snippets")).unwrap();
    std::fs::write(dir.0.join("snippets/more.conf"), "other_directive on;\n").unwrap();
    let (ok, stdout, stderr) = tidegate(&["convert", dir.0.join("nginx.conf").to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let site = dir.0.join("sites/a.conf");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&format!("{}:5: fancy_directive: ", site.display()))),
        "{stderr}"
    );
    let snippet = dir.0.join("snippets/more.conf");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&format!("{}:1: other_directive: ", snippet.display()))),
        "{stderr}"
    );
    assert!(stdout.contains("upstream = "), "{stdout}");
}

#[test]
fn files_tidegate_cannot_serve_as_nginx_are_listed_never_guessed() {
    let dir = TempDir::new("files");
    let conf = dir.0.join("nginx.conf");
    std::fs::write(
        &conf,
        "events {}\nhttp {\n  server {\n    listen 8080;\n    root /srv/www;\n\
         location ~ \\.php$ { fastcgi_pass 127.0.0.1:9000; }\n\
         location /rel/ { root html; }\n\
         location /list/ { autoindex on; }\n\
         location ~ ^/img/(.*)$ { alias /srv/img/$1; }\n\
         location /pretty/ { try_files $uri $uri.html =404; }\n\
         location /gone/ { try_files $uri =403; }\n\
         location @unused { proxy_pass http://127.0.0.1:9; }\n\
         location /slash/ { try_files $uri /slash/; }\n\
         index index.html /x.html;\n\
         }\n}\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = tidegate(&["convert", conf.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let at = |line: usize, directive: &str, why: &str| {
        let prefix = format!("{}:{line}: {directive}: ", conf.display());
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(why)),
            "{prefix}..{why}\n{stderr}"
        );
    };
    at(6, "location", "a module Tidegate does not have");
    at(7, "root", "relative root");
    at(8, "autoindex", "lists no folders");
    at(9, "alias", "only `alias /dir/;`");
    at(10, "try_files", "only `$uri`, then `$uri/`");
    at(11, "try_files", "only =404");
    at(12, "location", "only as a `try_files` fallback");
    at(13, "try_files", "only a fixed file URI");
    at(14, "index", "/x.html: only file names");
    // The PHP location's sources are never served as files.
    let config: toml::Table = toml::from_str(&stdout).unwrap();
    let routes = config["routes"].as_array().unwrap();
    let php = routes
        .iter()
        .find(|r| r.get("path_regex").and_then(|p| p.as_str()) == Some("\\.php$"))
        .expect("the .php route");
    assert_eq!(php["respond"]["status"].as_integer(), Some(404), "{stdout}");
    assert!(php.get("static").is_none(), "{stdout}");
    // Where the rest is not followed, the files still are.
    let pretty = route(&config, "/pretty/");
    assert_eq!(
        pretty["static"]["root"].as_str(),
        Some("/srv/www"),
        "{stdout}"
    );
    assert_eq!(
        strings(pretty["static"].get("index")),
        ["index.html"],
        "{stdout}"
    );
}

#[test]
fn stream_blocks_become_streams_with_sni_routes_and_proxy_headers() {
    let (t, stderr) = convert_checked(
        "stream",
        r#"events {}
stream {
    upstream db { server 10.0.0.5:5432; server 10.0.0.6:5432 backup; least_conn; }
    upstream apps { server 10.0.0.10:443; hash $remote_addr; }
    map $ssl_preread_server_name $name {
        hostnames;
        git.example.com   10.0.0.7:443;
        .apps.example.com apps;
        ~^re\.            10.0.0.9:443;
        default           10.0.0.8:443;
    }
    server { listen 127.0.0.1:15432; proxy_pass db; proxy_timeout 1h; allow 10.0.0.0/8; deny all; limit_conn per_ip 5; }
    server { listen 127.0.0.1:10443; ssl_preread on; proxy_pass $name; preread_timeout 3s; }
    server { listen 127.0.0.1:17000 proxy_protocol; set_real_ip_from 10.1.0.0/16; proxy_pass db; proxy_protocol on; }
    server { listen 127.0.0.1:10053 udp; proxy_pass 10.0.0.2:53; }
    limit_conn_zone $binary_remote_addr zone=per_ip:10m;
    server { listen 127.0.0.1:16380; proxy_pass 10.0.0.3:6379; proxy_ssl on; proxy_ssl_verify on; proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt; proxy_ssl_name redis.internal; }
    server { listen 127.0.0.1:16381; proxy_pass 10.0.0.3:6379; proxy_ssl on; }
    server { listen 0.0.0.0:10445; listen [::]:10445; proxy_pass db; }
}
http {
    upstream db { server 10.9.9.9:80; }
    server { listen 127.0.0.1:18080; location / { proxy_pass http://db; } location /s/ { proxy_pass https://10.9.9.8; } }
}
"#,
    );
    let text = toml::to_string(&t).unwrap();
    let streams = t["streams"].as_array().unwrap();
    let stream = |address: &str| {
        streams
            .iter()
            .find(|s| s["address"].as_str() == Some(address))
            .unwrap_or_else(|| panic!("no stream on {address}: {text}"))
    };
    let group = |name: &str| &t["upstreams"][name];
    // An upstream block; the HTTP group of the same name keeps its name.
    let db = stream("127.0.0.1:15432");
    let db_group = db["upstream"].as_str().unwrap();
    assert_ne!(db_group, "db", "{text}");
    assert_eq!(
        group(db_group)["balance"].as_str(),
        Some("least_outstanding")
    );
    assert_eq!(
        group(db_group)["servers"][0]["address"].as_str(),
        Some("10.0.0.5:5432")
    );
    assert_eq!(
        group("db")["servers"][0]["address"].as_str(),
        Some("http://10.9.9.9:80")
    );
    assert_eq!(db["idle_timeout"].as_str(), Some("3600s"));
    assert_eq!(strings(db.get("access")), ["allow 10.0.0.0/8", "deny all"]);
    assert_eq!(db["max_connections_per_ip"].as_integer(), Some(5));
    // The map: SNI routes and a default.
    let sni = stream("127.0.0.1:10443");
    assert_eq!(sni["preread_timeout"].as_str(), Some("3s"));
    let routes = sni["sni"].as_array().unwrap();
    assert_eq!(strings(routes[0].get("names")), ["git.example.com"]);
    assert_eq!(
        strings(routes[1].get("names")),
        ["apps.example.com", "*.apps.example.com"]
    );
    assert_eq!(routes[1]["upstream"].as_str(), Some("apps"));
    assert_eq!(group("apps")["hash_key"].as_str(), Some("client_ip"));
    let default = sni["upstream"].as_str().unwrap();
    assert_eq!(
        group(default)["servers"][0]["address"].as_str(),
        Some("10.0.0.8:443")
    );
    // PROXY headers read from the trusted block, sent (v1) to a group
    // of its own.
    let pp = stream("127.0.0.1:17000");
    assert_eq!(strings(pp["proxy_protocol"].get("from")), ["10.1.0.0/16"]);
    let sends = pp["upstream"].as_str().unwrap();
    assert_eq!(group(sends)["proxy_protocol"].as_str(), Some("v1"));
    assert!(group(db_group).get("proxy_protocol").is_none(), "{text}");
    // An HTTP group over TLS is checked where nginx's is not: said.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("proxy_pass: nginx checks no server certificate")),
        "{stderr}"
    );
    // TLS to the servers: a group of its own each way.
    let tls = stream("127.0.0.1:16380")["upstream"].as_str().unwrap();
    assert_eq!(
        group(tls)["servers"][0]["address"].as_str(),
        Some("https://10.0.0.3:6379")
    );
    assert_eq!(
        group(tls)["tls"]["server_name"].as_str(),
        Some("redis.internal")
    );
    let unverified = stream("127.0.0.1:16381")["upstream"].as_str().unwrap();
    assert_ne!(tls, unverified, "{text}");
    assert!(group(unverified).get("tls").is_none(), "{text}");
    assert_eq!(
        group(unverified)["servers"][0]["address"].as_str(),
        Some("https://10.0.0.3:6379")
    );
    // What is not converted (or not as nginx does) is said.
    for (line, why) in [(9, "regex"), (15, "UDP"), (18, "proxy_ssl_verify off")] {
        let at = format!("/nginx.conf:{line}: ");
        assert!(
            stderr.lines().any(|l| l.contains(&at) && l.contains(why)),
            "{at}{why}\n{stderr}"
        );
    }
    assert!(streams
        .iter()
        .all(|s| s["address"].as_str() != Some("127.0.0.1:10053")));
    // [::]:P beside 0.0.0.0:P: one of them, as for listeners.
    assert!(
        stderr.contains("listen: [::]:10445 beside 0.0.0.0:10445"),
        "{stderr}"
    );
    assert!(streams
        .iter()
        .all(|s| s["address"].as_str() != Some("[::]:10445")));
    stream("0.0.0.0:10445");
}

#[test]
fn unreadable_or_broken_input_fails() {
    let dir = TempDir::new("broken");
    let conf = dir.0.join("nginx.conf");
    std::fs::write(&conf, "http {\n  server { listen 80;\n").unwrap();
    let (ok, _, stderr) = tidegate(&["convert", conf.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{}:2:", conf.display())),
        "{stderr}"
    );
    // An include cycle is refused, with where.
    std::fs::write(&conf, "include nginx.conf;\n").unwrap();
    let (ok, _, stderr) = tidegate(&["convert", conf.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("cycle"), "{stderr}");
    let (ok, _, _) = tidegate(&["convert", dir.0.join("missing.conf").to_str().unwrap()]);
    assert!(!ok);
}

/// `nginx` converted by the binary and checked by `tidegate check`: the
/// TOML as a table, and the lines not converted.
fn convert_checked(name: &str, nginx: &str) -> (toml::Table, String) {
    let dir = TempDir::new(name);
    let conf = dir.0.join("nginx.conf");
    let out = dir.0.join("tidegate.toml");
    std::fs::write(&conf, nginx).unwrap();
    let (ok, _, stderr) = tidegate(&[
        "convert",
        conf.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    let (ok, o, e) = tidegate(&["check", "-c", out.to_str().unwrap()]);
    assert!(ok, "the conversion fails check: {o}{e}\n{text}");
    (text.parse().unwrap(), stderr)
}

/// The route on `path_prefix` (or exact `path`) `path`.
fn route<'a>(t: &'a toml::Table, path: &str) -> &'a toml::Table {
    t["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_table().unwrap())
        .find(|r| {
            r.get("path_prefix")
                .or_else(|| r.get("path"))
                .and_then(|p| p.as_str())
                == Some(path)
        })
        .unwrap_or_else(|| panic!("no route {path}: {t}"))
}

fn strings(v: Option<&toml::Value>) -> Vec<&str> {
    v.and_then(|v| v.as_array())
        .map(|a| a.iter().map(|s| s.as_str().unwrap()).collect())
        .unwrap_or_default()
}

#[test]
fn limit_conn_becomes_concurrency_limits() {
    let (t, skipped) = convert_checked(
        "limit-conn",
        r#"http {
  limit_conn_zone $binary_remote_addr zone=perip:10m;
  limit_conn_zone $server_name zone=perserver:10m;
  limit_conn_zone $http_x_api_key zone=perkey:10m;
  limit_conn_zone $request_uri zone=odd:10m;
  server {
    listen 8080;
    limit_conn perip 10;
    location / { proxy_pass http://127.0.0.1:9000; }
    location /api/ {
      limit_conn perserver 100;
      limit_conn perip 5;
      limit_conn perkey 2;
      limit_conn odd 1;
      limit_conn_status 429;
      proxy_pass http://127.0.0.1:9000;
    }
    location /gone { return 410; }
  }
}"#,
    );
    let limits = t["concurrency_limits"].as_table().unwrap();
    let limit = |name: &str| {
        let l = limits[name].as_table().unwrap();
        (l["key"].as_str().unwrap(), l["max"].as_integer().unwrap())
    };
    assert_eq!(limit("perip"), ("client_ip", 10));
    // The same zone with another number: a second limit.
    assert_eq!(limit("perip_5"), ("client_ip", 5));
    assert_eq!(limit("perserver"), ("route", 100));
    assert_eq!(limit("perkey"), ("header:x-api-key", 2));
    assert_eq!(limits.len(), 4, "{t}");
    assert_eq!(strings(route(&t, "/").get("concurrency_limit")), ["perip"]);
    assert_eq!(
        strings(route(&t, "/api/").get("concurrency_limit")),
        ["perserver", "perip_5", "perkey"]
    );
    // nginx's preaccess phase comes after `return`.
    assert!(route(&t, "/gone").get("concurrency_limit").is_none());
    for expected in [
        ":5: limit_conn_zone: `$request_uri`: only",
        ":3: limit_conn_zone: $server_name counts per route",
        ":8: limit_conn_status: nginx answers 503; Tidegate answers 429",
    ] {
        assert!(skipped.contains(expected), "{expected}: {skipped}");
    }
    // The location's own `limit_conn_status 429` is Tidegate's answer.
    assert!(!skipped.contains(":15: limit_conn_status"), "{skipped}");
}

#[test]
fn auth_request_becomes_forward_auth() {
    let (t, skipped) = convert_checked(
        "auth-request",
        r#"http {
  upstream authsvc { server 127.0.0.1:9001; }
  server {
    listen 8080;
    auth_request /auth;
    auth_request_set $user $upstream_http_x_user;
    auth_request_set $group $upstream_http_x_group;
    location / {
      proxy_set_header X-User $user;
      proxy_set_header X-Remote-Group $group;
      proxy_pass http://127.0.0.1:9000;
    }
    location /open/ { auth_request off; proxy_pass http://127.0.0.1:9000; }
    location /checks/ { auth_request /check/deep; proxy_pass http://127.0.0.1:9000; }
    location = /auth {
      internal;
      proxy_pass http://authsvc/verify;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
    }
    location /check/ { internal; proxy_pass http://127.0.0.1:9002/v1/; }
  }
  server {
    listen 8080; server_name b.test;
    location /m/ { auth_request /missing; proxy_pass http://127.0.0.1:9000; }
    location /x/ { auth_request /y; proxy_pass http://127.0.0.1:9000; }
    location = /y { return 204; }
  }
}"#,
    );
    let fa = route(&t, "/")["forward_auth"].as_table().unwrap();
    assert_eq!(fa["upstream"].as_str(), Some("authsvc"));
    assert_eq!(fa["path"].as_str(), Some("/verify"));
    assert_eq!(
        strings(fa.get("request_headers")),
        ["authorization", "cookie"]
    );
    assert_eq!(strings(fa.get("response_headers")), ["x-user", "x-group"]);
    assert_eq!(fa["on_error"].as_integer(), Some(500));
    // Under another name: the client's own field does not pass.
    let edits = route(&t, "/")["request_headers"].as_table().unwrap();
    assert_eq!(strings(edits.get("remove")), ["x-remote-group"]);
    assert!(route(&t, "/open/").get("forward_auth").is_none());
    // A prefix location with a URI part: the matched part replaced.
    let deep = route(&t, "/checks/")["forward_auth"].as_table().unwrap();
    assert_eq!(deep["path"].as_str(), Some("/v1/deep"));
    // An internal location is 404 to clients.
    let auth = route(&t, "/auth");
    assert_eq!(auth["respond"]["status"].as_integer(), Some(404));
    // No location to ask, or one without proxy_pass: the route refuses
    // every request (never an open route).
    let routes = t["routes"].as_array().unwrap();
    let refusing = routes
        .iter()
        .filter(|r| r.get("respond").and_then(|a| a.get("status")) == Some(&500.into()))
        .count();
    assert_eq!(refusing, 2, "{t}");
    for expected in [
        ":26: auth_request: no location of this server matches `/missing`",
        ":27: auth_request: the location for `/y` has no proxy_pass",
        ":20: proxy_set_header: X-Original-URI `$request_uri` to the auth service",
        ":10: proxy_set_header: X-Remote-Group from the auth service's x-group",
        ":5: auth_request: nginx passes every field",
    ] {
        assert!(skipped.contains(expected), "{expected}: {skipped}");
    }
    assert!(!skipped.contains("auth_request_set"), "{skipped}");
}

#[test]
fn limit_req_becomes_rate_limits() {
    let (t, skipped) = convert_checked(
        "limit-req",
        r#"http {
  limit_req_zone $binary_remote_addr zone=one:10m rate=10r/s;
  limit_req_zone $http_x_api_key zone=key:10m rate=30r/m;
  limit_req_zone "$binary_remote_addr$request_uri" zone=odd:10m rate=5r/s;
  limit_req_zone $request_uri zone=uri:10m rate=1r/s;
  server {
    listen 8080;
    limit_req zone=one burst=20 nodelay;
    location / { proxy_pass http://127.0.0.1:9000; }
    location /api/ {
      limit_req zone=one burst=5;
      limit_req zone=key burst=10 delay=4;
      limit_req_status 429;
      proxy_pass http://127.0.0.1:9000;
    }
    location /odd/ { limit_req zone=odd; limit_req zone=uri nodelay; proxy_pass http://127.0.0.1:9000; }
    location /dry/ { limit_req zone=one; limit_req_dry_run on; proxy_pass http://127.0.0.1:9000; }
    location /nozone/ { limit_req zone=nope; proxy_pass http://127.0.0.1:9000; }
    location /gone { return 410; }
  }
}"#,
    );
    let limits = t["rate_limits"].as_table().unwrap();
    let limit = |name: &str| {
        let l = limits[name].as_table().unwrap();
        let key = match &l["key"] {
            toml::Value::String(s) => s.clone(),
            list => strings(Some(list)).join("+"),
        };
        (
            key,
            l["rate"].as_str().unwrap(),
            l["burst"].as_integer().unwrap(),
            l["mode"].as_str().unwrap(),
        )
    };
    let want = |k: &str, r, b, m| (k.to_string(), r, b, m);
    assert_eq!(limit("one"), want("client_ip", "10/s", 20, "reject"));
    // The same zone with another burst (or mode): a second limit.
    assert_eq!(limit("one_burst5"), want("client_ip", "10/s", 5, "delay"));
    // delay=4 under burst=10: the whole burst at once (reported).
    assert_eq!(limit("key"), want("header:x-api-key", "30/m", 10, "reject"));
    // A variable without an equivalent is left out of the key (stricter).
    assert_eq!(limit("odd"), want("client_ip", "5/s", 0, "delay"));
    // With none left, per route (stricter still), never no limit.
    assert_eq!(limit("uri"), want("route", "1/s", 0, "reject"));
    assert_eq!(limits.len(), 5, "{t}");
    assert_eq!(strings(route(&t, "/").get("rate_limit")), ["one"]);
    assert_eq!(
        strings(route(&t, "/api/").get("rate_limit")),
        ["one_burst5", "key"]
    );
    assert_eq!(
        strings(route(&t, "/odd/").get("rate_limit")),
        ["odd", "uri"]
    );
    // nginx does not enforce a dry run's limits; nor its preaccess phase
    // on `return`.
    for path in ["/dry/", "/nozone/", "/gone"] {
        assert!(route(&t, path).get("rate_limit").is_none(), "{path}: {t}");
    }
    for expected in [
        ":12: limit_req: delay=4: Tidegate lets a burst go at once",
        ":4: limit_req_zone: `$binary_remote_addr$request_uri`: $request_uri has no equivalent: left out of the key",
        ":5: limit_req_zone: `$request_uri`: $request_uri has no equivalent: the limit counts per route",
        ":17: limit_req_dry_run: Tidegate has no dry run",
        ":18: limit_req: no limit_req_zone named `nope`",
        ":8: limit_req_status: nginx answers 503; Tidegate answers 429",
        ":16: limit_req_status: nginx answers 503",
    ] {
        assert!(skipped.contains(expected), "{expected}: {skipped}");
    }
    // The location's own `limit_req_status 429` is Tidegate's answer.
    assert!(!skipped.contains(":13: limit_req_status"), "{skipped}");
    assert!(!skipped.contains(":11: limit_req_status"), "{skipped}");
}

/// A converted `limit_req ... nodelay` with no burst refuses the second
/// immediate request of a client, as nginx does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converted_limit_req_refuses_past_its_burst() {
    let origin = recording("app");
    let nginx = format!(
        "http {{
  limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
  server {{
    listen 127.0.0.1:0;
    location / {{ limit_req zone=one nodelay; proxy_pass http://{}; }}
  }}
}}",
        origin.addr
    );
    let (t, _) = convert_checked("limit-req-live", &nginx);
    let proxy = super::common::Proxy::start(&t.to_string());
    let get = |path| super::common::get(proxy.addr, path);
    assert_eq!(get("/a").await.0, 200);
    let (status, headers, _) = get("/b").await;
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"), "{headers:?}");
}
