//! One cache's store: stored responses by key, each key holding the
//! variants its `Vary` tells apart, kept in memory under the cache's
//! byte budget (moka: TinyLFU admission, LRU eviction, reads without a
//! lock); and the fetches in progress, so that concurrent misses for one
//! key wait for the first (request coalescing) instead of all going to
//! the origin.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moka::ops::compute::Op;
use moka::sync::Cache as Map;
use tokio::sync::watch;

use super::disk::Disk;
pub(crate) use super::entry::{Entry, Variant};
use super::growing::Growing;
use super::key::Hasher;
use super::policy::Rules;
use crate::config::cache::Cache;

/// Variants kept per key at most (the oldest goes first).
const MAX_VARIANTS: usize = 16;
/// Fetches in progress tracked at most (beyond, misses do not wait).
const MAX_FILLS: usize = 1 << 16;
/// Passes kept at most, and the longest key that gets one (so that they
/// take at most about 4 MiB; without one, a miss looks its key up and
/// waits for the fetch in progress as any other).
const MAX_PASSES: usize = 8192;
const MAX_PASS_KEY: usize = 512;

/// A fetch in progress for a key, as those waiting for it see it.
pub(crate) struct Fill {
    state: watch::Sender<FillState>,
}

/// Where a fetch others wait for stands.
#[derive(Clone)]
pub(crate) enum FillState {
    Fetching,
    /// Its response is being stored: readable as it grows.
    Streaming(Arc<Growing>),
    /// Over (stored or not): look again.
    Done,
}

/// How a miss goes on.
pub(crate) enum Filling {
    /// This request fetches for the key; others wait for it until the
    /// guard is dropped.
    Mine(FillGuard),
    /// Another request is fetching it: wait for it.
    Wait(Arc<Fill>),
}

/// The fetch a request makes for a key; dropped, it tells those waiting
/// to look again.
pub(crate) struct FillGuard {
    store: Arc<Store>,
    key: Bytes,
    fill: Arc<Fill>,
}

impl FillGuard {
    /// Shows those waiting the response being stored, as it grows.
    pub(crate) fn publish(&self, g: Arc<Growing>) {
        self.set(FillState::Streaming(g));
    }

    /// Moves the fetch to `state`, waking those waiting only when there
    /// are any (a wake-up through tokio's notify shards cost every
    /// stored miss about 3,400 instructions, waited for or not). One who
    /// subscribes after this reads the new state before waiting; one
    /// subscribed before is counted, so woken.
    fn set(&self, state: FillState) {
        let tx = &self.fill.state;
        tx.send_if_modified(|s| {
            *s = state;
            tx.receiver_count() > 0
        });
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.set(FillState::Done);
        let fill = &self.fill;
        // (Another fetch's, or none: left as it is.)
        let _ = self
            .store
            .fills
            .pin()
            .remove_if(&self.key, |_, f| Arc::ptr_eq(f, fill));
    }
}

/// A cache's rules for the policy.
fn rules(c: &Cache) -> Rules {
    Rules {
        targeted: c.targeted.clone(),
        set_cookie: c.set_cookie,
        heuristic_max: c.heuristic_max,
        ..Rules::default()
    }
}

/// One cache.
pub(crate) struct Store {
    pub(crate) config: Arc<Cache>,
    /// What the config says of RFC 9111's open points.
    pub(crate) rules: Rules,
    /// Its keys are made of the URL alone ([`super::key::of_url`]).
    pub(crate) url_keys: bool,
    entries: Map<Bytes, Arc<Entry>, Hasher>,
    /// The fetches in progress, by key. (A plain concurrent map: moka's
    /// entry API cost a miss about 15,700 instructions to add and remove
    /// one; papaya's lock-free insert and conditional removal a fraction.)
    fills: Arc<papaya::HashMap<Bytes, Arc<Fill>, Hasher>>,
    /// Keys whose last response could not be stored, and until when
    /// misses for them go to the origin without looking `entries` up and
    /// without waiting for one another (Varnish's hit-for-miss: what
    /// comes back is still stored if it may be, which ends the pass).
    /// Kept apart from `entries`: a look here records no read in moka's
    /// admission state, which cost a miss about 900 instructions.
    passes: Arc<papaya::HashMap<Bytes, SystemTime, Hasher>>,
    /// When expired passes were last swept out (seconds since the epoch).
    swept: Arc<AtomicU64>,
    /// Misses waiting for another's fetch now (shared across reloads).
    waiting: Arc<AtomicUsize>,
    /// The disk tier, with `disk` (opened by [`super::Caches::with_disks`]).
    pub(crate) disk: Option<Arc<Disk>>,
}

