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
//! the request left a [`crate::proxy::tunnel::Tunnel`] in the connection's state,
//! which then takes the socket (and any bytes hyper had read past the
//! request head) and runs in this same task, with its own idle timeout in
//! place of the watchdog's. (hyper's `with_upgrades` would want a `Send`
//! socket; ours counts bytes into the connection's `Rc` state.) A tunnel
//! thus counts as a live connection until it ends, and is closed with the
//! others when shutdown's grace period runs out.

use std::future::Future;

use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioIo;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::io::{linger, sniff_h2c, Sniff, Watched};
use super::phase::{within, Timer};
use super::service::{Handler, Svc, SvcH2};
use super::state::{ClientIo, ConnCtx, ConnState, Cut, HeadTimer, InFlight, TlsInfo};
use super::watch::Watch;
use crate::proxy;
use crate::rt::LocalExec;
use crate::worker::Current;

/// Drives hyper's connection, acting on the flags its [`Watch`], the
/// request handler, eviction and shutdown set: a few `Cell` reads and a
/// timer poll per poll.
struct Driven<C> {
    conn: Pin<Box<C>>,
    state: Rc<ConnState>,
    watch: Watch,
    /// Set to the watch's next look.
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The timer holds this task's waker for its deadline: until it fires,
    /// a look at its state does (polling it registers the waker again).
    armed: bool,
    draining: bool,
    calmed: bool,
}

impl<C> Driven<C> {
    fn new(conn: Pin<Box<C>>, state: Rc<ConnState>, head: Duration, idle: Duration) -> Self {
        let mut watch = Watch::new(head, idle);
        let now = Instant::now();
        let first = watch.check(&state, now).unwrap_or(now);
        Driven {
            conn,
            state,
            watch,
            timer: Box::pin(tokio::time::sleep_until(first)),
            armed: false,
            draining: false,
            calmed: false,
        }
    }
}

impl<C: GracefulShutdown> Driven<C> {
    /// Counts the GOAWAY an HTTP/2 connection's shutdown sends.
    fn goaway(&self) {
        if let (true, Some(m)) = (C::H2, &self.state.meter) {
            m.count(crate::metrics::Conn::Goaway, 1);
        }
    }
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
        if !this.armed || this.timer.is_elapsed() {
            this.armed = false;
            while this.state.cut.get().is_none() {
                if this.timer.as_mut().poll(cx).is_pending() {
                    this.armed = true;
                    break;
                }
                if let Some(next) = this.watch.check(&this.state, Instant::now()) {
                    this.timer.as_mut().reset(next);
                }
            }
        }
        if let Some(cut) = this.state.cut.get() {
            return Poll::Ready(Ended::Cut(cut));
        }
        if this.state.has_leftovers.get() {
            this.state.poll_leftovers(cx);
        }
        if this.state.trim.replace(false) {
            this.conn.as_mut().trim();
        }
        if this.state.calm.get() && !this.calmed {
            this.calmed = true;
            this.conn.as_mut().enhance_your_calm();
            this.goaway();
        } else if this.state.draining.get() && !this.draining {
            this.draining = true;
            if C::H2 || !this.state.stopping.get() {
                this.conn.as_mut().start_graceful();
                this.goaway();
            } else {
                // HTTP/1.1 at shutdown: the watch closes it once idle for
                // `STOP_LINGER`; it looks again now.
                this.armed = false;
                this.timer.as_mut().reset(Instant::now());
                cx.waker().wake_by_ref();
            }
        }
        this.state.register(cx);
        this.conn.as_mut().poll(cx).map(Ended::Done)
    }
}

/// hyper's graceful shutdown, named for [`Driven`].
trait GracefulShutdown {
    /// HTTP/2: shutting down sends GOAWAY.
    const H2: bool;

    fn start_graceful(self: Pin<&mut Self>);

    /// An abusive client: HTTP/2 closes with GOAWAY(ENHANCE_YOUR_CALM).
    fn enhance_your_calm(self: Pin<&mut Self>) {
        self.start_graceful();
    }

    /// An idle connection frees what it can (HTTP/1.1: hyper's buffers).
    fn trim(self: Pin<&mut Self>) {}
}

/// HTTP/2's ENHANCE_YOUR_CALM error code (RFC 9113 §7).
const ENHANCE_YOUR_CALM: u32 = 0xb;

