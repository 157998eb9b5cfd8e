//! The bodies of the cache's part of the request path: a stored body
//! sent to the client ([`CachedBody`]), and an upstream body copied into
//! the store as it streams to the client ([`Storing`], kept by the
//! upstream body: nothing waits for the whole body, and the client's
//! pace is the upstream's).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::cache::policy::{ResponseControl, Times, VaryNames};
use crate::cache::store::{FillGuard, Store, Variant};

use super::super::exchange::UpstreamBody;

/// A stored body (or a range of it) on its way to a client; with the
/// upstream exchange that revalidated it, if one did (its log line
/// counts these bytes, and ends with this body).
pub(crate) struct CachedBody {
    chunks: Arc<[Bytes]>,
    next: usize,
    /// Bytes to skip before the range, and to send.
    skip: u64,
    left: u64,
    upstream: Option<UpstreamBody>,
}

impl CachedBody {
    pub(crate) fn new(
        chunks: Arc<[Bytes]>,
        skip: u64,
        len: u64,
        upstream: Option<UpstreamBody>,
    ) -> CachedBody {
        CachedBody {
            chunks,
            next: 0,
            skip,
            left: len,
            upstream,
        }
    }

    pub(crate) fn left(&self) -> u64 {
        self.left
    }

    /// The next piece to send, if any is left.
    pub(crate) fn next_chunk(&mut self) -> Option<Bytes> {
        while self.left > 0 {
            let mut c = self.chunks.get(self.next)?.clone();
            self.next += 1;
            if self.skip >= c.len() as u64 {
                self.skip -= c.len() as u64;
                continue;
            }
            let _ = c.split_to(self.skip as usize);
            self.skip = 0;
            if c.len() as u64 > self.left {
                c.truncate(self.left as usize);
            }
            self.left -= c.len() as u64;
            if let Some(u) = &mut self.upstream {
                u.sent(c.len());
            }
            if c.is_empty() {
                continue;
            }
            return Some(c);
        }
        self.left = 0;
        // The exchange ends with the last byte (the upstream's body, a
        // 304's, has ended).
        self.upstream = None;
        None
    }
}

/// A response being stored as it streams: what will be its variant, and
/// the body so far.
pub(crate) struct Storing {
    pub(crate) store: Arc<Store>,
    pub(crate) key: Bytes,
    pub(crate) url: String,
    /// Those waiting for this key are told when it ends.
    pub(crate) guard: Option<FillGuard>,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) control: ResponseControl,
    pub(crate) request_time: SystemTime,
    pub(crate) response_time: SystemTime,
    pub(crate) lifetime: std::time::Duration,
    pub(crate) vary: VaryNames,
    pub(crate) vary_values: Vec<Option<Bytes>>,
    /// The stored variant this one replaces.
    pub(crate) replaces: Option<Arc<Variant>>,
    pub(crate) chunks: Vec<Bytes>,
    pub(crate) len: u64,
}

impl Storing {
    /// Keeps `data`; `false`: the body is over the cache's `max_object`
    /// and will not be stored.
    pub(crate) fn data(&mut self, data: &Bytes) -> bool {
        self.len += data.len() as u64;
        if self.len > self.store.config.max_object {
            tracing::debug!(url = %self.url, "not stored: the body is over max_object");
            return false;
        }
        if !data.is_empty() {
            self.chunks.push(data.clone());
        }
        true
    }

    /// The body is complete: stored.
    pub(crate) fn commit(self: Box<Self>) {
        let s = *self;
        let times = Times::new(s.request_time, s.response_time, &s.headers, s.lifetime);
        let v = Variant {
            status: s.status,
            headers: s.headers,
            control: s.control,
            times,
            vary: s.vary,
            vary_values: s.vary_values,
            body: s.chunks.into(),
            len: s.len,
        };
        s.store.put(s.key, &s.url, Arc::new(v), s.replaces.as_ref());
        // Those waiting look again now: it is there.
        drop(s.guard);
    }
}
