//! Local rate limits (`[rate_limits.*]`), checked once a request's route
//! is known: each limit's keys hashed into a fixed table of TATs (see
//! [`gcra`]), shared by every worker thread.
//!
//! The table: `max_keys` slots (a power of two, 65,536 by default) of one
//! `AtomicU64` each, `max_keys × 8` bytes per limit (512 KiB by default)
//! whatever the number of clients: a flood of a million distinct keys
//! takes no more. A key's slot is chosen by SipHash-1-3 under a random
//! key drawn per table, so clients cannot aim at one another's slot.
//! Keys that share a slot share their limit: stricter for them, never
//! looser. With `n` keys active at once a key shares its slot with
//! probability about `1 − e^(−n / max_keys)` (1.5% for 1,000 keys in
//! 65,536 slots). A slot is updated by compare-and-swap: no lock, and
//! exact under concurrency. A TAT in the past counts as none, so nothing
//! ever expires or is swept.
//!
//! A key part that a request lacks (no such header or cookie) leaves the
//! request out of that limit, as nginx skips an empty key.
//!
//! A reload keeps the table of every limit whose name and settings are
//! unchanged ([`Limiters::carried`]); a changed or new limit starts
//! afresh.
//!
//! The concurrency limits (`[concurrency_limits.*]`, requests in flight
//! per key) are [`concurrency`], on the same kind of table and the same
//! key hashing ([`key`]).
//! A limit with `backend = "redis"` shares its budget with every instance
//! through Redis ([`global`]).

pub(crate) mod concurrency;
mod flight;
pub(crate) mod gcra;
pub(crate) mod global;
mod key;
mod lease;
mod store;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderValue};

use crate::config::{ConcurrencyLimit, KeyPart, RateLimit, RateLimitBackend, RateLimitMode};
use crate::error::{ProxyError, RateLimited};
use gcra::{Decision, Gcra};
use global::{Global, Verdict};

/// The SipHash key of a global limit's keys: the same in every instance,
/// so that they all name a client's key alike in Redis.
const GLOBAL_KEYS: key::Keyed = key::Keyed::fixed(0x7469_6465_6761_7465, 0x676c_6f62_616c_726c);

/// Every limit of one config, with its state.
#[derive(Debug)]
pub(crate) struct Limiters {
    limits: Vec<Limiter>,
    /// Time 0 of the limits' clock.
    base: Instant,
    /// The `[concurrency_limits.*]`.
    pub(crate) concurrency: concurrency::Limits,
}

#[derive(Debug)]
struct Limiter {
    /// Its settings, to tell on reload whether it changed.
    config: RateLimit,
    name: std::sync::Arc<str>,
    key: Vec<KeyPart>,
    gcra: Gcra,
    delay: bool,
    table: std::sync::Arc<Table>,
    /// `RateLimit-Policy`'s value, made once.
    policy: HeaderValue,
    /// `backend = "redis"`: the shared budget's state here.
    global: Option<std::sync::Arc<Global>>,
}

/// A fixed table of TATs, indexed by a keyed hash.
#[derive(Debug)]
pub(crate) struct Table {
    slots: Box<[AtomicU64]>,
    keys: key::Keyed,
}

impl Table {
    /// `slots` (a power of two) empty slots under a random hash key.
    pub(crate) fn new(slots: usize) -> Table {
        Table {
            slots: (0..slots.next_power_of_two())
                .map(|_| AtomicU64::new(0))
                .collect(),
            keys: key::Keyed::new(),
        }
    }

    /// Bytes the table holds, whatever the keys seen.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    /// Applies `g`'s decision at `now` to the slot of `hash`, atomically.
    pub(crate) fn decide(&self, hash: u64, g: &Gcra, now: u64, delay: bool) -> (Decision, u64) {
        let slot = &self.slots[(hash as usize) & (self.slots.len() - 1)];
        let mut tat = slot.load(Ordering::Relaxed);
        loop {
            match g.decide(tat, now, delay) {
                Decision::Allow { tat: new, wait } => {
                    match slot.compare_exchange_weak(tat, new, Ordering::AcqRel, Ordering::Relaxed)
                    {
                        Ok(_) => return (Decision::Allow { tat: new, wait }, new),
                        Err(seen) => tat = seen,
                    }
                }
                refuse => return (refuse, tat),
            }
        }
    }
}

