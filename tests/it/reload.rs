//! Hot reload: a new config is swapped in under load without a failed
//! request; listeners come and go without touching the others; a broken
//! file leaves the old config serving.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::binary::Binary;
use crate::common::config::TestConfig;
use crate::common::*;
use http::Request;
use http_body_util::BodyExt;
use rustix::process::Signal;

fn named(name: &'static str) -> Backend {
    backend(move |_req| async move { text(200, name) })
}

fn config(listeners: &[&str], upstream: SocketAddr) -> String {
    TestConfig::proxying(upstream)
        .log_level("error")
        .listeners_at(listeners)
        .toml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request() {
    let (a, b) = (named("a"), named("b"));
    let mut proxy = Proxy::start(&config(&["127.0.0.1:0"], a.addr));
    let addr = proxy.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let (done, from_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, done, from_b) = (stop.clone(), done.clone(), from_b.clone());
        // Kept-alive clients: their connections outlive the reload.
        clients.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut failures = 0;
            while !stop.load(Ordering::SeqCst) {
                sender.ready().await?;
                let req = Request::get("/").header("host", "t").body(empty())?;
                let resp = sender.send_request(req).await?;
                let ok = resp.status() == 200;
                let body = resp.into_body().collect().await?.to_bytes();
                match (ok, body.as_ref()) {
                    (true, b"a") => {}
                    (true, b"b") => {
                        from_b.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => failures += 1,
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<usize, Error>(failures)
        }));
    }
    until("traffic before the reload", || {
        done.load(Ordering::SeqCst) > 200
    })
    .await;
    proxy.reload(&config(&["127.0.0.1:0"], b.addr));
    // The listener is the same one (same address configured).
    assert_eq!(proxy.addr, addr);
    until("the new config serving", || {
        from_b.load(Ordering::SeqCst) > 200
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let failures = tokio::time::timeout(HANG, c)
            .await
            .expect("client ends")
            .expect("task")
            .expect("no connection error");
        assert_eq!(failures, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_added_and_removed_by_reload() {
    let a = named("a");
    let mut proxy = Proxy::start(&config(&["127.0.0.1:0"], a.addr));
    let first = proxy.addr;
    // Keep a connection open on the first listener across both reloads.
    let mut kept = RawConn::connect(first).await;

    let fixed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let two = config(&["127.0.0.1:0", &fixed.to_string()], a.addr);
    proxy.reload(&two);
    assert_eq!(proxy.addr, first, "the kept listener keeps its socket");
    assert_eq!(get(fixed, "/").await.2, "a");

    proxy.reload(&config(&["127.0.0.1:0"], a.addr));
    until("the removed listener to refuse", || {
        std::net::TcpStream::connect(fixed).is_err()
    })
    .await;
    assert_eq!(get(first, "/").await.2, "a");
    kept.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(kept.response().await.text(), "a");
}

/// `tidegate reload` checks the file first (a broken one is not sent:
/// exit 2, its problems on stderr), then signals and waits for the
/// running process's answer: exit 1 with the reason when the process
/// refused the file (here a new listener on a port another process
/// holds, which only binding finds), exit 0 once the new file serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_command_checks_first_and_reports_the_processs_answer() {
    let (a, b) = (named("a"), named("b"));
    let file = TempFile::with(
        "reload.toml",
        config(&["127.0.0.1:0"], a.addr)
            .replace("log_level = \"error\"", "log_level = \"info\"")
            .as_bytes(),
    );
    let pid_file = TempFile::new("tidegate.pid");
    let mut tidegate = Binary::start(&["--config", file.arg(), "--pid-file", pid_file.arg()]);
    let addr = tidegate.listening().await;
    assert_eq!(get(addr, "/").await.2, "a");

    let reload = || async {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidegate"));
        cmd.args(["reload", "--pid-file", pid_file.arg()]);
        let out = run_command(cmd).await;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), said, err)
    };

    std::fs::write(&file.path, "[[listeners]]\naddress = 17\n").unwrap();
    let (code, _, err) = reload().await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:2: listeners[0].address", file.arg())),
        "{err}"
    );
    assert!(err.contains("not reloaded"), "{err}");
    assert_eq!(get(addr, "/").await.2, "a");

    // Valid for `check`, refused by the process: the port is taken.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap();
    std::fs::write(
        &file.path,
        config(&["127.0.0.1:0", &taken.to_string()], b.addr),
    )
    .unwrap();
    let (code, _, err) = reload().await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on {taken}")), "{err}");
    assert!(err.contains("refused the reload"), "{err}");
    assert_eq!(get(addr, "/").await.2, "a");
    drop(held);

    std::fs::write(&file.path, config(&["127.0.0.1:0"], b.addr)).unwrap();
    let (code, said, err) = reload().await;
    assert_eq!(code, Some(0), "{err}");
    assert!(said.contains("reloaded"), "{said}");
    // Answered once every worker serves it.
    assert_eq!(get(addr, "/").await.2, "b");

    tidegate.signal(Signal::TERM);
    let (status, log) = tidegate.wait().await;
    assert!(status.success(), "{status:?}: {log}");
    assert!(!pid_file.path.exists(), "pid file removed at exit");
    let answers = format!("{}.reload", pid_file.arg());
    assert!(
        !std::path::Path::new(&answers).exists(),
        "answer file removed at exit"
    );
}

