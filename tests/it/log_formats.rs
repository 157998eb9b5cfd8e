//! Access-log formats: `combined` byte for byte as nginx writes it (the
//! same requests through nginx and Tidegate, lines compared) and read by
//! GoAccess; `json` read by serde; templates; SIGUSR1 / `tidegate reopen`
//! after the file was moved: new lines in the new file, none lost.

use std::process::{Child, Command, Stdio};

use crate::common::binary::Binary;
use crate::common::config::{Route, TestConfig};
use crate::common::*;
use http::Request;

fn origin() -> Backend {
    backend(|req: Request<hyper::body::Incoming>| async move {
        match req.uri().path() {
            "/missing" => text(404, "nope"),
            _ => text(200, "hello"),
        }
    })
}

/// Requests with awkward fields: quotes, a backslash, bytes above 0x7E,
/// no User-Agent at all.
fn requests() -> Vec<Request<Body>> {
    let mut out = Vec::new();
    let with = |path: &str, headers: &[(&str, &[u8])]| {
        let mut r = Request::get(path).header("host", "logs.test");
        for (k, v) in headers {
            r = r.header(*k, http::HeaderValue::from_bytes(v).unwrap());
        }
        r.body(empty()).unwrap()
    };
    out.push(with("/a?x=1", &[("user-agent", b"curl/8.0")]));
    out.push(with(
        "/missing",
        &[
            ("user-agent", b"say \"hi\" \\o/"),
            ("referer", b"http://r.test/p?q=1"),
        ],
    ));
    out.push(with("/caf%C3%A9", &[("user-agent", b"caf\xc3\xa9")]));
    out.push(with("/none", &[]));
    out
}

/// The lines of `path` once it has `n` of them (bounded by HANG).
async fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    tokio::time::timeout(HANG, async {
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(String::from).collect();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} never had {n} lines", path.display()))
}

/// nginx as a reverse proxy to `origin` on port 0... nginx needs a port:
/// one found free, with its access log in `combined`.
struct Nginx {
    child: Child,
    addr: std::net::SocketAddr,
    dir: std::path::PathBuf,
}

