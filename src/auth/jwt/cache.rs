//! Each worker thread's record of the tokens it verified: a signature
//! check (an ES256 verification is some hundreds of thousands of
//! instructions) is done once per token, key set and thread, and a
//! client that sends the same token on every request then costs one
//! SHA-256 of it and a lookup.
//!
//! A `thread_local!` map, as the workers are one thread each: no lock,
//! no sharing. Keys are the key set's number (a fetched or reloaded set
//! gets a new one, so a token whose key was withdrawn is never taken from
//! here) and the SHA-256 of the whole token (signature included). An
//! entry keeps what the token let through (its claim fields, its `sub`)
//! and its `exp`: past `exp` plus the clock skew it is dropped and the
//! token checked again (and refused). Only valid tokens are recorded.
//! Bounded: at [`CAPACITY`] entries the map is emptied and starts again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};

/// Entries per thread.
const CAPACITY: usize = 4096;

/// A verified token of one key set.
pub(super) type Key = (u64, [u8; 32]);

/// What a verified token lets through.
#[derive(Clone)]
pub(crate) struct Passed {
    /// The claim fields to set.
    pub(crate) fields: Vec<(HeaderName, HeaderValue)>,
    pub(crate) sub: Option<Arc<str>>,
    /// Unix seconds past which (with the skew) the entry is stale.
    pub(crate) until: u64,
}

thread_local! {
    static VERIFIED: RefCell<HashMap<Key, Passed>> = RefCell::new(HashMap::new());
}

/// The key of `token` under key set `set`.
pub(super) fn key(set: u64, token: &str) -> Key {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    (set, out)
}

/// What this thread recorded for `key`, if still within its `exp`.
pub(super) fn get(key: &Key, now: u64) -> Option<Passed> {
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        match v.get(key) {
            Some(p) if now <= p.until => Some(p.clone()),
            Some(_) => {
                v.remove(key);
                None
            }
            None => None,
        }
    })
}

/// Records a verified token on this thread.
pub(super) fn insert(key: Key, passed: Passed) {
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        if v.len() >= CAPACITY {
            v.clear();
        }
        v.insert(key, passed);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_past_its_exp_is_dropped_and_sets_are_apart() {
        let passed = Passed {
            fields: Vec::new(),
            sub: Some("a".into()),
            until: 100,
        };
        let k = key(7, "t.o.k");
        insert(k, passed);
        assert!(get(&k, 100).is_some());
        assert!(get(&key(8, "t.o.k"), 100).is_none());
        assert!(get(&k, 101).is_none());
        assert!(get(&k, 50).is_none(), "removed when found stale");
    }
}
