//! Zero-downtime binary upgrade (SIGUSR2, `tidegate upgrade`), as nginx's:
//! the running process starts the binary now on disk with its own command
//! line, hands it every listening socket over a Unix socket (SCM_RIGHTS),
//! and waits for it to say it serves; then the old process drains and
//! exits, while the new one accepts on the very same sockets (no port is
//! closed, no connection refused). If the new process fails to start, it
//! exits, the old one notices and goes on serving as if nothing happened.
//!
//! The hand-over socket is an abstract Unix socket (no file) named in the
//! new process's environment (`TIDEGATE_UPGRADE`). Messages, old to new:
//! one per listener, `L ADDR N\n` with its N per-thread sockets attached,
//! `A ADDR 1\n` with the admin listener's, then `E\n`. New to old:
//! `ready PID\n` once it serves.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::process::Command;

use super::spawn::NewProcess;
use std::time::{Duration, Instant};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Names the hand-over socket in the new process's environment.
const ENV: &str = "TIDEGATE_UPGRADE";
/// How long the new process has to take the sockets, and then to serve.
const TAKE_WAIT: Duration = Duration::from_secs(30);
const READY_WAIT: Duration = Duration::from_secs(120);
/// Sockets per message (the kernel takes at most 253).
const PER_MESSAGE: usize = 200;

/// Copies of a running process's listening sockets (the same sockets as
/// its workers'), kept for an upgrade; closed when shutdown begins.
#[derive(Default)]
pub(super) struct Copies {
    pub listeners: Vec<(SocketAddr, Vec<TcpListener>)>,
    pub admin: Option<(SocketAddr, TcpListener)>,
}

impl super::Running {
    /// A binary upgrade: starts the binary now on disk and hands it every
    /// listening socket; returns the new process's pid once it serves
    /// (then this one is to drain and exit). On error this one serves on.
    /// `watchdog`: this process sends systemd's watchdog pings; the new
    /// one takes them over.
    pub(crate) fn upgrade(&self, watchdog: bool) -> Result<u32, UpgradeError> {
        let copies = super::lock(&self.sockets);
        let sockets = HandOver {
            listeners: copies.listeners.iter().map(|(a, s)| (*a, &s[..])).collect(),
            admin: copies.admin.as_ref().map(|(a, s)| (*a, s)),
        };
        begin(&sockets, watchdog)
    }
}

