//! One `[[streams]]` connection's life (L4 proxying), after its
//! listener admitted it and read its PROXY protocol header if any:
//!
//! 1. the stream's `access` rules on the client;
//! 2. where it goes: the stream's `upstream`; after the TLS handshake
//!    when the stream terminates TLS (its SNI routes then see the name the
//!    handshake settled); else, with SNI routes, by the ClientHello read
//!    into a buffer ([`hello`]: at most [`MAX_PREREAD`] bytes, within
//!    `preread_timeout`) and passed on untouched;
//! 3. a route to an HTTP listener hands the socket and the bytes read
//!    back to the caller ([`Handoff`]), which serves it as that listener
//!    would have;
//! 4. a server of the group, as its balancing picks it (hash groups by the
//!    client's IP), trying the next one in service when a connection
//!    fails (each failure counts for passive ejection); its
//!    `max_connections` held for the connection's life; a PROXY protocol
//!    header first if the group sends one, TLS if its servers are
//!    `https://` ones (no ALPN: the bytes are not HTTP);
//! 5. the bytes both ways ([`splice`]), half-closes passed on, until both
//!    sides end, or nothing moves for `idle_timeout`;
//! 6. one access-log line ([`crate::access_log::Session`]) and its
//!    metrics (`tidegate_stream_sessions_total` by outcome, the duration,
//!    bytes each way on the listener's counters).
//!
//! The connection holds its worker (the config it started under) until it
//! ends, as an upgraded HTTP connection does.

pub(crate) mod hello;
mod splice;

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::rc::Rc;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::access_log::Session;
use crate::config::stream::{SniTarget, Stream, MAX_PREREAD};
use crate::metrics::{Conn, SessionEnd};
use crate::upstream::Io;
use crate::worker::Worker;
use hello::Hello;

/// A connection an SNI route hands to an HTTP listener: its socket, the
/// listener's index in the config, and the bytes read from it (the
/// ClientHello), which that listener's TLS takes first.
pub(crate) struct Handoff {
    pub(crate) tcp: TcpStream,
    pub(crate) listener: usize,
    pub(crate) early: Vec<u8>,
}

/// Who a stream connection is.
pub(crate) struct Peer {
    /// The client (the peer, or what its PROXY header said).
    pub(crate) client: SocketAddr,
    /// The address it connected to.
    pub(crate) local: SocketAddr,
    /// Its number on this worker.
    pub(crate) id: NonZeroU64,
}

/// The client's socket: TCP, or the TLS this stream terminated.
type ClientIo = crate::rt::MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// What is known of a connection as it goes, for its log line.
struct Record {
    start: Instant,
    listener: SocketAddr,
    sni: Option<String>,
    upstream: Option<SocketAddr>,
}

