//! systemd's notification protocol, with a fake `NOTIFY_SOCKET` (a Unix
//! datagram socket of the test's, at a path or with an abstract name)
//! given to the real binary: `READY=1` once the listeners accept,
//! `RELOADING=1`/`READY=1` around a reload, `STOPPING=1` at drain,
//! `WATCHDOG=1` only when `WATCHDOG_USEC` asks for it.

use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::process::Signal;
use tokio::net::UnixDatagram;

use crate::common::binary::Binary;
use crate::common::config::TestConfig;
use crate::common::*;

/// The fake service manager's socket.
struct Manager {
    socket: UnixDatagram,
    /// What `NOTIFY_SOCKET` is set to.
    name: String,
    /// The socket's file, if it has one (removed on drop).
    _file: Option<TempFile>,
}

impl Manager {
    /// A socket at a path in the temp dir.
    fn at_path() -> Manager {
        let file = TempFile::new("notify.sock");
        let socket = UnixDatagram::bind(&file.path).expect("bind the notify socket");
        Manager {
            socket,
            name: file.arg().to_string(),
            _file: Some(file),
        }
    }

    /// A socket in the abstract namespace (`@name`).
    fn abstract_name() -> Manager {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("tidegate-test-notify-{}-{n}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind");
        socket.set_nonblocking(true).unwrap();
        Manager {
            socket: UnixDatagram::from_std(socket).unwrap(),
            name: format!("@{name}"),
            _file: None,
        }
    }

    /// The next datagram, as text (panics at [`HANG`]).
    async fn next(&self) -> String {
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(HANG, self.socket.recv(&mut buf))
            .await
            .expect("a notification before the hang bound")
            .expect("recv");
        String::from_utf8(buf[..n].to_vec()).expect("UTF-8 notification")
    }

    /// Datagrams until one with `line` as one of its lines; returns it and
    /// those before it.
    async fn until(&self, line: &str) -> (String, Vec<String>) {
        let mut before = Vec::new();
        loop {
            let m = self.next().await;
            if m.lines().any(|l| l == line) {
                return (m, before);
            }
            before.push(m);
        }
    }

    /// Every datagram still queued.
    fn drain(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0; 4096];
        while let Ok(n) = self.socket.try_recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    /// `tidegate --config FILE` told to notify this socket, with the
    /// watchdog's `WATCHDOG_USEC` if given (and no other systemd variable
    /// from the test's own environment).
    fn start(&self, config: &TempFile, watchdog_usec: Option<&str>) -> Binary {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidegate"));
        cmd.args(["--config", config.arg()])
            .env("NOTIFY_SOCKET", &self.name)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        if let Some(usec) = watchdog_usec {
            cmd.env("WATCHDOG_USEC", usec);
        }
        Binary::spawn(cmd)
    }
}

/// The value of `KEY=` in a notification.
fn value<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// The ports of the TCP sockets `pid` listens on: its descriptors'
/// socket inodes, found in LISTEN state in its /proc/PID/net/tcp.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's descriptors")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?;
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).expect("TCP table");
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
    let mut ports: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let listening =
                f.get(3) == Some(&"0A") && inodes.iter().any(|i| Some(&i.as_str()) == f.get(9));
            let port = f.get(1)?.rsplit(':').next()?;
            listening.then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect();
    ports.dedup();
    ports
}

/// CLOCK_MONOTONIC in microseconds, as the process reads it.
fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

fn proxy_config(upstream: SocketAddr) -> String {
    TestConfig::proxying(upstream).log_level("info").toml()
}