/// The admin listener's address, from the binary's log (before
/// "listening on", which follows it).
async fn admin_addr(tidegate: &mut Binary) -> SocketAddr {
    let line = tidegate.line_with("admin listener on http://").await;
    line.split("admin listener on http://")
        .nth(1)
        .and_then(|r| r.split(|c: char| c.is_whitespace() || c == '"').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// `POST /reload` does what SIGHUP does and answers when it is done: 200
/// with the new file live, or 422 with the file's problems (line and
/// field) and the old config still serving; counted as SIGHUP's are. It
/// needs the token like every admin endpoint, and only POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_answers_with_the_result() {
    let (a, b) = (named("a"), named("b"));
    let token = "reload-token";
    let with_admin =
        |toml: String| format!("{toml}[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{token}\"\n");
    let file = TempFile::with(
        "admin-reload.toml",
        with_admin(
            config(&["127.0.0.1:0"], a.addr)
                .replace("log_level = \"error\"", "log_level = \"info\""),
        )
        .as_bytes(),
    );
    let mut tidegate = Binary::start(&["--config", file.arg()]);
    let admin = admin_addr(&mut tidegate).await;
    let addr = tidegate.listening().await;
    assert_eq!(get(addr, "/").await.2, "a");
    let auth = format!("Bearer {token}");
    let auth = [("authorization", auth.as_str())];
    let call = |method, path, headers| exchange(admin, method, "admin", path, headers, empty());
    let post = || async {
        let (status, _, body) = call("POST", "/reload", &auth).await;
        (status, body)
    };

    // The token, and POST only.
    assert_eq!(call("POST", "/reload", &[]).await.0, 401);
    let (status, h, _) = call("GET", "/reload", &auth).await;
    assert_eq!(status, 405);
    assert_eq!(h["allow"], "POST");

    // A file with a problem: 422, the problem with its line; `a` serves on.
    let broken = with_admin(config(&["127.0.0.1:0"], b.addr)).replace(
        "[upstreams.app]",
        "[upstreams.app]\nretry = { attempts = 99 }",
    );
    std::fs::write(&file.path, &broken).unwrap();
    let line = broken.lines().position(|l| l.contains("attempts")).unwrap() + 1;
    let (status, body) = post().await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body,
        format!(
            "{}:{line}: upstreams.app.retry.attempts: 99 is outside 1..=10\n",
            file.arg()
        )
    );
    assert_eq!(get(addr, "/").await.2, "a");

    // A valid one: live when the answer comes.
    std::fs::write(&file.path, with_admin(config(&["127.0.0.1:0"], b.addr))).unwrap();
    assert_eq!(post().await, (200, "reloaded\n".to_string()));
    assert_eq!(get(addr, "/").await.2, "b");

    // Counted as SIGHUP's reloads are.
    let (_, _, metrics) = call("GET", "/metrics", &auth).await;
    for (result, n) in [("ok", 1), ("failed", 1)] {
        let series = format!("tidegate_config_reloads_total{{result=\"{result}\"}} {n}\n");
        assert!(metrics.contains(&series), "{series}: {metrics}");
    }

    tidegate.signal(Signal::TERM);
    let (status, log) = tidegate.wait().await;
    assert!(status.success(), "{status:?}: {log}");
}

/// Two reloads asked at once both get their answer (one runs, then the
/// other), and a SIGHUP between them is no trouble.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_asked_at_once_run_one_after_another() {
    let a = named("a");
    let file = TempFile::with(
        "admin-reloads.toml",
        format!(
            "{}[admin]\naddress = \"127.0.0.1:0\"\n",
            config(&["127.0.0.1:0"], a.addr)
                .replace("log_level = \"error\"", "log_level = \"info\"")
        )
        .as_bytes(),
    );
    let mut tidegate = Binary::start(&["--config", file.arg()]);
    let admin = admin_addr(&mut tidegate).await;
    let addr = tidegate.listening().await;
    let asks: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(
                async move { exchange(admin, "POST", "admin", "/reload", &[], empty()).await },
            )
        })
        .collect();
    tidegate.signal(Signal::HUP);
    for ask in asks {
        let (status, _, body) = ask.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "reloaded\n"));
    }
    assert_eq!(get(addr, "/").await.2, "a");
    tidegate.line_with("SIGHUP: reloaded").await;
    tidegate.signal(Signal::TERM);
    let (status, log) = tidegate.wait().await;
    assert!(status.success(), "{status:?}: {log}");
    assert_eq!(log.matches("reloaded").count(), 5, "{log}");
}
