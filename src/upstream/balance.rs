//! Balance: which server of a group takes a request.
//!
//! Each worker thread keeps its own counters for every group (outstanding
//! requests, latency averages, smooth-weighted-round-robin weights,
//! back-offs) in `Cell`s: picking a server takes no lock. The consistent
//! hash ring is built once per config and shared read-only.
//!
//! - [`Method::RoundRobin`]: nginx's smooth weighted round-robin; a server of
//!   weight 3 among weight-1 servers gets every third pick spread out, not
//!   three in a row.
//! - [`Method::LeastOutstanding`]: the server with the fewest requests in
//!   flight from this thread (weights divide the count).
//! - [`Method::PeakEwma`] (the default): power of two random choices, the
//!   cheaper by `latency × (outstanding + 1) / weight`, where latency is a
//!   peak-sensitive moving average of time to response head (Finagle and
//!   Linkerd's "peak EWMA"): a server that turns slow is avoided at once and
//!   tried again as its average decays.
//! - [`Method::Hash`]: a consistent-hash ring (100 points per unit of
//!   weight, placed by the server's address) on the client IP, a header or a
//!   cookie: removing one of N servers moves only about 1/N of the keys.
//!
//! A server that answered 429 or 503 with `Retry-After` is skipped until then
//! unless every server of its group is backed off.
//!
//! Backup servers (nginx's `backup`) take requests only while no primary
//! server of their group is in service (health checks, ejection); then the
//! group's method picks among the backups.

use std::cell::Cell;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Balance, HashKey, Outlier};
use crate::upstream::health::ServerHealth;
use tokio::time::Instant;

/// How a group picks its server: the config's [`Balance`], with the
/// group's ring for hashing.
#[derive(Debug, Clone)]
pub(crate) enum Method {
    RoundRobin,
    LeastOutstanding,
    PeakEwma,
    Hash(HashKey, Arc<Ring>),
}

impl Method {
    /// `balance` as run; a hashing group without a ring (it has no
    /// server) goes round-robin.
    pub(crate) fn new(balance: &Balance, ring: Option<Arc<Ring>>) -> Method {
        match (balance, ring) {
            (Balance::RoundRobin, _) | (Balance::Hash(_), None) => Method::RoundRobin,
            (Balance::LeastOutstanding, _) => Method::LeastOutstanding,
            (Balance::PeakEwma, _) => Method::PeakEwma,
            (Balance::Hash(key), Some(ring)) => Method::Hash(key.clone(), ring),
        }
    }
}

