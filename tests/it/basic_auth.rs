//! Basic auth on a route: htpasswd files written by Debian's `htpasswd`
//! (apache2-utils) for every hash type it has, a 401 with the realm's
//! challenge for every way of not being let in, `Authorization` removed
//! before the upstream, file problems reported by `tidegate check` with
//! their file, line and field, and a reload reading the file again.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::binary::Binary;
use crate::common::config::{Route, TestConfig};
use crate::common::*;
use http::Request;

const CHALLENGE: &str = "Basic realm=\"Admin area\", charset=\"UTF-8\"";

/// Adds `user` to `file` (created if missing) with `htpasswd -b FLAGS`.
fn htpasswd(file: &Path, flags: &[&str], user: &str, password: &str) {
    let mut cmd = Command::new("htpasswd");
    cmd.arg("-b");
    if !file.exists() {
        cmd.arg("-c");
    }
    cmd.args(flags).arg(file).args([user, password]);
    let out = cmd
        .output()
        .expect("htpasswd (Debian package apache2-utils) runs");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// The hash types of this `htpasswd`: (flags, user, password).
fn users() -> Vec<(&'static [&'static str], &'static str, &'static str)> {
    let mut users: Vec<(&'static [&'static str], &'static str, &'static str)> = vec![
        (&["-B", "-C", "4"], "bee", "bcrypt pass"),
        (&["-m"], "apr", "apr1:pass"),
    ];
    // -2 and -5 came with apache2-utils 2.4.58.
    let help = Command::new("htpasswd").arg("--help").output().unwrap();
    let help =
        String::from_utf8_lossy(&help.stderr).into_owned() + &String::from_utf8_lossy(&help.stdout);
    if help.contains(" -2 ") && help.contains(" -5 ") {
        users.push((&["-2"], "sha256", "sha two"));
        users.push((&["-5"], "sha512", "sha five ünï"));
    } else {
        eprintln!("this htpasswd has no -2/-5: SHA-crypt files not tested");
    }
    users
}

/// Answers with the `Authorization` it received (`none` without one),
/// counting requests.
fn echo(count: Arc<AtomicUsize>) -> Backend {
    backend(move |req: Request<hyper::body::Incoming>| {
        count.fetch_add(1, Ordering::SeqCst);
        let seen = req
            .headers()
            .get("authorization")
            .map_or("none".to_string(), |v| {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            });
        async move { text(200, &seen) }
    })
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", b64(&format!("{user}:{password}")))
}

fn b64(s: &str) -> String {
    data_encoding::BASE64.encode(s.as_bytes())
}

fn config(upstream: std::net::SocketAddr, file: &Path, forward: bool) -> String {
    config_with(upstream, file, forward, TestConfig::new())
}

fn config_with(
    upstream: std::net::SocketAddr,
    file: &Path,
    forward: bool,
    base: TestConfig,
) -> String {
    let mut auth = toml::Table::new();
    auth.insert("realm".into(), "Admin area".into());
    auth.insert("htpasswd".into(), file.to_str().unwrap().into());
    if forward {
        auth.insert("forward_authorization".into(), true.into());
    }
    base.group("app", [upstream])
        .route(
            Route::to("app")
                .path_prefix("/admin/")
                .set("basic_auth", toml::Value::Table(auth)),
        )
        .route(Route::to("app"))
        .toml()
}

async fn ask(
    proxy: &Proxy,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    exchange(proxy.addr, "GET", "t", path, headers, empty()).await
}

