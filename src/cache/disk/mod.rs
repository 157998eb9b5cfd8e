//! A cache's disk tier (`disk = { path, size }`): every entry stored in
//! memory is also written to a file, a memory miss looks there before
//! the origin, and the files outlive restarts and reloads.
//!
//! - **Files**: one per key (every variant of it), named by a hash of
//!   the key and a write sequence number (`<hash>-<seq>`), under two
//!   levels of folders (`ab/cd/`, from the hash); written to a `.tmp`
//!   name, then renamed: a file is whole or absent (not fsync'd: a crash
//!   may leave a short file, which the checks below catch). The format
//!   is [`format`]'s.
//! - **Index**: in memory, key → file (moka, weighed by file size, least
//!   recently used evicted past `size`; whatever leaves it, evicted,
//!   replaced or purged, has its file deleted).
//! - **Writer**: one thread per disk tier, fed by a channel; writes are
//!   bounded ([`MAX_QUEUED`]): when that many wait, a new one is skipped
//!   (counted, one log line a minute), never the request delayed.
//! - **Scan**: the same thread reads every file's head when the tier is
//!   opened (in the background: lookups meanwhile find what was scanned
//!   so far), builds the index and deletes what is corrupt.
//! - **Reads**: on a memory miss whose key the index holds, off the
//!   worker thread (`spawn_blocking`); a file whose checksum or length
//!   is wrong is deleted and the request goes to the origin.

mod format;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use moka::sync::Cache as Map;

use super::entry::Entry;
use super::policy::Rules;
use crate::config::cache::Disk as DiskConfig;

/// Writes waiting at most; past it, new ones are skipped.
pub(crate) const MAX_QUEUED: usize = 64;

/// One file in the index.
struct OnDisk {
    file: PathBuf,
    /// The URL stored (what purges match).
    url: Arc<str>,
    /// Its write's sequence number (of two files for one key, the
    /// larger is newer).
    seq: u64,
    size: u64,
}

/// What the writer thread is asked.
enum Msg {
    /// Write an entry (queued when `epoch` was current).
    Write(Box<Job>),
    /// Delete a file that left the index.
    Delete(PathBuf),
    /// While scanning: a key removed, whose files found later go too.
    Forget(Bytes),
    /// While scanning: a purge (URL or prefix) that files found later
    /// must obey.
    Purge(Arc<str>, bool),
    Stop,
}

struct Job {
    key: Bytes,
    entry: Arc<Entry>,
    epoch: u64,
}

/// What the tier's users and its writer share.
struct Shared {
    /// The cache's name, for log lines.
    cache: String,
    root: PathBuf,
    size: u64,
    index: Map<Bytes, Arc<OnDisk>, super::key::Hasher>,
    /// Bumped by every removal: a write queued before one is not done
    /// (it could bring back what was removed).
    epoch: AtomicU64,
    queued: AtomicUsize,
    skipped: AtomicU64,
    /// When the last "skipped" line was logged (UNIX seconds).
    warned: AtomicU64,
    /// The folder is being scanned (removals are told to the scan).
    scanning: AtomicBool,
    next_seq: AtomicU64,
}

impl Shared {
    /// The file for `key`'s write number `seq`.
    fn file_for(&self, key: &[u8], seq: u64) -> PathBuf {
        use std::hash::Hasher;
        // Fixed keys: names must be the same after a restart.
        let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
        h.write(key);
        let hash = h.finish();
        self.root
            .join(format!("{:02x}", hash >> 56))
            .join(format!("{:02x}", (hash >> 48) & 0xff))
            .join(format!("{hash:016x}-{seq:016x}"))
    }