impl<I, S, E> GracefulShutdown for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    const H2: bool = true;

    fn start_graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }

    fn enhance_your_calm(self: Pin<&mut Self>) {
        self.abrupt_shutdown(ENHANCE_YOUR_CALM);
    }
}

impl<I, S> GracefulShutdown for http1::Connection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    const H2: bool = false;

    fn start_graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }

    fn trim(self: Pin<&mut Self>) {
        self.release_idle_buffers();
    }
}

type H1Conn<H> = http1::Connection<TokioIo<Watched>, Svc<H>>;
type H2Conn = http2::Connection<TokioIo<Watched>, SvcH2, LocalExec>;

/// A connection past its set-up, with hyper's server for its protocol.
enum Serving<H: Handler> {
    H1(Pin<Box<H1Conn<H>>>),
    H2(Pin<Box<H2Conn>>),
}

/// Serves one accepted client connection until it closes, is cut off by
/// its watch, or finishes after shutdown began. `listener` holds the index
/// of its listener's settings in the config (kept right across reloads).
pub(crate) fn serve(
    stream: TcpStream,
    state: Rc<ConnState>,
    listener: Rc<Cell<usize>>,
    current: Rc<Current>,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> {
    let set_up = set_up(
        stream,
        state.clone(),
        listener,
        current,
        shutdown,
        proxy::handle,
    );
    ConnTask {
        stage: Stage::SetUp(Box::pin(set_up), state),
    }
}

/// One client connection's task. A hand-written future rather than an
/// `async fn`, so that what stays for the connection's life, often idle,
/// is hyper's connection and little more: the set-up (TLS handshake, h2c
/// sniff, the config's settings) and what may follow an HTTP/1.1
/// connection (a tunnel, a lingering close) are futures of their own,
/// boxed and freed when done.
pub(crate) struct ConnTask<H: Handler> {
    stage: Stage<H>,
}

type SetUp<H> = Pin<Box<dyn Future<Output = Option<(Serving<H>, (Duration, Duration))>>>>;

enum Stage<H: Handler> {
    SetUp(SetUp<H>, Rc<ConnState>),
    H1(Driven<H1Conn<H>>),
    H2(Driven<H2Conn>),
    After(Pin<Box<dyn Future<Output = ()>>>),
    Done,
}

impl<H: Handler> Future for ConnTask<H> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let stage = &mut self.stage;
        loop {
            let next = match stage {
                Stage::SetUp(fut, state) => match ready!(fut.as_mut().poll(cx)) {
                    None => Stage::Done,
                    Some((serving, (head, idle))) => {
                        let state = state.clone();
                        match serving {
                            Serving::H1(conn) => Stage::H1(Driven::new(conn, state, head, idle)),
                            Serving::H2(conn) => Stage::H2(Driven::new(conn, state, head, idle)),
                        }
                    }
                },
                Stage::H2(driven) => {
                    let ended = ready!(Pin::new(&mut *driven).poll(cx));
                    log_end(driven.state.client.get(), ended);
                    Stage::Done
                }
                Stage::H1(driven) => {
                    let ended = ready!(Pin::new(&mut *driven).poll(cx));
                    match (ended, std::mem::replace(stage, Stage::Done)) {
                        (ended @ Ended::Done(_), Stage::H1(d)) => {
                            Stage::After(Box::pin(after_h1(d.conn, d.state, ended)))
                        }
                        (ended, Stage::H1(d)) => {
                            log_end(d.state.client.get(), ended);
                            Stage::Done
                        }
                        _ => Stage::Done,
                    }
                }
                Stage::After(fut) => {
                    ready!(fut.as_mut().poll(cx));
                    Stage::Done
                }
                Stage::Done => return Poll::Ready(()),
            };
            *stage = next;
        }
    }
}