/// Serves the stream connection `tcp` accepted on listener `index`;
/// `Some` when an SNI route hands it to an HTTP listener.
pub(crate) async fn serve(
    tcp: TcpStream,
    index: usize,
    peer: Peer,
    worker: Rc<Worker>,
    shutdown: watch::Receiver<bool>,
) -> Option<Handoff> {
    let listener = worker.config.listeners.get(index)?;
    let stream = listener.stream.clone()?;
    let mut rec = Record {
        start: Instant::now(),
        listener: listener.addr,
        sni: None,
        upstream: None,
    };
    let client = peer.client;
    if let Some(a) = &listener.access {
        if !a.allows(client.ip()) {
            tracing::info!(%client, stream = %rec.listener, "stream connection refused by `access`");
            finish(&worker, &rec, client, SessionEnd::Denied, (0, 0));
            return None;
        }
    }
    let (io, early, target, alpn) = match worker.tls.get(index).and_then(Option::as_ref) {
        Some(tls) => {
            let accept = tokio_rustls::TlsAcceptor::from(tls.config.clone()).accept(tcp);
            let done = tokio::time::timeout(worker.config.timeouts.tls_handshake, accept).await;
            let tls = match done {
                Ok(Ok(s)) => s,
                failed => {
                    let (why, reason) = match &failed {
                        Ok(Err(e)) => (e.to_string(), crate::downstream::tls::failure(e)),
                        _ => ("not completed in time".to_string(), 0),
                    };
                    tracing::info!(%client, stream = %rec.listener, "TLS handshake failed: {why}");
                    if let Some(c) = &worker.counters {
                        if let Some(l) = c.listener(rec.listener) {
                            c.tls_failed(l, reason);
                        }
                    }
                    finish(&worker, &rec, client, SessionEnd::TlsFailed, (0, 0));
                    return None;
                }
            };
            let session = &tls.get_ref().1;
            if crate::downstream::tls::is_acme_validation(session) {
                // A CA's TLS-ALPN-01 check: answered by the handshake.
                return None;
            }
            rec.sni = session.server_name().map(str::to_string);
            let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
            let offered: Vec<&[u8]> = alpn.as_deref().into_iter().collect();
            let target = stream.route(rec.sni.as_deref(), &offered);
            (ClientIo::Tls(Box::new(tls)), Vec::new(), target, alpn)
        }
        None if !stream.sni.is_empty() => {
            let mut tcp = tcp;
            let read = preread(&mut tcp);
            let (early, hello) = match tokio::time::timeout(stream.preread_timeout, read).await {
                Ok(Ok(r)) => r,
                Ok(Err(why)) => {
                    tracing::info!(%client, stream = %rec.listener, "no ClientHello read: {why}");
                    finish(&worker, &rec, client, SessionEnd::BadHello, (0, 0));
                    return None;
                }
                Err(_) => {
                    tracing::info!(%client, stream = %rec.listener, "no ClientHello within preread_timeout ({:?})", stream.preread_timeout);
                    finish(&worker, &rec, client, SessionEnd::BadHello, (0, 0));
                    return None;
                }
            };
            let (sni, offered) = hello;
            rec.sni = sni;
            let offered: Vec<&[u8]> = offered.iter().map(Vec::as_slice).collect();
            let target = stream.route(rec.sni.as_deref(), &offered);
            if let Some(SniTarget::Listener(k)) = target {
                count(
                    &worker,
                    &rec,
                    SessionEnd::HandedOff,
                    (early.len() as u64, 0),
                );
                return Some(Handoff {
                    tcp,
                    listener: k,
                    early,
                });
            }
            (ClientIo::Plain(tcp), early, target, None)
        }
        None => (
            ClientIo::Plain(tcp),
            Vec::new(),
            stream.upstream.map(SniTarget::Upstream),
            None,
        ),
    };
    let Some(SniTarget::Upstream(group)) = target else {
        tracing::info!(%client, stream = %rec.listener, sni = rec.sni.as_deref().unwrap_or("-"), "no stream route for this connection; closing");
        finish(
            &worker,
            &rec,
            client,
            SessionEnd::NoRoute,
            (early.len() as u64, 0),
        );
        return None;
    };
    let client_hello = crate::upstream::proxy_protocol::Client {
        src: client,
        dst: peer.local,
        sni: rec.sni.as_deref(),
        alpn: alpn.as_deref(),
        conn: crate::upstream::proxy_protocol::Owner(peer.id),
    };
    let Some((server, upstream, _permit)) = connect(&worker, &stream, group, &client_hello).await
    else {
        finish(
            &worker,
            &rec,
            client,
            SessionEnd::NoUpstream,
            (early.len() as u64, 0),
        );
        return None;
    };
    rec.upstream = Some(worker.pool.addr(server));
    worker.pool.begin(server);
    let (end, bytes) = relay(io, upstream, early, &stream, &worker, shutdown).await;
    worker.pool.end(server);
    finish(&worker, &rec, client, end, bytes);
    None
}

/// Reads the connection's first bytes until they hold a whole
/// ClientHello: them, its SNI and its ALPN protocols.
async fn preread(tcp: &mut TcpStream) -> Result<(Vec<u8>, (Option<String>, Vec<Vec<u8>>)), String> {
    let mut buf = Vec::with_capacity(2048);
    loop {
        if buf.len() >= MAX_PREREAD {
            return Err(format!("ClientHello longer than {MAX_PREREAD} bytes"));
        }
        let mut chunk = [0u8; 4096];
        let room = (MAX_PREREAD - buf.len()).min(chunk.len());
        let n = tcp
            .read(&mut chunk[..room])
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before its ClientHello ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        match hello::parse(&buf) {
            Hello::More => continue,
            Hello::Invalid(why) => return Err(why.to_string()),
            Hello::Done { sni, alpn } => return Ok((buf, (sni, alpn))),
        }
    }
}

