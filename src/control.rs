//! A running Tidegate, controlled through its pid file, as nginx's `-s`:
//! `tidegate reload` and `tidegate reopen` signal the pid the file holds.
//!
//! `reload` checks the config file first (the one given, else the one the
//! running process was started with, read from its command line), sends
//! SIGHUP only when the file is valid, then waits for the process's
//! answer: the process writes each reload's result to a file beside its
//! pid file ([`Answers`], `PID_FILE.reload`), and the command exits 0 when
//! the reload took, 1 with the reasons when it was refused.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, test_kill_process, Pid, Signal};

use crate::config::Config;

/// How long `tidegate reload` waits for the answer: a reload resolves
/// names and reads certificates, and waits until every worker has it.
const ANSWER_WAIT: Duration = Duration::from_secs(120);

/// Where a process started with `pid_file` writes its reload answers.
fn answer_path(pid_file: &Path) -> PathBuf {
    let mut p = pid_file.as_os_str().to_owned();
    p.push(".reload");
    PathBuf::from(p)
}

/// The running process's side: the answer file, rewritten (whole, by a
/// rename) after each reload.
pub(crate) struct Answers {
    path: PathBuf,
    count: u64,
}

impl Answers {
    /// Starts the file at 0 reloads: a stale one from an earlier process
    /// is replaced.
    pub(crate) fn new(pid_file: &Path) -> Answers {
        let a = Answers {
            path: answer_path(pid_file),
            count: 0,
        };
        a.write("started");
        a
    }

    /// Records the result of one more reload.
    pub(crate) fn record(&mut self, result: &Result<(), String>) {
        self.count += 1;
        match result {
            Ok(()) => self.write("ok"),
            Err(why) => self.write(&format!("refused\n{why}")),
        }
    }

    fn write(&self, what: &str) {
        let text = format!("{}\n{}\n{what}\n", std::process::id(), self.count);
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!("cannot write {}: {e}", self.path.display());
        }
    }

    /// Removed at exit, with the pid file (unless a newer process wrote
    /// it since).
    pub(crate) fn remove(&self) {
        let mine = read_answer(&self.path).is_some_and(|a| a.pid == std::process::id() as i32);
        if mine {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// An answer file as read: the process, the number of reloads, and the
/// last one's result.
struct Answer {
    pid: i32,
    count: u64,
    /// `started`, `ok`, or `refused` then one reason a line.
    result: Vec<String>,
}

fn read_answer(path: &Path) -> Option<Answer> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    Some(Answer {
        pid: lines.next()?.parse().ok()?,
        count: lines.next()?.parse().ok()?,
        result: lines.map(str::to_owned).collect(),
    })
}

/// Removes `pid_file` if it holds this process's pid (after a binary
/// upgrade it holds the new process's).
pub(crate) fn remove_if_mine(pid_file: &Path) {
    let mine =
        read_pid(pid_file).is_ok_and(|p| p.as_raw_nonzero().get() == std::process::id() as i32);
    if mine {
        let _ = std::fs::remove_file(pid_file);
    }
}

fn read_pid(pid_file: &Path) -> Result<Pid, String> {
    let text =
        std::fs::read_to_string(pid_file).map_err(|e| format!("{}: {e}", pid_file.display()))?;
    text.trim()
        .parse::<i32>()
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| format!("{}: not a process id", pid_file.display()))
}

/// The pid in `pid_file`; else says why (exit 2).
fn pid_in(pid_file: &Path) -> Result<Pid, ExitCode> {
    read_pid(pid_file).map_err(|e| {
        eprintln!("tidegate: {e}");
        ExitCode::from(2)
    })
}

/// Sends `sig` to `pid`; else says why (exit 1).
fn send(pid: Pid, sig: Signal) -> Result<(), ExitCode> {
    kill_process(pid, sig).map_err(|e| {
        eprintln!(
            "tidegate: cannot signal process {}: {e}",
            pid.as_raw_nonzero()
        );
        ExitCode::FAILURE
    })
}

