//! The new process of a binary upgrade, as the old one sees it.
//!
//! Without a service manager it is the old process's child: its exit
//! status is known. Under one (`NOTIFY_SOCKET` set: systemd), it is
//! started through a short-lived copy of this binary that exits at once
//! (`TIDEGATE_DETACH`), so the new process is the service manager's child
//! from the start: systemd treats a main process that is not its child
//! ("alien") as one it cannot wait for, and `systemctl stop` then sends
//! SIGKILL right after SIGTERM instead of letting it drain.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use rustix::process::{kill_process, test_kill_process, Pid, Signal};

/// In the short-lived copy's environment: start the rest of the command
/// line detached, print its pid, exit.
const DETACH: &str = "TIDEGATE_DETACH";

/// The new process.
pub(super) enum NewProcess {
    Child(Child),
    Detached(u32),
}

impl NewProcess {
    /// Starts `command` (this binary, with its command line and the
    /// hand-over's environment), detached when a service manager watches.
    pub(super) fn start(mut command: Command) -> std::io::Result<NewProcess> {
        command.stdin(Stdio::null());
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return command.spawn().map(NewProcess::Child);
        }
        let mut starter = command.env(DETACH, "1").stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        if let Some(out) = starter.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        let status = starter.wait()?;
        match line.trim().parse() {
            Ok(pid) if status.success() => Ok(NewProcess::Detached(pid)),
            _ => Err(std::io::Error::other(format!(
                "the detaching copy of the binary failed ({status})"
            ))),
        }
    }

    /// `Some(how)` once the process has exited.
    pub(super) fn exited(&mut self) -> Option<String> {
        match self {
            NewProcess::Child(c) => match c.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                _ => None,
            },
            NewProcess::Detached(pid) => (!runs(*pid)).then(|| format!("pid {pid}")),
        }
    }

    /// Waits for its exit (it closed the hand-over socket, so it is
    /// ending); how it ended, if known.
    pub(super) fn wait(&mut self) -> String {
        match self {
            NewProcess::Child(c) => c.wait().map_or_else(|e| e.to_string(), |s| s.to_string()),
            NewProcess::Detached(pid) => format!("pid {pid}"),
        }
    }

    /// Stops it (the upgrade failed).
    pub(super) fn kill(&mut self) {
        match self {
            NewProcess::Child(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            NewProcess::Detached(pid) => {
                if let Some(p) = Pid::from_raw(*pid as i32) {
                    let _ = kill_process(p, Signal::KILL);
                }
            }
        }
    }
}

/// Whether `pid` runs (a zombie, exited but not reaped, does not).
fn runs(pid: u32) -> bool {
    let exists = Pid::from_raw(pid as i32).is_some_and(|p| test_kill_process(p).is_ok());
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(") ").next().map(|r| r.starts_with('Z')))
        .unwrap_or(false);
    exists && !zombie
}

/// In the short-lived copy (`TIDEGATE_DETACH` set): starts this binary
/// with the same command line and environment (less that variable),
/// prints its pid and returns the exit code; `None` in any other process.
pub(crate) fn detach_if_asked() -> Option<std::process::ExitCode> {
    std::env::var_os(DETACH)?;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("tidegate: upgrade: cannot find this binary: {e}");
            return Some(std::process::ExitCode::FAILURE);
        }
    };
    let started = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env_remove(DETACH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn();
    Some(match started {
        Ok(child) => {
            println!("{}", child.id());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tidegate: upgrade: cannot start the new process: {e}");
            std::process::ExitCode::FAILURE
        }
    })
}
