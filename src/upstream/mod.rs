//! Upstream: balancing across a group's servers and the connection pool.
//!
//! Each worker thread owns one `Pool`: its idle connections live in plain
//! `RefCell<Vec<_>>`s that only that thread touches, so taking or returning
//! a connection is a push or a pop, never a lock. Connections are reused
//! most-recent-first (they are the ones least likely to have been closed by
//! the server) and dropped after `upstream_idle`.
//!
//! A connection has no task of its own: hyper's connection driver travels
//! with its `Lease` and is polled by whoever is using it (the request
//! while it waits for the response head, then the response body as it
//! streams). Bytes from the upstream socket thus wake the client
//! connection's task directly, with no hop through another task.
//!
//! HTTP/2 connections (h2 by ALPN over TLS, or h2c by config) are shared:
//! each server keeps, per thread, a short list of them, each driven by a
//! task of its own (`spawn_local`), and a request takes a stream on the
//! least busy one. A new connection opens only when every one has
//! `H2_STREAMS` streams open (and `max_connections` allows), and only
//! one opens at a time; requests arriving meanwhile wait for it. For h2,
//! `max_connections` counts connections, not requests.

pub(crate) mod balance;
pub(crate) mod check;
mod connect;
pub(crate) mod dns;
mod h2;
pub(crate) mod health;
mod lease;
mod limit;
pub(crate) mod proxy_protocol;
pub mod registry;
pub(crate) mod stats;
pub mod tls;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::config::{Config, Protocol};
use crate::error::ProxyError;
use crate::upstream::registry::Upstreams;
use crate::upstream::tls::ServerTls;
pub(crate) use connect::Sender;
pub use connect::{open, Io};
use lease::H2Conn;
pub(crate) use lease::Lease;
pub(crate) use limit::ServerLimit;
use stats::{Count, UpstreamStats};

struct Idle {
    lease: Lease,
    since: Instant,
}

/// Which idle connections a request may take.
#[derive(Clone, Copy)]
enum Pick {
    Any,
    /// With `proxy_protocol`: those opened for this client connection
    /// (`None`: for Tidegate itself), whose header names it.
    Owned(Option<proxy_protocol::Owner>),
}

struct ServerPool {
    /// Its group, and its index within the group (for the balancer).
    group: usize,
    index: usize,
    limit: Option<Arc<ServerLimit>>,
    addr: SocketAddr,
    authority: http::HeaderValue,
    tls: Option<ServerTls>,
    protocol: Protocol,
    /// Speaks HTTP/2: by config, or since a TLS handshake settled on it.
    h2: Cell<bool>,
    /// Shared HTTP/2 connections.
    h2_conns: RefCell<Vec<Rc<H2Conn>>>,
    /// An HTTP/2 connection (or, with `protocol = "auto"` over TLS, the
    /// first connection, whose ALPN tells the version) is being opened;
    /// wait for it.
    h2_opening: Cell<bool>,
    /// Whether the version is settled: by config, or by a first ALPN.
    settled: Cell<bool>,
    h2_opened: tokio::sync::Notify,
    /// Oldest first; checkout takes the newest (with `proxy_protocol`,
    /// the newest its client connection opened).
    idle: RefCell<Vec<Idle>>,
    /// The group's `proxy_protocol`: a header opens every connection,
    /// which then serves its client connection alone.
    proxy_protocol: Option<crate::config::proxy_protocol::Version>,
    /// The fewest idle connections seen since the last purge: that many were
    /// not needed at any moment of the period.
    low_water: Cell<usize>,
}

/// One worker's view of every upstream group.
pub(crate) struct Pool {
    servers: Vec<ServerPool>,
    /// For each group, the range of its servers in `servers`.
    groups: Vec<(usize, usize)>,
    /// For each group, this thread's balancing state.
    balancers: Vec<crate::upstream::balance::Group>,
    idle_timeout: Duration,
    max_idle: usize,
    client: http1::Builder,
    /// What this thread counts for the metrics (admin listener on).
    stats: Option<Arc<UpstreamStats>>,
}