/// The TLS handshake, the h2c sniff, and hyper's server for the protocol,
/// with the client timeouts (head, idle); `None` when the connection ended
/// meanwhile.
async fn set_up<H: Handler>(
    stream: TcpStream,
    state: Rc<ConnState>,
    at: Rc<Cell<usize>>,
    current: Rc<Current>,
    mut shutdown: watch::Receiver<bool>,
    handle: H,
) -> Option<(Serving<H>, (Duration, Duration))> {
    let mut stream = stream;
    // Bytes read before TLS or HTTP takes the socket: a ClientHello a
    // stream listener read to route, what followed a PROXY header.
    let mut early = Vec::new();
    let mut timer = pin!(None);
    let mut timer = Timer::new(timer.as_mut());
    let worker = current.get();
    // `None`: removed by a reload between accept and now.
    let index = at.get();
    let listener = worker.config.listeners.get(index)?;
    let timeouts = &worker.config.timeouts;
    let (head_timeout, idle_timeout) = (timeouts.client_header, timeouts.client_idle);
    let peer = state.client.get();
    if let Some(pp) = listener
        .proxy_protocol
        .as_ref()
        .filter(|pp| pp.trusts(peer.ip()))
    {
        let required = pp.mode == crate::config::proxy_protocol::Mode::Required;
        let deadline = state.idle_since.get() + pp.timeout;
        // What follows the header in the same reads is the connection's
        // first bytes (`early`); a stream listener's socket goes on as it
        // is, so it is peeked. (Each its own wait: an HTTP listener's
        // read, the common one, is a small future to set up.)
        let span = (deadline, pp.timeout);
        let got = match listener.stream.is_some() {
            true => {
                let read = pin!(async {
                    let header = super::proxy_protocol::read(&mut stream, required).await;
                    header.map(|a| (a, Vec::new()))
                });
                within(read, &mut timer, span, &mut shutdown).await
            }
            false => {
                let read = pin!(super::proxy_protocol::read_off(&mut stream, required));
                within(read, &mut timer, span, &mut shutdown).await
            }
        };
        match got {
            Some(Ok((Some((client, local)), rest))) => {
                state.client.set(client);
                state.local.set(local);
                early = rest;
            }
            Some(Ok((None, rest))) => early = rest,
            Some(Err(e)) => {
                tracing::info!(%peer, "{e}; closing");
                return None;
            }
            None => {
                tracing::info!(%peer, "PROXY protocol header not received in time; closing");
                return None;
            }
        }
    }
    let client = state.client.get();
    // A stream (L4) listener's connection is proxied as bytes; one its
    // SNI routes hand to an HTTP listener comes back to be served here,
    // under that listener's settings, its ClientHello read already.
    let (mut at, mut index, mut listener) = (at, index, listener);
    if listener.stream.is_some() {
        let peer = crate::stream::Peer {
            client,
            local: state.local.get(),
            id: state.id,
        };
        let handoff = crate::stream::serve(stream, index, peer, worker.clone(), shutdown.clone());
        // (The header's timer would fire in the middle of the stream.)
        timer.stop();
        let h = handoff.await?;
        (stream, index, early) = (h.tcp, h.listener, h.early);
        listener = worker.config.listeners.get(index)?;
        at = Rc::new(Cell::new(index));
    }
    let (io, tls, (alpn_h2, tls_version)) = match worker.tls.get(index).and_then(Option::as_ref) {
        None => (ClientIo::Plain(stream), None, (false, None)),
        Some(tls) => {
            let accept = pin!(tokio_rustls::TlsAcceptor::from(tls.config.clone())
                .accept_with(stream, |conn| super::tls::feed(conn, &early)));
            let deadline = Instant::now() + timeouts.tls_handshake;
            let span = (deadline, timeouts.tls_handshake);
            let done = within(accept, &mut timer, span, &mut shutdown).await;
            let stream = match done {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    tracing::info!(%client, "TLS handshake failed: {e}");
                    if let Some(m) = &state.meter {
                        m.tls_failed(super::tls::failure(&e));
                    }
                    return None;
                }
                None => {
                    tracing::info!(%client, "TLS handshake not completed in time; closing");
                    if let Some(m) = &state.meter {
                        m.tls_failed(0);
                    }
                    return None;
                }
            };
            let (_, session) = stream.get_ref();
            if super::tls::is_acme_validation(session) {
                // A CA's TLS-ALPN-01 check: the handshake was the answer.
                tracing::info!(%client, sni = session.server_name(), "ACME TLS-ALPN-01 validation answered");
                return None;
            }
            let sni = session.server_name().map(Box::<str>::from);
            let info = TlsInfo {
                cert: tls.certs.select(sni.as_deref()),
                sni,
                certs: tls.certs.clone(),
                subject: tls.subject_header.as_ref().map(|name| {
                    let value = session
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(crate::downstream::tls::subject);
                    (name.clone(), value)
                }),
            };
            let h2 = session.alpn_protocol() == Some(b"h2");
            let version = session.protocol_version().map(u16::from);
            (
                ClientIo::Tls(Box::new(stream)),
                Some(Box::new(info)),
                (h2, version),
            )
        }
    };
    state.serving.set(true);
    let mut io = Watched {
        io,
        // (TLS took them already.)
        prefix: (tls.is_none() && !early.is_empty()).then(|| bytes::Bytes::from(early)),
        state: state.clone(),
    };
    let h2 = if tls.is_some() {
        alpn_h2
    } else if listener.http2 {
        // Its first bytes, in the time a request head has from the
        // accept.
        let sniffed = pin!(Sniff {
            fut: sniff_h2c(&mut io),
            state: &state,
        });
        let deadline = state.idle_since.get() + head_timeout;
        let sniffed = within(sniffed, &mut timer, (deadline, head_timeout), &mut shutdown).await;
        match sniffed {
            Some(Some(Ok(h2))) => h2,
            Some(Some(Err(e))) => {
                tracing::debug!(%client, "connection error before the first request: {e}");
                return None;
            }
            // Closed to make room (max_connections).
            Some(None) => return None,
            None => {
                tracing::info!(%client, "request head not received in time; closing");
                return None;
            }
        }
    } else {
        false
    };
    let https = tls.is_some();
    state.http1.set(!h2);
    if let Some(m) = &state.meter {
        m.set_up(h2, tls_version);
    }
    let ctx = Rc::new(ConnCtx {
        client_ip: HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
        client,
        current: current.clone(),
        state: state.clone(),
        tls,
        hsts: if https { listener.hsts.clone() } else { None },
        redirect_https: listener.redirect_https,
        head_timer: (!h2).then(HeadTimer::default),
        underscores: listener.underscores,
        request_id: listener.request_id.clone(),
        response_id: Cell::new(None),
        cache_status: Cell::new(None),
        index: at,
    });
    let io = TokioIo::new(io);
    // Requests take the thread's current worker; the connection holds none.
    let serving = if h2 {
        let limits = &worker.config.limits;
        let conn = h2_builder(
            listener.max_concurrent_streams,
            limits.max_request_head_bytes,
            limits.http2_max_resets,
        )
        .serve_connection(io, SvcH2(ctx));
        Serving::H2(Box::pin(conn))
    } else {
        let svc = Svc { ctx, handle };
        Serving::H1(Box::pin(worker.http1.serve_connection(io, svc)))
    };
    // Shutdown began during the set-up: finish the first exchange, close.
    if *shutdown.borrow() {
        state.draining.set(true);
        state.stopping.set(true);
    }
    Some((serving, (head_timeout, idle_timeout)))
}

