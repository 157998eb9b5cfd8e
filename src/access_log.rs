//! Access log: one line per request.
//!
//! ```text
//! 2026-11-28T18:40:00.123Z 127.0.0.1:51234 "GET /path HTTP/1.1" 200 1234 127.0.0.1:9000 0.0021 done www.example.com
//! ```
//!
//! Fields: time the request ended (UTC), client address, request line,
//! status, body bytes sent to the client, upstream address (`-` if none),
//! duration in seconds, how it ended (`done`, `aborted` when the client
//! or upstream went away mid-body, `error` for a synthetic error response),
//! and the request's authority (`-` if it had none).
//! An upgraded connection gets its line when its tunnel ends: status 101
//! (200 for a WebSocket over HTTP/2),
//! the bytes sent to the client through the tunnel, and `done` when both
//! sides closed, `aborted` otherwise (error, idle timeout, shutdown).
//!
//! Each worker buffers its lines and writes whole lines with one `write` on
//! an `O_APPEND` file, when the buffer passes 32 KiB, once a second, and at
//! shutdown; so logging costs no system call per request.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::time::SystemTime;

use http::{Method, Uri, Version};
use tokio::time::Instant;

use crate::config::AccessLogTarget;

const FLUSH_AT: usize = 32 * 1024;

enum Sink {
    Stdout,
    File(File),
}

/// One worker's access log.
pub(crate) struct AccessLog {
    sink: Option<Sink>,
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
}

/// Lines still buffered go out when a worker's log is dropped (an old
/// config's log once its last request or tunnel ended; shutdown).
impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

impl AccessLog {
    pub(crate) fn open(target: &AccessLogTarget) -> std::io::Result<AccessLog> {
        let sink = match target {
            AccessLogTarget::Off => None,
            AccessLogTarget::Stdout => Some(Sink::Stdout),
            AccessLogTarget::File(path) => Some(Sink::File(
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
        };
        Ok(AccessLog {
            sink,
            buf: RefCell::new(Vec::new()),
        })
    }

    pub(crate) fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    pub(crate) fn record(
        &self,
        e: &Entry,
        status: u16,
        bytes: u64,
        upstream: Option<SocketAddr>,
        outcome: &str,
    ) {
        if self.sink.is_none() {
            return;
        }
        let mut buf = self.buf.borrow_mut();
        let up: &dyn std::fmt::Display = match &upstream {
            Some(a) => a,
            None => &"-",
        };
        // Origin-form: the authority has a field of its own.
        let target: &dyn std::fmt::Display = match e.target.path_and_query() {
            Some(pq) => pq,
            None => &e.target,
        };
        let _ = writeln!(
            buf,
            "{} {} \"{} {} {:?}\" {} {} {} {:.4} {} {}",
            humantime::format_rfc3339_millis(SystemTime::now()),
            e.client,
            e.method,
            target,
            e.version,
            status,
            bytes,
            up,
            e.start.elapsed().as_secs_f64(),
            outcome,
            e.host
                .as_ref()
                .map_or("-", crate::message::admit::Authority::as_str),
        );
        if buf.len() >= FLUSH_AT {
            Self::write_out(&self.sink, &mut buf);
        }
    }

    pub(crate) fn flush(&self) {
        Self::write_out(&self.sink, &mut self.buf.borrow_mut());
    }

    fn write_out(sink: &Option<Sink>, buf: &mut Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        let res = match sink {
            None => Ok(()),
            Some(Sink::Stdout) => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf).and_then(|_| out.flush())
            }
            Some(Sink::File(f)) => (&*f).write_all(buf),
        };
        if let Err(e) = res {
            tracing::error!("access log write failed: {e}");
        }
        buf.clear();
    }
}
