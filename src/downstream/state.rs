//! What one client connection shares between its driver (the hyper
//! connection, its watch, shutdown and eviction) and the requests on it:
//! who the client is, its TLS details, counters kept in `Cell`s, flags
//! that ask the driver to act, and the bodies left to discard.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::worker::Current;

/// Per client connection: who it is, and the state the watchdog reads.
pub(crate) struct ConnCtx {
    pub current: Rc<Current>,
    pub client: SocketAddr,
    /// The client's IP, ready to append to `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    pub state: Rc<ConnState>,
    /// Set on TLS connections (boxed: most connections' contexts are
    /// smaller without it).
    pub tls: Option<Box<TlsInfo>>,
    /// `Strict-Transport-Security` for every response (TLS listeners
    /// that set it).
    pub hsts: Option<HeaderValue>,
    /// A plain listener that answers every request with a redirect to
    /// HTTPS on this port.
    pub redirect_https: Option<u16>,
    /// HTTP/1.1 connections: the response-head timer their requests take
    /// turns with (`None` on HTTP/2, whose streams run side by side).
    pub head_timer: Option<HeadTimer>,
    /// The listener's `underscores_in_headers`.
    pub underscores: crate::message::admit::Underscores,
    /// The listener's `request_id`, if set.
    pub request_id: Option<crate::config::RequestId>,
    /// HTTP/1.1: the listener's ID of the response being written, which
    /// hyper writes after its fields (`Svc::extra`) instead of it being
    /// inserted in them.
    pub response_id: Cell<Option<crate::message::id::Id>>,
    /// HTTP/1.1: the `Cache-Status` the proxy's cache adds to the response
    /// being written, after its fields (`Svc::extra`).
    pub cache_status: Cell<Option<HeaderValue>>,
    /// Which of the current config's listeners this connection's is
    /// (kept right across reloads; `usize::MAX` once a reload removed
    /// it): its `trusted_proxies` and `access` rules are read per
    /// request, so a reload applies to the next one, and its requests
    /// are counted under its metrics label.
    pub index: Rc<Cell<usize>>,
}

/// One response-head timer for all the requests of an HTTP/1.1 client
/// connection, one after another. Moving an armed timer to a later
/// deadline is one atomic update in tokio, where a timer per request is
/// put in and taken out of the runtime's timer wheel every time. Left
/// armed after a response, it wakes the idle connection's task once,
/// which finds nothing to do.
#[derive(Default)]
pub(crate) struct HeadTimer(pub(crate) std::cell::RefCell<Option<Pin<Box<tokio::time::Sleep>>>>);

/// What a TLS handshake settled, for the requests that follow it.
pub(crate) struct TlsInfo {
    /// The server name the client asked for, if any.
    pub sni: Option<Box<str>>,
    /// Which certificate answered (for the 421 check).
    pub cert: usize,
    pub certs: std::sync::Arc<crate::downstream::tls::CertStore>,
    /// With client-certificate verification on: the header that carries
    /// the subject upstream, and the verified subject (`None`: the client
    /// sent no certificate, where that is optional).
    pub subject: Option<(http::HeaderName, Option<HeaderValue>)>,
}