#[tokio::test]
async fn every_hash_type_lets_its_user_in_and_authorization_stays_here() {
    let dir = Dir::new("users");
    let file = dir.join("users.htpasswd");
    let users = users();
    for (flags, user, password) in &users {
        htpasswd(&file, flags, user, password);
    }
    let count = Arc::new(AtomicUsize::new(0));
    let origin = echo(count.clone());
    let proxy = Proxy::start(&config(origin.addr, &file, false));
    for (_, user, password) in &users {
        // Twice: the second from the thread's cache of verified passwords.
        for _ in 0..2 {
            let auth = basic(user, password);
            let (status, _, body) = ask(&proxy, "/admin/x", &[("authorization", &auth)]).await;
            assert_eq!((status, body.as_str()), (200, "none"), "{user}");
        }
    }
    // Other routes are open, and their Authorization passes.
    let (status, _, body) = ask(&proxy, "/open", &[("authorization", "Bearer t")]).await;
    assert_eq!((status, body.as_str()), (200, "Bearer t"));
    assert_eq!(count.load(Ordering::SeqCst), users.len() * 2 + 1);
}

#[tokio::test]
async fn no_valid_credentials_get_401_with_the_challenge_and_never_reach_the_upstream() {
    let dir = Dir::new("deny");
    let file = dir.join("users");
    htpasswd(&file, &["-B", "-C", "4"], "bee", "right");
    htpasswd(&file, &["-m"], "apr", "right");
    let count = Arc::new(AtomicUsize::new(0));
    let origin = echo(count.clone());
    let proxy = Proxy::start(&config(origin.addr, &file, false));
    let wrong_bee = basic("bee", "wrong");
    let wrong_apr = basic("apr", "wrong");
    let nobody = basic("nobody", "right");
    let no_colon = format!("Basic {}", b64("bee"));
    let cases: [&[(&str, &str)]; 8] = [
        &[],
        &[("authorization", &wrong_bee)],
        &[("authorization", &wrong_apr)],
        &[("authorization", &nobody)],
        &[("authorization", &no_colon)],
        &[("authorization", "Basic !!!not base64")],
        &[("authorization", "Basic")],
        &[("authorization", "Bearer YmVlOnJpZ2h0")],
    ];
    for headers in cases {
        let (status, h, body) = ask(&proxy, "/admin/", headers).await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(h["www-authenticate"], CHALLENGE, "{headers:?}");
        assert_eq!(body, "401 Unauthorized\n");
    }
    // A gRPC call gets gRPC's UNAUTHENTICATED.
    let (status, h, _) = ask(
        &proxy,
        "/admin/svc/Method",
        &[("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["grpc-status"], "16");
    assert_eq!(count.load(Ordering::SeqCst), 0);
    // The right one, after all those.
    let right = basic("bee", "right");
    let (status, _, _) = ask(&proxy, "/admin/", &[("authorization", &right)]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn forward_authorization_keeps_the_field() {
    let dir = Dir::new("forward");
    let file = dir.join("users");
    htpasswd(&file, &["-B", "-C", "4"], "bee", "right");
    let origin = echo(Arc::new(AtomicUsize::new(0)));
    let proxy = Proxy::start(&config(origin.addr, &file, true));
    let right = basic("bee", "right");
    let (status, _, body) = ask(&proxy, "/admin/", &[("authorization", &right)]).await;
    assert_eq!((status, body), (200, right));
}

#[tokio::test]
async fn reload_reads_the_file_again() {
    let dir = Dir::new("reload");
    let file = dir.join("users");
    htpasswd(&file, &["-B", "-C", "4"], "bee", "one");
    let origin = echo(Arc::new(AtomicUsize::new(0)));
    let toml = config(origin.addr, &file, false);
    let mut proxy = Proxy::start(&toml);
    let (one, two) = (basic("bee", "one"), basic("bee", "two"));
    assert_eq!(
        ask(&proxy, "/admin/", &[("authorization", &one)]).await.0,
        200
    );
    assert_eq!(
        ask(&proxy, "/admin/", &[("authorization", &two)]).await.0,
        401
    );
    htpasswd(&file, &["-B", "-C", "4"], "bee", "two");
    proxy.reload(&toml);
    // The old password, verified before, is not taken from the cache.
    assert_eq!(
        ask(&proxy, "/admin/", &[("authorization", &one)]).await.0,
        401
    );
    assert_eq!(
        ask(&proxy, "/admin/", &[("authorization", &two)]).await.0,
        200
    );
}

#[test]
fn check_names_file_line_and_field_of_a_refused_htpasswd() {
    let dir = Dir::new("check");
    // Paths are relative to the config file's folder.
    htpasswd(&dir.join("plain"), &["-m"], "apr", "x");
    htpasswd(&dir.join("plain"), &["-p"], "plain", "text");
    htpasswd(&dir.join("good"), &["-B", "-C", "4"], "bee", "x");
    let write = |name: &str, htpasswd_file: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.app]\nservers = [\"127.0.0.1:9\"]\n\
                 [[routes]]\nupstream = \"app\"\nbasic_auth = {{ realm = \"r\", htpasswd = \"{htpasswd_file}\" }}\n"
            ),
        )
        .unwrap();
        path
    };
    let check = |path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_tidegate"))
            .args(["check", "--config"])
            .arg(path)
            .output()
            .expect("run tidegate check")
    };
    let good = check(&write("good.toml", "good"));
    assert!(good.status.success(), "{good:?}");

    let out = check(&write("plain.toml", "plain"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let want = format!(
        "plain.toml:7: routes[0].basic_auth.htpasswd: {}:2: user `plain`: a plaintext password",
        dir.join("plain").display()
    );
    assert!(err.contains(&want), "{err}");

    let out = check(&write("missing.toml", "nope"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let want = format!(
        "missing.toml:7: routes[0].basic_auth.htpasswd: cannot read {}",
        dir.join("nope").display()
    );
    assert!(err.contains(&want), "{err}");
}

#[tokio::test]
async fn the_access_log_names_the_user_let_in() {
    let dir = Dir::new("log");
    let file = dir.join("users");
    htpasswd(&file, &["-m"], "apr", "right");
    let log = dir.join("access.log");
    let origin = echo(Arc::new(AtomicUsize::new(0)));
    let base = TestConfig::new()
        .set("server.access_log", log.to_str().unwrap())
        .set("server.access_log_format", "combined");
    let proxy = Proxy::start(&config_with(origin.addr, &file, false, base));
    let right = basic("apr", "right");
    let wrong = basic("apr", "wrong");
    assert_eq!(
        ask(&proxy, "/admin/in", &[("authorization", &right)])
            .await
            .0,
        200
    );
    assert_eq!(
        ask(&proxy, "/admin/out", &[("authorization", &wrong)])
            .await
            .0,
        401
    );
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    until("both log lines", || text().lines().count() >= 2).await;
    let text = text();
    let line = |path: &str| {
        text.lines()
            .find(|l| l.contains(path))
            .unwrap_or_else(|| panic!("no line for {path}: {text}"))
            .to_string()
    };
    assert!(line("/admin/in").starts_with("127.0.0.1 - apr ["), "{text}");
    assert!(line("/admin/out").starts_with("127.0.0.1 - - ["), "{text}");
    assert!(line("/admin/out").contains("\" 401 "), "{text}");
}

#[test]
fn nginx_auth_basic_converts_to_basic_auth_on_proxying_routes() {
    let dir = Dir::new("convert");
    htpasswd(&dir.join("users"), &["-B", "-C", "4"], "bee", "x");
    let nginx = "http {\n  upstream app { server 127.0.0.1:9; }\n  server {\n    listen 80;\n    server_name a.test;\n\
                 auth_basic \"Admin area\";\n    auth_basic_user_file users;\n\
                 location / { proxy_pass http://app; }\n\
                 location /open/ { auth_basic off; proxy_pass http://app; }\n\
                 location = /ping { return 200 \"ok\"; }\n  }\n}\n";
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx).unwrap();
    let out = tidegate::convert::convert_file(&conf).expect("converts");
    let routes: Vec<&str> = out.toml.split("[[routes]]").skip(1).collect();
    let with_auth: Vec<&&str> = routes
        .iter()
        .filter(|r| r.contains("basic_auth = { realm = \"Admin area\", htpasswd = \"users\" }"))
        .collect();
    assert_eq!(with_auth.len(), 1, "{}", out.toml);
    assert!(with_auth[0].contains("path_prefix = \"/\""), "{}", out.toml);
    // The converted file loads beside the htpasswd file.
    let toml = dir.join("tidegate.toml");
    tidegate::Config::from_toml(&out.toml, toml.to_str().unwrap()).expect("valid");
}

/// Rate limits come before basic auth (nginx's phase order): a client
/// guessing passwords is limited too, and a password verified the first
/// time (off the worker thread) counts once, not twice.
#[tokio::test]
async fn a_rate_limit_holds_before_the_password_is_checked() {
    let dir = Dir::new("limited");
    let file = dir.join("users");
    htpasswd(&file, &["-B", "-C", "4"], "bee", "right");
    let origin = echo(Arc::new(AtomicUsize::new(0)));
    let base = TestConfig::new()
        .set("rate_limits.guess.rate", "1/m")
        .set("rate_limits.guess.burst", 2);
    let toml = config_with(origin.addr, &file, false, base).replace(
        "[routes.basic_auth]",
        "rate_limit = \"guess\"\n[routes.basic_auth]",
    );
    assert!(toml.contains("rate_limit = \"guess\""), "{toml}");
    let proxy = Proxy::start(&toml);
    let right = basic("bee", "right");
    // Three admitted (rate 1 + burst 2): the first verifies the password.
    for _ in 0..3 {
        let (status, _, _) = ask(&proxy, "/admin/", &[("authorization", &right)]).await;
        assert_eq!(status, 200);
    }
    // Past the limit, a guess is refused before it is checked.
    let wrong = basic("bee", "wrong");
    let (status, h, _) = ask(&proxy, "/admin/", &[("authorization", &wrong)]).await;
    assert_eq!(status, 429);
    assert!(!h.contains_key("www-authenticate"));
    // Other routes are not limited.
    assert_eq!(ask(&proxy, "/open", &[]).await.0, 200);
}

/// A burst of wrong passwords, each hashed off the worker thread, starts
/// at most the worker's blocking-pool cap (32) of threads (it fails
/// without the cap).
#[tokio::test]
async fn a_burst_of_hashes_starts_at_most_the_pools_threads() {
    let dir = Dir::new("pool");
    let file = dir.join("users");
    // (Slow enough that the hashes overlap.)
    htpasswd(&file, &["-B", "-C", "10"], "bee", "right");
    let origin = echo(Arc::default());
    let toml = config_with(origin.addr, &file, false, TestConfig::new().threads(1));
    let cfg = TempFile::with("pool.toml", toml.as_bytes());
    let mut tg = Binary::start(&["--config", cfg.arg(), "--log-level", "info"]);
    let addr = tg.listening().await;
    let pid = tg.pid;
    let threads = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("/proc")
            .count()
    };
    let before = threads();
    let mut asks = tokio::task::JoinSet::new();
    for i in 0..96 {
        let h = basic("bee", &format!("wrong {i}"));
        asks.spawn(async move {
            exchange(
                addr,
                "GET",
                "t",
                "/admin/x",
                &[("authorization", &h)],
                empty(),
            )
            .await
            .0
        });
    }
    let codes = tokio::time::timeout(HANG, asks.join_all())
        .await
        .expect("all answered");
    assert!(codes.iter().all(|&c| c == 401), "{codes:?}");
    // (Idle pool threads stay for seconds: they are all still there. The
    // slack of 8 is for the helper threads started on first use, such as
    // the access log's; without the cap this burst started about 100.)
    let after = threads();
    assert!(after <= before + 32 + 8, "{before} threads, then {after}");
}
