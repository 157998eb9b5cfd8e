//! The leases of a global limit: the part of a key's budget that this
//! instance took from Redis in one round trip and spends locally, one
//! request at a time, without asking Redis again.
//!
//! A fixed table of `max_keys` slots (a power of two) of one `AtomicU64`
//! each, like the local limiter's ([`super::Table`]): `max_keys × 8` bytes
//! per limit whatever the number of keys. A slot packs the key's 16-bit
//! tag (so that another key's lease is not spent by mistake), the tokens
//! left (16 bits) and the lease's end (32 bits of milliseconds on the
//! limit's clock, compared with wrapping arithmetic). Every change is one
//! compare-and-swap: no lock.
//!
//! A live slot of the key whose tokens field is all ones records a refusal: Redis
//! said the key conforms again at its end, so a flood over the limit
//! costs no round trip either (its end is at most [`super::global::LEASE_MS`]
//! ahead, so that budget given back by another instance is seen soon).
//!
//! Two keys in one slot evict each other's lease: the evicted tokens are
//! lost (already counted in Redis), which makes the limit stricter, never
//! looser. Two keys with the same slot and tag (one chance in 65,536 for
//! keys that collide on the slot) would share a lease.

use std::sync::atomic::{AtomicU64, Ordering};

/// Most tokens a slot holds.
pub(crate) const MAX_TOKENS: u32 = u16::MAX as u32 - 1;
/// The tokens field of a recorded refusal.
const REFUSED: u32 = u16::MAX as u32;

/// What a request finds in its key's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// A token of a live lease: admitted.
    Took,
    /// A recorded refusal, `ms` more to run.
    Refused { ms: u32 },
    /// Nothing live: ask Redis.
    Ask,
}

/// Leases, indexed by the key's hash.
#[derive(Debug)]
pub(crate) struct Leases {
    slots: Box<[AtomicU64]>,
}

/// One slot's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    tag: u16,
    tokens: u32,
    /// Milliseconds on the limit's clock (wrapping).
    end: u32,
}

impl Lease {
    fn pack(self) -> u64 {
        (u64::from(self.tag) << 48)
            | (u64::from(self.tokens.min(REFUSED)) << 32)
            | u64::from(self.end)
    }

    fn unpack(v: u64) -> Lease {
        Lease {
            tag: (v >> 48) as u16,
            tokens: ((v >> 32) & 0xffff) as u32,
            end: v as u32,
        }
    }

    /// Whether it still runs at `now` (ms): its end is ahead, within half
    /// the clock's wrap (24 days).
    fn live(self, now: u32) -> bool {
        (self.end.wrapping_sub(now) as i32) > 0
    }
}

