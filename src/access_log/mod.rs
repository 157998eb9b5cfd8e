//! Access log: one line per request, in the format `access_log_format`
//! names.
//!
//! `default`:
//!
//! ```text
//! 2026-11-28T18:40:00.123Z 127.0.0.1:51234 "GET /path HTTP/1.1" 200 1234 127.0.0.1:9000 0.0021 done www.example.com
//! ```
//!
//! Fields: time the request ended (UTC), client address, request line,
//! status, body bytes sent to the client, upstream address (`-` if none),
//! duration in seconds, how it ended (`done`, `aborted` when the client
//! or upstream went away mid-body, `error` for a synthetic error response,
//! `cancelled` when the client left before the response, `background`
//! for a cache's background revalidation), and the
//! request's authority (`-` if it had none). An upgraded connection gets
//! its line when its tunnel ends: status 101 (200 for a WebSocket over
//! HTTP/2), the bytes sent to the client through the tunnel, and `done`
//! when both sides closed, `aborted` otherwise.
//!
//! `combined` is nginx's, byte for byte (what log tools read); `json` one
//! object per line, its keys always in one order (`json_line`: time,
//! client, method, uri, protocol, status, bytes_sent, upstream, duration,
//! outcome, host, referer, user_agent, request_id); a template writes
//! nginx-style `$variables` ([`crate::config::Var`]).
//!
//! Each worker buffers its lines and hands whole buffers (at 32 KiB, once
//! a second, and at shutdown) to the log's writer thread through a
//! bounded queue: no system call on the request path, and a writer that
//! cannot keep up costs dropped lines (counted), never a blocked request.
//! The writer reopens its file on SIGUSR1 (after logrotate moved it).

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use http::{HeaderName, HeaderValue, Method, Uri, Version};
use tokio::time::Instant;

use crate::config::{AccessLogTarget, LogFormat};

mod lines;
mod session;
use lines::{combined_line, default_line, json_line, template_line};
pub(crate) use session::Session;

const FLUSH_AT: usize = 32 * 1024;
/// Buffers waiting for the writer (at most about 2 MiB).
const QUEUE: usize = 64;

enum Msg {
    Lines(Vec<u8>),
    Reopen,
}

/// A log target's writer thread, shared by every worker writing to it.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: SyncSender<Msg>,
    /// Lines dropped because the queue was full.
    pub(crate) dropped: Arc<AtomicU64>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

enum Sink {
    Stdout,
    File(PathBuf, File),
}

fn open(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Why `target` could not be opened at start, found without creating
/// anything (`tidegate check`): a file that exists must open for
/// appending; else its folder must exist and be writable.
pub(crate) fn check_target(target: &AccessLogTarget) -> Result<(), String> {
    let AccessLogTarget::File(path) = target else {
        return Ok(());
    };
    let shown = path.display();
    if path.exists() {
        return OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("cannot open {shown} for appending: {e}"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "cannot create {shown}: its folder {} does not exist",
            dir.display()
        ));
    }
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).map_err(|e| {
        format!(
            "cannot create {shown}: its folder {} is not writable ({e})",
            dir.display()
        )
    })
}

impl Writer {
    /// Opens `target` (an error fails start or reload) and starts its
    /// thread; `None` when the log is off.
    pub(crate) fn start(target: &AccessLogTarget) -> std::io::Result<Option<Writer>> {
        let sink = match target {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stdout => Sink::Stdout,
            AccessLogTarget::File(path) => Sink::File(path.clone(), open(path)?),
        };
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("tidegate-log".into())
            .spawn(move || write_lines(sink, rx))?;
        Ok(Some(Writer {
            tx,
            dropped: Arc::default(),
            thread: Arc::new(Mutex::new(Some(thread))),
        }))
    }

    /// Asks the writer to reopen its file (a no-op on stdout).
    pub(crate) fn reopen(&self) {
        let _ = self.tx.send(Msg::Reopen);
    }