/// What the old process hands over: each listener's per-thread sockets,
/// by configured address, and the admin listener's.
pub(crate) struct HandOver<'a> {
    pub listeners: Vec<(SocketAddr, &'a [TcpListener])>,
    pub admin: Option<(SocketAddr, &'a TcpListener)>,
}

/// Why an upgrade did not happen (the old process keeps serving).
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    #[error("cannot find this binary on disk: {0}")]
    Exe(#[source] std::io::Error),
    #[error("cannot start the new process: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("hand-over socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("the new process exited ({0}) before serving: see its log")]
    Exited(String),
    #[error("the new process did not {0} in time; stopped it")]
    Timeout(&'static str),
    #[error("too many listening sockets to hand over in one message ({0})")]
    TooMany(usize),
}

/// The binary now on disk: this one's path (a binary replaced on disk
/// shows as `PATH (deleted)` in /proc/self/exe).
fn binary() -> std::io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let shown = exe.to_string_lossy();
    Ok(match shown.strip_suffix(" (deleted)") {
        Some(p) => p.into(),
        None => exe,
    })
}

/// Starts the new process, hands it `sockets`, and returns its pid once
/// it serves. On error the new process is stopped (if it still runs).
pub(crate) fn begin(sockets: &HandOver<'_>, watchdog: bool) -> Result<u32, UpgradeError> {
    let name = format!(
        "tidegate-upgrade-{}-{:016x}",
        std::process::id(),
        crate::random::next_u64()
    );
    let addr = UnixAddr::from_abstract_name(name.as_bytes()).map_err(UpgradeError::Socket)?;
    let listener = UnixListener::bind_addr(&addr).map_err(UpgradeError::Socket)?;
    listener
        .set_nonblocking(true)
        .map_err(UpgradeError::Socket)?;
    let mut command = Command::new(binary().map_err(UpgradeError::Exe)?);
    command.args(std::env::args_os().skip(1)).env(ENV, &name);
    if watchdog {
        // systemd's WATCHDOG_PID names the process it started; the new
        // one takes the pings over only if it names the process that hands
        // it the sockets, this one (after two upgrades it would otherwise
        // name a process long gone).
        command.env("WATCHDOG_PID", std::process::id().to_string());
    }
    let mut child = NewProcess::start(command).map_err(UpgradeError::Spawn)?;
    let result = hand_over(&listener, &mut child, sockets);
    if result.is_err() {
        child.kill();
    }
    result
}

fn hand_over(
    listener: &UnixListener,
    child: &mut NewProcess,
    sockets: &HandOver<'_>,
) -> Result<u32, UpgradeError> {
    let exited = |child: &mut NewProcess| -> Result<(), UpgradeError> {
        match child.exited() {
            Some(how) => Err(UpgradeError::Exited(how)),
            None => Ok(()),
        }
    };
    // The new process connects once it has read its config.
    let deadline = Instant::now() + TAKE_WAIT;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                exited(child)?;
                if Instant::now() > deadline {
                    return Err(UpgradeError::Timeout("take the sockets"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(UpgradeError::Socket(e)),
        }
    };
    stream
        .set_nonblocking(false)
        .map_err(UpgradeError::Socket)?;
    let admin = sockets
        .admin
        .iter()
        .map(|(a, l)| ('A', *a, std::slice::from_ref(*l)));
    let all = sockets
        .listeners
        .iter()
        .map(|(a, s)| ('L', *a, *s))
        .chain(admin);
    for (kind, addr, socks) in all {
        if socks.len() > PER_MESSAGE {
            return Err(UpgradeError::TooMany(socks.len()));
        }
        send(&stream, &format!("{kind} {addr} {}\n", socks.len()), socks)
            .map_err(UpgradeError::Socket)?;
    }
    send(&stream, "E\n", &[]).map_err(UpgradeError::Socket)?;
    // Then it starts its workers and says so.
    stream
        .set_read_timeout(Some(READY_WAIT))
        .map_err(UpgradeError::Socket)?;
    let mut line = String::new();
    let read = BufReader::new(&stream).read_line(&mut line);
    match read {
        Ok(_) if line.starts_with("ready ") => line["ready ".len()..]
            .trim()
            .parse()
            .map_err(|_| UpgradeError::Timeout("say it serves")),
        Ok(_) => {
            // Closed without a word: it failed to start.
            Err(UpgradeError::Exited(child.wait()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            Err(UpgradeError::Timeout("say it serves"))
        }
        Err(e) => {
            exited(child)?;
            Err(UpgradeError::Socket(e))
        }
    }
}

fn send(stream: &UnixStream, text: &str, socks: &[TcpListener]) -> std::io::Result<()> {
    let fds: Vec<_> = socks.iter().map(AsFd::as_fd).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(PER_MESSAGE))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("ancillary buffer too small"));
    }
    let sent = sendmsg(
        stream,
        &[IoSlice::new(text.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )?;
    if sent != text.len() {
        return Err(std::io::Error::other("short write"));
    }
    Ok(())
}

/// The new process's side: the sockets it was handed, and the stream on
/// which it says it serves.
pub(crate) struct Inherited {
    pub(crate) listeners: HashMap<SocketAddr, Vec<TcpListener>>,
    pub(crate) admin: Option<(SocketAddr, TcpListener)>,
    stream: UnixStream,
}

impl Inherited {
    /// The sockets of the process upgrading to this one, if it is one
    /// (`TIDEGATE_UPGRADE` set; removed, so that a later upgrade of this
    /// process starts clean).
    pub(crate) fn take() -> Option<std::io::Result<Inherited>> {
        let name = std::env::var_os(ENV)?;
        std::env::remove_var(ENV);
        Some(receive(name.as_encoded_bytes()))
    }

    /// The pid of the process that handed the sockets over (the peer of
    /// the hand-over socket): not always the parent (`super::spawn`).
    pub(crate) fn old_pid(&self) -> Option<u32> {
        rustix::net::sockopt::socket_peercred(&self.stream)
            .ok()
            .map(|c| c.pid.as_raw_nonzero().get() as u32)
    }

    /// Tells the old process this one serves: it drains and exits.
    pub(crate) fn ready(mut self) -> std::io::Result<()> {
        writeln!(self.stream, "ready {}", std::process::id())
    }
}

fn receive(name: &[u8]) -> std::io::Result<Inherited> {
    let addr = UnixAddr::from_abstract_name(name)?;
    let stream = UnixStream::connect_addr(&addr)?;
    let mut out = Inherited {
        listeners: HashMap::new(),
        admin: None,
        stream,
    };
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    loop {
        let mut buf = [0u8; 256];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = recvmsg(
            &out.stream,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = msg {
                fds.extend(rights);
            }
        }
        let text = std::str::from_utf8(&buf[..got.bytes]).map_err(|e| bad(e.to_string()))?;
        if got.bytes == 0 {
            return Err(bad("the old process closed the hand-over early".into()));
        }
        if text == "E\n" {
            return Ok(out);
        }
        let mut words = text.trim_end().split(' ');
        let (Some(kind), Some(addr), Some(n), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(bad(format!("unexpected hand-over message {text:?}")));
        };
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| bad(format!("bad address in {text:?}")))?;
        if n.parse::<usize>().ok() != Some(fds.len()) {
            return Err(bad(format!("{text:?} came with {} sockets", fds.len())));
        }
        let socks = fds.into_iter().map(TcpListener::from);
        match kind {
            "L" => out.listeners.entry(addr).or_default().extend(socks),
            "A" => out.admin = socks.map(|s| (addr, s)).next(),
            _ => return Err(bad(format!("unexpected hand-over message {text:?}"))),
        }
    }
}