/// What the watchdog knows of a connection.
pub(crate) struct ConnState {
    pub(crate) in_flight: Cell<u32>,
    /// Since when no request has been in flight (accept time at first).
    pub(crate) idle_since: Cell<Instant>,
    /// Bytes read from the client so far.
    pub(crate) read: Cell<u64>,
    /// `read` when the connection last became idle.
    pub(crate) read_at_idle: Cell<u64>,
    /// Requests started on this connection.
    pub(crate) requests: Cell<u64>,
    /// Set by the watchdog: close the connection now.
    pub(crate) cut: Cell<Option<Cut>>,
    /// Set by the watchdog when shutdown begins: finish and close.
    pub(crate) draining: Cell<bool>,
    /// Draining for shutdown or a binary upgrade (not for a request
    /// limit or an eviction): an HTTP/1.1 connection answers its next
    /// request with `Connection: close` and, idle, waits [`STOP_LINGER`]
    /// for a request that may already be on its way before closing: a
    /// keep-alive client that sent one just as it was closed would see
    /// its request fail.
    pub(crate) stopping: Cell<bool>,
    /// The connection task's waker, so the watchdog can wake it.
    pub(crate) waker: RefCell<Option<Waker>>,
    /// A response went out before the request body was read (413): read
    /// and discard what the client still sends before closing, so that it
    /// gets the response rather than a reset (nginx's lingering close).
    pub linger: Cell<bool>,
    /// Left by a request whose upstream switched protocols (101): run
    /// once hyper has written the 101 and handed the socket back (boxed:
    /// every connection's state would otherwise carry its size).
    pub tunnel: RefCell<Option<Box<dyn Takeover>>>,
    /// Fields with underscores were dropped (logged once per connection).
    pub underscores_dropped: Cell<bool>,
    /// Requests the client cancelled (HTTP/2 `RST_STREAM`, a connection
    /// closed mid-request) in the current window, and when it began.
    pub(crate) resets: Cell<(Instant, u32)>,
    /// The client passed its reset limit: GOAWAY(ENHANCE_YOUR_CALM), close.
    pub(crate) calm: Cell<bool>,
    /// This connection's limits, fixed when it was accepted.
    pub(crate) limits: ConnLimits,
    /// The peer, or the client a trusted peer's PROXY protocol header
    /// named (set before the first request).
    pub(crate) client: Cell<SocketAddr>,
    /// The address the client connected to (what a PROXY header to an
    /// upstream names as the destination): the listener's, or what the
    /// client's own PROXY header said.
    pub(crate) local: Cell<SocketAddr>,
    /// This connection among the worker thread's (never given twice).
    pub(crate) id: std::num::NonZeroU64,
    /// Served as HTTP/1.x (set once the protocol is known).
    pub(crate) http1: Cell<bool>,
    /// Request bodies that nobody reads any more ([`crate::body::Discard`]).
    leftovers: RefCell<Vec<Leftover>>,
    /// `leftovers` is not empty.
    pub(crate) has_leftovers: Cell<bool>,
    /// Past its TLS handshake, serving HTTP (before: never idle).
    pub(crate) serving: Cell<bool>,
    /// Set by the watchdog once the connection has been idle for
    /// `TRIM_AFTER`: free hyper's buffers.
    pub(crate) trim: Cell<bool>,
    /// A static file's spans whose stand-ins hyper holds, to be sent
    /// with `sendfile` (plain HTTP/1.1 only; [`super::sendfile`]).
    pub(crate) sendfile: super::sendfile::Regions,
    /// Where its counts go (admin listener on).
    pub(crate) meter: Option<Meter>,
}

/// A connection's counts: bytes each way, its protocol while it is open,
/// GOAWAYs, under the counters of the config it was accepted under.
pub(crate) struct Meter {
    counters: std::sync::Arc<crate::metrics::Counters>,
    /// Its listener's index among the counters' listeners.
    listener: usize,
    /// Its [`crate::metrics::PROTOCOLS`] index, once set up.
    protocol: Cell<Option<usize>>,
}

impl Meter {
    /// For a connection accepted on the listener configured at `addr`.
    pub(crate) fn new(
        counters: &std::sync::Arc<crate::metrics::Counters>,
        addr: SocketAddr,
    ) -> Option<Meter> {
        Some(Meter {
            listener: counters.listener(addr)?,
            counters: counters.clone(),
            protocol: Cell::new(None),
        })
    }

    pub(crate) fn count(&self, c: crate::metrics::Conn, n: u64) {
        self.counters.conn(c, self.listener, n);
    }

    /// Set up: HTTP/2 or not, TLS version if any (`0x0303` TLS 1.2,
    /// `0x0304` TLS 1.3).
    pub(crate) fn set_up(&self, h2: bool, tls: Option<u16>) {
        let tls = match tls {
            None => 0,
            Some(0x0304) => 2,
            Some(_) => 1,
        };
        let p = if h2 { 3 } else { 0 } + tls;
        self.protocol.set(Some(p));
        self.counters.handled(self.listener, p);
    }

    /// The TLS handshake failed (an index of
    /// [`crate::metrics::TLS_FAILURES`]).
    pub(crate) fn tls_failed(&self, reason: usize) {
        self.counters.tls_failed(self.listener, reason);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(p) = self.protocol.get() {
            self.counters.closed(self.listener, p);
        }
    }
}

/// A request body nobody reads any more. HTTP/1.1: read to its end and
/// dropped, so that the client can finish sending and read the response,
/// and the connection can stay open (nginx's body discarding). HTTP/2:
/// left unread for [`PARK`], so that the client runs out of flow-control
/// window, then dropped, which resets the stream with NO_ERROR (RFC 9113
/// §8.1): the client stops sending without losing the response. (A client
/// that gets that reset while it still has window to send, curl 7.88 for
/// one, reports an error instead of the response.)
struct Leftover {
    body: hyper::body::Incoming,
    /// HTTP/2: when to drop it.
    park: Option<Pin<Box<tokio::time::Sleep>>>,
    /// HTTP/1.1: bytes read and dropped so far.
    dropped: u64,
}