    /// Waits for the writer to finish once every worker let go of it (at
    /// shutdown: the last lines are written before the process exits).
    pub(crate) fn finish(self) {
        let thread = self.thread.clone();
        drop(self);
        let handle = thread.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn write_lines(mut sink: Sink, rx: Receiver<Msg>) {
    // Ends when every sender is gone.
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Lines(buf) => {
                let res = match &mut sink {
                    Sink::Stdout => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(&buf).and_then(|_| out.flush())
                    }
                    Sink::File(_, f) => f.write_all(&buf),
                };
                if let Err(e) = res {
                    tracing::error!("access log write failed: {e}");
                }
            }
            Msg::Reopen => {
                if let Sink::File(path, f) = &mut sink {
                    match open(path) {
                        Ok(new) => {
                            *f = new;
                            tracing::info!("access log {} reopened", path.display());
                        }
                        Err(e) => tracing::error!(
                            "access log {}: cannot reopen ({e}); writing on to the old file",
                            path.display()
                        ),
                    }
                }
            }
        }
    }
}

/// One worker's access log: its format and buffer.
pub(crate) struct AccessLog {
    writer: Option<Writer>,
    format: Arc<LogFormat>,
    /// The request fields the format shows, in [`Entry::headers`] order.
    headers: Arc<[HeaderName]>,
    buf: RefCell<Vec<u8>>,
}

/// What is known of a request when it arrives.
pub(crate) struct Entry {
    pub start: Instant,
    pub client: SocketAddr,
    pub method: Method,
    pub target: Uri,
    pub version: Version,
    /// The request's authority, if it had a valid one.
    pub host: Option<crate::message::admit::Authority>,
    /// The fields the format shows ([`AccessLog::capture`]).
    pub headers: Vec<Option<HeaderValue>>,
    /// Its ID, with `request_id` on its listener or route.
    pub request_id: Option<crate::message::id::Id>,
    /// The user a route's `basic_auth` let in (`$remote_user`).
    pub user: Option<std::sync::Arc<str>>,
}

/// How a request ended, beside its [`Entry`].
pub(crate) struct End<'a> {
    pub status: u16,
    pub bytes: u64,
    pub upstream: Option<SocketAddr>,
    pub outcome: &'a str,
    /// How long the request took, from [`Entry::start`] (the caller's
    /// clock read at its end, which the metrics use too).
    pub elapsed: std::time::Duration,
}

/// Lines still buffered go out when a worker's log is dropped (an old
/// config's log once its last request or tunnel ended; shutdown).
impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

impl AccessLog {
    pub(crate) fn new(writer: Option<Writer>, format: &LogFormat) -> AccessLog {
        AccessLog {
            writer,
            headers: format.headers().into(),
            format: Arc::new(format.clone()),
            buf: RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.writer.is_some()
    }

    /// The request fields this log's format shows, from `h`.
    pub(crate) fn capture(&self, h: &http::HeaderMap) -> Vec<Option<HeaderValue>> {
        self.headers.iter().map(|n| h.get(n).cloned()).collect()
    }

    pub(crate) fn record(&self, e: &Entry, end: &End<'_>) {
        if self.writer.is_none() {
            return;
        }
        let mut buf = self.buf.borrow_mut();
        match &*self.format {
            LogFormat::Default => default_line(&mut buf, e, end),
            LogFormat::Combined => combined_line(&mut buf, e, end),
            LogFormat::Json => json_line(&mut buf, e, end),
            LogFormat::Template(pieces) => template_line(&mut buf, pieces, &self.headers, e, end),
        }
        if buf.len() >= FLUSH_AT {
            self.hand_over(&mut buf);
        }
    }

    /// A `[[streams]]` connection's line, once it closed.
    pub(crate) fn record_session(&self, s: &Session<'_>) {
        if self.writer.is_none() {
            return;
        }
        let mut buf = self.buf.borrow_mut();
        match &*self.format {
            LogFormat::Json => session::json_line(&mut buf, s),
            _ => session::text_line(&mut buf, s),
        }
        if buf.len() >= FLUSH_AT {
            self.hand_over(&mut buf);
        }
    }

    pub(crate) fn flush(&self) {
        self.hand_over(&mut self.buf.borrow_mut());
    }

    fn hand_over(&self, buf: &mut Vec<u8>) {
        let Some(w) = &self.writer else { return };
        if buf.is_empty() {
            return;
        }
        let lines = std::mem::replace(buf, Vec::with_capacity(FLUSH_AT + 4096));
        if let Err(TrySendError::Full(Msg::Lines(lost))) = w.tx.try_send(Msg::Lines(lines)) {
            let n = lost.iter().filter(|&&b| b == b'\n').count() as u64;
            if w.dropped.fetch_add(n, Relaxed) == 0 {
                tracing::warn!(
                    "access log: the writer cannot keep up; lines are dropped (counted)"
                );
            }
        }
    }
}
