//! A route's verification keys: a JWKS (RFC 7517) parsed into the keys
//! that can verify a signature, each with the algorithms its type allows,
//! and the [`Keys`] a request reads them from.
//!
//! Requests read the set through an `ArcSwap`: one atomic load, no lock.
//! A `jwks_url` set is replaced whole by the fetch thread (`fetch.rs`).
//! A token whose `kid` the set lacks asks that thread for a fetch now,
//! at most once per [`MIN_ASK_INTERVAL`] per set; the request then waits
//! for the fetch in flight, at most [`WAIT`]. A request that finds no
//! fetch in flight and the last ask too recent is refused at once (401):
//! a flood of made-up `kid`s costs the issuer at most one fetch per
//! interval. (That slow path takes tokio's `Notify` and `watch`, which
//! lock briefly; a known `kid` never reaches it.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{watch, Notify};

/// Least time between two fetches asked for by unknown `kid`s.
pub(crate) const MIN_ASK_INTERVAL: Duration = Duration::from_secs(10);
/// Longest a request with an unknown `kid` waits for a fetch.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// One key of the set.
pub(crate) struct Key {
    pub(crate) key: DecodingKey,
    /// What its type allows (`kty`, `crv`), narrowed to its `alg` if it
    /// has one: a token's `alg` must be one of these.
    pub(crate) algorithms: Vec<Algorithm>,
}

/// A parsed JWKS.
#[derive(Default)]
pub(crate) struct KeySet {
    /// Unique per set parsed (0: the empty set), the key of the threads'
    /// caches of verified tokens (`cache.rs`).
    pub(crate) id: u64,
    by_kid: HashMap<String, Key>,
    /// Keys without a `kid`.
    unnamed: Vec<Key>,
}

impl KeySet {
    /// Parses a JWKS document. Keys that cannot verify a signature here
    /// (`use: enc`, symmetric `oct` keys, unknown types or curves) are
    /// skipped; a set with none left is refused.
    pub(crate) fn parse(text: &str) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let mut set = KeySet {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            ..KeySet::default()
        };
        let mut skipped = 0;
        for v in doc.keys {
            let Some((kid, key)) = serde_json::from_value::<Jwk>(v)
                .ok()
                .and_then(|j| usable(&j))
            else {
                skipped += 1;
                continue;
            };
            match kid {
                Some(kid) => {
                    set.by_kid.insert(kid, key);
                }
                None => set.unnamed.push(key),
            }
        }
        if set.len() == 0 {
            return Err(format!(
                "no signature key of a usable type (RSA, EC P-256/P-384, OKP Ed25519) among {skipped}"
            ));
        }
        Ok(set)
    }

    /// How many keys it has.
    pub(crate) fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }

    /// The key for a token's `kid`; a token without one takes the only
    /// key of a one-key set.
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None if self.len() == 1 => self.by_kid.values().chain(&self.unnamed).next(),
            None => None,
        }
    }
}

/// `jwk` as a verification key, with its `kid`.
fn usable(jwk: &Jwk) -> Option<(Option<String>, Key)> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => return None,
        },
        // Symmetric: HMAC is never accepted.
        AlgorithmParameters::OctetKey(_) => return None,
    };
    let algorithms: Vec<Algorithm> = match &jwk.common.key_algorithm {
        None => by_type.to_vec(),
        Some(ka) => {
            let named: Algorithm = format!("{ka:?}").parse().ok()?;
            by_type.iter().copied().filter(|a| *a == named).collect()
        }
    };
    if algorithms.is_empty() {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((jwk.common.key_id.clone(), Key { key, algorithms }))
}

/// Where a `jwks_url` set comes from.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    pub(crate) url: http::Uri,
    /// Time between two scheduled fetches (`jwks_refresh`).
    pub(crate) refresh: Duration,
}

/// A route's key set, read by its requests and, for a `jwks_url`,
/// replaced by the fetch thread.
pub(crate) struct Keys {
    set: ArcSwap<KeySet>,
    pub(crate) remote: Option<Remote>,
    born: Instant,
    /// When an unknown `kid` last asked for a fetch: milliseconds since
    /// `born`, plus one; 0: never.
    asked: AtomicU64,
    /// A fetch is in flight (or, before the first, due).
    pub(crate) fetching: AtomicBool,
    /// Wakes the fetch thread for an asked fetch.
    pub(crate) wake: Notify,
    /// Told when a fetch ends (good or not): what waiting requests watch.
    pub(crate) done: watch::Sender<()>,
    /// Counts ended fetches, read with no lock (see [`Keys::refreshed`]).
    pub(crate) ended: AtomicU64,
}

impl Keys {
    /// The keys of a `jwks_file`.
    pub(crate) fn fixed(set: KeySet) -> Keys {
        Keys::new(set, None)
    }

    /// The keys of a `jwks_url`: none until the first fetch.
    pub(crate) fn remote(remote: Remote) -> Keys {
        Keys::new(KeySet::default(), Some(remote))
    }

    fn new(set: KeySet, remote: Option<Remote>) -> Keys {
        Keys {
            fetching: AtomicBool::new(remote.is_some()),
            set: ArcSwap::from_pointee(set),
            remote,
            born: Instant::now(),
            asked: AtomicU64::new(0),
            wake: Notify::new(),
            done: watch::Sender::new(()),
            ended: AtomicU64::new(0),
        }
    }

    /// The set in force (no lock).
    pub(crate) fn load(&self) -> arc_swap::Guard<std::sync::Arc<KeySet>> {
        self.set.load()
    }

    /// Puts a fetched set in force.
    pub(crate) fn store(&self, set: KeySet) {
        self.set.store(std::sync::Arc::new(set));
    }

    /// How many fetches have ended: read before the set is, for
    /// [`refreshed`](Self::refreshed).
    pub(crate) fn fetches(&self) -> u64 {
        self.ended.load(Ordering::Acquire)
    }

    /// For a token whose `kid` is not in the set as it was after `seen`
    /// fetches: `true` at once if one ended since (the set may be new),
    /// else waits for a fetch (one in flight, or one asked now if the
    /// last ask is old enough), at most [`WAIT`]. `false` without one:
    /// the set stays as it is. (A fetch stores its set, then counts
    /// itself ended and tells `done`, then clears `fetching`: read in the other
    /// order here, a fetch that ends meanwhile is never asked for again.)
    pub(crate) async fn refreshed(&self, seen: u64) -> bool {
        if self.remote.is_none() {
            return false;
        }
        let mut finished = self.done.subscribe();
        let fetching = self.fetching.load(Ordering::Acquire);
        if self.fetches() != seen {
            return true;
        }
        if !fetching && !self.ask() {
            return false;
        }
        matches!(
            tokio::time::timeout(WAIT, finished.changed()).await,
            Ok(Ok(()))
        )
    }

    /// Asks the fetch thread for a fetch, unless one was asked less than
    /// [`MIN_ASK_INTERVAL`] ago.
    fn ask(&self) -> bool {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.asked.load(Ordering::Relaxed);
        let min = MIN_ASK_INTERVAL.as_millis() as u64;
        if last != 0 && now.saturating_sub(last) < min {
            return false;
        }
        if self
            .asked
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.wake.notify_one();
        true
    }
}
