//! What start refuses, as nginx does, and where relative paths lead: a
//! second process (another Tidegate) cannot take a share of a port that
//! one already listens on (SO_REUSEPORT would let it); an access log that
//! cannot be opened names its path and field; a relative access-log path
//! is relative to the config file's folder, not the working directory;
//! SIGQUIT stops gracefully.

use crate::common::binary::Binary;
use crate::common::{backend, get, text, until, TempFile};

fn config(port: u16, origin: std::net::SocketAddr, server: &str) -> String {
    format!(
        "[server]\n{server}\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\
         [[routes]]\nupstream = \"app\"\n\
         [upstreams.app]\nservers = [\"http://{origin}\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tidegate_cannot_share_a_port() {
    let origin = backend(|_| async { text(200, "first") });
    let first_file = TempFile::with("first.toml", config(0, origin.addr, "").as_bytes());
    let mut first = Binary::start(&["--config", first_file.arg(), "--threads", "2"]);
    let addr = first.listening().await;

    let second_file = TempFile::with(
        "second.toml",
        config(addr.port(), origin.addr, "").as_bytes(),
    );
    let second = Binary::start(&["--config", second_file.arg()]);
    let (status, log) = second.wait().await;
    assert!(!status.success(), "the second one started:\n{log}");
    assert!(
        log.contains(&format!("cannot listen on {addr}")) && log.contains("another process"),
        "{log}"
    );
    // The first one still takes every connection.
    for _ in 0..10 {
        let (status, _, body) = get(addr, "/").await;
        assert_eq!((status, &body[..]), (200, &b"first"[..]));
    }
    first.signal(rustix::process::Signal::TERM);
    assert!(first.wait().await.0.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_log_path_is_relative_to_the_config_files_folder() {
    let origin = backend(|_| async { text(200, "ok") });
    // The config in a folder of its own; the test runs elsewhere (the
    // crate's folder).
    let dir = TempFile::new("conf-dir");
    std::fs::create_dir_all(&dir.path).expect("folder");
    let file = dir.path.join("tidegate.toml");
    std::fs::write(
        &file,
        config(0, origin.addr, "access_log = \"logs/access.log\""),
    )
    .expect("write");
    // A missing folder: start refuses, naming the file, field and path.
    let (status, log) = Binary::start(&["--config", file.to_str().expect("utf-8")])
        .wait()
        .await;
    assert!(!status.success(), "{log}");
    let log_path = dir.path.join("logs/access.log");
    assert!(
        log.contains(&format!(
            "{}:2: server.access_log: cannot open {}",
            file.display(),
            log_path.display()
        )),
        "{log}"
    );

    std::fs::create_dir_all(dir.path.join("logs")).expect("logs folder");
    let mut run = Binary::start(&["--config", file.to_str().expect("utf-8")]);
    let addr = run.listening().await;
    assert_eq!(get(addr, "/written").await.0, 200);
    // Lines are handed to the writer at least once a second.
    until("the request's access-log line", || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("/written"))
    })
    .await;
    assert!(!std::path::Path::new("logs/access.log").exists());
    run.signal(rustix::process::Signal::TERM);
    assert!(run.wait().await.0.success());
    let _ = std::fs::remove_dir_all(&dir.path);
}

/// SIGQUIT stops gracefully as SIGTERM does (nginx's graceful stop).
/// (SIGUSR2 is the binary upgrade: tests/it/upgrade.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_stops_gracefully() {
    let origin = backend(|_| async { text(200, "ok") });
    let file = TempFile::with("signals.toml", config(0, origin.addr, "").as_bytes());
    let mut run = Binary::start(&["--config", file.arg(), "--log-level", "info"]);
    let addr = run.listening().await;
    assert_eq!(get(addr, "/").await.0, 200);
    run.signal(rustix::process::Signal::QUIT);
    let (status, log) = run.wait().await;
    assert!(status.success(), "{log}");
    assert!(log.contains("SIGQUIT: shutting down gracefully"), "{log}");
}