impl Nginx {
    fn start(origin: std::net::SocketAddr, log: &std::path::Path) -> Nginx {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("tidegate-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
               client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
               uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               access_log {log} combined;\n\
               server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://{origin}; }} }}\n\
             }}\n",
            d = dir.display(),
            log = log.display(),
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .args(["-p", dir.to_str().unwrap(), "-c", path.to_str().unwrap()])
            .args(["-e", dir.join("error.log").to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx runs (apt-get install nginx)");
        Nginx {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A combined line without its time (`[...]`), which differs.
fn timeless(line: &str) -> String {
    match (line.find(" ["), line.find("] ")) {
        (Some(a), Some(b)) => format!("{}{}", &line[..a], &line[b + 1..]),
        _ => line.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_is_nginx_byte_for_byte_and_goaccess_reads_it() {
    let origin = origin();
    let ours = TempFile::new("combined.log");
    let theirs = TempFile::new("nginx-combined.log");
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .set("server.access_log", ours.arg())
            .set("server.access_log_format", "combined")
            .toml(),
    );
    let nginx = Nginx::start(origin.addr, &theirs.path);
    // nginx is up once it answers.
    tokio::time::timeout(HANG, async {
        while tokio::net::TcpStream::connect(nginx.addr).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("nginx listens");
    for (a, b) in requests().into_iter().zip(requests()) {
        let x = send(proxy.addr, a)
            .await
            .expect("tidegate answers")
            .status();
        let y = send(nginx.addr, b).await.expect("nginx answers").status();
        assert_eq!(x, y);
    }
    let n = requests().len();
    // Each worker thread hands its lines over on its own: compare in a
    // stable order.
    let mut ours_lines = lines(&ours.path, n).await;
    let mut theirs_lines = lines(&theirs.path, n).await;
    ours_lines.sort_by_key(|l| timeless(l));
    theirs_lines.sort_by_key(|l| timeless(l));
    for (a, b) in ours_lines.iter().zip(&theirs_lines) {
        assert_eq!(timeless(a), timeless(b), "\nours:   {a}\nnginx:  {b}");
        // The time field has nginx's shape too.
        assert_eq!(a.find(" ["), b.find(" ["));
        assert_eq!(a.find("] "), b.find("] "));
    }
    drop(nginx);

    let report = TempFile::new("goaccess.json");
    let out = Command::new("goaccess")
        .arg(&ours.path)
        .args(["--log-format=COMBINED", "-o", report.arg()])
        .stdin(Stdio::null())
        .output()
        .expect("goaccess runs (apt-get install goaccess)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report.path).unwrap()).unwrap();
    assert_eq!(json["general"]["valid_requests"], n, "{}", json["general"]);
    assert_eq!(json["general"]["failed_requests"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_have_stable_keys() {
    let origin = origin();
    let log = TempFile::new("json.log");
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .set("server.access_log", log.arg())
            .set("server.access_log_format", "json")
            .toml(),
    );
    for r in requests() {
        send(proxy.addr, r).await.expect("answer");
    }
    let lines = lines(&log.path, 4).await;
    let v: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    let find = |uri: &str| {
        v.iter()
            .find(|o| o["uri"] == uri)
            .unwrap_or_else(|| panic!("no line for {uri}: {lines:?}"))
    };
    let a = find("/a?x=1");
    let keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = vec![
        "time",
        "client",
        "method",
        "uri",
        "protocol",
        "status",
        "bytes_sent",
        "upstream",
        "duration",
        "outcome",
        "host",
        "referer",
        "user_agent",
        "request_id",
        "user",
    ];
    want.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(a["method"], "GET");
    assert_eq!(a["protocol"], "HTTP/1.1");
    assert_eq!(a["status"], 200);
    assert_eq!(a["bytes_sent"], 5);
    assert_eq!(a["upstream"], origin.addr.to_string());
    assert_eq!(a["outcome"], "done");
    assert_eq!(a["host"], "logs.test");
    assert_eq!(a["user_agent"], "curl/8.0");
    assert!(a["referer"].is_null());
    assert!(a["request_id"].is_null(), "no request_id on this listener");
    assert!(a["user"].is_null(), "no basic_auth on this route");
    assert!(a["duration"].as_f64().is_some_and(|d| d >= 0.0));
    let m = find("/missing");
    assert_eq!(m["user_agent"], "say \"hi\" \\o/");
    assert_eq!(m["referer"], "http://r.test/p?q=1");
    assert_eq!(m["status"], 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_write_their_variables() {
    let origin = origin();
    let log = TempFile::new("template.log");
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .set("server.access_log", log.arg())
            .set(
                "server.access_log_format",
                "$request_method $request_uri $status $body_bytes_sent $host ${http_x_trace}|$outcome",
            )
            .toml(),
    );
    let req = Request::get("/t?q=1")
        .header("host", "tpl.test")
        .header("x-trace", "abc")
        .body(empty())
        .unwrap();
    send(proxy.addr, req).await.unwrap();
    let lines = lines(&log.path, 1).await;
    assert_eq!(lines[0], "GET /t?q=1 200 5 tpl.test abc|done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_the_file_moved_loses_no_line() {
    let origin = origin();
    let log = TempFile::new("rotate.log");
    let moved = TempFile::new("rotate.log.1");
    let pid = TempFile::new("rotate.pid");
    let config = TempFile::with(
        "rotate.toml",
        TestConfig::proxying(origin.addr)
            .log_level("info")
            .set("server.access_log", log.arg())
            .toml()
            .as_bytes(),
    );
    let mut tg = Binary::start(&["--config", config.arg(), "--pid-file", pid.arg()]);
    let addr = tg.listening().await;
    for _ in 0..5 {
        assert_eq!(get(addr, "/before").await.0, 200);
    }
    // The five are written (once a second at most), then logrotate moves
    // the file.
    lines(&log.path, 5).await;
    std::fs::rename(&log.path, &moved.path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["reopen", "--pid-file", pid.arg()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tg.line_with("reopened").await;
    for _ in 0..3 {
        assert_eq!(get(addr, "/after").await.0, 200);
    }
    tg.signal(rustix::process::Signal::TERM);
    let (status, _) = tg.wait().await;
    assert!(status.success());
    let old = std::fs::read_to_string(&moved.path).unwrap();
    let new = std::fs::read_to_string(&log.path).unwrap();
    assert_eq!(old.lines().count(), 5, "{old}");
    assert!(old.lines().all(|l| l.contains("/before")), "{old}");
    assert_eq!(new.lines().count(), 3, "{new}");
    assert!(new.lines().all(|l| l.contains("/after")), "{new}");
}

/// One ID per request: made here unless a trusted client sent one, sent
/// upstream, returned to the client, in the access log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_go_upstream_back_and_into_the_log() {
    // The origin answers with the IDs it received (each field: one
    // expected, the client's untrusted one replaced, not kept beside it).
    let origin =
        backend(
            |req: Request<hyper::body::Incoming>| async move { text(200, &fields(&req, "x-req")) },
        );
    let log = TempFile::new("ids.log");
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .set("server.access_log", log.arg())
            .set("server.access_log_format", "$request_id $status")
            .listener_set("request_id.header", "x-req")
            .toml(),
    );
    let trusted = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .listener_set("request_id.header", "x-req")
            .listener_set("request_id.trust_incoming", true)
            .toml(),
    );
    let ask = |addr, sent: Option<&'static str>| async move {
        let sent: Vec<(&str, &str)> = sent.map(|s| ("x-req", s)).into_iter().collect();
        let (_, h, body) = exchange(addr, "GET", "ids.test", "/", &sent, empty()).await;
        assert_eq!(h.get_all("x-req").iter().count(), 1, "{h:?}");
        (h["x-req"].to_str().unwrap().to_string(), body)
    };
    let (a, seen_a) = ask(proxy.addr, None).await;
    let (b, seen_b) = ask(proxy.addr, Some("client-made")).await;
    assert_eq!(a.len(), 32, "{a}");
    assert_eq!(a, seen_a, "the origin got the ID the client got back");
    assert_ne!(a, b);
    assert_eq!(b, seen_b);
    assert_ne!(b, "client-made", "untrusted: replaced");
    let (c, seen_c) = ask(trusted.addr, Some("client-made")).await;
    assert_eq!(
        (c.as_str(), seen_c.as_str()),
        ("client-made", "client-made")
    );
    let (d, _) = ask(trusted.addr, Some("bad id")).await;
    assert_eq!(d.len(), 32, "a malformed one is replaced: {d}");

    let mut lines = lines(&log.path, 2).await;
    lines.sort();
    let mut want = vec![format!("{a} 200"), format!("{b} 200")];
    want.sort();
    assert_eq!(lines, want);
}

/// Every `name` field of `req`, joined by commas.
fn fields(req: &Request<hyper::body::Incoming>, name: &str) -> String {
    all_values(req.headers(), name)
}

/// The ID and `traceparent` go upstream where the request goes out, but a
/// route's `request_headers` rules see them as any field: removed,
/// replaced or added to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_header_rules_see_the_request_id_and_traceparent() {
    let origin = backend(|req: Request<hyper::body::Incoming>| async move {
        let id = fields(&req, "x-req");
        text(200, &format!("{id} {}", fields(&req, "traceparent")))
    });
    let proxy = Proxy::start(
        &TestConfig::new()
            .threads(1)
            .set("tracing.otlp_endpoint", "http://127.0.0.1:9/v1/traces")
            .set("tracing.sample_ratio", 0.0)
            .listener_set("request_id.header", "x-req")
            .route(
                Route::to("app")
                    .path_prefix("/rm/")
                    .set("request_headers.remove", vec!["x-req", "traceparent"]),
            )
            .route(
                Route::to("app")
                    .path_prefix("/add/")
                    .set("request_headers.add.x-req", "extra"),
            )
            .route(Route::to("app"))
            .group("app", [origin.addr])
            .toml(),
    );
    let ask = |path: &'static str| async move {
        let sent = [("x-req", "client-made")];
        let (_, h, body) = exchange(proxy.addr, "GET", "ids.test", path, &sent, empty()).await;
        (h["x-req"].to_str().unwrap().to_string(), body)
    };
    let (id, seen) = ask("/rm/").await;
    assert_eq!((id.len(), seen.as_str()), (32, " "), "both removed");
    let (id, seen) = ask("/add/").await;
    let (ids, tp) = seen.split_once(' ').unwrap();
    assert_eq!(ids, format!("{id},extra"));
    assert_eq!(tp.len(), 55, "{tp}");
    let (id, seen) = ask("/").await;
    let (ids, tp) = seen.split_once(' ').unwrap();
    assert_eq!((ids, tp.len()), (id.as_str(), 55), "one of each: {seen}");
}

/// The client gets one ID back, the request's: an origin's field of that
/// name, or a route's rule setting one, is replaced by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_gets_one_id_back_whatever_the_origin_sends() {
    let origin = backend(|req: Request<hyper::body::Incoming>| async move {
        let mut resp = text(200, &fields(&req, "x-req"));
        if req.uri().path() == "/echo" {
            let h = resp.headers_mut();
            h.insert("x-req", "from-origin".parse().unwrap());
            h.append("x-req", "twice".parse().unwrap());
        }
        resp
    });
    let proxy = Proxy::start(
        &TestConfig::new()
            .threads(1)
            .listener_set("request_id.header", "x-req")
            .route(
                Route::to("app")
                    .path_prefix("/rule/")
                    .set("response_headers.set.x-req", "from-rule"),
            )
            .route(Route::to("app"))
            .group("app", [origin.addr])
            .toml(),
    );
    for path in ["/", "/echo", "/rule/"] {
        let (status, h, body) = exchange(proxy.addr, "GET", "ids.test", path, &[], empty()).await;
        assert_eq!(status, 200);
        let ids: Vec<_> = h.get_all("x-req").iter().collect();
        assert_eq!(ids.len(), 1, "{path}: {ids:?}");
        assert_eq!(
            ids[0].to_str().unwrap(),
            body,
            "{path}: the ID the origin got"
        );
    }
}

#[test]
fn bad_formats_are_config_errors() {
    let base = TestConfig::proxying("127.0.0.1:9")
        .set("server.access_log_format", "$status $nope")
        .toml();
    let e = tidegate::Config::from_toml(&base, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("server.access_log_format: `$nope` is not a variable"),
        "{e}"
    );
}

/// A route's own `request_id` wins for the requests it takes; a route
/// without one takes its listener's (none, then `x-req`): upstream, back
/// to the client, in the access log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_request_id_wins_for_the_requests_it_takes() {
    // The origin answers with the IDs it received, in both fields.
    let origin = backend(|req: Request<hyper::body::Incoming>| async move {
        let h = |n: &str| {
            req.headers()
                .get(n)
                .map_or("-", |v| v.to_str().unwrap())
                .to_string()
        };
        text(200, &format!("{} {}", h("x-trace-a"), h("x-req")))
    });
    let log = TempFile::new("route-ids.log");
    let config = |listener_id: bool| {
        let c = TestConfig::new()
            .set("server.access_log", log.arg())
            .set("server.access_log_format", "$request_uri $request_id")
            .group("app", [origin.addr])
            .route(Route::to("app").path_prefix("/b/"))
            .route(
                Route::to("app")
                    .path_prefix("/a/")
                    .set("request_id.header", "x-trace-a"),
            )
            .route(
                Route::to("app")
                    .path_prefix("/t/")
                    .set("request_id.header", "x-trace-a")
                    .set("request_id.trust_incoming", true),
            )
            .route(
                Route::respond(204)
                    .path("/fixed")
                    .set("request_id.header", "x-trace-a"),
            );
        match listener_id {
            true => c.listener_set("request_id.header", "x-req"),
            false => c,
        }
        .toml()
    };
    let proxy = Proxy::start(&config(false));
    let ask = |addr, path: &'static str, sent: &'static [(&'static str, &'static str)]| async move {
        let (status, h, body) = exchange(addr, "GET", "ids.test", path, sent, empty()).await;
        let got = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string());
        (status, got("x-trace-a"), got("x-req"), body)
    };
    let hex32 = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());

    let (_, a, none, seen) = ask(proxy.addr, "/a/1", &[]).await;
    let a = a.expect("route A's field");
    assert!(hex32(&a), "{a}");
    assert_eq!(none, None);
    assert_eq!(seen, format!("{a} -"), "the origin got the same one");
    let (_, replaced, _, seen) = ask(proxy.addr, "/a/2", &[("x-trace-a", "client-made")]).await;
    let replaced = replaced.unwrap();
    assert!(hex32(&replaced), "untrusted: replaced, {replaced}");
    assert_eq!(seen, format!("{replaced} -"));
    let (_, kept, _, seen) = ask(proxy.addr, "/t/1", &[("x-trace-a", "client-made")]).await;
    assert_eq!(kept.as_deref(), Some("client-made"));
    assert_eq!(seen, "client-made -");
    let (_, b, none, seen) = ask(proxy.addr, "/b/1", &[]).await;
    assert_eq!((b, none, seen.as_str()), (None, None, "- -"));
    let (status, fixed, _, _) = ask(proxy.addr, "/fixed", &[]).await;
    assert_eq!(status, 204);
    let fixed = fixed.expect("a route's own answer carries it too");
    assert!(hex32(&fixed), "{fixed}");

    let mut got = lines(&log.path, 5).await;
    got.sort();
    let mut want = vec![
        format!("/a/1 {a}"),
        format!("/a/2 {replaced}"),
        "/t/1 client-made".to_string(),
        "/b/1 -".to_string(),
        format!("/fixed {fixed}"),
    ];
    want.sort();
    assert_eq!(got, want);
    drop(proxy);

    // With the listener's too: route A's wins, route B inherits the
    // listener's, and a request that no route takes still gets one.
    let proxy = Proxy::start(&config(true));
    let (_, a, listeners, seen) = ask(proxy.addr, "/a/1", &[]).await;
    let a = a.unwrap();
    assert_eq!(listeners, None, "only the route's");
    assert_eq!(seen, format!("{a} -"));
    let (_, none, b, seen) = ask(proxy.addr, "/b/1", &[]).await;
    let b = b.expect("the listener's");
    assert!(hex32(&b), "{b}");
    assert_eq!(none, None);
    assert_eq!(seen, format!("- {b}"));
    let (status, none, unrouted, _) = ask(proxy.addr, "/nowhere", &[]).await;
    assert_eq!((status, none), (404, None));
    assert!(hex32(&unrouted.expect("the listener's")));
}