    /// Logs `what` unless a line was logged in the last minute.
    fn now_and_then(&self) -> bool {
        let now = unix_now();
        let last = self.warned.load(Ordering::Relaxed);
        now >= last + 60
            && self
                .warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Drops `key` from the index if it still names `file`.
    fn forget_file(&self, key: &Bytes, file: &Arc<OnDisk>) {
        self.index.entry(key.clone()).and_compute_with(|e| match e {
            Some(e) if Arc::ptr_eq(e.value(), file) => Op::Remove,
            _ => Op::Nop,
        });
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A cache's disk tier.
pub(crate) struct Disk {
    pub(crate) config: DiskConfig,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

/// The tiers open in this process: a folder has one, shared by every
/// config that names it with the same size (a reload keeps it).
static OPEN: Mutex<Vec<Weak<Disk>>> = Mutex::new(Vec::new());

/// Makes `path` a folder this process can write in, or says why not.
pub(crate) fn prepare(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path)
        .map_err(|e| format!("cannot make the folder `{}`: {e}", path.display()))?;
    let probe = path.join(format!(".tidegate-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .map_err(|e| format!("cannot write in `{}`: {e}", path.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

impl Disk {
    /// The tier for `config` (cache `cache`): the one open already, or a
    /// new one whose folder is scanned in the background.
    pub(crate) fn open(config: &DiskConfig, cache: &str) -> Result<Arc<Disk>, String> {
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|d| d.strong_count() > 0);
        if let Some(d) = open
            .iter()
            .filter_map(Weak::upgrade)
            .find(|d| d.config == *config)
        {
            return Ok(d);
        }
        prepare(&config.path)?;
        let (tx, rx) = mpsc::channel();
        let deletes = tx.clone();
        let index = Map::builder()
            .max_capacity(config.size)
            .eviction_policy(EvictionPolicy::lru())
            .weigher(|_, f: &Arc<OnDisk>| u32::try_from(f.size).unwrap_or(u32::MAX))
            // (Files are deleted by the writer, not where this runs: a
            // worker thread's lookup may run the index's housekeeping.)
            .eviction_listener(move |_, f: Arc<OnDisk>, _| {
                let _ = deletes.send(Msg::Delete(f.file.clone()));
            })
            .build_with_hasher(super::key::Hasher::new());
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let shared = Arc::new(Shared {
            cache: cache.to_string(),
            root: config.path.clone(),
            size: config.size,
            index,
            epoch: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            skipped: AtomicU64::new(0),
            warned: AtomicU64::new(0),
            scanning: AtomicBool::new(true),
            next_seq: AtomicU64::new(u64::try_from(start.as_micros()).unwrap_or(u64::MAX / 2)),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("cache-disk-{cache}"))
            .spawn(move || writer::run(&s, &rx))
            .map_err(|e| format!("cannot start the disk writer: {e}"))?;
        let d = Arc::new(Disk {
            config: config.clone(),
            shared,
            tx,
            thread: Some(thread),
        });
        open.push(Arc::downgrade(&d));
        Ok(d)
    }

    /// What removals have happened so far: read before an entry goes in
    /// memory, given to [`Disk::write`].
    pub(crate) fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::SeqCst)
    }

    /// Queues `entry` (stored for `key` when the epoch was `epoch`) to
    /// be written; skipped when too many writes wait.
    pub(crate) fn write(&self, key: Bytes, entry: Arc<Entry>, epoch: u64) {
        let s = &self.shared;
        if s.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
            s.queued.fetch_sub(1, Ordering::AcqRel);
            let n = s.skipped.fetch_add(1, Ordering::Relaxed) + 1;
            if s.now_and_then() {
                tracing::warn!(
                    cache = %s.cache,
                    skipped = n,
                    "cache disk: writes skipped, the disk is behind (so far)"
                );
            }
            return;
        }
        let job = Box::new(Job { key, entry, epoch });
        if self.tx.send(Msg::Write(job)).is_err() {
            s.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether the index holds `key` (no file read).
    pub(crate) fn has(&self, key: &Bytes) -> bool {
        self.shared.index.contains_key(key)
    }

    /// What the file for `key` holds (blocking: off the worker threads);
    /// `None` when there is none, or it was corrupt (then it is deleted).
    pub(crate) fn read(&self, key: &Bytes, rules: &Rules) -> Option<Entry> {
        let s = &self.shared;
        let f = s.index.get(key)?;
        let data = match std::fs::read(&f.file) {
            Ok(d) => d,
            Err(e) => {
                // Evicted meanwhile (a lost race), or removed by hand.
                tracing::debug!(cache = %s.cache, file = %f.file.display(), "cache disk: {e}");
                s.forget_file(key, &f);
                return None;
            }
        };
        let why = match format::decode(Bytes::from(data), rules) {
            Ok((k, e)) if k == *key => return Some(e),
            Ok(_) => "another key's file",
            Err(why) => why,
        };
        tracing::warn!(
            cache = %s.cache,
            file = %f.file.display(),
            "cache disk: corrupt file dropped ({why}); fetching from the origin"
        );
        s.forget_file(key, &f);
        let _ = std::fs::remove_file(&f.file);
        None
    }

    /// Drops `key`'s file.
    pub(crate) fn remove(&self, key: &Bytes) {
        let s = &self.shared;
        s.epoch.fetch_add(1, Ordering::SeqCst);
        s.index.invalidate(key);
        if s.scanning.load(Ordering::SeqCst) {
            let _ = self.tx.send(Msg::Forget(key.clone()));
        }
    }

    /// Drops the files of every entry whose URL is `url` (`prefix`:
    /// starts with it), now: they are deleted before this returns.
    pub(crate) fn purge(&self, url: &str, prefix: bool) {
        let s = &self.shared;
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.scanning.load(Ordering::SeqCst) {
            let _ = self.tx.send(Msg::Purge(Arc::from(url), prefix));
        }
        let gone: Vec<_> = s
            .index
            .iter()
            .filter(|(_, f)| matches(&f.url, url, prefix))
            .collect();
        for (k, f) in gone {
            s.forget_file(&k, &f);
            let _ = std::fs::remove_file(&f.file);
        }
    }

    /// Files held, bytes they weigh, writes skipped so far.
    pub(crate) fn usage(&self) -> (u64, u64, u64) {
        let s = &self.shared;
        s.index.run_pending_tasks();
        (
            s.index.entry_count(),
            s.index.weighted_size(),
            s.skipped.load(Ordering::Relaxed),
        )
    }
}

/// Whether a purge of `url` (`prefix`: a prefix) takes `stored`.
fn matches(stored: &str, url: &str, prefix: bool) -> bool {
    match prefix {
        true => stored.starts_with(url),
        false => stored == url,
    }
}

impl Drop for Disk {
    /// Stops the writer (what it has not written is not) and waits for
    /// it: the next tier on this folder starts from its files.
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("config", &self.config)
            .finish()
    }
}
