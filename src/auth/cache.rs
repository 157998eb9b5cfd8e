//! Each worker thread's record of the credentials it verified: a slow
//! hash (bcrypt at cost 10 takes tens of milliseconds) is computed once
//! per user, password and file, and a client that sends the same
//! `Authorization` on every request then costs one SHA-256 and a lookup.
//!
//! A `thread_local!` map, as the workers are one thread each: no lock, no
//! sharing. Keys are the loaded file's number (a reload reads the file
//! again under a new number, so a changed or removed password is never
//! taken from here) and the SHA-256 of `user:password` (the password
//! itself is not kept). Only successes are recorded. Bounded: at
//! [`CAPACITY`] entries the map is emptied and starts again, which also
//! drops what an old file left.

use std::cell::RefCell;
use std::collections::HashSet;

/// Entries per thread (about 80 bytes each).
pub(super) const CAPACITY: usize = 4096;

/// A verified `user:password` of one loaded file.
pub(super) type Key = (u64, [u8; 32]);

thread_local! {
    static VERIFIED: RefCell<HashSet<Key>> = RefCell::new(HashSet::new());
}

/// The key of `credentials` (`user:password` as sent) for file `file`.
pub(super) fn key(file: u64, credentials: &[u8]) -> Key {
    let digest = ring::digest::digest(&ring::digest::SHA256, credentials);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    (file, out)
}

/// Whether this thread verified `key` already.
pub(super) fn contains(key: &Key) -> bool {
    VERIFIED.with(|v| v.borrow().contains(key))
}

/// Records a verified `key` on this thread.
pub(super) fn insert(key: Key) {
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        if v.len() >= CAPACITY {
            v.clear();
        }
        v.insert(key);
    });
}