/// Polls `answered` until it gives the exit code, while `pid` runs and
/// within [`ANSWER_WAIT`]; `gone` and `late` say what it means when it
/// exits or does not answer.
fn await_answer(
    pid: Pid,
    gone: &str,
    late: &str,
    mut answered: impl FnMut() -> Option<ExitCode>,
) -> ExitCode {
    let deadline = Instant::now() + ANSWER_WAIT;
    loop {
        if let Some(code) = answered() {
            return code;
        }
        if test_kill_process(pid).is_err() {
            eprintln!("tidegate: {gone}");
            return ExitCode::FAILURE;
        }
        if Instant::now() > deadline {
            eprintln!(
                "tidegate: {late} within {}s: see the log",
                ANSWER_WAIT.as_secs()
            );
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A refusal's reasons (the answer's lines after its first), then `then`.
fn refused(a: &Answer, then: &str) -> ExitCode {
    for line in a.result.iter().skip(1) {
        eprintln!("tidegate: {line}");
    }
    eprintln!("tidegate: {then}");
    ExitCode::FAILURE
}

/// `tidegate reopen` (and any plain signal): sends `sig` to the pid in
/// `pid_file`.
pub(crate) fn signal(pid_file: &Path, sig: Signal, name: &str) -> ExitCode {
    let sent = pid_in(pid_file).and_then(|pid| send(pid, sig).map(|()| pid));
    match sent {
        Ok(pid) => {
            println!("sent {name} to {}", pid.as_raw_nonzero());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The config file process `pid` was started with (`--config F`, `-c F`,
/// `--config=F`), relative to its working directory; `None` when it runs
/// without one (quick mode) or its command line cannot be read.
fn running_config(pid: Pid) -> Option<PathBuf> {
    let raw = pid.as_raw_nonzero().get();
    let cmdline = std::fs::read(format!("/proc/{raw}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let file = args.iter().enumerate().find_map(|(i, a)| {
        if a == "--config" || a == "-c" {
            args.get(i + 1).cloned()
        } else if let Some(f) = a.strip_prefix("--config=") {
            Some(f.to_owned())
        } else {
            a.strip_prefix("-c")
                .filter(|f| !f.is_empty() && !a.starts_with("--"))
                .map(str::to_owned)
        }
    })?;
    let file = PathBuf::from(file);
    if file.is_absolute() {
        return Some(file);
    }
    let cwd = std::fs::read_link(format!("/proc/{raw}/cwd")).ok()?;
    Some(cwd.join(file))
}

/// `tidegate reload`: check, signal, wait for the answer.
pub(crate) fn reload(pid_file: &Path, config: Option<&Path>) -> ExitCode {
    let pid = match pid_in(pid_file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let shown = pid.as_raw_nonzero().get();
    if let Err(e) = test_kill_process(pid) {
        eprintln!(
            "tidegate: process {shown} (from {}): {e}",
            pid_file.display()
        );
        return ExitCode::FAILURE;
    }
    // The file first, as the running process will read it: a file that
    // would be refused is not sent.
    let file = config
        .map(Path::to_path_buf)
        .or_else(|| running_config(pid));
    if let Some(file) = &file {
        let checked = Config::from_file(file).and_then(crate::server::check);
        if let Err(e) = checked {
            for line in e.to_string().lines() {
                eprintln!("tidegate: {line}");
            }
            eprintln!("tidegate: not reloaded: process {shown} keeps its config");
            return ExitCode::from(2);
        }
    }
    let answers = answer_path(pid_file);
    let before = read_answer(&answers)
        .filter(|a| a.pid == shown)
        .map(|a| a.count);
    if let Err(code) = send(pid, Signal::HUP) {
        return code;
    }
    let Some(before) = before else {
        // A process that writes no answers (started without this).
        println!("sent SIGHUP to {shown}; it writes no answer file: the result is in its log");
        return ExitCode::SUCCESS;
    };
    let gone = format!("process {shown} exited before answering");
    let late = format!("sent SIGHUP to {shown}; no answer");
    await_answer(pid, &gone, &late, || {
        let a = read_answer(&answers).filter(|a| a.pid == shown && a.count > before)?;
        Some(match a.result.first().map(String::as_str) {
            Some("ok") => {
                match &file {
                    Some(f) => println!("process {shown} reloaded {}", f.display()),
                    None => println!("process {shown} reloaded"),
                }
                ExitCode::SUCCESS
            }
            _ => refused(
                &a,
                &format!("process {shown} refused the reload; its old config still serves"),
            ),
        })
    })
}

/// The signals a running Tidegate acts on (README, "Signals"): SIGTERM,
/// SIGINT and SIGQUIT stop it gracefully, SIGHUP reloads, SIGUSR1 reopens
/// the log files, SIGUSR2 starts a binary upgrade.
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside a tokio runtime).
    pub(crate) fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// The next signal's name.
    pub(crate) async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.quit.recv() => "SIGQUIT",
            _ = self.hup.recv() => "SIGHUP",
            _ = self.usr1.recv() => "SIGUSR1",
            _ = self.usr2.recv() => "SIGUSR2",
        }
    }
}

/// `tidegate upgrade`: sends SIGUSR2 and waits until a new process serves
/// (the pid file names it), or the old one says why it could not.
pub(crate) fn upgrade(pid_file: &Path) -> ExitCode {
    let old = match pid_in(pid_file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let shown = old.as_raw_nonzero().get();
    let answers = answer_path(pid_file);
    let before = read_answer(&answers)
        .filter(|a| a.pid == shown)
        .map_or(0, |a| a.count);
    if let Err(code) = send(old, Signal::USR2) {
        return code;
    }
    let gone = format!("process {shown} exited and no new process took over");
    await_answer(old, &gone, "no new process", || {
        // The new process writes the pid file, then its answer file, then
        // tells the old one: both in place means it serves.
        if let Ok(new) = read_pid(pid_file) {
            let new = new.as_raw_nonzero().get();
            let serving = read_answer(&answers).is_some_and(|a| a.pid == new);
            if new != shown && serving {
                println!("process {new} serves; process {shown} drains and exits");
                return Some(ExitCode::SUCCESS);
            }
        }
        let a = read_answer(&answers).filter(|a| a.pid == shown && a.count > before)?;
        Some(refused(&a, &format!("process {shown} keeps serving")))
    })
}
