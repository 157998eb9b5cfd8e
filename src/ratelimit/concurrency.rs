//! Concurrency limits (`[concurrency_limits.*]`, nginx's `limit_conn`):
//! how many requests a key may have in flight at once. Checked in the
//! gate, after the rate limits; a request admitted holds a [`Held`] until
//! its response body has been sent whole (or abandoned), its tunnel has
//! closed, or at once for an error or the route's own answer.
//!
//! The table: `max_keys` slots (a power of two, 65,536 by default) of one
//! `AtomicU32` count each, `max_keys × 4` bytes per limit (256 KiB by
//! default) whatever the number of clients, hashed as a rate limit's are
//! ([`super::key`]). Keys that share a slot share their limit: stricter
//! for them, never looser. A count goes up by compare-and-swap only while
//! it is below `max`, so it never passes it, and the guard's `Drop` takes
//! it down again, once: every admitted request releases its slot however
//! it ends (its future dropped by a client reset included), and a count
//! never goes below zero.
//!
//! A reload keeps the table of every limit whose name, key and
//! `max_keys` are unchanged (a new `max` included): requests in flight
//! across the reload release into the table the new config counts in.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use http::header::HeaderMap;

use super::key::{self, Keyed};
use crate::config::ConcurrencyLimit;
use crate::error::ConcurrencyLimited;

/// A fixed table of in-flight counts, indexed by a keyed hash.
#[derive(Debug)]
pub(crate) struct Counts {
    slots: Box<[AtomicU32]>,
    keys: Keyed,
}

impl Counts {
    /// `slots` (a power of two) counts at zero under a random hash key.
    pub(crate) fn new(slots: usize) -> Counts {
        Counts {
            slots: (0..slots.next_power_of_two())
                .map(|_| AtomicU32::new(0))
                .collect(),
            keys: Keyed::new(),
        }
    }

    /// The slot of `hash`.
    fn slot(&self, hash: u64) -> usize {
        (hash as usize) & (self.slots.len() - 1)
    }

    /// One more in flight in `slot`, unless `max` already are.
    fn take(&self, slot: usize, max: u32) -> bool {
        self.slots[slot]
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// One fewer in flight in `slot` (never below zero).
    fn give(&self, slot: usize) {
        let _ = self.slots[slot]
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Bytes the table holds, whatever the keys seen.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    /// Requests in flight over every slot.
    #[cfg(test)]
    fn total(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| u64::from(s.load(Ordering::Relaxed)))
            .sum()
    }
}

/// One request's place in one limit's slot, given back when dropped.
#[derive(Debug)]
struct Slot {
    table: Arc<Counts>,
    index: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.give(self.index);
    }
}

/// A request's places in its route's concurrency limits: it counts as in
/// flight until this is dropped. Empty (and no allocation) for a route
/// with none.
#[derive(Debug, Default)]
pub(crate) struct Held(Vec<Slot>);

/// Every concurrency limit of one config.
#[derive(Debug)]
pub(crate) struct Limits {
    limits: Vec<Limit>,
}

#[derive(Debug)]
struct Limit {
    config: ConcurrencyLimit,
    name: Arc<str>,
    table: Arc<Counts>,
}

impl Limits {
    /// The limits `limits`; with `old` (a reload), each whose name, key
    /// and `max_keys` are unchanged keeps its table.
    pub(crate) fn new(limits: &[ConcurrencyLimit], old: Option<&Limits>) -> Limits {
        Limits {
            limits: limits
                .iter()
                .map(|l| {
                    let kept = old
                        .and_then(|o| {
                            o.limits.iter().find(|k| {
                                k.config.name == l.name
                                    && k.config.key == l.key
                                    && k.config.max_keys == l.max_keys
                            })
                        })
                        .map(|k| k.table.clone());
                    Limit {
                        config: l.clone(),
                        name: l.name.as_str().into(),
                        table: kept.unwrap_or_else(|| Arc::new(Counts::new(l.max_keys))),
                    }
                })
                .collect(),
        }
    }

