//! Zero-downtime binary upgrade (`tidegate upgrade`, SIGUSR2): under wrk
//! load (kept-alive connections, and a new connection per request), three
//! upgrades in a row fail no request and refuse no connection; a response streaming and a WebSocket open across them
//! finish on the process they started on; an upgrade whose new process
//! cannot start leaves the old one serving.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::BodyExt;
use rustix::process::{kill_process, Pid, Signal};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::binary::Binary;
use crate::common::*;

fn config(app: SocketAddr, slow: SocketAddr, ws: SocketAddr) -> String {
    format!(
        "[server]\nlog_level = \"info\"\nshutdown_grace = \"60s\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\
         [[routes]]\npath_prefix = \"/slow\"\nupstream = \"slow\"\n\
         [[routes]]\npath_prefix = \"/ws\"\nupstream = \"ws\"\n\
         [[routes]]\nupstream = \"app\"\n\
         [upstreams.app]\nservers = [\"http://{app}\"]\n\
         [upstreams.slow]\nservers = [\"http://{slow}\"]\n\
         [upstreams.ws]\nservers = [\"http://{ws}\"]\n"
    )
}

fn pid_in(file: &TempFile) -> i32 {
    std::fs::read_to_string(&file.path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A pid file; whatever process it names is killed when the test ends
/// (the upgraded processes are not the test's children).
struct PidFile(TempFile);

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(p) = Pid::from_raw(pid_in(&self.0)) {
            let _ = kill_process(p, Signal::KILL);
        }
    }
}

/// A Tidegate started from `toml` with a pid file, serving.
struct Started {
    run: Binary,
    addr: SocketAddr,
    file: TempFile,
    pid_file: PidFile,
}

impl Started {
    async fn new(toml: &str) -> Started {
        let file = TempFile::with("upgrade.toml", toml.as_bytes());
        let pid_file = PidFile(TempFile::new("upgrade.pid"));
        let mut run = Binary::start(&["--config", file.arg(), "--pid-file", pid_file.0.arg()]);
        let addr = run.listening().await;
        until("pid file", || pid_in(&pid_file.0) == run.pid as i32).await;
        Started {
            run,
            addr,
            file,
            pid_file,
        }
    }
}

async fn upgrade(pid_file: &TempFile) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidegate"));
    cmd.args(["upgrade", "--pid-file", pid_file.arg()]);
    let out = run_command(cmd).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws_echo(socket: &mut Ws, text: &'static str) -> String {
    socket.send(Message::text(text)).await.expect("ws send");
    match tokio::time::timeout(HANG, socket.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.as_str().to_string(),
        other => panic!("no echo: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_upgrades_under_load_fail_nothing() {
    let app = backend(|_| async { text(200, "ok") });
    // A response that streams until the test says.
    let (chunks_tx, mut chunks) = tokio::sync::mpsc::unbounded_channel();
    let slow = backend(move |_| {
        let chunks_tx = chunks_tx.clone();
        async move {
            let (channel, body) = BodyChannel::new();
            let _ = chunks_tx.send(channel);
            Response::new(body)
        }
    });
    let ws = raw_backend(|stream| async move {
        if let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await {
            crate::common::ws::echo(&mut ws, "echo:").await;
        }
    });
    let started = Started::new(&config(app.addr, slow.addr, ws.addr)).await;
    let (addr, pid_file, first) = (started.addr, &started.pid_file.0, &started.run);

    // Open before the first upgrade: a streaming response, a WebSocket.
    let streaming = tokio::spawn(async move {
        let req = Request::get(format!("http://{addr}/slow"))
            .header("host", "t")
            .body(empty())
            .unwrap();
        let resp = send(addr, req).await.expect("response head");
        resp.into_body().collect().await.map(|b| b.to_bytes())
    });
    let mut feed = tokio::time::timeout(HANG, chunks.recv())
        .await
        .expect("slow request arrives")
        .expect("channel");
    assert!(feed.send(Bytes::from_static(b"before ")).await);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp)
        .await
        .expect("websocket");
    assert_eq!(ws_echo(&mut socket, "one").await, "echo:one");

    // Load through all three upgrades; stopped with SIGINT, which makes
    // wrk print its totals. One wrk keeps its connections; the other asks
    // for `Connection: close`, so each of its requests comes on a new
    // connection: some are accepted just as a process hands over.
    let wrk = |extra: &[&str]| {
        Command::new("wrk")
            .args(["-t1", "-c20", "-d120s", "--timeout", "10s"])
            .args(extra)
            .arg(format!("http://{addr}/"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wrk (Debian package wrk)")
    };
    let loads = [wrk(&[]), wrk(&["-H", "Connection: close"])];
    let old = first.pid as i32;
    let mut pids = vec![old];
    for round in 1..=3 {
        // Some load on the current process first.
        for _ in 0..5 {
            assert_eq!(get(addr, "/").await.0, 200);
        }
        let (code, said) = upgrade(pid_file).await;
        assert_eq!(code, Some(0), "upgrade {round}: {said}");
        let new = pid_in(pid_file);
        assert!(
            !pids.contains(&new) && alive(new),
            "upgrade {round}: pid {new}: {said}"
        );
        pids.push(new);
    }
    // The streaming response and the WebSocket are still the first
    // process's, which has not exited: it drains them.
    assert!(alive(old), "the first process waits for its open exchanges");
    assert_eq!(ws_echo(&mut socket, "two").await, "echo:two");
    assert!(feed.send(Bytes::from_static(b"after")).await);
    drop(feed);
    let body = tokio::time::timeout(HANG, streaming)
        .await
        .expect("stream ends")
        .expect("join")
        .expect("whole body");
    assert_eq!(&body[..], b"before after");
    socket.close(None).await.expect("ws close");
    drop(socket);
    // With nothing left open, every old process exits. (Not `wait`: the
    // newer processes still write to the stderr they inherited.)
    for &p in &pids[..3] {
        until("an old process to exit", || !alive(p)).await;
    }
    assert!(first.log.iter().all(|l| !l.contains("panicked")));

    for wrk in loads {
        let wrk_pid = Pid::from_raw(wrk.id() as i32).expect("wrk pid");
        kill_process(wrk_pid, Signal::INT).expect("stop wrk");
        let out = tokio::task::spawn_blocking(move || wrk.wait_with_output())
            .await
            .unwrap()
            .expect("wrk output");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(report.contains("requests in"), "{report}");
        assert!(
            !report.contains("Socket errors"),
            "failed or refused: {report}"
        );
        assert!(!report.contains("Non-2xx"), "{report}");
    }
    // The last process serves.
    assert_eq!(get(addr, "/").await.2, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_cannot_start_leaves_the_old_one_serving() {
    let app = backend(|_| async { text(200, "ok") });
    let Started {
        mut run,
        addr,
        file,
        pid_file,
    } = Started::new(&config(app.addr, app.addr, app.addr)).await;
    let pid_file = &pid_file.0;
    // The new process reads the file as it is now: broken.
    std::fs::write(&file.path, "[[listeners]]\naddress = 17\n").unwrap();
    let (code, said) = upgrade(pid_file).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("exited"), "{said}");
    assert_eq!(pid_in(pid_file), run.pid as i32);
    assert_eq!(get(addr, "/").await.2, "ok");
    run.line_with("upgrade failed, this process serves on")
        .await;
    run.signal(Signal::TERM);
    assert!(run.wait().await.0.success());
}
