//! Listening sockets: one per listener and worker thread (SO_REUSEPORT),
//! and the connection caps derived from the open-files limit.

use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use super::upgrade::Inherited;
use super::StartError;
use crate::config::Config;
use crate::downstream::listener::Gate;

const BACKLOG: i32 = 4096;

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Fails with "address in use" when another socket listens on `addr`
/// (another process, another Tidegate). SO_REUSEPORT, which the worker
/// threads' sockets share a port with, would otherwise let a second
/// process bind the port silently and take part of its connections. A
/// socket without it cannot bind beside a listening one; SO_REUSEADDR
/// still lets it past connections left in TIME_WAIT. (Two processes
/// probing at the same instant could both pass: the window is the time
/// between this and the next bind.) Port 0 needs no probe.
fn probe(addr: SocketAddr) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            std::io::Error::new(
                e.kind(),
                format!("{e}: another process (or another Tidegate) listens on {addr}"),
            )
        } else {
            e
        }
    })
}

/// The soft open-files limit, raised to the hard one first (as Go's
/// runtime and HAProxy do): each connection is a file, and a proxied one
/// usually two.
pub(super) fn open_files_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    // `None` is "unlimited".
    let (soft, hard) = (current.unwrap_or(u64::MAX), maximum.unwrap_or(u64::MAX));
    if soft >= hard {
        return soft;
    }
    let raised = Rlimit {
        current: maximum,
        maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::info!("open files limit raised from {soft} to {hard}");
            hard
        }
        Err(e) => {
            tracing::warn!("cannot raise the open files limit from {soft} to {hard}: {e}");
            soft
        }
    }
}

/// Files kept back from the connection caps (logs, listeners, DNS...).
const RESERVED_FILES: u64 = 64;

/// A listener's admission state: its `max_connections` (its own, else
/// `limits.max_connections`, else half the open-files limit, as each client
/// connection may need an upstream one; listeners are not given shares of
/// it, as most traffic goes to one of them).
pub(super) fn gate(config: &Config, l: &crate::config::Listener, nofile: u64) -> Arc<Gate> {
    let share = nofile.saturating_sub(RESERVED_FILES) / 2;
    let max = l
        .max_connections
        .or(config.limits.max_connections)
        .unwrap_or(usize::try_from(share).unwrap_or(usize::MAX).max(16));
    Gate::new(max, l.max_connections_per_ip)
}

/// Binds `addr` once per thread (SO_REUSEPORT); port 0 becomes a real
/// port, which the other threads' sockets then share.
/// `check`: whether to probe for another process on the address first
/// (not when this process holds the port already: a reload that moves a
/// listener from `127.0.0.1:P` to `0.0.0.0:P` binds the new one while
/// the old one still listens).
pub(super) fn bind_all(
    addr: SocketAddr,
    threads: usize,
    check: bool,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>), StartError> {
    if check {
        probe(addr).map_err(|source| StartError::Bind { addr, source })?;
    }
    let first = bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    let bound = first
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let mut socks = vec![first];
    for _ in 1..threads {
        socks.push(bind(bound).map_err(|source| StartError::Bind {
            addr: bound,
            source,
        })?);
    }
    Ok((bound, socks))
}

/// A listener's per-thread sockets: those the process this one upgrades
/// handed over for `addr` (topped up to one per thread; more than the
/// threads are kept too, so that no queued connection is lost), else
/// bound now.
pub(super) fn open_all(
    addr: SocketAddr,
    threads: usize,
    inherited: Option<&mut Inherited>,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>), StartError> {
    let Some(mut socks) = inherited
        .and_then(|i| i.listeners.remove(&addr))
        .filter(|s| !s.is_empty())
    else {
        return bind_all(addr, threads, true);
    };
    let err = |source| StartError::Bind { addr, source };
    let bound = socks[0].local_addr().map_err(err)?;
    while socks.len() < threads {
        socks.push(bind(bound).map_err(err)?);
    }
    Ok((bound, socks))
}

/// Copies of `socks` (the same sockets), kept for a binary upgrade. One
/// that cannot be made (out of file descriptors) is logged: an upgrade
/// would not hand that socket over, and connections queued on it when
/// this process exits would be reset.
pub(super) fn copies(socks: &[std::net::TcpListener]) -> Vec<std::net::TcpListener> {
    socks
        .iter()
        .filter_map(|s| match s.try_clone() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(
                    "cannot keep a copy of a listening socket for a binary upgrade: {e}; \
                     an upgrade would not hand it over"
                );
                None
            }
        })
        .collect()
}
