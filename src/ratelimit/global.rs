//! Global limits (`backend = "redis"`): one budget per key shared by every
//! instance naming the same Redis and limit.
//!
//! Redis holds each key's TAT (`tidegate:rl:NAME:HASH`, HASH a SipHash of
//! the key under fixed keys, the same in every instance) and a script
//! applies the GCRA atomically on its own clock ([`store`]). Round trips
//! stay off most requests: a request that finds no lease asks Redis for a
//! batch of `lease` requests (about 5% of the larger of the rate per
//! period and the burst, at least 1, at most burst + 1: the GCRA grants
//! no more at once), spends one and leaves the rest in the lease table
//! ([`Leases`]) for the next requests of that key, for at most
//! [`LEASE_MS`]. Tokens left when a lease ends go back to Redis with the
//! key's next batch. One request per worker thread and key asks at a
//! time ([`flight`]): the key's other requests wait for its answer and
//! take from the lease it brings, which is sized for them too (up to the
//! GCRA's capacity). A refusal from Redis is recorded the same way (until
//! the key conforms again, at most [`LEASE_MS`]): requests over the limit
//! cost no round trip either.
//!
//! What the leases cost in accuracy: Redis counts a batch when it is
//! granted, the requests go up to [`LEASE_MS`] later, so over a window an
//! instance may admit up to one lease more than Redis counted in it, and
//! fewer while it holds tokens it has not spent; tokens of a lease that
//! ends, or is evicted from the table, before its key comes back are
//! not given back, which makes the limit stricter by them until the TAT
//! they advanced is past. The total admitted never exceeds the budget by
//! more than one lease per instance per key.
//!
//! While Redis fails or is slower than `timeout`, the limit is marked
//! down: for [`PROBE_MS`] no request tries Redis, and `on_error` applies
//! (`allow`: the same limit kept by this instance alone; `deny`: refused).
//! The first request after that tries again; one warning when the outage
//! starts, one info line when Redis answers again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::flight::{self, Join};
use super::gcra::{Decision, Gcra};
use super::lease::{Leases, Take, MAX_TOKENS};
use super::store::{self, Ask};
use super::Table;
use crate::config::{OnError, RateLimit, RedisBackend};

/// How long a lease's tokens may be spent, at most.
pub(crate) const LEASE_MS: u32 = 1000;
/// How long Redis is left alone after a failure.
pub(crate) const PROBE_MS: u64 = 1000;

/// A global limit's state in this instance.
#[derive(Debug)]
pub(crate) struct Global {
    name: String,
    redis: RedisBackend,
    /// The connection map's key for `redis`.
    id: String,
    /// The keys' prefix in Redis.
    prefix: String,
    leases: Leases,
    /// The local limit `on_error = "allow"` falls back to.
    fallback: Table,
    /// Requests asked of Redis at once.
    lease: u32,
    /// The most asked at once (for requests waiting): the GCRA's
    /// capacity, which Redis never exceeds in one grant.
    most: u32,
    interval_us: u64,
    tolerance_us: u64,
    /// 0 while Redis answers; else when (ms on `base`, +1) a request may
    /// try it again.
    down: AtomicU64,
    /// Time 0 of the leases' clock.
    base: Instant,
}

/// What a global limit says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// Over the limit: conforms again in `retry_after`, the key's state
    /// is back to full in `reset` (ns).
    Refuse {
        retry_after: u64,
        reset: u64,
    },
    /// Redis is down and `on_error = "deny"`.
    Unavailable,
}

