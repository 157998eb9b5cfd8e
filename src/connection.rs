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
//!
//! After a 101 hyper's connection future ends without closing the socket;
//! the request left a [`crate::tunnel::Tunnel`] in the connection's state,
//! which then takes the socket (and any bytes hyper had read past the
//! request head) and runs in this same task, with its own idle timeout in
//! place of the watchdog's. (hyper's `with_upgrades` would want a `Send`
//! socket; ours counts bytes into the connection's `Rc` state.) A tunnel
//! thus counts as a live connection until it ends, and is closed with the
//! others when shutdown's grace period runs out.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::proxy::{self, ConnCtx, Current, TlsInfo};
use crate::rt::LocalExec;

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
    /// Set by the watchdog: close the connection now.
    cut: Cell<Option<Cut>>,
    /// Set by the watchdog when shutdown begins: finish and close.
    draining: Cell<bool>,
    /// The connection task's waker, so the watchdog can wake it.
    waker: RefCell<Option<Waker>>,
    /// A response went out before the request body was read (413): read
    /// and discard what the client still sends before closing, so that it
    /// gets the response rather than a reset (nginx's lingering close).
    pub linger: Cell<bool>,
    /// Left by a request whose upstream switched protocols (101): run
    /// once hyper has written the 101 and handed the socket back.
    pub tunnel: RefCell<Option<crate::tunnel::Tunnel>>,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            in_flight: Cell::new(0),
            idle_since: Cell::new(Instant::now()),
            read: Cell::new(0),
            read_at_idle: Cell::new(0),
            requests: Cell::new(0),
            cut: Cell::new(None),
            draining: Cell::new(false),
            waker: RefCell::new(None),
            linger: Cell::new(false),
            tunnel: RefCell::new(None),
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

/// The client's byte stream: TCP, or TLS over it.
pub type ClientIo = crate::rt::MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// The client socket, counting the bytes read for the watchdog.
struct Watched {
    io: ClientIo,
    /// Bytes read while telling HTTP/2 from HTTP/1 (h2c), handed to hyper
    /// before anything else.
    prefix: Option<Bytes>,
    state: Rc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(p) = &mut this.prefix {
            let n = p.len().min(buf.remaining());
            buf.put_slice(&p.split_to(n));
            if p.is_empty() {
                this.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
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

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads a plain connection's first bytes to tell an h2c client (prior
/// knowledge: it opens with the preface) from an HTTP/1 one. What was read
/// is kept in `prefix` for the protocol's server to read first.
async fn sniff_h2c(io: &mut Watched) -> io::Result<bool> {
    use tokio::io::AsyncReadExt;
    let mut buf = bytes::BytesMut::with_capacity(4096);
    loop {
        // Through `Watched`, which counts the bytes for the watchdog.
        if io.read_buf(&mut buf).await? == 0 {
            return Ok(false);
        }
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] {
            io.prefix = Some(buf.freeze());
            return Ok(false);
        }
        if n == PREFACE.len() {
            io.prefix = Some(buf.freeze());
            return Ok(true);
        }
    }
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Idle,
    HeadTimeout,
}

/// Runs beside a connection as a task of its own (so the connection's
/// own polls never touch a timer or the shutdown channel): wakes at its
/// deadlines and, when the connection has been idle or sending a head for
/// too long, or shutdown begins, flags it and wakes the connection's task.
async fn watchdog(
    state: Rc<ConnState>,
    head: Duration,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
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
                return state.flag(|s| s.cut.set(Some(Cut::Idle)));
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
                return state.flag(|s| s.cut.set(Some(Cut::HeadTimeout)));
            }
            deadline
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.changed() => {
                return state.flag(|s| s.draining.set(true));
            }
        }
    }
}

impl ConnState {
    /// Keeps the connection task's waker for [`ConnState::flag`].
    fn register(&self, cx: &Context<'_>) {
        let mut w = self.waker.borrow_mut();
        if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *w = Some(cx.waker().clone());
        }
    }

    fn flag(&self, set: impl FnOnce(&ConnState)) {
        set(self);
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }
}