impl Limiters {
    pub(crate) fn new(limits: &[RateLimit], concurrency: &[ConcurrencyLimit]) -> Limiters {
        Limiters::build(limits, concurrency, None)
    }

    /// The limits of a reloaded config: those unchanged (same name, same
    /// settings) keep their tables, and so every key's state (see
    /// [`concurrency::Limits::carried`] for the concurrency limits).
    pub(crate) fn carried(
        &self,
        limits: &[RateLimit],
        concurrency: &[ConcurrencyLimit],
    ) -> Limiters {
        Limiters::build(limits, concurrency, Some(self))
    }

    fn build(
        limits: &[RateLimit],
        concurrency: &[ConcurrencyLimit],
        old: Option<&Limiters>,
    ) -> Limiters {
        Limiters {
            concurrency: concurrency::Limits::new(concurrency, old.map(|o| &o.concurrency)),
            limits: limits
                .iter()
                .map(|l| {
                    let kept = old.and_then(|o| o.limits.iter().find(|k| &k.config == l));
                    let global = match &l.backend {
                        RateLimitBackend::Local => None,
                        RateLimitBackend::Redis(r) => Some(
                            kept.and_then(|k| k.global.clone())
                                .unwrap_or_else(|| std::sync::Arc::new(Global::new(l, r))),
                        ),
                    };
                    let kept = kept.map(|k| k.table.clone());
                    let gcra = Gcra::new(l.rate, l.period.as_nanos() as u64, l.burst);
                    // draft-ietf-httpapi-ratelimit-headers-10 §3:
                    // `"name";q=QUOTA;w=WINDOW` (a structured-field list of
                    // items, name a string).
                    let policy = format!("\"{}\";q={};w={}", l.name, l.rate, l.period.as_secs());
                    Limiter {
                        config: l.clone(),
                        name: l.name.as_str().into(),
                        key: l.key.clone(),
                        gcra,
                        delay: l.mode == RateLimitMode::Delay,
                        table: kept.unwrap_or_else(|| {
                            // A global limit keeps its own tables.
                            let slots = if global.is_some() { 1 } else { l.max_keys };
                            std::sync::Arc::new(Table::new(slots))
                        }),
                        global,
                        policy: HeaderValue::from_str(&policy)
                            .unwrap_or(HeaderValue::from_static("\"limit\"")),
                    }
                })
                .collect(),
            // The clock the kept tables' TATs are on.
            base: old.map_or_else(Instant::now, |o| o.base),
        }
    }

    /// Checks the limits `ids` (a route's) for a request: how long it
    /// waits first (`delay` mode), or the refusal (429; 503 for a global
    /// limit whose Redis is down with `on_error = "deny"`).
    pub(crate) async fn check(
        &self,
        ids: &[usize],
        route: usize,
        client: IpAddr,
        headers: &HeaderMap,
    ) -> Result<Duration, ProxyError> {
        let now = self.now();
        let mut wait = 0;
        for l in ids.iter().filter_map(|&i| self.limits.get(i)) {
            let Some(g) = &l.global else {
                wait = wait.max(l.local(route, client, headers, now)?);
                continue;
            };
            let Some(hash) = GLOBAL_KEYS.hash(&l.key, route, client, headers) else {
                continue;
            };
            match g.check(hash, &l.gcra, now).await {
                Verdict::Allow => continue,
                Verdict::Refuse { retry_after, reset } => {
                    return Err(ProxyError::RateLimited(l.refusal(retry_after, reset)))
                }
                Verdict::Unavailable => {
                    return Err(ProxyError::RateLimitUnavailable(l.name.clone()))
                }
            }
        }
        Ok(Duration::from_nanos(wait))
    }

