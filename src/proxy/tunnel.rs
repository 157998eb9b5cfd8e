//! Tunnel: HTTP/1.1 `Upgrade` (WebSocket, or any other protocol).
//!
//! An upgrade request is an HTTP/1.1 request with an `Upgrade` field and
//! `upgrade` among its `Connection` options. It keeps both fields on its
//! way upstream (every other hop-by-hop field is still dropped) and goes on
//! a fresh upstream connection of its own, never a pooled one, as an
//! upgraded connection never carries HTTP again. That connection's hyper
//! driver runs as a task of its own, with hyper's upgrade support. Once
//! sent, an upgrade request is never sent again, to this server or another.
//!
//! - An answer other than 101 (a refusal: 200, 400, 426...) streams back as
//!   any response; its connection is not pooled.
//! - On 101 the client gets the 101 (hop-by-hop fields dropped except
//!   `Upgrade`, and `Connection: upgrade`), and the request leaves a
//!   [`Tunnel`] with its connection. Once hyper has written the 101 the
//!   connection's task takes the client socket back from hyper (with any
//!   bytes hyper read past the request head) and runs the tunnel: bytes are
//!   copied both ways through a 16 KiB buffer each way, so a side that does
//!   not read holds back the other. When one side ends its stream, the other
//!   side's write half is shut (half-close); the tunnel ends when both
//!   directions are done, on an error on either side, or when no byte has
//!   moved either way for `timeouts.tunnel_idle`. Both sockets are then
//!   closed, and one log line plus one access-log line (status 101) say how
//!   many bytes went each way and why it ended.
//!
//! A tunnel runs inside its client connection's task, so it counts as an
//! open connection for `max_connections` and for shutdown: graceful
//! shutdown waits for tunnels up to `shutdown_grace` and then closes them.
//! A tunnel keeps the config it started with across reloads, and holds its
//! server's `max_connections` turn and balancing count until it ends.
//!
//! ## WebSocket over HTTP/2 (RFC 8441)
//!
//! Client HTTP/2 connections advertise `SETTINGS_ENABLE_CONNECT_PROTOCOL`.
//! An extended CONNECT with `:protocol = websocket` ([`h2_websocket`]) is
//! routed and forwarded as the HTTP/1.1 WebSocket handshake it stands for
//! (RFC 8441 §5): `GET` of `:path`, `Host` from `:authority`, `Upgrade:
//! websocket`, `Connection: Upgrade` and a fresh `Sec-WebSocket-Key`
//! ([`to_h1_websocket`]); the other fields (`Sec-WebSocket-Version`,
//! `-Protocol`, `-Extensions`, `Origin`...) go on as for any request. A 101
//! whose `Sec-WebSocket-Accept` matches the key ([`check_accept`]) becomes
//! the client's `200` ([`switch`]), and the tunnel then runs between the
//! HTTP/2 stream and the upstream connection, as a task of its own (the
//! client connection carries other streams): the same copy, idle timeout
//! and log lines, with status 200 in the access log. The stream's flow
//! control holds back a side that does not read; an end of stream either
//! way is passed on (`END_STREAM` towards the client, a half-close towards
//! the upstream), and a tunnel that fails or idles out resets the stream.
//! A tunnel keeps the request marked in flight on its connection, so the
//! connection is not closed as idle under it, and graceful shutdown waits
//! for it as for any stream. Other `:protocol` values get 501; a plain
//! CONNECT is not proxied (it matches no route).

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::exchange::LogLine;
use super::response_body::ProxyBody;
use crate::body::RequestBody;
use crate::downstream::state::{ClientIo, InFlight, Takeover};
use crate::error::ProxyError;
use crate::message::headers::{keep_upgrade, lists, strip_hop_by_hop, VIA_VALUE};
use crate::router::Route;
use crate::upstream::{open, Lease, Sender};
use crate::worker::Worker;

/// Buffer size for each direction of a tunnel.
const BUF: usize = 16 * 1024;