/// READY=1 (with MAINPID and STATUS) comes once the listener accepts:
/// a connection made right after it is proxied. A SIGHUP reload is
/// framed by RELOADING=1 (with a MONOTONIC_USEC taken during it) and
/// READY=1, a refused one too (its STATUS says why); SIGTERM brings
/// STOPPING=1. Without WATCHDOG_USEC no WATCHDOG=1 is ever sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reloading_stopping_on_a_path_socket() {
    let origin = backend(|_req| async { text(200, "origin") });
    let config = TempFile::with("notify.toml", proxy_config(origin.addr).as_bytes());
    let manager = Manager::at_path();
    let mut tidegate = manager.start(&config, None);

    let ready = manager.next().await;
    assert_eq!(value(&ready, "READY"), Some("1"), "{ready}");
    assert_eq!(
        value(&ready, "MAINPID"),
        Some(tidegate.pid.to_string().as_str()),
        "{ready}"
    );
    assert!(
        value(&ready, "STATUS").is_some_and(|s| s.contains("serving")),
        "{ready}"
    );
    // Right now, before anything else: the process has a listening
    // socket, and a request to it is proxied.
    let ports = listening_ports(tidegate.pid);
    let port = *ports.first().expect("a listening socket at READY");
    let at_ready = SocketAddr::from(([127, 0, 0, 1], port));
    let (status, _, body) = get(at_ready, "/").await;
    assert_eq!((status, &body[..]), (200, &b"origin"[..]));
    let addr = tidegate.listening().await;
    assert_eq!(addr, at_ready);

    let before = monotonic_usec();
    tidegate.signal(Signal::HUP);
    let reloading = manager.next().await;
    let after = monotonic_usec();
    assert_eq!(value(&reloading, "RELOADING"), Some("1"), "{reloading}");
    let at: u64 = value(&reloading, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(
        (before..=after).contains(&at),
        "{before} <= {at} <= {after}"
    );
    let done = manager.next().await;
    assert_eq!(value(&done, "READY"), Some("1"), "{done}");
    assert!(!done.contains("failed"), "{done}");
    tidegate.line_with("SIGHUP: reloaded").await;

    // A file that does not load: refused, and systemd still hears READY.
    std::fs::write(&config.path, "[[listeners]]\naddress = 17\n").unwrap();
    tidegate.signal(Signal::HUP);
    let reloading = manager.next().await;
    assert_eq!(value(&reloading, "RELOADING"), Some("1"), "{reloading}");
    let done = manager.next().await;
    assert_eq!(value(&done, "READY"), Some("1"), "{done}");
    let status = value(&done, "STATUS").unwrap_or_default();
    assert!(status.starts_with("reload failed: "), "{done}");
    assert!(status.contains("listeners[0].address"), "{done}");
    let (status, _, _) = get(addr, "/").await;
    assert_eq!(status, 200, "the old config serves on");

    tidegate.signal(Signal::TERM);
    let (stopping, _) = manager.until("STOPPING=1").await;
    assert!(stopping.contains("STOPPING=1"));
    let (exit, log) = tidegate.wait().await;
    assert!(exit.success(), "{exit:?}: {log}");
    let rest = manager.drain();
    assert!(
        !rest.iter().any(|m| m.contains("WATCHDOG")),
        "no watchdog asked for, none sent: {rest:?}"
    );
}

/// With WATCHDOG_USEC the main loop pings WATCHDOG=1 (every half period)
/// until it drains; here over an abstract socket (`@name`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_on_an_abstract_socket() {
    let origin = backend(|_req| async { text(200, "origin") });
    let config = TempFile::with("watchdog.toml", proxy_config(origin.addr).as_bytes());
    let manager = Manager::abstract_name();
    assert!(manager.name.starts_with('@'));
    let mut tidegate = manager.start(&config, Some("200000"));

    let (ready, _) = manager.until("READY=1").await;
    assert!(
        ready.contains(&format!("MAINPID={}", tidegate.pid)),
        "{ready}"
    );
    let addr = tidegate.listening().await;
    let (status, _, _) = get(addr, "/").await;
    assert_eq!(status, 200);
    for _ in 0..3 {
        let ping = manager.next().await;
        assert_eq!(ping, "WATCHDOG=1");
    }

    tidegate.signal(Signal::TERM);
    manager.until("STOPPING=1").await;
    let (exit, log) = tidegate.wait().await;
    assert!(exit.success(), "{exit:?}: {log}");
}

