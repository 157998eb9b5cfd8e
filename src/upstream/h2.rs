//! The pool's HTTP/2 side: a few connections per server and thread,
//! shared by requests as streams (see the [`super`] module's comment).

use std::rc::Rc;
use std::time::Duration;

use super::lease::{H2Conn, StreamSlot, H2_STREAMS};
use super::stats::Count;
use super::{Lease, Pool, Sender};
use crate::error::ProxyError;

impl Pool {
    /// With `protocol = "auto"` over TLS, until a handshake tells whether
    /// the server speaks HTTP/2: one connection at a time, so that a burst
    /// of requests does not open a connection each before the first says
    /// they could have shared one.
    pub(super) async fn first_connect(
        &self,
        server: usize,
        connect_timeout: Duration,
    ) -> Result<Lease, ProxyError> {
        let pool = &self.servers[server];
        if pool.h2_opening.get() {
            pool.h2_opened.notified().await;
            if pool.h2.get() {
                return self.checkout_h2(server, connect_timeout).await;
            }
            return self.connect(server, connect_timeout).await;
        }
        pool.h2_opening.set(true);
        let opened = self.connect(server, connect_timeout).await;
        pool.h2_opening.set(false);
        if opened.is_ok() {
            pool.settled.set(true);
        }
        pool.h2_opened.notify_waiters();
        opened
    }

    /// A stream on a shared HTTP/2 connection to `server`, opening a
    /// connection when all are busy (one at a time).
    pub(super) async fn checkout_h2(
        &self,
        server: usize,
        connect_timeout: Duration,
    ) -> Result<Lease, ProxyError> {
        let pool = &self.servers[server];
        let mut waited = false;
        loop {
            if let Some(lease) = self.h2_stream(server, false) {
                return Ok(lease);
            }
            if pool.h2_opening.get() && !waited {
                // Created before waiting: it sees the wake-up whenever
                // that comes.
                pool.h2_opened.notified().await;
                waited = true;
                continue;
            }
            break;
        }
        let permit = match &pool.limit {
            None => None,
            Some(l) => match l.permits.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    // At max_connections: crowd the connections there are.
                    if let Some(lease) = self.h2_stream(server, true) {
                        return Ok(lease);
                    }
                    Some(
                        l.acquire(connect_timeout)
                            .await
                            .ok_or(ProxyError::ServerFull { addr: pool.addr })?,
                    )
                }
            },
        };
        pool.h2_opening.set(true);
        let opened = self
            .connect_with(server, connect_timeout, permit, None)
            .await;
        pool.h2_opening.set(false);
        pool.h2_opened.notify_waiters();
        opened
    }

    /// A stream on the least busy live HTTP/2 connection to `server`; with
    /// `crowd`, even when all have [`H2_STREAMS`] open.
    pub(super) fn h2_stream(&self, server: usize, crowd: bool) -> Option<Lease> {
        let pool = &self.servers[server];
        let mut conns = pool.h2_conns.borrow_mut();
        conns.retain(|c| !c.sender.is_closed());
        let conn = conns
            .iter()
            .filter(|c| crowd || c.active.get() < H2_STREAMS)
            .min_by_key(|c| c.active.get())?;
        // A reused connection: a request that never went out on it (the
        // server closed it meanwhile) may go again on a new one.
        let idle_for = match conn.active.get() {
            0 => conn.last_used.get().elapsed(),
            _ => Duration::ZERO,
        };
        let mut lease = self.h2_lease(server, conn.clone());
        lease.idle_for = Some(idle_for);
        if let Some(s) = &self.stats {
            s.count(Count::Reused, server);
        }
        Some(lease)
    }

    pub(super) fn h2_lease(&self, server: usize, conn: Rc<H2Conn>) -> Lease {
        conn.active.set(conn.active.get() + 1);
        Lease {
            sender: Sender::H2 {
                sender: conn.sender.clone(),
                https: self.servers[server].tls.is_some(),
            },
            driver: None,
            _stream: Some(StreamSlot(conn)),
            server,
            idle_for: None,
            owner: None,
            settled: None,
        }
    }
}