impl Pool {
    pub(crate) fn new(
        config: &Config,
        upstreams: &Upstreams,
        old: Option<&Pool>,
        stats: Option<Arc<UpstreamStats>>,
    ) -> Pool {
        let mut servers = Vec::new();
        let mut groups = Vec::new();
        for (gi, g) in upstreams.groups.iter().enumerate() {
            let start = servers.len();
            // (Idle connections opened with or without a header stay only
            // where the setting is the same.)
            let proxy_protocol = config.upstreams.get(gi).and_then(|g| g.proxy_protocol);
            servers.extend(g.servers.iter().enumerate().map(|(index, s)| ServerPool {
                group: gi,
                index,
                limit: s.limit.clone(),
                addr: s.addr,
                authority: s.authority.clone(),
                tls: s.tls.clone(),
                protocol: s.protocol,
                h2: Cell::new(s.protocol == Protocol::H2),
                h2_conns: RefCell::new(Vec::new()),
                h2_opening: Cell::new(false),
                settled: Cell::new(s.protocol != Protocol::Auto || s.tls.is_none()),
                h2_opened: tokio::sync::Notify::new(),
                // A reload keeps the idle connections of servers it keeps
                // (plain HTTP/1.1 ones: TLS ones were made under settings
                // the reload may have changed).
                idle: RefCell::new({
                    let mut moved: Vec<Idle> = old
                        .filter(|_| s.tls.is_none())
                        .and_then(|o| {
                            o.servers.iter().find(|p| {
                                p.addr == s.addr
                                    && p.tls.is_none()
                                    && p.proxy_protocol == proxy_protocol
                            })
                        })
                        .map(|p| std::mem::take(&mut *p.idle.borrow_mut()))
                        .unwrap_or_default();
                    for i in &mut moved {
                        i.lease.server = start + index;
                    }
                    moved
                }),
                low_water: Cell::new(0),
                proxy_protocol,
            }));
            groups.push((start, servers.len()));
        }
        let mut client = http1::Builder::new();
        // Bounds the upstream's response head and the read buffer's growth
        // on large bodies (hyper starts at 8 KiB and doubles on full reads).
        client.max_buf_size(64 * 1024);
        client.writev(false);
        // A pooled connection's driver travels with its lease and is
        // polled by the request that sent on it (`Lease::drive`): hyper
        // need not leave a waker on its request channel (patch 10), takes
        // the request in place (`Lease::exchange`, patch 11) and does not
        // read the socket when the connection turns idle (patch 12). An
        // upgrade's connection, driven as a task of its own, turns it off.
        client.driven_by_sender(true);
        let balancers = config
            .upstreams
            .iter()
            .zip(&upstreams.groups)
            .enumerate()
            .map(|(i, (g, built))| {
                let weights: Vec<(u32, bool)> =
                    built.servers.iter().map(|s| (s.weight, s.backup)).collect();
                let health = built.servers.iter().map(|s| s.health.clone()).collect();
                // Threads start their random choices apart.
                let seed = crate::upstream::balance::hash64((i, std::thread::current().id()));
                crate::upstream::balance::Group::new(
                    crate::upstream::balance::Method::new(&g.balance, built.ring.clone()),
                    &weights,
                    health,
                    g.outlier.clone(),
                    g.retry.clone(),
                    seed,
                )
            })
            .collect();
        Pool {
            balancers,
            servers,
            groups,
            idle_timeout: config.timeouts.upstream_idle,
            max_idle: config.limits.upstream_idle_per_server,
            client,
            stats,
        }
    }

    /// This thread's upstream counts, with the metrics on.
    pub(crate) fn stats(&self) -> Option<&UpstreamStats> {
        self.stats.as_deref()
    }

    /// A request to `server` starts (for least-outstanding balancing and
    /// the in-flight gauge).
    pub(crate) fn begin(&self, server: usize) {
        let (b, i) = self.locate(server);
        let n = b.begin(i);
        if let Some(s) = &self.stats {
            s.set(Count::Active, server, u64::from(n));
        }
    }

    /// A request to `server` ended.
    pub(crate) fn end(&self, server: usize) {
        let (b, i) = self.locate(server);
        let n = b.end(i);
        if let Some(s) = &self.stats {
            s.set(Count::Active, server, u64::from(n));
        }
    }

