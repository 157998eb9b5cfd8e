//! What one worker thread's pool counts about the upstream servers under
//! one config (admin listener on): connection set-up time, time to the
//! response head, connections opened and reused, idle and lent, retries,
//! `max_pending` refusals, `Retry-After` back-offs. Indexed by the pool's
//! flat server index (groups by config index); read by
//! [`crate::metrics`] at scrape time.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::tally::{bump, get, zeros, Histograms};

#[derive(Debug)]
pub(crate) struct UpstreamStats {
    /// Per server: new connection set-up (TCP connect, TLS, HTTP
    /// handshake).
    pub(crate) connect: Histograms,
    /// Per server: from the request sent to the response head.
    pub(crate) head: Histograms,
    opened: Box<[AtomicU64]>,
    reused: Box<[AtomicU64]>,
    connect_failed: Box<[AtomicU64]>,
    /// Tries that failed on a server and went on to the next one.
    retries: Box<[AtomicU64]>,
    /// Requests refused at once: the server full, its queue too.
    pending_refused: Box<[AtomicU64]>,
    backoffs: Box<[AtomicU64]>,
    /// Gauges this thread sets: idle connections (at each sweep),
    /// requests in flight.
    idle: Box<[AtomicU64]>,
    active: Box<[AtomicU64]>,
    /// Until when (Unix ms) this thread skips a server after `Retry-After`.
    backoff_until: Box<[AtomicU64]>,
    /// Per group: a retry the group's budget did not allow.
    budget_exhausted: Box<[AtomicU64]>,
}

/// A counter of [`UpstreamStats`], per server.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    Opened,
    Reused,
    ConnectFailed,
    Retries,
    PendingRefused,
    Backoffs,
    Idle,
    Active,
    BackoffUntil,
}

impl UpstreamStats {
    pub(crate) fn new(servers: usize, groups: usize) -> UpstreamStats {
        UpstreamStats {
            connect: Histograms::new(servers),
            head: Histograms::new(servers),
            opened: zeros(servers),
            reused: zeros(servers),
            connect_failed: zeros(servers),
            retries: zeros(servers),
            pending_refused: zeros(servers),
            backoffs: zeros(servers),
            idle: zeros(servers),
            active: zeros(servers),
            backoff_until: zeros(servers),
            budget_exhausted: zeros(groups),
        }
    }

    fn slice(&self, c: Count) -> &[AtomicU64] {
        match c {
            Count::Opened => &self.opened,
            Count::Reused => &self.reused,
            Count::ConnectFailed => &self.connect_failed,
            Count::Retries => &self.retries,
            Count::PendingRefused => &self.pending_refused,
            Count::Backoffs => &self.backoffs,
            Count::Idle => &self.idle,
            Count::Active => &self.active,
            Count::BackoffUntil => &self.backoff_until,
        }
    }

    /// One more of `c` for `server`.
    pub(crate) fn count(&self, c: Count, server: usize) {
        bump(self.slice(c), server);
    }

    /// Sets gauge `c` of `server`.
    pub(crate) fn set(&self, c: Count, server: usize, v: u64) {
        if let Some(g) = self.slice(c).get(server) {
            g.store(v, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self, c: Count, server: usize) -> u64 {
        get(self.slice(c), server)
    }

    pub(crate) fn budget_exhausted(&self, group: usize) {
        bump(&self.budget_exhausted, group);
    }

    pub(crate) fn exhausted(&self, group: usize) -> u64 {
        get(&self.budget_exhausted, group)
    }

    pub(crate) fn connected(&self, server: usize, took: Duration) {
        self.connect.observe(server, took);
        self.count(Count::Opened, server);
    }
}