/// Drives hyper's connection, acting on the watchdog's flags: two `Cell`
/// reads per poll.
struct Driven<C> {
    conn: Pin<Box<C>>,
    state: Rc<ConnState>,
    draining: bool,
}

enum Ended {
    Done(Result<(), hyper::Error>),
    Cut(Cut),
}

impl<C> Future for Driven<C>
where
    C: Future<Output = Result<(), hyper::Error>> + GracefulShutdown,
{
    type Output = Ended;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let this = &mut *self;
        if let Some(cut) = this.state.cut.get() {
            return Poll::Ready(Ended::Cut(cut));
        }
        if this.state.draining.get() && !this.draining {
            this.draining = true;
            this.conn.as_mut().start_graceful();
        }
        this.state.register(cx);
        this.conn.as_mut().poll(cx).map(Ended::Done)
    }
}

/// hyper's graceful shutdown, named for [`Driven`].
trait GracefulShutdown {
    fn start_graceful(self: Pin<&mut Self>);
}

impl<I, S, E> GracefulShutdown for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn start_graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> GracefulShutdown for http1::Connection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn start_graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The hyper server settings for client connections.
pub fn server_builder(max_head: usize) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.keep_alive(true)
        .half_close(false)
        .writev(false)
        .header_read_timeout(None)
        .max_buf_size(max_head.max(8192))
        .max_header_size(max_head);
    b
}