impl Store {
    pub(crate) fn new(config: &Cache) -> Store {
        let entries = Map::builder()
            .max_capacity(config.memory)
            .weigher(|_, e: &Arc<Entry>| {
                let w: u64 =
                    e.variants.iter().map(|v| v.weight()).sum::<u64>() + e.url.len() as u64 + 128;
                u32::try_from(w).unwrap_or(u32::MAX)
            })
            .support_invalidation_closures()
            .build_with_hasher(Hasher::new());
        Store {
            config: Arc::new(config.clone()),
            rules: rules(config),
            url_keys: super::key::of_url(&config.key),
            entries,
            fills: Arc::new(papaya::HashMap::with_hasher(Hasher::new())),
            passes: Arc::new(papaya::HashMap::with_hasher(Hasher::new())),
            swept: Arc::default(),
            waiting: Arc::default(),
            disk: None,
        }
    }

    /// The same stored responses under `config`.
    pub(crate) fn with_config(&self, config: &Cache) -> Store {
        Store {
            config: Arc::new(config.clone()),
            rules: rules(config),
            url_keys: super::key::of_url(&config.key),
            entries: self.entries.clone(),
            fills: self.fills.clone(),
            passes: self.passes.clone(),
            swept: self.swept.clone(),
            waiting: self.waiting.clone(),
            disk: self.disk.clone(),
        }
    }

    /// The same store with the disk tier `disk`.
    pub(crate) fn with_disk(&self, disk: Option<Arc<Disk>>) -> Store {
        Store {
            disk,
            ..self.with_config(&self.config)
        }
    }

    /// On a memory miss: `key`'s entry from the disk tier, if it has one
    /// (read off this thread), put back in memory; `true`: it is there.
    pub(crate) async fn promote_from_disk(&self, key: &Bytes) -> bool {
        let Some(disk) = self.disk.clone().filter(|d| d.has(key)) else {
            return false;
        };
        let (k, rules) = (key.clone(), self.rules.clone());
        match tokio::task::spawn_blocking(move || disk.read(&k, &rules)).await {
            Ok(Some(e)) => {
                self.entries.insert(key.clone(), Arc::new(e));
                true
            }
            _ => false,
        }
    }

    pub(crate) fn get(&self, key: &Bytes) -> Option<Arc<Entry>> {
        self.entries.get(key)
    }

    /// Joins the fetch in progress for `key`, or starts it.
    pub(crate) fn fill(self: &Arc<Self>, key: &Bytes) -> Filling {
        let fill = Arc::new(Fill {
            state: watch::Sender::new(FillState::Fetching),
        });
        let fills = self.fills.pin();
        // Past MAX_FILLS (a flood of distinct misses) a fetch is not
        // tracked: later misses for its key do not wait for it.
        if fills.len() < MAX_FILLS {
            if let Err(e) = fills.try_insert(key.clone(), fill.clone()) {
                return Filling::Wait(e.current.clone());
            }
        }
        Filling::Mine(FillGuard {
            store: self.clone(),
            key: key.clone(),
            fill,
        })
    }

    /// Waits (up to `lock_timeout`) for `fill`: until it is over, or (when
    /// `stream`) until its response is being stored, which is returned.
    pub(crate) async fn wait(&self, fill: &Fill, stream: bool) -> Option<Arc<Growing>> {
        let mut rx = fill.state.subscribe();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let seen = tokio::time::timeout(
            self.config.lock_timeout,
            rx.wait_for(|s| match s {
                FillState::Fetching => false,
                FillState::Streaming(_) => stream,
                FillState::Done => true,
            }),
        )
        .await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let state = seen.ok()?.ok()?.clone();
        match state {
            FillState::Streaming(g) => Some(g),
            _ => None,
        }
    }

    /// Misses waiting for another's fetch now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Stores `v` for `key`: it replaces the variant with the same
    /// selecting values (or `replaces`, a variant it freshens).
    pub(crate) fn put(
        &self,
        key: Bytes,
        url: &str,
        v: Arc<Variant>,
        replaces: Option<&Arc<Variant>>,
    ) {
        // (Read first: a removal after this undoes the disk write.)
        let epoch = self.disk.as_ref().map(|d| d.epoch());
        // A read and an insert, not moka's compute (which cost a stored
        // miss about 2,000 instructions more): two stores for one key at
        // once may keep one's variant only, which the next miss for the
        // other stores again.
        let mut variants = vec![v.clone()];
        let url = match self.entries.get(&key) {
            Some(e) => {
                variants.extend(
                    e.variants
                        .iter()
                        .filter(|o| {
                            replaces.is_none_or(|r| !Arc::ptr_eq(o, r))
                                && !(o.vary.0 == v.vary.0 && o.vary_values == v.vary_values)
                        })
                        .take(MAX_VARIANTS - 1)
                        .cloned(),
                );
                e.url.clone()
            }
            None => Arc::from(url),
        };
        let entry = Arc::new(Entry { url, variants });
        self.entries.insert(key.clone(), entry.clone());
        let passes = self.passes.pin();
        if !passes.is_empty() {
            passes.remove(&key);
        }
        if let (Some(d), Some(epoch)) = (&self.disk, epoch) {
            d.write(key, entry, epoch);
        }
    }