const WEBSOCKET: HeaderValue = HeaderValue::from_static("websocket");
static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
/// RFC 6455 §1.3: appended to the key before hashing it for the accept.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// For an HTTP/2 extended CONNECT (RFC 8441) for `websocket`: the client
/// stream's upgrade, to tunnel through once the upstream switched. `None`
/// for any other request (a plain CONNECT included: it goes on as today,
/// and matches no route). Another `:protocol` is refused (501).
pub(crate) fn h2_websocket(
    req: &mut http::request::Parts,
) -> Result<Option<OnUpgrade>, ProxyError> {
    if req.method != Method::CONNECT || req.version != Version::HTTP_2 {
        return Ok(None);
    }
    let Some(protocol) = req.extensions.get::<hyper::ext::Protocol>() else {
        return Ok(None);
    };
    if !protocol.as_str().eq_ignore_ascii_case("websocket") {
        return Err(ProxyError::ConnectProtocol(
            protocol.as_str().chars().take(64).collect(),
        ));
    }
    // `hyper::upgrade::on` wants a whole request: lend it the extensions.
    let mut whole = http::Request::new(());
    std::mem::swap(whole.extensions_mut(), &mut req.extensions);
    let upgrade = hyper::upgrade::on(&mut whole);
    std::mem::swap(whole.extensions_mut(), &mut req.extensions);
    Ok(Some(upgrade))
}

/// Turns the (already hop-by-hop-stripped) fields of an extended CONNECT
/// into those of an HTTP/1.1 WebSocket handshake: `Upgrade: websocket`,
/// `Connection: upgrade` and a new random `Sec-WebSocket-Key`, returned
/// to check the upstream's accept against.
pub(crate) fn to_h1_websocket(h: &mut HeaderMap) -> Result<HeaderValue, ProxyError> {
    use ring::rand::SecureRandom;
    let mut nonce = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| ProxyError::Random)?;
    let key = HeaderValue::from_str(&data_encoding::BASE64.encode(&nonce))
        .map_err(|_| ProxyError::Random)?;
    h.remove(&SEC_WEBSOCKET_ACCEPT);
    h.insert(SEC_WEBSOCKET_KEY.clone(), key.clone());
    keep_upgrade(h, vec![WEBSOCKET]);
    Ok(key)
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with (RFC 6455
/// §4.2.2): base64 of the SHA-1 of the key and the GUID.
fn accept_for(key: &[u8]) -> String {
    let mut sha = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    sha.update(key);
    sha.update(WS_GUID);
    data_encoding::BASE64.encode(sha.finish().as_ref())
}

/// Checks a 101 to our WebSocket handshake as RFC 6455 §4.1 has a client
/// do: `Upgrade: websocket`, `Connection: upgrade`, and the accept for our
/// key. The error says what was wrong.
pub(crate) fn check_accept(h: &HeaderMap, key: &HeaderValue) -> Result<(), &'static str> {
    if !lists(h, header::UPGRADE, "websocket") {
        return Err("its 101 does not say `Upgrade: websocket`");
    }
    if !lists(h, header::CONNECTION, "upgrade") {
        return Err("its 101 does not say `Connection: upgrade`");
    }
    match h.get(&SEC_WEBSOCKET_ACCEPT) {
        None => Err("its 101 has no Sec-WebSocket-Accept"),
        Some(v) if v.as_bytes() == accept_for(key.as_bytes()).as_bytes() => Ok(()),
        Some(_) => Err("its 101's Sec-WebSocket-Accept does not match the key sent"),
    }
}