/// Serves one accepted client connection until it closes, is cut off by
/// the watchdog, or finishes after shutdown began. `listener` is the index
/// of its listener's settings in the config.
pub async fn serve(
    stream: TcpStream,
    client: SocketAddr,
    listener: usize,
    current: Rc<Current>,
    mut shutdown: watch::Receiver<bool>,
) {
    let worker = current.get();
    let Some(listener) = worker.config.listeners.get(listener) else {
        // Removed by a reload between accept and now.
        return;
    };
    let timeouts = &worker.config.timeouts;
    let (head_timeout, idle_timeout) = (timeouts.client_header, timeouts.client_idle);
    let (io, tls, alpn_h2) = match &listener.tls {
        None => (ClientIo::Plain(stream), None, false),
        Some(tls) => {
            // Boxed, as the tunnel below: the handshake's state (rustls's
            // connection, the timer) would otherwise size every plain
            // connection's task too.
            let accept = Box::pin(tokio::time::timeout(
                timeouts.tls_handshake,
                tokio_rustls::TlsAcceptor::from(tls.config.clone()).accept(stream),
            ));
            let done = tokio::select! {
                r = accept => r,
                _ = shutdown.changed() => return,
            };
            let stream = match done {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%client, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!(%client, "TLS handshake not completed in time; closing");
                    return;
                }
            };
            let (_, session) = stream.get_ref();
            let sni = session.server_name().map(Box::<str>::from);
            let info = TlsInfo {
                cert: tls.certs.select(sni.as_deref()),
                sni,
                certs: tls.certs.clone(),
                subject: tls.subject_header.as_ref().map(|name| {
                    let value = session
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(crate::tls::subject);
                    (name.clone(), value)
                }),
            };
            let h2 = session.alpn_protocol() == Some(b"h2");
            (ClientIo::Tls(Box::new(stream)), Some(info), h2)
        }
    };
    let state = Rc::new(ConnState::new());
    let dog = tokio::task::spawn_local(watchdog(
        state.clone(),
        head_timeout,
        idle_timeout,
        shutdown,
    ));
    let mut io = Watched {
        io,
        prefix: None,
        state: state.clone(),
    };
    let h2 = if tls.is_some() {
        alpn_h2
    } else if listener.http2 {
        // The watchdog cuts a client that sends nothing; this only waits
        // for its first bytes.
        let sniffed = Sniff {
            fut: Box::pin(sniff_h2c(&mut io)),
            state: &state,
        };
        match sniffed.await {
            Some(Ok(h2)) => h2,
            Some(Err(e)) => {
                dog.abort();
                tracing::debug!(%client, "connection error before the first request: {e}");
                return;
            }
            None => {
                dog.abort();
                tracing::info!(%client, "request head not received in time; closing");
                return;
            }
        }
    } else {
        false
    };
    let https = tls.is_some();
    let ctx = Rc::new(ConnCtx {
        client_ip: HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
        client,
        current: current.clone(),
        state: state.clone(),
        tls,
        hsts: if https { listener.hsts.clone() } else { None },
        redirect_https: listener.redirect_https,
        head_timer: (!h2).then(proxy::HeadTimer::default),
    });
    let svc = service_fn(move |req| {
        // Boxed once: the request's future is large (it spans the whole
        // exchange), and hyper moves the service future before pinning it;
        // a box makes each move a pointer copy instead of a memcpy of it.
        let fut = Box::pin(proxy::handle(ctx.clone(), req));
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let io = TokioIo::new(io);
    if h2 {
        let conn = h2_builder(
            listener.max_concurrent_streams,
            worker.config.limits.max_request_head_bytes,
        )
        .serve_connection(io, svc);
        drop(worker);
        let mut driven = Driven {
            conn: Box::pin(conn),
            state,
            draining: false,
        };
        let ended = (&mut driven).await;
        dog.abort();
        log_end(client, ended);
        return;
    }
    let conn = worker.http1.serve_connection(io, svc);
    // Requests take the thread's current worker; this connection holds none.
    drop(worker);
    let mut driven = Driven {
        conn: Box::pin(conn),
        state,
        draining: false,
    };
    let ended = (&mut driven).await;
    dog.abort();
    // After a 101 hyper stops without closing the socket (it leaves
    // upgrades to us: `Connection`'s future signals them as done).
    let tunnel = driven.state.tunnel.borrow_mut().take();
    if let Some(tunnel) = tunnel {
        if let Ended::Done(Ok(())) = ended {
            let parts = Pin::into_inner(driven.conn).into_parts();
            let watched = parts.io.into_inner();
            // Bytes hyper read past the head, then any of the h2c sniff's
            // that hyper had not yet taken.
            let early = match watched.prefix {
                Some(rest) if !rest.is_empty() => {
                    let mut all = bytes::BytesMut::from(&parts.read_buf[..]);
                    all.extend_from_slice(&rest);
                    all.freeze()
                }
                _ => parts.read_buf,
            };
            Box::pin(tunnel.run(watched.io, early)).await;
            return;
        }
        // Dropped: the client went away before the 101 was sent.
    }
    if matches!(ended, Ended::Done(_)) && driven.state.linger.get() {
        let io = Pin::into_inner(driven.conn).into_parts().io.into_inner();
        linger(io).await;
    }
    log_end(client, ended);
}

fn log_end(client: SocketAddr, ended: Ended) {
    match ended {
        Ended::Done(Ok(())) => {}
        Ended::Done(Err(e)) => log_conn_error(client, &e),
        Ended::Cut(Cut::Idle) => tracing::debug!(%client, "closing idle connection"),
        Ended::Cut(Cut::HeadTimeout) => {
            tracing::info!(%client, "request head not received in time; closing")
        }
    }
}

/// The h2c sniff, ended early (`None`) when the watchdog cuts the
/// connection.
struct Sniff<'a, F> {
    fut: Pin<Box<F>>,
    state: &'a Rc<ConnState>,
}

impl<F: Future> Future for Sniff<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.state.cut.get().is_some() || self.state.draining.get() {
            return Poll::Ready(None);
        }
        self.state.register(cx);
        self.fut.as_mut().poll(cx).map(Some)
    }
}

/// The hyper HTTP/2 server settings for client connections. hyper's
/// defaults stay on for what they guard: pending-reset-stream caps against
/// rapid-reset floods (CVE-2023-44487), header list size, flow control.
/// Extended CONNECT (RFC 8441) is on, for WebSocket over HTTP/2.
fn h2_builder(max_streams: u32, max_head: usize) -> http2::Builder<LocalExec> {
    let mut b = http2::Builder::new(LocalExec);
    b.enable_connect_protocol()
        .max_concurrent_streams(max_streams)
        .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256));
    b
}

/// How long a lingering close waits for the client to stop sending.
const LINGER: Duration = Duration::from_secs(5);

/// Reads and discards until the client closes, errs, or `LINGER` passes.
async fn linger(mut io: Watched) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = io.io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
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