/// A stable 64-bit hash (SipHash with fixed keys): the same on every thread
/// and every run.
pub(crate) fn hash64(data: impl Hash) -> u64 {
    // SipHash-2-4 with zero keys: what the deprecated std::hash::SipHasher
    // gave, so that rings place keys where they did before.
    let mut h = siphasher::sip::SipHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// The consistent-hash ring of a group.
#[derive(Debug)]
pub(crate) struct Ring {
    /// (point, server index), sorted by point.
    points: Vec<(u64, usize)>,
}

const POINTS_PER_WEIGHT: u32 = 100;

impl Ring {
    /// A ring over `servers` (address, weight); a weight of 0 puts the
    /// server on no point (a backup while its group has primaries).
    pub(crate) fn new(servers: &[(SocketAddr, u32)]) -> Ring {
        let mut points = Vec::new();
        for (i, (addr, weight)) in servers.iter().enumerate() {
            for replica in 0..POINTS_PER_WEIGHT * weight {
                points.push((hash64((addr, replica)), i));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The server owning `key`: the first point at or after it, wrapping.
    pub(crate) fn lookup(&self, key: u64) -> usize {
        let i = self.points.partition_point(|(p, _)| *p < key);
        self.points[if i == self.points.len() { 0 } else { i }].1
    }
}

/// The moving average forgets with this time constant.
const DECAY: Duration = Duration::from_secs(10);
/// Latency assumed for a server not yet measured.
const FIRST_GUESS_NS: f64 = 1_000_000.0;

struct ServerState {
    weight: i64,
    backup: bool,
    current: Cell<i64>,
    outstanding: Cell<u32>,
    ewma_ns: Cell<f64>,
    stamp: Cell<Instant>,
    backoff_until: Cell<Option<Instant>>,
}

/// One worker's balancing state for one group.
pub(crate) struct Group {
    method: Method,
    servers: Vec<ServerState>,
    /// Whether any server is a backup (else the tier test is skipped).
    has_backup: bool,
    /// Shared health of each server, and the group's ejection policy.
    health: Vec<Arc<ServerHealth>>,
    outlier: Outlier,
    rng: Cell<u64>,
    next: Cell<usize>,
    /// Retry tokens: each request adds `budget_percent`/100, each retry
    /// takes one, and a per-second floor tops it up.
    retry_tokens: Cell<f64>,
    retry: crate::config::Retry,
}

impl Group {
    /// The group's retry settings.
    pub(crate) fn retry(&self) -> &crate::config::Retry {
        &self.retry
    }

    /// Counts a request towards the retry budget.
    pub(crate) fn deposit(&self) {
        let cap = f64::from(self.retry.min_per_second.max(1)) * 10.0;
        let t = self.retry_tokens.get() + f64::from(self.retry.budget_percent) / 100.0;
        self.retry_tokens.set(t.min(cap));
    }

    /// Once a second: the floor of retries per second.
    pub(crate) fn refill(&self) {
        let floor = f64::from(self.retry.min_per_second);
        if self.retry_tokens.get() < floor {
            self.retry_tokens.set(floor);
        }
    }

    /// Takes a retry from the budget, if one is left.
    pub(crate) fn take_retry(&self) -> bool {
        let t = self.retry_tokens.get();
        if t >= 1.0 {
            self.retry_tokens.set(t - 1.0);
            true
        } else {
            false
        }
    }

    /// `servers`: each server's (weight, backup).
    pub(crate) fn new(
        method: Method,
        servers: &[(u32, bool)],
        health: Vec<Arc<ServerHealth>>,
        outlier: Outlier,
        retry: crate::config::Retry,
        seed: u64,
    ) -> Group {
        let now = Instant::now();
        Group {
            retry_tokens: Cell::new(f64::from(retry.min_per_second)),
            retry,
            method,
            health,
            outlier,
            has_backup: servers.iter().any(|s| s.1),
            servers: servers
                .iter()
                .map(|&(w, backup)| ServerState {
                    weight: i64::from(w.max(1)),
                    backup,
                    current: Cell::new(0),
                    outstanding: Cell::new(0),
                    ewma_ns: Cell::new(FIRST_GUESS_NS),
                    stamp: Cell::new(now),
                    backoff_until: Cell::new(None),
                })
                .collect(),
            rng: Cell::new(seed | 1),
            next: Cell::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.servers.len()
    }

    pub(crate) fn hash_key(&self) -> Option<&HashKey> {
        match &self.method {
            Method::Hash(k, _) => Some(k),
            _ => None,
        }
    }

    /// Whether this group measures latency (callers skip the clock if not).
    pub(crate) fn wants_latency(&self) -> bool {
        matches!(self.method, Method::PeakEwma) && self.servers.len() > 1
    }

    fn random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x
    }

    fn usable(&self, i: usize, now: Instant) -> bool {
        match self.servers[i].backoff_until.get() {
            Some(t) if t > now => false,
            Some(_) => {
                self.servers[i].backoff_until.set(None);
                true
            }
            None => true,
        }
    }

    /// Whether server `i` is in service (health checks, ejection).
    pub(crate) fn alive(&self, i: usize) -> bool {
        self.health[i].available()
    }

    /// Whether the group has a backup server.
    pub(crate) fn has_backup(&self) -> bool {
        self.has_backup
    }

    /// Whether server `i` is a backup.
    pub(crate) fn is_backup(&self, i: usize) -> bool {
        self.servers[i].backup
    }

    /// Which tier takes requests now: `false` for the primaries (some
    /// primary is in service, or the group has no backup), `true` for the
    /// backups.
    pub(crate) fn tier(&self) -> bool {
        self.has_backup
            && !(0..self.servers.len()).any(|i| !self.servers[i].backup && self.alive(i))
    }

    /// Records how a request to server `i` went, for passive ejection;
    /// returns the ejection time if this failure ejected it.
    pub(crate) fn record(&self, i: usize, ok: bool) -> Option<Duration> {
        if ok {
            self.health[i].success();
            None
        } else {
            self.health[i].failure(&self.outlier, &self.health)
        }
    }

    /// The server (index within the group) for a request, `None` if none
    /// is in service; `key` is the request's hash for [`Method::Hash`].
    pub(crate) fn pick(&self, key: Option<u64>) -> Option<usize> {
        let n = self.servers.len();
        if n == 1 {
            return self.alive(0).then_some(0);
        }
        let tier = self.tier();
        let live = |i: usize| self.servers[i].backup == tier && self.alive(i);
        if !(0..n).any(live) {
            return None;
        }
        let now = Instant::now();
        let any_usable = (0..n).any(|i| live(i) && self.usable(i, now));
        let ok = |i: usize| live(i) && (!any_usable || self.usable(i, now));
        Some(match &self.method {
            Method::RoundRobin => {
                let total: i64 = (0..n)
                    .filter(|&i| ok(i))
                    .map(|i| self.servers[i].weight)
                    .sum();
                let mut best = None::<usize>;
                for i in (0..n).filter(|&i| ok(i)) {
                    let s = &self.servers[i];
                    s.current.set(s.current.get() + s.weight);
                    if best.is_none_or(|b| s.current.get() > self.servers[b].current.get()) {
                        best = Some(i);
                    }
                }
                let b = best.unwrap_or(0);
                let s = &self.servers[b];
                s.current.set(s.current.get() - total);
                b
            }
            Method::LeastOutstanding => {
                // Start after the last pick so ties rotate.
                let start = self.next.get();
                self.next.set((start + 1) % n);
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| ok(i))
                    .min_by(|&a, &b| {
                        let load = |i: usize| {
                            (self.servers[i].outstanding.get() as f64 + 1.0)
                                / self.servers[i].weight as f64
                        };
                        load(a).total_cmp(&load(b))
                    })
                    .unwrap_or(start)
            }
            Method::PeakEwma => {
                // The k-th server in service, counted rather than collected:
                // no allocation per request. (Health may change between the
                // count and a lookup; then the first one stands in.)
                let m = (0..n).filter(|&i| ok(i)).count();
                let first = (0..n).find(|&i| ok(i)).unwrap_or(0);
                if m <= 1 {
                    return Some(first);
                }
                let at = |k: u64| (0..n).filter(|&i| ok(i)).nth(k as usize).unwrap_or(first);
                let a = at(self.random() % m as u64);
                let mut b = at(self.random() % (m as u64 - 1));
                if b == a {
                    b = at(m as u64 - 1);
                }
                if self.cost(a, now) <= self.cost(b, now) {
                    a
                } else {
                    b
                }
            }
            Method::Hash(_, ring) => {
                let key = key.unwrap_or_else(|| self.random());
                // Backups are on no ring point while there are primaries:
                // with every primary out, keys spread over them by modulo.
                let home = match tier {
                    false => ring.lookup(key),
                    true => (key % n as u64) as usize,
                };
                // A backed-off home passes its keys to the next server.
                (0..n)
                    .map(|k| (home + k) % n)
                    .find(|&i| ok(i))
                    .unwrap_or(home)
            }
        })
    }

    fn cost(&self, i: usize, now: Instant) -> f64 {
        let s = &self.servers[i];
        let ewma = self.decayed(i, now);
        ewma * (f64::from(s.outstanding.get()) + 1.0) / s.weight as f64
    }

    fn decayed(&self, i: usize, now: Instant) -> f64 {
        let s = &self.servers[i];
        let elapsed = now.saturating_duration_since(s.stamp.get()).as_secs_f64();
        let w = (-elapsed / DECAY.as_secs_f64()).exp();
        // Decay towards the first guess, so an idle server gets tried again.
        s.ewma_ns.get() * w + FIRST_GUESS_NS * (1.0 - w)
    }

    /// A request to server `i` starts; how many are outstanding now.
    pub(crate) fn begin(&self, i: usize) -> u32 {
        let s = &self.servers[i];
        s.outstanding.set(s.outstanding.get() + 1);
        s.outstanding.get()
    }

    /// A request to server `i` ended; how many are outstanding now.
    pub(crate) fn end(&self, i: usize) -> u32 {
        let s = &self.servers[i];
        s.outstanding.set(s.outstanding.get().saturating_sub(1));
        s.outstanding.get()
    }

    /// Server `i` answered a head after `rtt`.
    pub(crate) fn observe(&self, i: usize, rtt: Duration) {
        let now = Instant::now();
        let rtt = rtt.as_nanos() as f64;
        let s = &self.servers[i];
        let prev = self.decayed(i, now);
        // Peak-sensitive: a slower answer takes over at once.
        let next = if rtt > prev {
            rtt
        } else {
            let elapsed = now.saturating_duration_since(s.stamp.get()).as_secs_f64();
            let w = (-elapsed / DECAY.as_secs_f64()).exp();
            prev * w + rtt * (1.0 - w)
        };
        s.ewma_ns.set(next);
        s.stamp.set(now);
    }

    /// Server `i` asked not to be sent anything before `until`.
    pub(crate) fn back_off(&self, i: usize, until: Instant) {
        self.servers[i].backoff_until.set(Some(until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rings and hash keys land where they did with std's deprecated
    /// SipHasher, so an upgrade moves no client to another server.
    #[test]
    fn hash64_is_std_siphash_2_4() {
        for key in ["", "a", "client-17", "10.0.0.1:443"] {
            #[allow(deprecated)]
            let mut std = std::hash::SipHasher::new();
            key.hash(&mut std);
            assert_eq!(hash64(key), std.finish(), "{key:?}");
        }
    }

    fn group(method: Method, weights: &[u32]) -> Group {
        let servers: Vec<(u32, bool)> = weights.iter().map(|&w| (w, false)).collect();
        tiered(method, &servers)
    }

    fn tiered(method: Method, servers: &[(u32, bool)]) -> Group {
        let health = servers.iter().map(|_| ServerHealth::new()).collect();
        Group::new(
            method,
            servers,
            health,
            Outlier::default(),
            Default::default(),
            7,
        )
    }

    fn addrs(n: usize) -> Vec<(SocketAddr, u32)> {
        (0..n)
            .map(|i| (format!("10.0.0.{}:80", i + 1).parse().unwrap(), 1))
            .collect()
    }

    #[tokio::test]
    async fn smooth_weighted_round_robin_spreads_weights() {
        let g = group(Method::RoundRobin, &[5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| g.pick(None).unwrap()).collect();
        // nginx's sequence for weights 5,1,1: a a b a c a a.
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        let mut counts = [0; 3];
        for _ in 0..700 {
            counts[g.pick(None).unwrap()] += 1;
        }
        assert_eq!(counts, [500, 100, 100]);
    }

    #[tokio::test]
    async fn least_outstanding_prefers_idle_servers() {
        let g = group(Method::LeastOutstanding, &[1, 1, 1]);
        g.begin(0);
        g.begin(0);
        g.begin(1);
        assert_eq!(g.pick(None).unwrap(), 2);
        g.begin(2);
        g.begin(2);
        assert_eq!(g.pick(None).unwrap(), 1);
    }

    #[tokio::test]
    async fn peak_ewma_avoids_a_slow_server() {
        let g = group(Method::PeakEwma, &[1, 1]);
        g.observe(0, Duration::from_millis(200));
        g.observe(1, Duration::from_millis(1));
        let to_slow = (0..100).filter(|_| g.pick(None).unwrap() == 0).count();
        assert_eq!(to_slow, 0);
    }

    #[tokio::test]
    async fn back_off_skips_a_server_until_all_are_backed_off() {
        let g = group(Method::RoundRobin, &[1, 1]);
        let later = Instant::now() + Duration::from_secs(60);
        g.back_off(0, later);
        assert!((0..10).all(|_| g.pick(None).unwrap() == 1));
        g.back_off(1, later);
        let both: std::collections::HashSet<usize> =
            (0..10).map(|_| g.pick(None).unwrap()).collect();
        assert_eq!(both.len(), 2);
    }

    #[test]
    fn ring_moves_about_one_nth_of_keys() {
        let four = Ring::new(&addrs(4));
        let three = Ring::new(&addrs(3));
        let keys = 20_000u64;
        let mut moved = 0;
        for k in 0..keys {
            let key = hash64(k);
            let before = four.lookup(key);
            let after = three.lookup(key);
            if before != 3 {
                // Keys of the servers that stay, stay.
                assert_eq!(before, after);
            } else {
                moved += 1;
            }
        }
        let share = moved as f64 / keys as f64;
        assert!((0.15..0.35).contains(&share), "moved {share}");
    }

    #[test]
    fn ring_respects_weights() {
        let mut servers = addrs(2);
        servers[0].1 = 3;
        let ring = Ring::new(&servers);
        let to_first = (0..20_000u64)
            .filter(|k| ring.lookup(hash64(k)) == 0)
            .count();
        let share = to_first as f64 / 20_000.0;
        assert!((0.65..0.85).contains(&share), "share {share}");
    }

    /// Backups take nothing while a primary is in service, everything
    /// (balanced among themselves) once none is, and give way again when a
    /// primary comes back.
    #[tokio::test]
    async fn backups_take_requests_only_while_no_primary_is_in_service() {
        let ring = Arc::new(Ring::new(&[
            (addrs(4)[0].0, 1),
            (addrs(4)[1].0, 1),
            (addrs(4)[2].0, 0),
            (addrs(4)[3].0, 0),
        ]));
        let methods = [
            Method::RoundRobin,
            Method::LeastOutstanding,
            Method::PeakEwma,
            Method::Hash(HashKey::ClientIp, ring),
        ];
        for method in methods {
            let g = tiered(
                method.clone(),
                &[(1, false), (1, false), (1, true), (1, true)],
            );
            let picks = |g: &Group| -> std::collections::BTreeSet<usize> {
                (0..200u64)
                    .map(|k| g.pick(Some(hash64(k))).unwrap())
                    .collect()
            };
            assert_eq!(picks(&g), [0, 1].into(), "{method:?}");
            g.health[0].drain(true);
            assert_eq!(picks(&g), [1].into(), "{method:?}");
            g.health[1].drain(true);
            assert_eq!(picks(&g), [2, 3].into(), "{method:?}");
            g.health[2].drain(true);
            assert_eq!(picks(&g), [3].into(), "{method:?}");
            g.health[3].drain(true);
            assert_eq!(g.pick(None), None, "{method:?}");
            g.health[1].drain(false);
            assert_eq!(picks(&g), [1].into(), "{method:?}");
        }
    }
}
