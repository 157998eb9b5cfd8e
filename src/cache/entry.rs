//! What a cache stores: per key an [`Entry`], its variants each a whole
//! response ([`Variant`]), the same in memory and (read back) from the
//! disk tier.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::policy::{ResponseControl, Times, VaryNames};
use crate::config::compress::Coding;

/// One stored response.
pub(crate) struct Variant {
    pub(crate) status: StatusCode,
    /// Its fields as stored (what must not be stored dropped).
    pub(crate) headers: HeaderMap,
    /// Its directives, read once when stored.
    pub(crate) control: ResponseControl,
    pub(crate) times: Times,
    /// The fields it varies on, and the request's values of them.
    pub(crate) vary: VaryNames,
    pub(crate) vary_values: Vec<Option<Bytes>>,
    /// The body, as it came.
    pub(crate) body: Arc<[Bytes]>,
    pub(crate) len: u64,
    /// The body compressed, per coding, once a route's `compress` made
    /// that form for a hit (memory only: the disk tier keeps the body as
    /// it came).
    pub(crate) encoded: Encodings,
}

/// A stored body in each coding made of it so far: each set once, read
/// without a lock.
#[derive(Default, Clone)]
pub(crate) struct Encodings([OnceLock<Encoded>; 3]);

/// A stored body in one coding.
#[derive(Clone)]
pub(crate) struct Encoded {
    pub(crate) body: Arc<[Bytes]>,
    pub(crate) len: u64,
}

fn slot(c: Coding) -> usize {
    match c {
        Coding::Zstd => 0,
        Coding::Br => 1,
        Coding::Gzip => 2,
    }
}

impl Encodings {
    pub(crate) fn get(&self, c: Coding) -> Option<&Encoded> {
        self.0[slot(c)].get()
    }

    /// Keeps `e` as the body in `c`, unless one is kept already.
    pub(crate) fn set(&self, c: Coding, e: Encoded) {
        let _ = self.0[slot(c)].set(e);
    }

    fn len(&self) -> u64 {
        self.0.iter().filter_map(|e| e.get()).map(|e| e.len).sum()
    }
}

impl Variant {
    /// The same head, with no body (what a response being stored shows
    /// those streaming it).
    pub(crate) fn head(&self) -> Variant {
        Variant {
            status: self.status,
            headers: self.headers.clone(),
            control: self.control.clone(),
            times: self.times,
            vary: self.vary.clone(),
            vary_values: self.vary_values.clone(),
            body: Arc::new([]),
            len: 0,
            encoded: Encodings::default(),
        }
    }

    /// Bytes it holds, roughly: what the budget counts.
    pub(super) fn weight(&self) -> u64 {
        let head: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.len + self.encoded.len() + head as u64 + 256
    }
}

/// What one key holds.
pub(crate) struct Entry {
    /// The URL it was stored for (what purges match).
    pub(crate) url: Arc<str>,
    /// Newest first.
    pub(crate) variants: Vec<Arc<Variant>>,
}

/// A stored 200 with no fields and no body, for tests.
#[cfg(test)]
pub(crate) fn tests_variant() -> Variant {
    let h = HeaderMap::new();
    let rules = super::policy::Rules::default();
    let now = std::time::SystemTime::now();
    Variant {
        status: StatusCode::OK,
        control: ResponseControl::parse(&h, &rules),
        times: Times::new(now, now, &h, std::time::Duration::from_secs(60)),
        headers: h,
        vary: VaryNames(Vec::new()),
        vary_values: Vec::new(),
        body: Arc::new([]),
        len: 0,
        encoded: Encodings::default(),
    }
}