/// The most bytes of one request body read and dropped. Time is bounded
/// too: the bytes keep arriving after the response, where the watchdog
/// counts them as a new request head and cuts the connection after
/// `client_header` (nginx bounds its discarding by time alone).
const DISCARD_MAX: u64 = 1 << 30;

/// How long an HTTP/2 request body nobody reads is left before its stream
/// is reset.
const PARK: Duration = Duration::from_secs(1);

/// Per-connection limits on what the client may do (`[limits]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// Requests (HTTP/1.1) or streams (HTTP/2) before the connection is
    /// closed gracefully (`Connection: close`, GOAWAY).
    pub max_requests: u64,
    /// Cancelled requests allowed per `reset_window`; one more and the
    /// connection gets GOAWAY(ENHANCE_YOUR_CALM) and closes.
    pub max_resets: u32,
    pub reset_window: Duration,
}

impl ConnLimits {
    pub(crate) fn of(limits: &crate::config::Limits) -> ConnLimits {
        ConnLimits {
            max_requests: limits.max_requests_per_connection,
            max_resets: limits.http2_max_resets,
            reset_window: limits.http2_reset_window,
        }
    }
}

impl ConnState {
    pub(crate) fn new(
        client: SocketAddr,
        local: SocketAddr,
        limits: ConnLimits,
        meter: Option<Meter>,
    ) -> ConnState {
        ConnState {
            meter,
            in_flight: Cell::new(0),
            idle_since: Cell::new(Instant::now()),
            read: Cell::new(0),
            read_at_idle: Cell::new(0),
            requests: Cell::new(0),
            cut: Cell::new(None),
            draining: Cell::new(false),
            stopping: Cell::new(false),
            waker: RefCell::new(None),
            linger: Cell::new(false),
            tunnel: RefCell::new(None),
            underscores_dropped: Cell::new(false),
            resets: Cell::new((Instant::now(), 0)),
            calm: Cell::new(false),
            limits,
            client: Cell::new(client),
            local: Cell::new(local),
            id: next_id(),
            http1: Cell::new(true),
            leftovers: RefCell::new(Vec::new()),
            has_leftovers: Cell::new(false),
            serving: Cell::new(false),
            trim: Cell::new(false),
            sendfile: Default::default(),
        }
    }
}

impl ConnState {
    /// Counts a request the client cancelled before its response was done
    /// (rapid-reset floods, CVE-2023-44487, reset streams the proxy already
    /// accepted and sent upstream: each costs the upstream a request). Past
    /// `max_resets` in `reset_window` the connection is cut.
    pub(crate) fn client_reset(&self) {
        let now = Instant::now();
        let (start, n) = self.resets.get();
        let window = self.limits.reset_window;
        let (start, n) = if now.duration_since(start) >= window {
            (now, 1)
        } else {
            (start, n.saturating_add(1))
        };
        self.resets.set((start, n));
        if n > self.limits.max_resets && !self.calm.get() {
            tracing::warn!(
                client = %self.client.get(),
                "client cancelled more than {} requests in {window:?}: GOAWAY(ENHANCE_YOUR_CALM), closing",
                self.limits.max_resets
            );
            self.flag(|s| s.calm.set(true));
        }
    }

    /// Whether the request just started is the connection's last one
    /// (`max_requests`); if so, an HTTP/2 connection begins its graceful
    /// close (GOAWAY) now, and an HTTP/1.1 one answers `Connection: close`.
    pub(crate) fn last_request(&self) -> bool {
        if self.stopping.get() {
            return true;
        }
        let last = self.requests.get() >= self.limits.max_requests;
        if last && !self.draining.get() {
            self.flag(|s| s.draining.set(true));
        }
        last
    }
}

impl ConnState {
    /// Since when the connection has been idle: serving, no request in
    /// flight, no byte of a next one read, no body left to discard, not
    /// already closing. `None` if it is not idle.
    pub(crate) fn idle(&self) -> Option<Instant> {
        let idle = self.serving.get()
            && self.in_flight.get() == 0
            && self.read.get() == self.read_at_idle.get()
            && !self.draining.get()
            && self.cut.get().is_none()
            && !self.has_leftovers.get();
        idle.then(|| self.idle_since.get())
    }

    /// Shutdown began: finish the current exchange, then close
    /// (HTTP/1.1: see [`ConnState::stopping`]).
    pub(crate) fn shut_down(&self) {
        self.flag(|s| {
            s.draining.set(true);
            s.stopping.set(true);
        });
    }