    /// The servers of `group` in the order to try them for one request:
    /// the balancer's pick, then the others in service (for connect
    /// failures and retries), backups last. `None` when no server of the group is in service.
    pub(crate) fn order(
        &self,
        group: usize,
        key: Option<u64>,
    ) -> Option<impl Iterator<Item = usize> + '_> {
        let (start, end) = self.groups[group];
        let n = end - start;
        let b = &self.balancers[group];
        let first = b.pick(key)?;
        // The pick's tier first (primaries, or backups when none is in
        // service), then the backups after failed primaries.
        let tier = b.is_backup(first);
        let passes = if b.has_backup() && !tier { 2 } else { 1 };
        Some(
            (0..passes * n)
                .map(move |k| (k >= n, (first + k) % n))
                .filter(move |&(second, i)| match second {
                    false => i == first || (b.is_backup(i) == tier && b.alive(i)),
                    true => b.is_backup(i) && b.alive(i),
                })
                .map(move |(_, i)| start + i),
        )
    }

    /// The balancer of `group`.
    pub(crate) fn balancer(&self, group: usize) -> &crate::upstream::balance::Group {
        &self.balancers[group]
    }

    /// `server`'s balancer and its index there.
    pub(crate) fn locate(&self, server: usize) -> (&crate::upstream::balance::Group, usize) {
        let s = &self.servers[server];
        (&self.balancers[s.group], s.index)
    }

    /// The server's per-request concurrency limit, if it has one (none
    /// for HTTP/2 servers: their limit counts connections, and the pool
    /// applies it).
    pub(crate) fn limit(&self, server: usize) -> Option<&Arc<ServerLimit>> {
        let s = &self.servers[server];
        if s.h2.get() {
            return None;
        }
        s.limit.as_ref()
    }

    pub(crate) fn addr(&self, server: usize) -> SocketAddr {
        self.servers[server].addr
    }

    /// `host:port` of `server` as configured, for a route that sends it as `Host`.
    pub(crate) fn authority(&self, server: usize) -> &http::HeaderValue {
        &self.servers[server].authority
    }

    /// A connection to `server`: a pooled one if any is still usable,
    /// else a new one. `client`: the client connection the request came
    /// on, named in the header of a group with `proxy_protocol` (whose
    /// pooled connections serve only the client connection that opened
    /// them). `now`: a clock read the caller made just before, which a
    /// pooled HTTP/1.1 connection's idle time is measured to.
    pub(crate) async fn checkout(
        &self,
        server: usize,
        connect_timeout: Duration,
        client: Option<&proxy_protocol::Client<'_>>,
        now: Instant,
    ) -> Result<Lease, ProxyError> {
        let pool = &self.servers[server];
        if let Some(version) = pool.proxy_protocol {
            return Box::pin(self.checkout_own(server, connect_timeout, version, client, now))
                .await;
        }
        if !pool.settled.get() {
            return Box::pin(self.first_connect(server, connect_timeout)).await;
        }
        if pool.h2.get() {
            return Box::pin(self.checkout_h2(server, connect_timeout)).await;
        }
        if let Some(lease) = self.checkout_idle(server, Pick::Any, now) {
            return Ok(lease);
        }
        // Boxed: the connect path is rare, and its state would otherwise
        // enlarge every request's future.
        Box::pin(self.connect(server, connect_timeout)).await
    }

    /// With `proxy_protocol`: a pooled connection `client`'s connection
    /// opened, else a new one with a header naming it. (HTTP/1.1 only:
    /// the config refuses HTTP/2 with `proxy_protocol`.)
    async fn checkout_own(
        &self,
        server: usize,
        connect_timeout: Duration,
        version: crate::config::proxy_protocol::Version,
        client: Option<&proxy_protocol::Client<'_>>,
        now: Instant,
    ) -> Result<Lease, ProxyError> {
        let owner = client.map(|c| c.conn);
        if let Some(lease) = self.checkout_idle(server, Pick::Owned(owner), now) {
            return Ok(lease);
        }
        let header = proxy_protocol::header(version, client);
        let mut lease = self
            .connect_with(server, connect_timeout, None, Some(&header))
            .await?;
        lease.owner = owner;
        Ok(lease)
    }

    /// The newest usable idle connection to `server` that `pick` allows,
    /// at `now`.
    fn checkout_idle(&self, server: usize, pick: Pick, now: Instant) -> Option<Lease> {
        let pool = &self.servers[server];
        loop {
            let idle = {
                let mut idle = pool.idle.borrow_mut();
                let taken = match pick {
                    Pick::Any => idle.pop(),
                    // (`None`: one Tidegate opened for itself, `LOCAL`.)
                    Pick::Owned(o) => idle
                        .iter()
                        .rposition(|i| i.lease.owner == o)
                        .map(|at| idle.remove(at)),
                };
                pool.low_water.set(pool.low_water.get().min(idle.len()));
                taken
            };
            let Idle { mut lease, since } = idle?;
            let idle_for = now.saturating_duration_since(since);
            if idle_for >= self.idle_timeout || lease.is_dead() {
                continue;
            }
            lease.idle_for = Some(idle_for);
            if let Some(s) = &self.stats {
                s.count(Count::Reused, server);
            }
            return Some(lease);
        }
    }

    /// The HTTP/1.1 client settings of every upstream connection.
    pub(crate) fn http1_client(&self) -> &http1::Builder {
        &self.client
    }

    /// The server's group's `proxy_protocol`.
    pub(crate) fn proxy_protocol(
        &self,
        server: usize,
    ) -> Option<crate::config::proxy_protocol::Version> {
        self.servers[server].proxy_protocol
    }

    /// The server's TLS settings, if it is an `https://` one.
    pub(crate) fn tls(&self, server: usize) -> Option<&ServerTls> {
        self.servers[server].tls.as_ref()
    }

    /// A new connection to `server`.
    pub(crate) async fn connect(
        &self,
        server: usize,
        connect_timeout: Duration,
    ) -> Result<Lease, ProxyError> {
        self.connect_with(server, connect_timeout, None, None).await
    }

    /// A new connection to `server`; an HTTP/2 one holds `permit` (its
    /// share of `max_connections`) for as long as it lives.
    async fn connect_with(
        &self,
        server: usize,
        connect_timeout: Duration,
        mut permit: Option<tokio::sync::OwnedSemaphorePermit>,
        header: Option<&[u8]>,
    ) -> Result<Lease, ProxyError> {
        let pool = &self.servers[server];
        let addr = pool.addr;
        let started = Instant::now();
        let (io, alpn_h2) = open(addr, pool.tls.as_ref(), connect_timeout, header).await?;
        let h2 = pool.protocol.speaks_h2(alpn_h2);
        if !h2 {
            let (sender, driver) = self
                .client
                .handshake(TokioIo::new(io))
                .await
                .map_err(|source| ProxyError::Handshake { addr, source })?;
            if let Some(s) = &self.stats {
                s.connected(server, started.elapsed());
            }
            return Ok(Lease {
                sender: Sender::H1(sender),
                driver: Some(Box::pin(driver)),
                _stream: None,
                server,
                idle_for: None,
                owner: None,
                settled: None,
            });
        }
        let mut builder = http2::Builder::new(crate::rt::LocalExec);
        builder.adaptive_window(true);
        let (sender, conn) = builder
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| ProxyError::Handshake { addr, source })?;
        if let Some(s) = &self.stats {
            s.connected(server, started.elapsed());
        }
        if permit.is_none() && !pool.h2.get() {
            // Learnt by ALPN only now: take the connection's share of the
            // limit if one is free.
            permit = pool
                .limit
                .as_ref()
                .and_then(|l| l.permits.clone().try_acquire_owned().ok());
        }
        tokio::task::spawn_local(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %addr, "HTTP/2 upstream connection ended: {e}");
            }
        });
        if !pool.h2.get() {
            tracing::debug!(upstream = %addr, "speaks HTTP/2 (ALPN)");
            pool.h2.set(true);
        }
        let conn = Rc::new(H2Conn {
            sender,
            active: Cell::new(0),
            last_used: Cell::new(Instant::now()),
        });
        pool.h2_conns.borrow_mut().push(conn.clone());
        Ok(self.h2_lease(server, conn))
    }

    /// Returns a connection whose last exchange completed, idle from
    /// `now` (the caller's clock read, which it uses too). (An HTTP/2
    /// lease just ends: its connection stays shared.)
    pub(crate) fn checkin(&self, lease: Lease, now: Instant) {
        if matches!(lease.sender, Sender::H2 { .. }) || lease.is_dead() || lease.sender.is_closed()
        {
            return;
        }
        let mut idle = self.servers[lease.server].idle.borrow_mut();
        if idle.len() < self.max_idle {
            idle.push(Idle { lease, since: now });
        }
    }

    /// Called about once a second: closes idle connections past
    /// `upstream_idle` or closed by the server. With `purge`, also those
    /// that went unused since the last purge, so that the pool shrinks to
    /// what the load needs (as HAProxy's idle-connection purge does).
    pub(crate) fn sweep(&self, purge: bool) {
        for b in &self.balancers {
            b.refill();
        }
        let now = Instant::now();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for (i, s) in self.servers.iter().enumerate() {
            let mut idle = s.idle.borrow_mut();
            if purge {
                let surplus = s.low_water.get().min(idle.len());
                idle.drain(..surplus);
            }
            idle.retain_mut(|i| {
                i.lease.drive(&mut cx);
                !i.lease.is_dead() && now.duration_since(i.since) < self.idle_timeout
            });
            if purge {
                s.low_water.set(idle.len());
            } else {
                s.low_water.set(s.low_water.get().min(idle.len()));
            }
            // HTTP/2: close connections closed by the server, or with no
            // stream open for `upstream_idle`.
            s.h2_conns.borrow_mut().retain(|c| {
                !c.sender.is_closed()
                    && (c.active.get() > 0
                        || now.duration_since(c.last_used.get()) < self.idle_timeout)
            });
            if let Some(stats) = &self.stats {
                // HTTP/1.1 connections in the pool, HTTP/2 ones with no stream.
                let h2 = s
                    .h2_conns
                    .borrow()
                    .iter()
                    .filter(|c| c.active.get() == 0)
                    .count();
                let idle = idle.len() + h2;
                stats.set(Count::Idle, i, idle as u64);
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Its idle connections are closed, or moved to the next pool.
        if let Some(stats) = &self.stats {
            for i in 0..self.servers.len() {
                stats.set(Count::Idle, i, 0);
            }
        }
    }
}