/// As systemd starts it: `WATCHDOG_PID` names the process. After two
/// binary upgrades (SIGUSR2) the third process, whose parent is the
/// second, still pings the watchdog once both others are gone (each
/// hands the watchdog to the process it starts); without that, systemd
/// would kill the service one period after the second upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_passes_on_through_two_upgrades() {
    let origin = backend(|_req| async { text(200, "origin") });
    let config = TempFile::with(
        "watchdog-upgrade.toml",
        proxy_config(origin.addr).as_bytes(),
    );
    let manager = Manager::abstract_name();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "export WATCHDOG_PID=$$; exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_tidegate"),
        "--config",
        config.arg(),
    ])
    .env("NOTIFY_SOCKET", &manager.name)
    .env("WATCHDOG_USEC", "200000");
    let first = Binary::spawn(cmd);
    let (ready, _) = manager.until("READY=1").await;
    assert_eq!(value(&ready, "MAINPID"), Some(&*first.pid.to_string()));

    let mut pids = vec![first.pid];
    let mut guards = Vec::new();
    for _ in 0..2 {
        let old = *pids.last().unwrap();
        send_signal(old, Signal::USR2);
        // The new process's READY=1 names it.
        let new = loop {
            let (m, _) = manager.until("READY=1").await;
            match value(&m, "MAINPID").and_then(|p| p.parse::<u32>().ok()) {
                Some(p) if p != old => break p,
                _ => continue,
            }
        };
        pids.push(new);
        guards.push(KillOnDrop(new));
        until("the old process exits", || !alive(old as i32)).await;
    }
    let last = pids[2];
    manager.drain();
    for _ in 0..3 {
        assert_eq!(manager.next().await, "WATCHDOG=1");
    }
    send_signal(last, Signal::TERM);
    until("the last process exits", || !alive(last as i32)).await;
}

/// Sends `signal` to `pid`.
fn send_signal(pid: u32, signal: Signal) {
    let p = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::kill_process(p, signal).expect("signal");
}

/// SIGKILLs a process that is not the test's child if the test ends first.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(p) = rustix::process::Pid::from_raw(self.0 as i32) {
            let _ = rustix::process::kill_process(p, Signal::KILL);
        }
    }
}

/// The pings come from the main loop: while it hangs (here a reload
/// reading its config from a FIFO nobody writes yet) none is sent, so
/// systemd would restart the service; once the loop is free they resume.
/// (An observation window of five watchdog periods: a ping sent in it
/// fails the test; none sent could only hide a failure, never make one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_main_loop_stops_the_watchdog_pings() {
    let origin = backend(|_req| async { text(200, "origin") });
    let text_of_config = proxy_config(origin.addr);
    let config = TempFile::with("watchdog-hang.toml", text_of_config.as_bytes());
    let manager = Manager::abstract_name();
    let tidegate = manager.start(&config, Some("200000"));
    manager.until("READY=1").await;
    assert_eq!(manager.next().await, "WATCHDOG=1");

    std::fs::remove_file(&config.path).unwrap();
    let made = Command::new("mkfifo")
        .arg(&config.path)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    tidegate.signal(Signal::HUP);
    manager.until("RELOADING=1").await;
    let window = tokio::time::timeout(std::time::Duration::from_secs(1), manager.next()).await;
    assert!(window.is_err(), "sent while the loop hangs: {window:?}");

    // A writer frees the reload, and the loop.
    let path = config.path.clone();
    let writer = tokio::task::spawn_blocking(move || std::fs::write(path, text_of_config));
    let (reloaded, _) = manager.until("READY=1").await;
    assert!(!reloaded.contains("reload failed"), "{reloaded}");
    writer.await.unwrap().expect("write the FIFO");
    manager.until("WATCHDOG=1").await;
    tidegate.signal(Signal::TERM);
    let (exit, log) = tidegate.wait().await;
    assert!(exit.success(), "{exit:?}: {log}");
}