    /// `key`'s response could not be stored: for `ttl`, misses for it
    /// neither look it up nor wait for one another ([`Store::passing`]),
    /// until something is stored for it. (Memory only.)
    pub(crate) fn pass(&self, key: &Bytes, ttl: Duration) {
        if key.len() > MAX_PASS_KEY {
            return;
        }
        let now = SystemTime::now();
        let passes = self.passes.pin();
        if passes.len() >= MAX_PASSES {
            // Full: the expired ones go, at most once a second.
            let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if self.swept.swap(secs, Ordering::Relaxed) == secs {
                return;
            }
            passes.retain(|_, until| *until > now);
            if passes.len() >= MAX_PASSES {
                return;
            }
        }
        passes.insert(key.clone(), now + ttl);
        // Stored meanwhile: a pass would hide it.
        if self.entries.contains_key(key) {
            passes.remove(key);
        }
    }

    /// Whether misses for `key` pass at `now` (see [`Store::pass`]).
    /// (`key` as bytes: a key looked up here need not be allocated.)
    pub(crate) fn passing(&self, key: &[u8], now: SystemTime) -> bool {
        let passes = self.passes.pin();
        if passes.is_empty() {
            return false;
        }
        match passes.get(key) {
            None => false,
            Some(until) if *until > now => true,
            Some(_) => {
                passes.remove(key);
                false
            }
        }
    }

    /// Counts `v`'s size again (a compressed form was kept), if `key`
    /// still holds it.
    pub(crate) fn reweigh(&self, key: &Bytes, v: &Arc<Variant>) {
        self.entries
            .entry(key.clone())
            .and_compute_with(|old| match old {
                Some(e) if e.value().variants.iter().any(|x| Arc::ptr_eq(x, v)) => {
                    Op::Put(e.into_value())
                }
                _ => Op::Nop,
            });
    }

    /// Drops what `key` holds.
    pub(crate) fn remove(&self, key: &Bytes) {
        self.entries.invalidate(key);
        if let Some(d) = &self.disk {
            d.remove(key);
        }
    }

    /// Drops every entry whose URL is `url` (`prefix`: starts with it);
    /// what goes, goes at once for lookups.
    pub(crate) fn purge(&self, url: &str, prefix: bool) -> Result<(), String> {
        let purged: Arc<str> = Arc::from(url);
        self.entries
            .invalidate_entries_if(move |_, e| match prefix {
                true => e.url.starts_with(&*purged),
                false => *e.url == *purged,
            })
            .map_err(|e| e.to_string())?;
        // (After memory: what memory takes in before this is removed.)
        if let Some(d) = &self.disk {
            d.purge(url, prefix);
        }
        Ok(())
    }

    /// Drops everything.
    pub(crate) fn clear(&self) {
        self.entries.invalidate_all();
        self.passes.pin().clear();
        if let Some(d) = &self.disk {
            d.purge("", true);
        }
    }

    /// Keys held and bytes they weigh (after pending housekeeping).
    pub(crate) fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cache::{KeyPart, SetCookie};

    fn store() -> Store {
        Store::new(&Cache {
            name: "c".into(),
            memory: 1 << 20,
            max_object: 1 << 20,
            key: vec![KeyPart::Path],
            set_cookie: SetCookie::NoStore,
            targeted: None,
            heuristic_max: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(5),
            disk: None,
        })
    }

    #[test]
    fn a_pass_lasts_its_time_and_hides_nothing_stored() {
        let s = store();
        let (k, now) = (Bytes::from_static(b"k"), SystemTime::now());
        assert!(!s.passing(&k, now));
        s.pass(&k, Duration::from_secs(30));
        assert!(s.passing(&k, now));
        assert!(!s.passing(&Bytes::from_static(b"other"), now));
        // Expired: gone.
        assert!(!s.passing(&k, now + Duration::from_secs(31)));
        assert!(!s.passing(&k, now));
        // Storing ends it; a key with something stored gets none.
        s.pass(&k, Duration::from_secs(30));
        let v = Arc::new(super::super::entry::tests_variant());
        s.put(k.clone(), "/k", v, None);
        assert!(!s.passing(&k, now));
        s.pass(&k, Duration::from_secs(30));
        assert!(!s.passing(&k, now));
        // A long key gets none.
        let long = Bytes::from(vec![b'x'; MAX_PASS_KEY + 1]);
        s.pass(&long, Duration::from_secs(30));
        assert!(!s.passing(&long, now));
    }

    #[test]
    fn passes_are_bounded_and_expired_ones_swept_when_full() {
        let s = store();
        let now = SystemTime::now();
        for i in 0..MAX_PASSES {
            s.pass(&Bytes::from(i.to_string()), Duration::ZERO);
        }
        let fresh = Bytes::from_static(b"fresh");
        // Full of expired passes: they go to make room.
        s.pass(&fresh, Duration::from_secs(30));
        assert!(s.passing(&fresh, now));
        assert_eq!(s.passes.pin().len(), 1);
        for i in 0..MAX_PASSES {
            s.pass(&Bytes::from(i.to_string()), Duration::from_secs(30));
        }
        assert!(s.passes.pin().len() <= MAX_PASSES);
    }
}