/// A connection to a server of `group`: the balancer's pick, then the
/// others in service; with the server's index and its place under the
/// server's `max_connections`.
async fn connect(
    worker: &Worker,
    stream: &Stream,
    group: usize,
    client: &crate::upstream::proxy_protocol::Client<'_>,
) -> Option<(usize, Io, Option<tokio::sync::OwnedSemaphorePermit>)> {
    let pool = &worker.pool;
    let g = worker.config.upstreams.get(group)?;
    // (A hash group hashes the client's address: a stream has no header
    // or cookie.)
    let key = matches!(g.balance, crate::config::Balance::Hash(_))
        .then(|| crate::upstream::balance::hash64(client.src.ip()));
    let Some(order) = pool.order(group, key) else {
        tracing::warn!(client = %client.src, group = %g.name, "no server of the group is in service");
        return None;
    };
    let order: Vec<usize> = order.collect();
    let header = g
        .proxy_protocol
        .map(|v| crate::upstream::proxy_protocol::header(v, Some(client)));
    for server in order {
        let addr = pool.addr(server);
        let permit = match pool.limit(server) {
            None => None,
            Some(limit) => match limit.acquire(stream.connect_timeout).await {
                Some(p) => Some(p),
                None => {
                    tracing::info!(client = %client.src, upstream = %addr, "server at max_connections; trying the next");
                    if let Some(s) = pool.stats() {
                        s.count(crate::upstream::stats::Count::PendingRefused, server);
                    }
                    continue;
                }
            },
        };
        let tls = pool.tls(server).map(|t| t.without_alpn());
        let started = Instant::now();
        match crate::upstream::open(
            addr,
            tls.as_ref(),
            stream.connect_timeout,
            header.as_deref(),
        )
        .await
        {
            Ok((io, _)) => {
                let (b, i) = pool.locate(server);
                b.record(i, true);
                if let Some(s) = pool.stats() {
                    s.connected(server, started.elapsed());
                    s.count(crate::upstream::stats::Count::Opened, server);
                }
                return Some((server, io, permit));
            }
            Err(e) => {
                let (b, i) = pool.locate(server);
                let ejected = b.record(i, false);
                if let Some(s) = pool.stats() {
                    s.count(crate::upstream::stats::Count::ConnectFailed, server);
                }
                match ejected {
                    Some(t) => {
                        tracing::warn!(client = %client.src, group = %g.name, "{}; server ejected for {t:?}", e.chain())
                    }
                    None => tracing::warn!(client = %client.src, group = %g.name, "{}", e.chain()),
                }
            }
        }
    }
    None
}

/// The bytes both ways (those read before first), until the stream ends;
/// how it ended, and the bytes (from the client, to it).
async fn relay(
    client: ClientIo,
    upstream: Io,
    early: Vec<u8>,
    stream: &Stream,
    worker: &Worker,
    mut shutdown: watch::Receiver<bool>,
) -> (SessionEnd, (u64, u64)) {
    let mut upstream = upstream;
    if !early.is_empty() {
        use tokio::io::AsyncWriteExt;
        // The ClientHello read for the SNI goes first, under the idle
        // timeout as every later byte is (a server that takes nothing).
        match tokio::time::timeout(stream.idle_timeout, upstream.write_all(&early)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return (SessionEnd::Error, (early.len() as u64, 0)),
            Err(_) => return (SessionEnd::IdleTimeout, (early.len() as u64, 0)),
        }
    }
    let mut pair = splice::Pair::new(client, upstream);
    // Shutdown: streams go on for the grace period (less a moment, so
    // that their lines are written before the worker stops).
    let grace = worker.config.shutdown_grace;
    let deadline = async move {
        if !*shutdown.borrow_and_update() {
            let _ = shutdown.changed().await;
        }
        let margin = std::time::Duration::from_millis(250);
        tokio::time::sleep(grace.saturating_sub(margin)).await;
    };
    let ended = pair.run(stream.idle_timeout, deadline).await;
    let bytes = (
        early.len() as u64 + pair.client.read(),
        pair.upstream.read(),
    );
    let end = match ended {
        splice::Ended::Closed => SessionEnd::Closed,
        splice::Ended::Idle => SessionEnd::IdleTimeout,
        splice::Ended::Error(e) => {
            // (A reset by either side: nothing for the server's health.)
            tracing::debug!("stream ended by a socket error: {e}");
            SessionEnd::Error
        }
        splice::Ended::Deadline => SessionEnd::Shutdown,
    };
    (end, bytes)
}

/// Counts a connection's end on its listener's metrics.
fn count(worker: &Worker, rec: &Record, end: SessionEnd, (received, sent): (u64, u64)) {
    let Some(c) = &worker.counters else { return };
    let Some(l) = c.listener(rec.listener) else {
        return;
    };
    c.session(l, end, rec.start.elapsed());
    c.conn(Conn::BytesIn, l, received);
    c.conn(Conn::BytesOut, l, sent);
}

/// The connection's metrics and its access-log line.
fn finish(worker: &Worker, rec: &Record, client: SocketAddr, end: SessionEnd, bytes: (u64, u64)) {
    count(worker, rec, end, bytes);
    worker.log.record_session(&Session {
        client,
        listener: rec.listener,
        status: end.status(),
        received: bytes.0,
        sent: bytes.1,
        upstream: rec.upstream,
        sni: rec.sni.as_deref(),
        duration: rec.start.elapsed(),
        outcome: end.label(),
    });
}
