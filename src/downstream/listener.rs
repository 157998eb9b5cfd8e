//! Listener admission: which accepted connections may stay.
//!
//! - **`max_connections` per listener**, counted across every thread's
//!   accept loop of that listener ([`Gate`]). At the cap an idle
//!   connection of the listener is closed (an idle HTTP/1.1 keep-alive
//!   connection at once, an idle HTTP/2 one with GOAWAY): the one idle the
//!   longest on the accepting thread, else one on another thread, as each
//!   nginx worker does with its reusable connections; the newcomer waits
//!   for its place. Only when no
//!   connection is idle anywhere does it wait longer, up to
//!   `client_header`, and is then closed (others wait in the kernel's
//!   backlog meanwhile). One client holding thousands of idle connections
//!   thus never locks the others out.
//! - **`max_connections_per_ip`** (off by default): connections past it
//!   from one address (IPv6: one /64) are closed as soon as accepted.
//!
//! Each thread keeps a [`Registry`] of its open connections, so that
//! finding the longest-idle one is a walk over that thread's list: done
//! only at the cap, never per request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::state::ConnState;

/// What every thread's accept loop of one listener shares.
#[derive(Debug)]
pub(crate) struct Gate {
    /// Tells this listener's connections apart in the threads' registries.
    id: u64,
    pub max: usize,
    permits: Arc<Semaphore>,
    per_ip: Option<PerIp>,
    /// Evictions asked of the other threads: an idle connection each.
    wanted: AtomicUsize,
    /// Wakes every thread's accept loop of this listener to look at
    /// `wanted`.
    wake: Notify,
}

#[derive(Debug)]
struct PerIp {
    max: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// A connection's place under its listener's caps, given back on drop.
pub(crate) struct Admitted {
    _permit: OwnedSemaphorePermit,
    _ip: IpCounted,
}

/// One connection counted against its address's cap (if the listener has
/// one), until dropped.
struct IpCounted(Option<(Arc<Gate>, IpAddr)>);

impl Drop for IpCounted {
    fn drop(&mut self) {
        if let Some((gate, key)) = &self.0 {
            if let Some(per_ip) = &gate.per_ip {
                let mut open = per_ip.open.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(n) = open.get_mut(key) {
                    *n -= 1;
                    if *n == 0 {
                        open.remove(key);
                    }
                }
            }
        }
    }
}

/// How often a newcomer waiting at the cap asks again for an idle
/// connection to close (one may have become idle meanwhile).
const RETRY: Duration = Duration::from_millis(100);

impl Gate {
    /// Connections open now, on every thread.
    pub(crate) fn open(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }

    pub(crate) fn new(max: usize, max_per_ip: Option<u32>) -> Arc<Gate> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Arc::new(Gate {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            max,
            permits: Arc::new(Semaphore::new(max)),
            per_ip: max_per_ip.map(|max| PerIp {
                max,
                open: Mutex::new(HashMap::new()),
            }),
            wanted: AtomicUsize::new(0),
            wake: Notify::new(),
        })
    }

    /// The count of `ip`'s connections, if this listener caps them;
    /// `false` when `ip` is at its cap.
    fn count_ip(&self, key: IpAddr) -> bool {
        let Some(per_ip) = &self.per_ip else {
            return true;
        };
        let mut open = per_ip.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= per_ip.max {
            return false;
        }
        *n += 1;
        true
    }

    /// A place for a connection just accepted from `ip`, waiting at the
    /// cap (see the module doc) at most `wait`; `None`: refused.
    pub(crate) async fn admit(
        self: &Arc<Gate>,
        ip: IpAddr,
        registry: &Registry,
        wait: Duration,
    ) -> Option<Admitted> {
        let key = ip_key(ip);
        if !self.count_ip(key) {
            tracing::info!(client = %ip, "connection refused: max_connections_per_ip reached");
            return None;
        }
        // Counted from here: the count goes back if refused below.
        let ip = IpCounted(self.per_ip.as_ref().map(|_| (self.clone(), key)));
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match self.at_cap(registry, wait).await {
                Some(p) => p,
                None => {
                    tracing::warn!(
                        client = %key,
                        "connection refused: the listener is at max_connections ({}) and none is idle",
                        self.max
                    );
                    return None;
                }
            },
        };
        Some(Admitted {
            _permit: permit,
            _ip: ip,
        })
    }

    async fn at_cap(&self, registry: &Registry, wait: Duration) -> Option<OwnedSemaphorePermit> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if !registry.evict_oldest(self.id) {
                self.wanted.fetch_add(1, Ordering::Relaxed);
                self.wake.notify_waiters();
            }
            tokio::select! {
                p = self.permits.clone().acquire_owned() => return p.ok(),
                _ = tokio::time::sleep(RETRY) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// Waits until another thread asks for an idle connection to close.
    pub(crate) async fn eviction_asked(&self) {
        self.wake.notified().await;
    }

    /// Closes this thread's longest-idle connection if another thread asked
    /// for one (and none has yet).
    pub(crate) fn evict_for_others(&self, registry: &Registry) {
        if self.wanted.load(Ordering::Relaxed) == 0 || !registry.has_idle(self.id) {
            return;
        }
        let took = self
            .wanted
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if took {
            registry.evict_oldest(self.id);
        }
    }
}

/// The count key of a client address: IPv6 clients are counted by /64
/// (one host has a whole /64), IPv4-mapped ones as IPv4.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// One thread's open connections, by listener.
#[derive(Default)]
pub(crate) struct Registry {
    conns: RefCell<slab::Slab<(u64, Weak<ConnState>)>>,
}

/// A connection's entry in its thread's [`Registry`], removed on drop.
pub(crate) struct Registered {
    registry: Rc<Registry>,
    key: usize,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.conns.borrow_mut().try_remove(self.key);
    }
}

impl Registry {
    pub(crate) fn register(self: &Rc<Registry>, gate: &Gate, state: &Rc<ConnState>) -> Registered {
        let key = self
            .conns
            .borrow_mut()
            .insert((gate.id, Rc::downgrade(state)));
        Registered {
            registry: self.clone(),
            key,
        }
    }

    /// Shutdown: every connection finishes its current exchange and closes.
    pub(crate) fn drain_all(&self) {
        for (_, (_, c)) in self.conns.borrow().iter() {
            if let Some(c) = c.upgrade() {
                c.shut_down();
            }
        }
    }

    fn has_idle(&self, listener: u64) -> bool {
        self.conns
            .borrow()
            .iter()
            .any(|(_, (l, c))| *l == listener && c.upgrade().is_some_and(|c| c.idle().is_some()))
    }

    /// Closes the listener's connection idle the longest on this thread;
    /// `false` if none is idle.
    fn evict_oldest(&self, listener: u64) -> bool {
        let oldest = self
            .conns
            .borrow()
            .iter()
            .filter(|(_, (l, _))| *l == listener)
            .filter_map(|(_, (_, c))| {
                let c = c.upgrade()?;
                Some((c.idle()?, c))
            })
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, conn)) => {
                conn.evict();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(ip_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn per_ip_counts_come_back() {
        let gate = Gate::new(10, Some(2));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(gate.count_ip(ip));
        assert!(gate.count_ip(ip));
        assert!(!gate.count_ip(ip));
        assert!(gate.count_ip("10.0.0.2".parse().unwrap()));
        drop(IpCounted(Some((gate.clone(), ip))));
        assert!(gate.count_ip(ip));
    }
}