    /// Takes a place for a request in each of the limits `ids` (a
    /// route's), or refuses it at the first that is full (giving back
    /// those taken). A request lacking a part of a limit's key is not
    /// counted in it.
    pub(crate) fn take(
        &self,
        ids: &[usize],
        route: usize,
        client: IpAddr,
        headers: &HeaderMap,
    ) -> Result<Held, Box<ConcurrencyLimited>> {
        let mut held = Held(Vec::with_capacity(ids.len()));
        for l in ids.iter().filter_map(|&i| self.limits.get(i)) {
            let Some(hash) = l.table.keys.hash(&l.config.key, route, client, headers) else {
                continue;
            };
            let index = l.table.slot(hash);
            if !l.table.take(index, l.config.max) {
                let kind = key::kinds(&l.config.key);
                tracing::debug!(limit = %l.name, key = %kind, "concurrency limit reached");
                return Err(Box::new(ConcurrencyLimited {
                    name: l.name.clone(),
                    key: kind,
                    max: l.config.max,
                }));
            }
            held.0.push(Slot {
                table: l.table.clone(),
                index,
            });
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyPart;
    use http::HeaderValue;

    fn limits(max: u32, key: Vec<KeyPart>) -> Limits {
        Limits::new(
            &[ConcurrencyLimit {
                name: "c".into(),
                key,
                max,
                max_keys: 1024,
            }],
            None,
        )
    }

    #[test]
    fn a_million_keys_stay_in_the_table_and_counts_return_to_zero() {
        let t = Arc::new(Counts::new(1 << 16));
        let before = t.bytes();
        assert_eq!(before, (1 << 16) * 4);
        let mut held = Vec::new();
        let mut refused = 0;
        for k in 0u32..1_000_000 {
            let index = t.slot(t.keys.hash_one(&k));
            match t.take(index, 1) {
                true => held.push(Slot {
                    table: t.clone(),
                    index,
                }),
                false => refused += 1,
            }
        }
        assert_eq!(t.bytes(), before);
        // At most one key per slot is admitted: collisions make the limit
        // stricter, never looser.
        assert_eq!(held.len() as u64, t.total());
        assert!(held.len() <= 1 << 16);
        assert_eq!(refused, 1_000_000 - held.len());
        drop(held);
        assert_eq!(t.total(), 0);
    }

    #[test]
    fn max_in_flight_then_one_more_once_one_ends() {
        let l = limits(2, vec![KeyPart::ClientIp]);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let none = HeaderMap::new();
        let a = l.take(&[0], 0, ip, &none).unwrap();
        let b = l.take(&[0], 0, ip, &none).unwrap();
        let refused = l.take(&[0], 0, ip, &none).unwrap_err();
        assert_eq!(
            (&*refused.name, refused.key.as_str(), refused.max),
            ("c", "client_ip", 2)
        );
        // Another key has its own count (1024 slots: these two do not
        // share one, or this test would say so every time).
        let c = l.take(&[0], 0, other, &none).unwrap();
        drop(a);
        let d = l.take(&[0], 0, ip, &none).unwrap();
        drop((b, c, d));
        assert_eq!(l.limits[0].table.total(), 0);
    }

    #[test]
    fn a_refusal_gives_back_what_earlier_limits_took() {
        let l = Limits::new(
            &[
                ConcurrencyLimit {
                    name: "wide".into(),
                    key: vec![KeyPart::Route],
                    max: 10,
                    max_keys: 1024,
                },
                ConcurrencyLimit {
                    name: "narrow".into(),
                    key: vec![KeyPart::ClientIp],
                    max: 1,
                    max_keys: 1024,
                },
            ],
            None,
        );
        let ip: IpAddr = [10, 0, 0, 1].into();
        let none = HeaderMap::new();
        let first = l.take(&[0, 1], 0, ip, &none).unwrap();
        assert_eq!(l.take(&[0, 1], 0, ip, &none).unwrap_err().max, 1);
        assert_eq!(l.limits[0].table.total(), 1);
        drop(first);
        assert_eq!(l.limits[0].table.total() + l.limits[1].table.total(), 0);
    }

    #[test]
    fn a_missing_key_part_is_not_counted() {
        let l = limits(
            1,
            vec![KeyPart::Header(http::HeaderName::from_static("x-k"))],
        );
        let ip: IpAddr = [10, 0, 0, 1].into();
        let none = HeaderMap::new();
        let held: Vec<_> = (0..5)
            .map(|_| l.take(&[0], 0, ip, &none).unwrap())
            .collect();
        assert!(held.iter().all(|h| h.0.is_empty()));
        let mut a = HeaderMap::new();
        a.insert("x-k", HeaderValue::from_static("a"));
        let _one = l.take(&[0], 0, ip, &a).unwrap();
        assert!(l.take(&[0], 0, ip, &a).is_err());
    }

    #[test]
    fn a_reload_keeps_the_counts_of_a_limit_with_the_same_key() {
        let l = limits(1, vec![KeyPart::ClientIp]);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let none = HeaderMap::new();
        let before = l.take(&[0], 0, ip, &none).unwrap();
        // A new max keeps the table: the request in flight still counts.
        let mut raised = l.limits[0].config.clone();
        raised.max = 2;
        let after = Limits::new(&[raised.clone()], Some(&l));
        assert!(Arc::ptr_eq(&after.limits[0].table, &l.limits[0].table));
        let second = after.take(&[0], 0, ip, &none).unwrap();
        assert!(after.take(&[0], 0, ip, &none).is_err());
        // Released under the old config, into the same table.
        drop(before);
        let third = after.take(&[0], 0, ip, &none).unwrap();
        drop((second, third));
        assert_eq!(after.limits[0].table.total(), 0);
        // A new key starts afresh.
        let mut rekeyed = raised;
        rekeyed.key = vec![KeyPart::Route];
        let fresh = Limits::new(&[rekeyed], Some(&after));
        assert!(!Arc::ptr_eq(&fresh.limits[0].table, &after.limits[0].table));
    }

    #[test]
    fn a_count_never_goes_below_zero() {
        let t = Counts::new(1024);
        t.give(3);
        assert_eq!(t.total(), 0);
        assert!(t.take(3, 1));
        assert!(!t.take(3, 1));
    }
}
