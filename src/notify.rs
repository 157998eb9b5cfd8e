//! systemd's service notification protocol (`sd_notify(3)`): what the
//! process tells the service manager, as `KEY=VALUE` lines in one datagram
//! to the Unix socket named by `NOTIFY_SOCKET`. Without that variable
//! (not started by systemd, or not `Type=notify`/`notify-reload`) every
//! call here does nothing.
//!
//! - `READY=1` (with `MAINPID` and a `STATUS` line) once every listener is
//!   bound and the workers serve: systemd starts the units ordered after
//!   this one only then.
//! - `RELOADING=1` with `MONOTONIC_USEC` when a reload starts, `READY=1`
//!   when it ends (refused too, with `STATUS=reload failed: ...`):
//!   `systemctl reload` returns then (`Type=notify-reload`).
//! - `STOPPING=1` when graceful shutdown starts.
//! - `WATCHDOG=1` from the main loop every half `WatchdogSec`, so that a
//!   hung control loop stops the pings and systemd restarts the service.
//! - `MAINPID=<pid>` when a binary upgrade hands the service to a new
//!   process.
//!
//! A datagram that cannot be sent is logged at debug level and forgotten:
//! the service manager's absence never stops the proxy.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The environment variable naming the socket.
const SOCKET: &str = "NOTIFY_SOCKET";

/// The service serves: `READY=1`, this process's pid as the main one, and
/// `status` for `systemctl status`. Also what a process started by a
/// binary upgrade says, once it serves on the sockets handed over (before
/// it tells the old process to go, so that systemd always has a main
/// process).
pub(crate) fn ready(status: &str) {
    send(&format!(
        "READY=1\nMAINPID={}\nSTATUS={}",
        std::process::id(),
        one_line(status)
    ));
}

/// A reload begins (SIGHUP, `POST /reload`): `RELOADING=1` with the time
/// on CLOCK_MONOTONIC, as `Type=notify-reload` requires.
pub(crate) fn reloading() {
    send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

/// A reload ended: `READY=1`, with its failure in the `STATUS` line.
pub(crate) fn reloaded(result: &Result<(), String>) {
    match result {
        Ok(()) => send("READY=1\nSTATUS=serving (reloaded)"),
        Err(e) => send(&format!("READY=1\nSTATUS=reload failed: {}", one_line(e))),
    }
}

/// Graceful shutdown begins.
pub(crate) fn stopping() {
    send("STOPPING=1\nSTATUS=draining");
}

/// The service's main process is now `pid` (a binary upgrade's new
/// process). Said by the old process, the main one until then: with
/// `NotifyAccess=main` only it may change that.
pub(crate) fn mainpid(pid: u32) {
    send(&format!("MAINPID={pid}"));
}

/// The main loop is alive.
pub(crate) fn watchdog() {
    send("WATCHDOG=1");
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when systemd
/// set it for this process (`WATCHDOG_PID` is this process's pid, or
/// unset). `handed_by`: the pid of the process whose binary upgrade
/// started this one; the variables are that one's, which hands the
/// service (and its watchdog) over to this one, so its pid counts as this
/// one's.
pub(crate) fn watchdog_interval(handed_by: Option<u32>) -> Option<Duration> {
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_period(
        std::env::var_os(SOCKET).is_some(),
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        pid.as_deref(),
        std::process::id(),
        handed_by,
    )
}

/// The next tick of the watchdog's interval (from [`watchdog_interval`]),
/// if it has one; never without.
pub(crate) async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(i) => drop(i.tick().await),
        None => std::future::pending().await,
    }
}

/// [`watchdog_interval`]'s rule, on the variables' values.
fn watchdog_period(
    socket: bool,
    usec: Option<&str>,
    watchdog_pid: Option<&str>,
    own: u32,
    handed_by: Option<u32>,
) -> Option<Duration> {
    if !socket {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = watchdog_pid {
        let pid: u32 = pid.trim().parse().ok()?;
        if pid != own && Some(pid) != handed_by {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// CLOCK_MONOTONIC in microseconds.
fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000) + nanos / 1_000
}

/// A value on one line: a newline would start another assignment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], "; ")
}

/// Sends `message` to `NOTIFY_SOCKET`, if set.
fn send(message: &str) {
    let Some(path) = std::env::var_os(SOCKET) else {
        return;
    };
    if let Err(e) = send_to(&path, message.as_bytes()) {
        tracing::debug!("{SOCKET}={}: cannot notify: {e}", path.to_string_lossy());
    }
}

/// One datagram to a socket path, or to an abstract socket (`@name`).
fn send_to(path: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let addr = match path.as_bytes() {
        [b'@', name @ ..] => std::os::unix::net::SocketAddr::from_abstract_name(name)?,
        _ => std::os::unix::net::SocketAddr::from_pathname(path)?,
    };
    let sent = socket.send_to_addr(message, &addr)?;
    if sent != message.len() {
        return Err(std::io::Error::other("datagram cut short"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_only_when_asked_for_this_process() {
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(
            watchdog_period(true, Some("200000"), None, 7, None),
            ms(100)
        );
        assert_eq!(
            watchdog_period(true, Some("200000"), Some("7"), 7, None),
            ms(100)
        );
        // Another process's watchdog; or no socket; or no period.
        assert_eq!(
            watchdog_period(true, Some("200000"), Some("8"), 7, None),
            None
        );
        assert_eq!(watchdog_period(false, Some("200000"), None, 7, None), None);
        assert_eq!(watchdog_period(true, None, None, 7, None), None);
        assert_eq!(watchdog_period(true, Some("0"), None, 7, None), None);
        assert_eq!(watchdog_period(true, Some("x"), None, 7, None), None);
        // Started by an upgrade: the old process's watchdog is handed over.
        assert_eq!(
            watchdog_period(true, Some("200000"), Some("8"), 7, Some(8)),
            ms(100)
        );
    }

    #[test]
    fn values_stay_on_one_line() {
        assert_eq!(one_line("a\nb"), "a; b");
    }
}
