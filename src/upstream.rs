//! Upstream: balancing across a group's servers and the connection pool.
//!
//! Each worker thread owns one [`Pool`]: its idle connections live in plain
//! `RefCell<Vec<_>>`s that only that thread touches, so taking or returning
//! a connection is a push or a pop, never a lock. Connections are reused
//! most-recent-first (they are the ones least likely to have been closed by
//! the server) and dropped after `upstream_idle`.
//!
//! A connection has no task of its own: hyper's connection driver travels
//! with its [`Lease`] and is polled by whoever is using it (the request
//! while it waits for the response head, then the response body as it
//! streams). Bytes from the upstream socket thus wake the client
//! connection's task directly, with no hop through another task.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::config::Config;
use crate::error::ProxyError;

pub type Sender = http1::SendRequest<RequestBody>;
type Driver = http1::Connection<TokioIo<TcpStream>, RequestBody>;

/// An upstream connection, held by one request at a time.
pub struct Lease {
    pub sender: Sender,
    /// `None` once finished: the connection is closed, and dropping the
    /// driver fails whatever still waited on it (a response, a body).
    driver: Option<Pin<Box<Driver>>>,
    /// Flat index of the server, for [`Pool::checkin`].
    pub server: usize,
    /// How long it sat idle in the pool; `None` for a fresh connection.
    pub idle_for: Option<Duration>,
}

impl Lease {
    /// Lets the connection make progress (read, write, notice a close).
    /// Call it from every poll of whatever waits on this connection.
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        let Some(driver) = &mut self.driver else {
            return;
        };
        if let Poll::Ready(res) = driver.as_mut().poll(cx) {
            self.driver = None;
            if let Err(e) = res {
                tracing::debug!(server = self.server, "upstream connection ended: {e}");
            }
        }
    }

    /// A connection whose driver runs as a task of its own (an upgrade's,
    /// see [`crate::tunnel`]): never pooled, as it reads as dead here.
    pub fn detached(sender: Sender, server: usize) -> Lease {
        Lease {
            sender,
            driver: None,
            server,
            idle_for: None,
        }
    }

    pub fn is_dead(&self) -> bool {
        self.driver.is_none()
    }

    /// Ready for a request; `false` if the connection turned out closed.
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            self.drive(cx);
            match self.sender.poll_ready(cx) {
                Poll::Ready(r) => Poll::Ready(r.is_ok()),
                Poll::Pending if self.is_dead() => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Runs `fut` (which waits on this connection) while driving it.
    pub fn with<F: Future>(&mut self, fut: F) -> Driving<'_, F> {
        Driving { lease: self, fut }
    }
}

pin_project_lite::pin_project! {
    /// A future polled together with the connection it waits on. (A plain
    /// struct: an `async fn` would hold `fut` twice, as argument and as
    /// pinned local, in every request's state.)
    pub struct Driving<'a, F> {
        lease: &'a mut Lease,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Driving<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.lease.drive(cx);
        this.fut.poll(cx)
    }
}

struct Idle {
    lease: Lease,
    since: Instant,
}

/// A server's cap on concurrent requests (`max_connections`: with HTTP/1.1
/// upstreams, one connection each), shared by all threads, and how many
/// requests may wait for a turn (`max_pending`); past both, 503 at once.
#[derive(Debug)]
pub struct ServerLimit {
    permits: Arc<tokio::sync::Semaphore>,
    pending: std::sync::atomic::AtomicU32,
    max_pending: u32,
}

impl ServerLimit {
    pub fn new(max_connections: u32, max_pending: u32) -> Arc<ServerLimit> {
        Arc::new(ServerLimit {
            permits: Arc::new(tokio::sync::Semaphore::new(max_connections as usize)),
            pending: std::sync::atomic::AtomicU32::new(0),
            max_pending,
        })
    }

    /// A turn to send to this server, waiting at most `wait`; `None` when
    /// the server is full and its queue too, or the wait ran out.
    pub async fn acquire(&self, wait: Duration) -> Option<tokio::sync::OwnedSemaphorePermit> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Some(p);
        }
        if self.pending.fetch_add(1, Relaxed) >= self.max_pending {
            self.pending.fetch_sub(1, Relaxed);
            return None;
        }
        let got = tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await;
        self.pending.fetch_sub(1, Relaxed);
        got.ok().and_then(Result::ok)
    }
}

struct ServerPool {
    /// Its group, and its index within the group (for the balancer).
    group: usize,
    index: usize,
    limit: Option<Arc<ServerLimit>>,
    addr: SocketAddr,
    authority: http::HeaderValue,
    /// Oldest first; checkout takes the newest.
    idle: RefCell<Vec<Idle>>,
    /// The fewest idle connections seen since the last purge: that many were
    /// not needed at any moment of the period.
    low_water: Cell<usize>,
}

/// One worker's view of every upstream group.
pub struct Pool {
    servers: Vec<ServerPool>,
    /// For each group, the range of its servers in `servers`.
    groups: Vec<(usize, usize)>,
    /// For each group, this thread's balancing state.
    balancers: Vec<crate::balance::Group>,
    idle_timeout: Duration,
    max_idle: usize,
    client: http1::Builder,
}