/// An HTTP/1.1 connection whose hyper server is done: after a 101 it
/// becomes the tunnel the request left; after a response sent before its
/// request body was read (413) it lingers.
async fn after_h1<H: Handler>(conn: Pin<Box<H1Conn<H>>>, state: Rc<ConnState>, ended: Ended) {
    // After a 101 hyper stops without closing the socket (it leaves
    // upgrades to us: `Connection`'s future signals them as done).
    let tunnel = state.tunnel.borrow_mut().take();
    if let Some(tunnel) = tunnel {
        if let Ended::Done(Ok(())) = ended {
            let parts = Pin::into_inner(conn).into_parts();
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
            // A tunnel is never idle.
            let _busy = InFlight::new(&state);
            tunnel.take_over(watched.io, early).await;
            return;
        }
        // Dropped: the client went away before the 101 was sent.
    }
    if state.linger.get() {
        let io = Pin::into_inner(conn).into_parts().io.into_inner();
        linger(io).await;
    }
    log_end(state.client.get(), ended);
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

/// The hyper HTTP/2 server settings for client connections. hyper's
/// defaults stay on for what they guard: pending-reset-stream caps against
/// rapid-reset floods (CVE-2023-44487), header list size, flow control.
/// Extended CONNECT (RFC 8441) is on, for WebSocket over HTTP/2.
fn h2_builder(max_streams: u32, max_head: usize, max_resets: u32) -> http2::Builder<LocalExec> {
    let mut b = http2::Builder::new(LocalExec);
    b.enable_connect_protocol()
        .max_concurrent_streams(max_streams)
        .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(32))
        // Streams the client gets wrong count as its resets do.
        .max_local_error_reset_streams(Some(max_resets as usize));
    b
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