impl Global {
    pub(crate) fn new(l: &RateLimit, redis: &RedisBackend) -> Global {
        let g = Gcra::new(l.rate, l.period.as_nanos() as u64, l.burst);
        let capacity = l.burst.saturating_add(1);
        Global {
            name: l.name.clone(),
            id: store::id(redis),
            prefix: format!("tidegate:rl:{}:", l.name),
            redis: redis.clone(),
            leases: Leases::new(l.max_keys),
            fallback: Table::new(l.max_keys),
            lease: (l.rate.max(capacity) / 20).clamp(1, capacity.min(MAX_TOKENS)),
            most: capacity.min(MAX_TOKENS),
            interval_us: (g.interval / 1000).max(1),
            tolerance_us: g.tolerance / 1000,
            down: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    /// The verdict on a request whose key hashed to `hash` (under fixed
    /// keys); `g` and `now` (ns) are the local limit's, for the fallback.
    ///
    /// A request that finds no lease asks Redis only if no other request
    /// of its key on this thread is asking; else it waits for that answer
    /// ([`flight`]) and takes from the lease it left, asking in turn
    /// (for itself and as many as waited with it) if that ran out.
    pub(crate) async fn check(&self, hash: u64, g: &Gcra, now: u64) -> Verdict {
        // Requests that waited for the last answer with this one.
        let mut waited = 0;
        loop {
            let ms = self.base.elapsed().as_millis() as u64 + 1;
            match self.leases.take(hash, ms as u32) {
                Take::Took => return Verdict::Allow,
                Take::Refused { ms } => {
                    let ns = u64::from(ms) * 1_000_000;
                    return Verdict::Refuse {
                        retry_after: ns,
                        reset: ns + self.tolerance_us * 1000,
                    };
                }
                Take::Ask => {}
            }
            if !self.may_try(ms) {
                return self.fallback(hash, g, now);
            }
            // The limit's address: it lives while its requests do.
            match flight::join(self as *const Global as usize, hash) {
                Join::Lead(leader) => {
                    let want = self
                        .lease
                        .saturating_add(waited)
                        .saturating_add(leader.waiting());
                    // Boxed: a Redis call's state (its connection set-up
                    // included) would otherwise enlarge every request's
                    // future, limited or not, by about 2.5 KiB; it is
                    // made only when a lease runs out.
                    let verdict = Box::pin(self.ask(hash, g, now, ms, want.min(self.most))).await;
                    // Wakes the requests that waited for this answer.
                    drop(leader);
                    return verdict;
                }
                Join::Wait(flight) => {
                    let answered = tokio::time::timeout(self.redis.timeout, flight.clone().done());
                    if answered.await.is_err() {
                        return self.fallback(hash, g, now);
                    }
                    waited = flight.waiting();
                }
            }
        }
    }

    /// Asks Redis for `want` requests of `hash`'s key at `ms`: one for
    /// this request, the rest leased.
    async fn ask(&self, hash: u64, g: &Gcra, now: u64, ms: u64, want: u32) -> Verdict {
        let refund = self.leases.reclaim(hash, ms as u32);
        let key = format!("{}{hash:016x}", self.prefix);
        let ask = Ask {
            want,
            refund,
            interval_us: self.interval_us,
            tolerance_us: self.tolerance_us,
        };
        let call = store::take(&self.redis, &self.id, &key, ask);
        let out = match tokio::time::timeout(self.redis.timeout, call).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return self.failed(ms, &e, hash, g, now),
            Err(_) => {
                store::forget(&self.id);
                let e = format!("no answer within {:?}", self.redis.timeout);
                return self.failed(ms, &e, hash, g, now);
            }
        };
        if self.down.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!(limit = %self.name, "rate limit: Redis answers again; the global limit applies");
        }
        match out {
            (0, ahead) => {
                let ms = self.base.elapsed().as_millis() as u64 + 1;
                // A concurrent request of the key got a batch meanwhile
                // (several ask at once when a key starts): spend it.
                if self.leases.take(hash, ms as u32) == Take::Took {
                    return Verdict::Allow;
                }
                let retry_us = ahead.saturating_sub(self.tolerance_us).max(1);
                // Refusals until then are answered here, for at most a lease's time.
                let wait = retry_us.div_ceil(1000).min(u64::from(LEASE_MS)) as u32;
                self.leases
                    .refuse(hash, ms as u32, (ms as u32).wrapping_add(wait));
                Verdict::Refuse {
                    retry_after: retry_us * 1000,
                    reset: ahead.saturating_mul(1000),
                }
            }
            (granted, _) => {
                if granted > 1 {
                    let ms = self.base.elapsed().as_millis() as u64 + 1;
                    let end = (ms as u32).wrapping_add(LEASE_MS);
                    self.leases.put(hash, (granted - 1) as u32, ms as u32, end);
                }
                Verdict::Allow
            }
        }
    }

    /// Whether a request at `ms` may ask Redis: always while it answers;
    /// during an outage, one request once [`PROBE_MS`] has passed.
    fn may_try(&self, ms: u64) -> bool {
        let until = self.down.load(Ordering::Acquire);
        until == 0
            || (ms >= until
                && self
                    .down
                    .compare_exchange(until, ms + PROBE_MS, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok())
    }

    /// Redis failed: marks the outage (one warning when it starts) and
    /// applies `on_error`.
    fn failed(&self, ms: u64, e: &dyn std::fmt::Display, hash: u64, g: &Gcra, now: u64) -> Verdict {
        if self.down.swap(ms + PROBE_MS, Ordering::AcqRel) == 0 {
            let on_error = match self.redis.on_error {
                OnError::Allow => "allow: each instance applies the limit alone",
                OnError::Deny => "deny: its requests are refused",
            };
            tracing::warn!(
                limit = %self.name,
                redis = %self.id,
                "rate limit: Redis is unreachable ({e}); on_error = {on_error}, until it answers again"
            );
        }
        self.fallback(hash, g, now)
    }

    /// `on_error`'s verdict.
    fn fallback(&self, hash: u64, g: &Gcra, now: u64) -> Verdict {
        if self.redis.on_error == OnError::Deny {
            return Verdict::Unavailable;
        }
        match self.fallback.decide(hash, g, now, false) {
            (Decision::Allow { .. }, _) => Verdict::Allow,
            (Decision::Refuse { retry_after }, tat) => Verdict::Refuse {
                retry_after,
                reset: tat.saturating_sub(now),
            },
        }
    }
}