    /// As [`Limiters::check`], at once, where none of `ids` is global
    /// (nothing to ask Redis): a request whose gates are all local makes
    /// no future for them. `None`: some limit is global.
    pub(crate) fn check_local(
        &self,
        ids: &[usize],
        route: usize,
        client: IpAddr,
        headers: &HeaderMap,
    ) -> Option<Result<Duration, ProxyError>> {
        let limits = || ids.iter().filter_map(|&i| self.limits.get(i));
        if limits().any(|l| l.global.is_some()) {
            return None;
        }
        let now = self.now();
        let mut wait = 0;
        for l in limits() {
            match l.local(route, client, headers, now) {
                Ok(w) => wait = wait.max(w),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(Duration::from_nanos(wait)))
    }

    /// Now on the tables' clock, in ns (+1: 0 is an empty slot's TAT,
    /// always in the past).
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }
}

impl Limiter {
    /// A local limit's decision for a request at `now`: how long it
    /// waits (ns; `delay` mode), or its refusal. (A request without the
    /// key's parts is not limited.)
    fn local(
        &self,
        route: usize,
        client: IpAddr,
        headers: &HeaderMap,
        now: u64,
    ) -> Result<u64, ProxyError> {
        let Some(hash) = self.table.keys.hash(&self.key, route, client, headers) else {
            return Ok(0);
        };
        match self.table.decide(hash, &self.gcra, now, self.delay) {
            (Decision::Allow { wait, .. }, _) => Ok(wait),
            (Decision::Refuse { retry_after }, tat) => Err(ProxyError::RateLimited(
                self.refusal(retry_after, tat.saturating_sub(now)),
            )),
        }
    }

