//! The `tidegate` binary as a child process: its stderr read line by line,
//! the address it says it listens on, signals, and a SIGKILL if the test
//! ends while it still runs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};

use rustix::process::{kill_process, Pid, Signal};
use tokio::sync::mpsc;

use super::HANG;

pub struct Binary {
    child: Option<Child>,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every stderr line read so far.
    pub log: Vec<String>,
    pub pid: u32,
}

impl Binary {
    /// Starts `tidegate ARGS`, stdin and stdout closed, stderr read.
    pub fn start(args: &[&str]) -> Binary {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidegate"));
        cmd.args(args);
        Binary::spawn(cmd)
    }

    /// Starts `cmd` (the binary, with its arguments and environment) as
    /// [`Binary::start`] does.
    pub fn spawn(mut cmd: Command) -> Binary {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tidegate");
        let (tx, lines) = mpsc::unbounded_channel::<String>();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Binary {
            pid: child.id(),
            child: Some(child),
            lines,
            log: Vec::new(),
        }
    }

    /// The next stderr line containing `needle` (panics at [`HANG`] or if
    /// the process closes stderr first).
    pub async fn line_with(&mut self, needle: &str) -> String {
        let log = &mut self.log;
        let lines = &mut self.lines;
        tokio::time::timeout(HANG, async {
            loop {
                let Some(l) = lines.recv().await else {
                    panic!(
                        "tidegate exited before a line with {needle:?}:\n{}",
                        log.join("\n")
                    )
                };
                log.push(l.clone());
                if l.contains(needle) {
                    return l;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no log line with {needle:?}"))
    }

    /// Waits for "listening on http://ADDR" and returns ADDR.
    pub async fn listening(&mut self) -> SocketAddr {
        self.listening_on("http").await
    }

    /// Waits for "listening on SCHEME://ADDR" and returns ADDR.
    pub async fn listening_on(&mut self, scheme: &str) -> SocketAddr {
        let prefix = format!("listening on {scheme}://");
        let line = self.line_with(&prefix).await;
        line.split(prefix.as_str())
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.pid as i32).expect("pid");
        kill_process(pid, signal).expect("send signal");
    }

    /// Waits for the process to exit; returns its status and whole log.
    pub async fn wait(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("not waited yet");
        let status = tokio::time::timeout(HANG, tokio::task::spawn_blocking(move || child.wait()))
            .await
            .expect("tidegate exits")
            .expect("join")
            .expect("wait");
        while let Some(line) = self.lines.recv().await {
            self.log.push(line);
        }
        (status, self.log.join("\n"))
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
