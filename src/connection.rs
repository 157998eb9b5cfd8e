//! Connection: serves one client connection with hyper's HTTP/1.1 server.
//!
//! Besides hyper, each connection has a watchdog that enforces the client
//! timeouts hyper has no separate knobs for: the time to send a request head
//! (a slowloris client is cut off) and the idle time of a kept-alive
//! connection. It reads counters that the socket wrapper and the request
//! handler keep in `Cell`s, and wakes only at its deadlines, so the request
//! path pays nothing for it.
//!
//! On shutdown the connection is told to finish its current exchange and
//! close (hyper's graceful shutdown).

use std::cell::Cell;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::proxy::{self, ConnCtx, Worker};

/// What the watchdog knows of a connection.
pub struct ConnState {
    in_flight: Cell<u32>,
    /// Since when no request has been in flight (accept time at first).
    idle_since: Cell<Instant>,
    /// Bytes read from the client so far.
    read: Cell<u64>,
    /// `read` when the connection last became idle.
    read_at_idle: Cell<u64>,
    /// Requests started on this connection.
    requests: Cell<u64>,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            in_flight: Cell::new(0),
            idle_since: Cell::new(Instant::now()),
            read: Cell::new(0),
            read_at_idle: Cell::new(0),
            requests: Cell::new(0),
        }
    }
}

/// Marks a request in flight on its connection until dropped.
pub struct InFlight(Rc<ConnState>);

impl InFlight {
    pub fn new(state: &Rc<ConnState>) -> InFlight {
        state.in_flight.set(state.in_flight.get() + 1);
        state.requests.set(state.requests.get() + 1);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0;
        let n = s.in_flight.get() - 1;
        s.in_flight.set(n);
        if n == 0 {
            s.idle_since.set(Instant::now());
            s.read_at_idle.set(s.read.get());
        }
    }
}

/// The client socket, counting the bytes read for the watchdog.
struct Watched {
    io: TcpStream,
    state: Rc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        this.state.read.set(this.state.read.get() + n);
        res
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Idle,
    HeadTimeout,
}

/// Resolves when the connection has been idle or sending a head for too
/// long.
async fn watchdog(state: Rc<ConnState>, head: Duration, idle: Duration) -> Cut {
    // For a kept-alive connection the head's clock starts when the watchdog
    // first sees its bytes: `partial` remembers which idle period that was.
    let mut partial: Option<(Instant, Instant)> = None;
    loop {
        let now = Instant::now();
        let next = if state.in_flight.get() > 0 {
            partial = None;
            now + head.min(idle)
        } else if state.read.get() == state.read_at_idle.get() {
            partial = None;
            let limit = if state.requests.get() == 0 {
                head
            } else {
                idle
            };
            let deadline = state.idle_since.get() + limit;
            if now >= deadline {
                return Cut::Idle;
            }
            deadline
        } else {
            let since = state.idle_since.get();
            let started = if state.requests.get() == 0 {
                since
            } else {
                match partial {
                    Some((idle_mark, started)) if idle_mark == since => started,
                    _ => {
                        partial = Some((since, now));
                        now
                    }
                }
            };
            let deadline = started + head;
            if now >= deadline {
                return Cut::HeadTimeout;
            }
            deadline
        };
        tokio::time::sleep_until(next).await;
    }
}

/// The hyper server settings for client connections.
pub fn server_builder(max_head: usize) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.keep_alive(true)
        .half_close(false)
        .header_read_timeout(None)
        .max_buf_size(max_head.max(8192))
        .max_header_size(max_head);
    b
}

/// Serves one accepted client connection until it closes, is cut off by
/// the watchdog, or finishes after shutdown began.
pub async fn serve(
    stream: TcpStream,
    client: SocketAddr,
    worker: Rc<Worker>,
    builder: Rc<http1::Builder>,
    mut shutdown: watch::Receiver<bool>,
) {
    let state = Rc::new(ConnState::new());
    let timeouts = &worker.config.timeouts;
    let dog = watchdog(state.clone(), timeouts.client_header, timeouts.client_idle);
    let ctx = Rc::new(ConnCtx {
        client_ip: HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
        client,
        worker,
        state: state.clone(),
    });
    let io = TokioIo::new(Watched { io: stream, state });
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(proxy::handle(ctx, req).await) }
    });
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::pin!(dog);
    let res = tokio::select! {
        biased;
        r = conn.as_mut() => r,
        cut = &mut dog => {
            match cut {
                Cut::Idle => tracing::debug!(%client, "closing idle connection"),
                Cut::HeadTimeout => {
                    tracing::info!(%client, "request head not received in time; closing")
                }
            }
            return;
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        log_conn_error(client, &e);
    }
}

fn log_conn_error(client: SocketAddr, e: &hyper::Error) {
    if e.is_parse_too_large() {
        tracing::info!(%client, status = 431, "request head too large: {e}");
    } else if e.is_parse() {
        tracing::info!(%client, status = 400, "malformed request: {e}");
    } else if e.is_incomplete_message() || e.is_canceled() {
        tracing::debug!(%client, "connection closed mid-message: {e}");
    } else {
        tracing::debug!(%client, "connection error: {e}");
    }
}