    /// Closes an idle connection to make room (at `max_connections`): an
    /// HTTP/1.1 one at once, an HTTP/2 one after GOAWAY.
    pub(crate) fn evict(&self) {
        tracing::debug!(client = %self.client.get(), "closing an idle connection for a new one (max_connections)");
        self.flag(|s| s.draining.set(true));
    }

    /// Works on the bodies left to [`crate::body::Discard`]: reads and
    /// drops what HTTP/1.1 ones bring (until their end, an error or
    /// [`DISCARD_MAX`]), drops HTTP/2 ones whose time is up.
    pub(crate) fn poll_leftovers(&self, cx: &mut Context<'_>) {
        let mut all = self.leftovers.borrow_mut();
        all.retain_mut(|l| match &mut l.park {
            Some(sleep) => sleep.as_mut().poll(cx).is_pending(),
            None => loop {
                match http_body::Body::poll_frame(Pin::new(&mut l.body), cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        l.dropped += frame.data_ref().map_or(0, |d| d.len() as u64);
                        if l.dropped > DISCARD_MAX {
                            tracing::debug!(client = %self.client.get(), "request body past {DISCARD_MAX} bytes that nobody reads; closing");
                            break false;
                        }
                    }
                    Poll::Ready(_) => break false,
                    Poll::Pending => break true,
                }
            },
        });
        self.has_leftovers.set(!all.is_empty());
    }
}

impl crate::body::Discard for ConnState {
    fn discard(&self, body: hyper::body::Incoming) {
        let park = (!self.http1.get()).then(|| Box::pin(tokio::time::sleep(PARK)));
        let l = Leftover {
            body,
            park,
            dropped: 0,
        };
        self.flag(|s| {
            s.leftovers.borrow_mut().push(l);
            s.has_leftovers.set(true);
        });
    }
}

/// Marks a request in flight on its connection until dropped (or ended
/// with [`InFlight::end_at`]). (`None` once ended: as large as the `Rc`,
/// where a field for the end's time made every response body larger.)
pub(crate) struct InFlight(Option<Rc<ConnState>>);

impl InFlight {
    pub(crate) fn new(state: &Rc<ConnState>) -> InFlight {
        state.in_flight.set(state.in_flight.get() + 1);
        state.requests.set(state.requests.get() + 1);
        InFlight(Some(state.clone()))
    }

    /// The client reset the request's stream: one more towards its
    /// connection's limit.
    pub(crate) fn client_reset(&self) {
        if let Some(s) = &self.0 {
            s.client_reset();
        }
    }

    /// No longer in flight, since `now` (a clock read the caller made for
    /// something else too).
    pub(crate) fn end_at(mut self, now: Instant) {
        if let Some(s) = self.0.take() {
            leave(&s, now);
        }
    }
}

/// A request on `s` ended at `now`.
fn leave(s: &ConnState, now: Instant) {
    let n = s.in_flight.get() - 1;
    s.in_flight.set(n);
    if n == 0 {
        s.idle_since.set(now);
        s.read_at_idle.set(s.read.get());
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            leave(&s, Instant::now());
        }
    }
}

thread_local! {
    /// The last connection number given on this thread.
    static LAST_ID: Cell<u64> = const { Cell::new(0) };
}

/// A connection number not given before on this thread.
fn next_id() -> std::num::NonZeroU64 {
    LAST_ID.with(|n| {
        let id = n.get() + 1;
        n.set(id);
        std::num::NonZeroU64::new(id).unwrap_or(std::num::NonZeroU64::MIN)
    })
}

/// The client's byte stream: TCP, or TLS over it.
pub(crate) type ClientIo = crate::rt::MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cut {
    Idle,
    HeadTimeout,
}

impl ConnState {
    /// Keeps the connection task's waker for [`ConnState::flag`].
    pub(crate) fn register(&self, cx: &Context<'_>) {
        let mut w = self.waker.borrow_mut();
        if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *w = Some(cx.waker().clone());
        }
    }

    pub(crate) fn flag(&self, set: impl FnOnce(&ConnState)) {
        set(self);
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }
}

/// How long an idle HTTP/1.1 connection stays open once shutdown began
/// (see [`ConnState::stopping`]).
pub(crate) const STOP_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// What takes over an HTTP/1.1 connection's socket once hyper has written
/// a 101 and handed the socket back: the tunnel its request left.
pub(crate) trait Takeover {
    /// Runs on `io`, `early` being the bytes read past the request head.
    fn take_over(self: Box<Self>, io: ClientIo, early: Bytes) -> Pin<Box<dyn Future<Output = ()>>>;
}
