//! What a cache stores: per key an [`Entry`], its variants each a whole
//! response ([`Variant`]), the same in memory and (read back) from the
//! disk tier.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::policy::{ResponseControl, Times, VaryNames};

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
}

impl Variant {
    /// Bytes it holds, roughly: what the budget counts.
    pub(super) fn weight(&self) -> u64 {
        let head: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.len + head as u64 + 256
    }
}

/// What one key holds.
pub(crate) struct Entry {
    /// The URL it was stored for (what purges match).
    pub(crate) url: Arc<str>,
    /// Newest first.
    pub(crate) variants: Vec<Arc<Variant>>,
}
