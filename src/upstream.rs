//! Upstream: balancing across a group's servers and the connection pool.
//!
//! Each worker thread owns one [`Pool`]: its idle connections live in plain
//! `RefCell<Vec<_>>`s that only that thread touches, so taking or returning
//! a connection is a push or a pop, never a lock. Connections are reused
//! most-recent-first (they are the ones least likely to have been closed by
//! the server) and dropped after `upstream_idle`.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::config::Config;
use crate::error::ProxyError;

pub type Sender = http1::SendRequest<RequestBody>;

/// An upstream connection ready for one request.
pub struct Conn {
    pub sender: Sender,
    /// Flat index of the server, for [`Pool::checkin`].
    pub server: usize,
    /// How long it sat idle in the pool; `None` for a fresh connection.
    pub idle_for: Option<Duration>,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

struct ServerPool {
    addr: SocketAddr,
    authority: http::HeaderValue,
    idle: RefCell<Vec<Idle>>,
}

/// One worker's view of every upstream group.
pub struct Pool {
    servers: Vec<ServerPool>,
    /// For each group, the range of its servers in `servers`.
    groups: Vec<(usize, usize)>,
    next: Vec<Cell<usize>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    client: http1::Builder,
}

impl Pool {
    pub fn new(config: &Config) -> Pool {
        let mut servers = Vec::new();
        let mut groups = Vec::new();
        for g in &config.upstreams {
            let start = servers.len();
            servers.extend(g.servers.iter().map(|s| ServerPool {
                addr: s.addr,
                authority: s.authority.clone(),
                idle: RefCell::new(Vec::new()),
            }));
            groups.push((start, servers.len()));
        }
        let mut client = http1::Builder::new();
        client.max_buf_size(1024 * 1024);
        Pool {
            next: groups.iter().map(|_| Cell::new(0)).collect(),
            servers,
            groups,
            connect_timeout: config.timeouts.upstream_connect,
            idle_timeout: config.timeouts.upstream_idle,
            max_idle: config.limits.upstream_idle_per_server,
            client,
        }
    }

    /// The servers of `group` in the order to try them for one request:
    /// round-robin start, then the others.
    pub fn order(&self, group: usize) -> impl Iterator<Item = usize> {
        let (start, end) = self.groups[group];
        let n = end - start;
        let first = self.next[group].get();
        self.next[group].set(if first + 1 >= n { 0 } else { first + 1 });
        (0..n).map(move |i| start + (first + i) % n)
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
    pub async fn checkout(&self, server: usize) -> Result<Conn, ProxyError> {
        loop {
            let idle = self.servers[server].idle.borrow_mut().pop();
            let Some(mut idle) = idle else { break };
            let idle_for = idle.since.elapsed();
            if idle.sender.is_closed() || idle_for >= self.idle_timeout {
                continue;
            }
            if !idle.sender.is_ready() && idle.sender.ready().await.is_err() {
                continue;
            }
            return Ok(Conn {
                sender: idle.sender,
                server,
                idle_for: Some(idle_for),
            });
        }
        self.connect(server).await
    }

    /// A new connection to `server`, its driver task spawned on this thread.
    pub async fn connect(&self, server: usize) -> Result<Conn, ProxyError> {
        let addr = self.servers[server].addr;
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Err(_) => return Err(ProxyError::ConnectTimeout { addr }),
                Ok(Err(source)) => return Err(ProxyError::Connect { addr, source }),
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = self
            .client
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ProxyError::Handshake { addr, source })?;
        tokio::task::spawn_local(async move {
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %addr, "upstream connection ended: {e}");
            }
        });
        Ok(Conn {
            sender,
            server,
            idle_for: None,
        })
    }

    /// Returns a connection whose last exchange completed.
    pub fn checkin(&self, server: usize, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.servers[server].idle.borrow_mut();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Drops idle connections past their time; called periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        for s in &self.servers {
            s.idle.borrow_mut().retain(|i| {
                !i.sender.is_closed() && now.duration_since(i.since) < self.idle_timeout
            });
        }
    }

    /// How often [`Pool::sweep`] should run.
    pub fn sweep_interval(&self) -> Duration {
        (self.idle_timeout / 2).max(Duration::from_millis(100))
    }
}
