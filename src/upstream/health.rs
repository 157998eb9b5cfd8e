//! Health: whether a server may take requests.
//!
//! Two sources feed one [`ServerHealth`] per server, shared by every worker
//! thread through atomics (reading it on the request path takes no lock):
//!
//! - **Active checks** (a group's `[upstreams.NAME.health]`): a background
//!   thread requests `method path` from each server every `interval`; after
//!   `unhealthy_threshold` failed checks in a row the server is marked down,
//!   after `healthy_threshold` good ones up again. The thread stops on
//!   shutdown and is replaced on reload.
//! - **Passive outlier ejection** (`[upstreams.NAME.outlier]`, on by
//!   default): `consecutive_failures` connect failures or 5xx answers in a
//!   row eject a server for `base_ejection`, doubled on each ejection after
//!   the last (up to `max_ejection`); never more than `max_ejected_percent`
//!   of a group at once.
//!
//! A reload keeps the health of servers present in both configs.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::config::{Check, Outlier};

fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One server's health, shared by all threads.
#[derive(Debug, Default)]
pub(crate) struct ServerHealth {
    /// Marked down by active checks.
    down: AtomicBool,
    /// Active checks passed in a row, and failed in a row.
    streak: AtomicU32,
    bad_streak: AtomicU32,
    /// Ejected by passive detection until this many ms after the base.
    ejected_until: AtomicU64,
    failures: AtomicU32,
    ejections: AtomicU32,
    /// Drained by an operator (admin API): no new requests until enabled
    /// again. Kept across reloads with the rest (the registry keeps it).
    drained: AtomicBool,
    /// For the metrics: passive ejections, and active-check transitions
    /// to down and back up, since start.
    pub(crate) ejected_total: AtomicU64,
    pub(crate) went_down: AtomicU64,
    pub(crate) went_up: AtomicU64,
}

impl ServerHealth {
    #[cfg(test)]
    pub(crate) fn new() -> Arc<ServerHealth> {
        Arc::new(ServerHealth::default())
    }

    /// May this server take a request now?
    pub(crate) fn available(&self) -> bool {
        if self.down.load(Ordering::Relaxed) || self.drained.load(Ordering::Relaxed) {
            return false;
        }
        // Never ejected (or cleared since): no clock read.
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= now_ms()
    }

    /// Drains the server (`true`: no new requests) or puts it back.
    pub(crate) fn drain(&self, drained: bool) {
        self.drained.store(drained, Ordering::Relaxed);
    }

    pub(crate) fn drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    fn ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms()
    }

    /// How much longer a passive ejection lasts, if the server is ejected.
    pub(crate) fn ejected_for(&self) -> Option<Duration> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Marked down by active checks.
    pub(crate) fn down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// A request to this server succeeded.
    pub(crate) fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejected_until.load(Ordering::Relaxed) != 0 && !self.ejected() {
            // Serving again after an ejection: the next one starts short.
            self.ejected_until.store(0, Ordering::Relaxed);
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A request to this server failed (connect failure or 5xx). `group`
    /// is every server of its group, to cap how many are ejected at once.
    /// Returns the ejection time when this failure ejected it.
    pub(crate) fn failure(
        &self,
        policy: &Outlier,
        group: &[Arc<ServerHealth>],
    ) -> Option<Duration> {
        if policy.consecutive_failures == 0 {
            return None;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < policy.consecutive_failures || self.ejected() {
            return None;
        }
        let ejected = group.iter().filter(|h| h.ejected()).count();
        let cap = group.len() * policy.max_ejected_percent as usize / 100;
        if ejected + 1 > cap {
            return None;
        }
        let k = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let time = policy
            .base_ejection
            .saturating_mul(1 << k)
            .min(policy.max_ejection);
        self.ejected_until
            .store(now_ms() + time.as_millis() as u64, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        self.ejected_total.fetch_add(1, Ordering::Relaxed);
        Some(time)
    }

    /// An active check's result; returns the new state when it flipped.
    pub(super) fn checked(&self, ok: bool, check: &Check) -> Option<bool> {
        if ok {
            self.bad_streak.store(0, Ordering::Relaxed);
            let good = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
            if self.down.load(Ordering::Relaxed) && good >= check.healthy_threshold {
                self.down.store(false, Ordering::Relaxed);
                self.went_up.fetch_add(1, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.streak.store(0, Ordering::Relaxed);
            let bad = self.bad_streak.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.down.load(Ordering::Relaxed) && bad >= check.unhealthy_threshold {
                self.down.store(true, Ordering::Relaxed);
                self.went_down.fetch_add(1, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_grows_and_respects_the_cap() {
        let policy = Outlier {
            consecutive_failures: 2,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(30),
            max_ejected_percent: 50,
        };
        let group: Vec<Arc<ServerHealth>> = (0..4).map(|_| ServerHealth::new()).collect();
        assert_eq!(group[0].failure(&policy, &group), None);
        assert_eq!(
            group[0].failure(&policy, &group),
            Some(Duration::from_secs(10))
        );
        assert!(!group[0].available());
        // A second server may go (2 of 4 = 50%), a third may not.
        group[1].failure(&policy, &group);
        assert!(group[1].failure(&policy, &group).is_some());
        group[2].failure(&policy, &group);
        assert_eq!(group[2].failure(&policy, &group), None);
        assert!(group[2].available());
        // Repeated ejections grow, capped.
        let h = ServerHealth::new();
        let solo = vec![h.clone(), ServerHealth::new()];
        for want in [10, 20, 30, 30] {
            h.ejected_until.store(0, Ordering::Relaxed);
            h.failure(&policy, &solo);
            assert_eq!(h.failure(&policy, &solo), Some(Duration::from_secs(want)));
        }
    }

    #[test]
    fn active_thresholds() {
        let check = Check {
            kind: crate::config::CheckKind::Http,
            method: http::Method::GET,
            path: http::uri::PathAndQuery::from_static("/"),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            expect: vec![http::StatusCode::OK],
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        };
        let h = ServerHealth::new();
        assert_eq!(h.checked(false, &check), None);
        assert_eq!(h.checked(false, &check), None);
        assert_eq!(h.checked(false, &check), Some(false));
        assert!(!h.available());
        assert_eq!(h.checked(true, &check), None);
        assert_eq!(h.checked(true, &check), Some(true));
        assert!(h.available());
    }
}