/// A new connection to `server` for an upgrade request, its driver
/// spawned as a task with hyper's upgrade support.
pub(crate) async fn connect(
    w: &Worker,
    server: usize,
    timeout: Duration,
    client: Option<&crate::upstream::proxy_protocol::Client<'_>>,
) -> Result<Lease, ProxyError> {
    let addr = w.pool.addr(server);
    // Upgrades are HTTP/1.1: over TLS, offer only that in ALPN.
    let tls = w.pool.tls(server).map(|t| t.http1_only());
    let header = w
        .pool
        .proxy_protocol(server)
        .map(|v| crate::upstream::proxy_protocol::header(v, client));
    let (stream, _) = open(addr, tls.as_ref(), timeout, header.as_deref()).await?;
    // Its driver runs as a task of its own, not from the sender's polls.
    let mut client = w.pool.http1_client().clone();
    client.driven_by_sender(false);
    let (sender, conn) = client
        .handshake::<_, RequestBody>(TokioIo::new(stream))
        .await
        .map_err(|source| ProxyError::Handshake { addr, source })?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(upstream = %addr, "upgrade connection ended: {e}");
        }
    });
    Ok(Lease::detached(Sender::H1(sender), server))
}

/// The client's answer to the upstream's 101, and the upstream's upgrade
/// for [`Tunnel::new`]. An HTTP/1.1 client gets a 101 with the `Upgrade`
/// fields kept; an HTTP/2 client's WebSocket (RFC 8441, `h2`) gets a `200`
/// (the 101 already checked by [`check_accept`]) with the 101's other
/// end-to-end fields (`Sec-WebSocket-Protocol`, `-Extensions`...).
pub(crate) fn switch(
    mut resp: Response<Incoming>,
    route: &Route,
    h2: bool,
) -> (Response<ProxyBody>, OnUpgrade) {
    let upstream = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    if h2 {
        parts.status = StatusCode::OK;
    }
    let h = &mut parts.headers;
    let upgrade: Vec<HeaderValue> = match h2 {
        true => Vec::new(),
        false => h.get_all(header::UPGRADE).iter().cloned().collect(),
    };
    strip_hop_by_hop(h);
    if h2 {
        h.remove(&SEC_WEBSOCKET_ACCEPT);
        h.remove(header::CONTENT_LENGTH);
    } else {
        keep_upgrade(h, upgrade);
    }
    h.append(header::VIA, VIA_VALUE);
    route.response_headers.apply(h);
    (
        Response::from_parts(parts, ProxyBody::full(Bytes::new())),
        upstream,
    )
}

/// An upgraded exchange: waits for its client socket, then copies bytes
/// both ways. Dropping it (at any point) closes both sides and writes its
/// log lines.
pub(crate) struct Tunnel {
    worker: Rc<Worker>,
    server: usize,
    /// Kept until the upstream connection has handed over its socket.
    lease: Option<Lease>,
    upstream: Option<OnUpgrade>,
    /// What the client was answered: 101, or 200 to an HTTP/2 CONNECT.
    status: u16,
    line: LogLine,
    client: SocketAddr,
    idle: Duration,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// An HTTP/2 tunnel keeps its stream in flight on its connection.
    _in_flight: Option<InFlight>,
    /// Its places in concurrency limits: in flight until it closes.
    _held: crate::ratelimit::concurrency::Held,
    stats: Stats,
    end: End,
}