impl Leases {
    pub(crate) fn new(slots: usize) -> Leases {
        Leases {
            slots: (0..slots.next_power_of_two())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    fn slot(&self, hash: u64) -> &AtomicU64 {
        &self.slots[(hash as usize) & (self.slots.len() - 1)]
    }

    /// Spends one token of `hash`'s live lease at `now` (ms).
    pub(crate) fn take(&self, hash: u64, now: u32) -> Take {
        let slot = self.slot(hash);
        let mut v = slot.load(Ordering::Relaxed);
        loop {
            let l = Lease::unpack(v);
            if l.tag != tag(hash) || !l.live(now) || l.tokens == 0 {
                return Take::Ask;
            }
            if l.tokens == REFUSED {
                return Take::Refused {
                    ms: l.end.wrapping_sub(now),
                };
            }
            let less = Lease {
                tokens: l.tokens - 1,
                ..l
            };
            match slot.compare_exchange_weak(v, less.pack(), Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Take::Took,
                Err(seen) => v = seen,
            }
        }
    }

    /// Records that `hash`'s key is refused until `end` (ms), unless
    /// the slot holds a live lease of it with tokens.
    pub(crate) fn refuse(&self, hash: u64, now: u32, end: u32) {
        let slot = self.slot(hash);
        let mut v = slot.load(Ordering::Relaxed);
        loop {
            let l = Lease::unpack(v);
            if l.tag == tag(hash) && l.live(now) && l.tokens > 0 && l.tokens != REFUSED {
                return;
            }
            let new = Lease {
                tag: tag(hash),
                tokens: REFUSED,
                end,
            };
            match slot.compare_exchange_weak(v, new.pack(), Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => v = seen,
            }
        }
    }

    /// Empties `hash`'s slot if it holds an ended lease of that key with
    /// tokens left: those tokens, to give back to Redis.
    pub(crate) fn reclaim(&self, hash: u64, now: u32) -> u32 {
        let slot = self.slot(hash);
        let mut v = slot.load(Ordering::Relaxed);
        loop {
            let l = Lease::unpack(v);
            if l.tag != tag(hash) || l.tokens == 0 || l.tokens == REFUSED || l.live(now) {
                return 0;
            }
            match slot.compare_exchange_weak(v, 0, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return l.tokens,
                Err(seen) => v = seen,
            }
        }
    }

    /// Stores `tokens` leased for `hash` until `end` (ms): added to a live
    /// lease of the same key, else in place of whatever the slot held.
    pub(crate) fn put(&self, hash: u64, tokens: u32, now: u32, end: u32) {
        let slot = self.slot(hash);
        let mut v = slot.load(Ordering::Relaxed);
        loop {
            let l = Lease::unpack(v);
            let tokens = match l.tag == tag(hash) && l.live(now) && l.tokens != REFUSED {
                true => l.tokens.saturating_add(tokens).min(MAX_TOKENS),
                false => tokens.min(MAX_TOKENS),
            };
            let new = Lease {
                tag: tag(hash),
                tokens,
                end,
            };
            match slot.compare_exchange_weak(v, new.pack(), Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => v = seen,
            }
        }
    }

    /// Bytes the table holds, whatever the keys seen.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }
}

/// The tag of `hash`: bits the slot index does not use.
fn tag(hash: u64) -> u16 {
    (hash >> 48) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 0x1234_0000_0000_0007;
    /// Same slot as `A`, another tag.
    const B: u64 = 0x9999_0000_0000_0007;

    #[test]
    fn a_lease_is_spent_token_by_token_until_it_ends() {
        let l = Leases::new(1024);
        assert_eq!(l.bytes(), 1024 * 8);
        assert_eq!(l.take(A, 0), Take::Ask);
        l.put(A, 2, 0, 1000);
        assert_eq!(l.take(B, 10), Take::Ask, "another key's lease");
        assert_eq!(l.take(A, 10), Take::Took);
        assert_eq!(l.take(A, 10), Take::Took);
        assert_eq!(l.take(A, 10), Take::Ask, "spent");
        l.put(A, 3, 10, 1000);
        assert_eq!(l.take(A, 1000), Take::Ask, "ended");
        assert_eq!(l.reclaim(A, 1000), 3);
        assert_eq!(l.reclaim(A, 1000), 0);
    }

    #[test]
    fn leases_of_one_key_add_up_and_another_key_evicts() {
        let l = Leases::new(1024);
        l.put(A, 2, 0, 100);
        l.put(A, 2, 50, 200);
        assert_eq!((0..10).filter(|_| l.take(A, 150) == Take::Took).count(), 4);
        l.put(A, 5, 150, 300);
        l.put(B, 1, 150, 300);
        assert_eq!(l.take(A, 160), Take::Ask);
        assert_eq!(l.reclaim(A, 400), 0, "evicted: nothing to give back");
        assert_eq!(l.take(B, 160), Take::Took);
    }

    #[test]
    fn a_refusal_is_recorded_until_its_end_but_not_over_tokens() {
        let l = Leases::new(1024);
        l.refuse(A, 0, 300);
        assert_eq!(l.take(A, 100), Take::Refused { ms: 200 });
        assert_eq!(l.reclaim(A, 300), 0, "a refusal has nothing to give back");
        assert_eq!(l.take(A, 300), Take::Ask);
        l.put(A, 2, 300, 600);
        l.refuse(A, 300, 600);
        assert_eq!(l.take(A, 310), Take::Took);
    }

    #[test]
    fn the_clock_wraps() {
        let l = Leases::new(1024);
        let now = u32::MAX - 10;
        l.put(A, 1, now, now.wrapping_add(100));
        assert_eq!(l.take(A, 5), Take::Took);
    }
}