impl Pool {
    pub fn new(config: &Config, old: Option<&Pool>) -> Pool {
        let mut servers = Vec::new();
        let mut groups = Vec::new();
        for (gi, g) in config.upstreams.iter().enumerate() {
            let start = servers.len();
            servers.extend(g.servers.iter().enumerate().map(|(index, s)| ServerPool {
                group: gi,
                index,
                limit: s.limit.clone(),
                addr: s.addr,
                authority: s.authority.clone(),
                // A reload keeps the idle connections of servers it keeps.
                idle: RefCell::new({
                    let mut moved: Vec<Idle> = old
                        .and_then(|o| o.servers.iter().find(|p| p.addr == s.addr))
                        .map(|p| std::mem::take(&mut *p.idle.borrow_mut()))
                        .unwrap_or_default();
                    for i in &mut moved {
                        i.lease.server = start + index;
                    }
                    moved
                }),
                low_water: Cell::new(0),
            }));
            groups.push((start, servers.len()));
        }
        let mut client = http1::Builder::new();
        // Bounds the upstream's response head and the read buffer's growth
        // on large bodies (hyper starts at 8 KiB and doubles on full reads).
        client.max_buf_size(64 * 1024);
        client.writev(false);
        let balancers = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let weights: Vec<u32> = g.servers.iter().map(|s| s.weight).collect();
                let health = g.servers.iter().map(|s| s.health.clone()).collect();
                // Threads start their random choices apart.
                let seed = crate::balance::hash64((i, std::thread::current().id()));
                crate::balance::Group::new(
                    g.balance.clone(),
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
        }
    }

    /// The servers of `group` in the order to try them for one request:
    /// the balancer's pick, then the others in service (for connect
    /// failures). `None` when no server of the group is in service.
    pub fn order(
        &self,
        group: usize,
        key: Option<u64>,
    ) -> Option<impl Iterator<Item = usize> + '_> {
        let (start, end) = self.groups[group];
        let n = end - start;
        let b = &self.balancers[group];
        let first = b.pick(key)?;
        Some(
            (0..n)
                .map(move |i| (first + i) % n)
                .filter(move |&i| i == first || b.alive(i))
                .map(move |i| start + i),
        )
    }

    /// The balancer of `group`.
    pub fn balancer(&self, group: usize) -> &crate::balance::Group {
        &self.balancers[group]
    }

    /// `server`'s balancer and its index there.
    pub fn locate(&self, server: usize) -> (&crate::balance::Group, usize) {
        let s = &self.servers[server];
        (&self.balancers[s.group], s.index)
    }

    /// The server's concurrency limit, if it has one.
    pub fn limit(&self, server: usize) -> Option<&Arc<ServerLimit>> {
        self.servers[server].limit.as_ref()
    }

    pub fn addr(&self, server: usize) -> SocketAddr {
        self.servers[server].addr
    }

    /// `host:port` of `server` as configured, for a route that sends it as `Host`.
    pub fn authority(&self, server: usize) -> &http::HeaderValue {
        &self.servers[server].authority
    }

    /// A connection to `server`: a pooled one if any is still usable,
    /// else a new one.
    pub async fn checkout(
        &self,
        server: usize,
        connect_timeout: Duration,
    ) -> Result<Lease, ProxyError> {
        let pool = &self.servers[server];
        loop {
            let idle = {
                let mut idle = pool.idle.borrow_mut();
                let taken = idle.pop();
                pool.low_water.set(pool.low_water.get().min(idle.len()));
                taken
            };
            let Some(Idle { mut lease, since }) = idle else {
                break;
            };
            let idle_for = since.elapsed();
            if idle_for >= self.idle_timeout || !lease.ready().await {
                continue;
            }
            lease.idle_for = Some(idle_for);
            return Ok(lease);
        }
        // Boxed: the connect path is rare, and its state would otherwise
        // enlarge every request's future.
        Box::pin(self.connect(server, connect_timeout)).await
    }

    /// A new connection to `server`.
    pub async fn connect(
        &self,
        server: usize,
        connect_timeout: Duration,
    ) -> Result<Lease, ProxyError> {
        let addr = self.servers[server].addr;
        let stream = connect_tcp(addr, connect_timeout).await?;
        let (sender, driver) = self
            .client
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ProxyError::Handshake { addr, source })?;
        Ok(Lease {
            sender,
            driver: Some(Box::pin(driver)),
            server,
            idle_for: None,
        })
    }

    /// Returns a connection whose last exchange completed.
    pub fn checkin(&self, lease: Lease) {
        if lease.is_dead() || lease.sender.is_closed() {
            return;
        }
        let mut idle = self.servers[lease.server].idle.borrow_mut();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                lease,
                since: Instant::now(),
            });
        }
    }

    /// Called about once a second: closes idle connections past
    /// `upstream_idle` or closed by the server. With `purge`, also those
    /// that went unused since the last purge, so that the pool shrinks to
    /// what the load needs (as HAProxy's idle-connection purge does).
    pub fn sweep(&self, purge: bool) {
        for b in &self.balancers {
            b.refill();
        }
        let now = Instant::now();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for s in &self.servers {
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
        }
    }
}

/// A TCP connection to `addr` (no delay), within `timeout`.
pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ProxyError::ConnectTimeout { addr }),
        Ok(Err(source)) => return Err(ProxyError::Connect { addr, source }),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