/// Bytes each way and the time of the last one, kept by the sockets'
/// wrappers.
struct Stats {
    /// Client to upstream.
    up: Cell<u64>,
    /// Upstream to client.
    down: Cell<u64>,
    last: Cell<Instant>,
    /// Which side's socket failed, if one did.
    failed: Cell<Option<Side>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

/// Why a tunnel ended.
enum End {
    /// The client connection (or stream) ended before hyper wrote the
    /// 101 (or 200).
    NotStarted,
    /// Still running when dropped: shutdown's grace period ran out.
    Cut,
    /// Both sides closed their streams.
    Closed,
    Idle(Duration),
    Failed(Option<Side>, io::Error),
    Upgrade(hyper::Error),
}

impl Takeover for Tunnel {
    fn take_over(
        self: Box<Self>,
        io: ClientIo,
        early: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        Box::pin(self.run(io, early))
    }
}

impl Tunnel {
    /// The tunnel of an exchange whose client was answered `status` (101,
    /// or 200 to an HTTP/2 WebSocket) by [`switch`]; it runs with
    /// [`Tunnel::run`] or [`Tunnel::run_h2`] once hyper has sent that.
    pub(crate) fn new(
        worker: Rc<Worker>,
        lease: Lease,
        upstream: OnUpgrade,
        status: u16,
        line: LogLine,
        client: SocketAddr,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Tunnel {
        Tunnel {
            idle: worker.config.timeouts.tunnel_idle,
            worker,
            server: lease.server,
            lease: Some(lease),
            upstream: Some(upstream),
            status,
            line,
            client,
            _permit: permit,
            _in_flight: None,
            _held: Default::default(),
            stats: Stats {
                up: Cell::new(0),
                down: Cell::new(0),
                last: Cell::new(Instant::now()),
                failed: Cell::new(None),
            },
            end: End::NotStarted,
        }
    }

    /// Keeps the request's places in its concurrency limits until the
    /// tunnel ends.
    pub(crate) fn keep(&mut self, held: crate::ratelimit::concurrency::Held) {
        self._held = held;
    }

    /// Keeps the request in flight on its connection until the tunnel
    /// ends (HTTP/2: the connection must not look idle meanwhile).
    pub(crate) fn hold(&mut self, in_flight: InFlight) {
        self._in_flight = Some(in_flight);
    }

    /// Runs the tunnel between the client socket (with `early`, bytes the
    /// client sent past the request head) and the upgraded upstream.
    pub(crate) async fn run(mut self, client: ClientIo, early: Bytes) {
        self.end = End::Cut;
        self.end = self.splice(client, early).await;
    }

    /// Runs the tunnel between an HTTP/2 client's stream, once hyper has
    /// sent the 200 and handed it over, and the upgraded upstream.
    pub(crate) async fn run_h2(mut self, client: OnUpgrade) {
        let client = match client.await {
            Ok(u) => u,
            // The stream was reset, or the connection ended, first.
            Err(_) => return,
        };
        self.end = End::Cut;
        self.end = self.splice(TokioIo::new(client), Bytes::new()).await;
    }

    async fn splice<C>(&mut self, client: C, early: Bytes) -> End
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(upgrade) = self.upstream.take() else {
            return End::NotStarted;
        };
        let upstream: Upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => return End::Upgrade(e),
        };
        self.lease = None;
        let stats = &self.stats;
        stats.last.set(Instant::now());
        let mut c = Counted {
            io: client,
            stats,
            side: Side::Client,
        };
        let mut u = Counted {
            io: TokioIo::new(upstream),
            stats,
            side: Side::Upstream,
        };
        if !early.is_empty() {
            stats.up.set(early.len() as u64);
            match tokio::time::timeout(self.idle, u.write_all(&early)).await {
                Err(_) => return End::Idle(self.idle),
                Ok(Err(e)) => return End::Failed(stats.failed.get(), e),
                Ok(Ok(())) => {}
            }
        }
        let copy = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut u, BUF, BUF);
        tokio::pin!(copy);
        loop {
            let deadline = stats.last.get() + self.idle;
            tokio::select! {
                r = &mut copy => return match r {
                    Ok(_) => End::Closed,
                    Err(e) => End::Failed(stats.failed.get(), e),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if stats.last.get() + self.idle <= Instant::now() {
                        return End::Idle(self.idle);
                    }
                }
            }
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let w = &self.worker;
        let addr = w.pool.addr(self.server);
        let (up, down) = (self.stats.up.get(), self.stats.down.get());
        let client = self.client;
        let status = self.status;
        let outcome = match &self.end {
            End::Closed => "done",
            _ => "aborted",
        };
        match &self.end {
            End::NotStarted => tracing::info!(
                %client, upstream = %addr,
                "upgrade: client connection ended before the {status} was sent"
            ),
            End::Cut => tracing::info!(
                %client, upstream = %addr, up, down,
                "tunnel closed: shutdown grace period over"
            ),
            End::Closed => tracing::info!(
                %client, upstream = %addr, up, down,
                "tunnel closed by both sides"
            ),
            End::Idle(d) => tracing::info!(
                %client, upstream = %addr, up, down,
                "tunnel closed: idle for {d:?} (timeouts.tunnel_idle)"
            ),
            End::Failed(side, e) => {
                let side = match side {
                    Some(Side::Client) => "client",
                    Some(Side::Upstream) => "upstream",
                    None => "socket",
                };
                tracing::info!(
                    %client, upstream = %addr, up, down,
                    "tunnel closed: {side} error: {e}"
                )
            }
            End::Upgrade(e) => tracing::warn!(
                %client, upstream = %addr,
                "tunnel failed: upstream connection not handed over after its 101: {e}"
            ),
        }
        self.line.server(self.server);
        self.line.set(status, down, Some(addr), outcome);
        w.pool.end(self.server);
    }
}