    /// The 429 of a request over this limit, which conforms again in
    /// `retry_after` and finds the key's state full in `reset` (ns).
    fn refusal(&self, retry_after: u64, reset: u64) -> Box<RateLimited> {
        let kind = key::kinds(&self.key);
        tracing::debug!(limit = %self.name, key = %kind, "rate limit exceeded");
        let secs = |ns: u64| ns.div_ceil(1_000_000_000).max(1);
        Box::new(RateLimited {
            name: self.name.clone(),
            key: kind,
            retry_after: secs(retry_after),
            policy: self.policy.clone(),
            // draft-10 §4: `"name";r=REMAINING;t=RESET`.
            state: HeaderValue::from_str(&format!("\"{}\";r=0;t={}", self.name, secs(reset))).ok(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Limiters {
        /// `check`, run to its end (local limits never wait on it).
        fn check_now(
            &self,
            ids: &[usize],
            route: usize,
            client: IpAddr,
            headers: &HeaderMap,
        ) -> Result<Duration, Box<RateLimited>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            match rt.block_on(self.check(ids, route, client, headers)) {
                Ok(d) => Ok(d),
                Err(ProxyError::RateLimited(r)) => Err(r),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn a_million_keys_stay_in_the_table() {
        let t = Table::new(1 << 16);
        let before = t.bytes();
        assert_eq!(before, (1 << 16) * 8);
        let g = Gcra::new(1, 60_000_000_000, 0);
        let mut refused = 0;
        for k in 0u32..1_000_000 {
            if let (Decision::Refuse { .. }, _) = t.decide(t.keys.hash_one(&k), &g, 1, false) {
                refused += 1;
            }
        }
        assert_eq!(t.bytes(), before);
        // At most one key per slot is admitted: collisions make the limit
        // stricter, never looser.
        assert!(refused >= 1_000_000 - (1 << 16), "{refused}");
    }

    #[test]
    fn the_local_check_at_once_decides_as_the_async_one() {
        let (a, b) = (
            limiters(vec![KeyPart::ClientIp]),
            limiters(vec![KeyPart::ClientIp]),
        );
        let ip: IpAddr = [127, 0, 0, 1].into();
        let none = HeaderMap::new();
        for want in [true, true, false] {
            assert_eq!(a.check_now(&[0], 0, ip, &none).is_ok(), want);
            let at_once = b.check_local(&[0], 0, ip, &none).expect("all local");
            assert_eq!(at_once.is_ok(), want);
        }
        // A global limit is asked of Redis: not at once.
        let mut c = a.limits[0].config.clone();
        c.backend = RateLimitBackend::Redis(crate::config::RedisBackend {
            nodes: vec!["redis://127.0.0.1:1".into()],
            cluster: false,
            on_error: crate::config::OnError::Allow,
            timeout: Duration::from_millis(50),
        });
        let g = Limiters::new(&[a.limits[0].config.clone(), c], &[]);
        assert!(g.check_local(&[0], 0, ip, &none).is_some());
        assert!(g.check_local(&[0, 1], 0, ip, &none).is_none());
    }

    #[test]
    fn a_reload_keeps_unchanged_limits_state() {
        let l = limiters(vec![KeyPart::ClientIp]);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let none = HeaderMap::new();
        assert!(l.check_now(&[0], 0, ip, &none).is_ok());
        assert!(l.check_now(&[0], 0, ip, &none).is_ok());
        assert!(l.check_now(&[0], 0, ip, &none).is_err());
        let same = l.carried(&[l.limits[0].config.clone()], &[]);
        assert!(std::sync::Arc::ptr_eq(
            &same.limits[0].table,
            &l.limits[0].table
        ));
        assert!(same.check_now(&[0], 0, ip, &none).is_err());
        let mut changed = l.limits[0].config.clone();
        changed.burst = 2;
        let fresh = l.carried(&[changed], &[]);
        assert!(fresh.check_now(&[0], 0, ip, &none).is_ok());
    }

    #[test]
    fn a_reload_keeps_an_unchanged_global_limits_leases() {
        let mut c = limiters(vec![KeyPart::ClientIp]).limits[0].config.clone();
        c.backend = RateLimitBackend::Redis(crate::config::RedisBackend {
            nodes: vec!["redis://127.0.0.1:1".into()],
            cluster: false,
            on_error: crate::config::OnError::Allow,
            timeout: Duration::from_millis(50),
        });
        let l = Limiters::new(std::slice::from_ref(&c), &[]);
        let kept = l.carried(std::slice::from_ref(&c), &[]);
        let (a, b) = (l.limits[0].global.as_ref(), kept.limits[0].global.as_ref());
        assert!(std::sync::Arc::ptr_eq(a.unwrap(), b.unwrap()));
        c.rate = 2;
        let fresh = l.carried(&[c], &[]);
        let b = fresh.limits[0].global.as_ref();
        assert!(!std::sync::Arc::ptr_eq(a.unwrap(), b.unwrap()));
    }

    fn limiters(key: Vec<KeyPart>) -> Limiters {
        Limiters::new(
            &[RateLimit {
                name: "l".into(),
                key,
                rate: 1,
                period: Duration::from_secs(60),
                burst: 1,
                mode: RateLimitMode::Reject,
                max_keys: 1024,
                backend: RateLimitBackend::Local,
            }],
            &[],
        )
    }

    #[test]
    fn keys_are_limited_apart_and_a_missing_part_is_not_limited() {
        let l = limiters(vec![KeyPart::Header(http::HeaderName::from_static("x-k"))]);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let mut a = HeaderMap::new();
        a.insert("x-k", HeaderValue::from_static("a"));
        let mut b = HeaderMap::new();
        b.insert("x-k", HeaderValue::from_static("b"));
        assert!(l.check_now(&[0], 0, ip, &a).is_ok());
        assert!(l.check_now(&[0], 0, ip, &a).is_ok());
        let refused = l.check_now(&[0], 0, ip, &a).unwrap_err();
        assert_eq!(refused.key, "header");
        assert_eq!(refused.policy, "\"l\";q=1;w=60");
        assert!(refused.retry_after > 0);
        assert!(l.check_now(&[0], 0, ip, &b).is_ok());
        for _ in 0..10 {
            assert!(l.check_now(&[0], 0, ip, &HeaderMap::new()).is_ok());
        }
    }

    #[test]
    fn cookie_and_client_ip_make_one_key() {
        let l = limiters(vec![KeyPart::ClientIp, KeyPart::Cookie("s".into())]);
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, HeaderValue::from_static("a=1; s=x"));
        let one: IpAddr = [10, 0, 0, 1].into();
        let two: IpAddr = [10, 0, 0, 2].into();
        assert!(l.check_now(&[0], 0, one, &h).is_ok());
        assert!(l.check_now(&[0], 0, one, &h).is_ok());
        assert!(l.check_now(&[0], 0, one, &h).is_err());
        assert!(l.check_now(&[0], 0, two, &h).is_ok());
    }
}