/// One side's socket, counting what it reads into [`Stats`].
struct Counted<'a, T> {
    io: T,
    stats: &'a Stats,
    side: Side,
}

impl<T> Counted<'_, T> {
    fn note<R>(&self, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if let Poll::Ready(Err(_)) = &r {
            if self.stats.failed.get().is_none() {
                self.stats.failed.set(Some(self.side));
            }
        }
        r
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            let s = self.stats;
            let count = match self.side {
                Side::Client => &s.up,
                Side::Upstream => &s.down,
            };
            count.set(count.get() + n);
            s.last.set(Instant::now());
        }
        self.note(r)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note(r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.note(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.note(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn accept_is_the_rfc_6455_sample() {
        // RFC 6455 §1.3's worked example.
        assert_eq!(
            accept_for(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        let good = [
            ("upgrade", "WebSocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ];
        assert_eq!(check_accept(&map(&good), &key), Ok(()));
        let mut wrong = good;
        wrong[2].1 = "s3pPLMBiTxaQ9kYGzzhZRbK+xOp=";
        assert!(check_accept(&map(&wrong), &key).is_err());
        assert!(check_accept(&map(&good[..2]), &key).is_err());
        assert!(check_accept(&map(&good[1..]), &key).is_err());
        assert!(check_accept(&map(&[good[0], good[2]]), &key).is_err());
    }

    #[test]
    fn h1_handshake_fields_with_a_fresh_key() {
        let mut h = map(&[
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "client-chosen"),
            ("sec-websocket-protocol", "chat"),
        ]);
        let key = to_h1_websocket(&mut h).unwrap();
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert_eq!(h.get("sec-websocket-key").unwrap(), &key);
        assert_eq!(h.get("sec-websocket-protocol").unwrap(), "chat");
        let raw = data_encoding::BASE64.decode(key.as_bytes()).unwrap();
        assert_eq!(raw.len(), 16);
        let other = to_h1_websocket(&mut map(&[])).unwrap();
        assert_ne!(key, other, "a new key each time");
    }

    #[test]
    fn only_h2_connect_with_websocket_is_a_websocket() {
        let req = |method: Method, version: Version, protocol: Option<&'static str>| {
            let r = http::Request::builder()
                .method(method)
                .version(version)
                .uri("https://a.test/chat")
                .body(())
                .unwrap();
            let (mut parts, ()) = r.into_parts();
            if let Some(p) = protocol {
                parts
                    .extensions
                    .insert(hyper::ext::Protocol::from_static(p));
            }
            parts
        };
        use Version as V;
        let mut r = req(Method::CONNECT, V::HTTP_2, Some("websocket"));
        assert!(h2_websocket(&mut r).unwrap().is_some());
        let mut r = req(Method::CONNECT, V::HTTP_2, None);
        assert!(h2_websocket(&mut r).unwrap().is_none());
        let mut r = req(Method::GET, V::HTTP_2, Some("websocket"));
        assert!(h2_websocket(&mut r).unwrap().is_none());
        let mut r = req(Method::CONNECT, V::HTTP_11, Some("websocket"));
        assert!(h2_websocket(&mut r).unwrap().is_none());
        let mut r = req(Method::CONNECT, V::HTTP_2, Some("connect-udp"));
        match h2_websocket(&mut r) {
            Err(e) => assert_eq!(e.status(), StatusCode::NOT_IMPLEMENTED),
            Ok(_) => panic!("connect-udp accepted"),
        }
    }
}
