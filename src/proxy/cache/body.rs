//! The bodies of the cache's part of the request path: a stored body
//! sent to the client ([`CachedBody`], compressed on the way when the
//! route compresses: the first hit in a coding makes that form, which is
//! kept with the stored response for the next ones), and an upstream body copied into
//! the store as it streams to the client ([`Storing`], kept by the
//! upstream body: nothing waits for the whole body, and the client's
//! pace is the upstream's).

use std::sync::Arc;

use bytes::Bytes;

use crate::cache::entry::Encoded;
use crate::cache::store::{FillGuard, Store, Variant};
use crate::compress::Encoder;
use crate::config::compress::Coding;

/// A stored body (or a range of it) on its way to a client, compressed
/// on the way when a route's `compress` says so ([`CachedBody::encode`]).
pub(crate) struct CachedBody {
    reader: Reader,
    /// A whole body's variant (where its compressed forms are kept), with
    /// the store and key holding it.
    source: Option<Source>,
    encoding: Option<Box<Encoding>>,
}

/// Where a whole body came from.
pub(crate) struct Source {
    pub(crate) variant: Arc<Variant>,
    pub(crate) store: Arc<Store>,
    pub(crate) key: Bytes,
}

/// A body being compressed, and what it made so far (kept with its
/// variant once complete).
struct Encoding {
    encoder: Encoder,
    coding: Coding,
    out: Vec<Bytes>,
    len: u64,
    done: bool,
}

/// The stored chunks, from `skip` for `left` bytes.
struct Reader {
    chunks: Arc<[Bytes]>,
    next: usize,
    skip: u64,
    left: u64,
}

impl Reader {
    fn next_chunk(&mut self) -> Option<Bytes> {
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
            if c.is_empty() {
                continue;
            }
            return Some(c);
        }
        self.left = 0;
        None
    }
}

impl CachedBody {
    /// `len` bytes of `chunks` from `skip` (a range).
    pub(crate) fn new(chunks: Arc<[Bytes]>, skip: u64, len: u64) -> CachedBody {
        CachedBody {
            reader: Reader {
                chunks,
                next: 0,
                skip,
                left: len,
            },
            source: None,
            encoding: None,
        }
    }

    /// `source`'s whole body.
    pub(crate) fn whole(source: Source) -> CachedBody {
        let mut b = CachedBody::new(source.variant.body.clone(), 0, source.variant.len);
        b.source = Some(source);
        b
    }

    /// Whether it is a whole stored body (one that may be compressed).
    pub(crate) fn is_whole(&self) -> bool {
        self.source.is_some()
    }

    /// The body in `coding`: its kept form when there is one (`Some`: its
    /// length), else compressed by `encoder` as it is sent, and kept
    /// with its variant once complete.
    pub(crate) fn encode(&mut self, coding: Coding, encoder: Encoder) -> Option<u64> {
        let src = self.source.as_ref()?;
        if let Some(e) = src.variant.encoded.get(coding) {
            let len = e.len;
            self.reader = Reader {
                chunks: e.body.clone(),
                next: 0,
                skip: 0,
                left: len,
            };
            self.source = None;
            return Some(len);
        }
        self.encoding = Some(Box::new(Encoding {
            encoder,
            coding,
            out: Vec::new(),
            len: 0,
            done: false,
        }));
        None
    }

    /// Whether all of it was sent.
    pub(crate) fn is_end(&self) -> bool {
        match &self.encoding {
            Some(e) => e.done,
            None => self.reader.left == 0,
        }
    }

    /// Bytes left to send, when known.
    pub(crate) fn left(&self) -> Option<u64> {
        match &self.encoding {
            Some(_) => None,
            None => Some(self.reader.left),
        }
    }

    /// The next piece to send, if any is left.
    pub(crate) fn next_chunk(&mut self) -> Option<std::io::Result<Bytes>> {
        let Some(enc) = self.encoding.as_deref_mut() else {
            return self.reader.next_chunk().map(Ok);
        };
        while !enc.done {
            let (out, last) = match self.reader.next_chunk() {
                Some(c) => (enc.encoder.feed(&c), false),
                None => (enc.encoder.finish(), true),
            };
            let out = match out {
                Ok(out) => out,
                Err(e) => {
                    enc.done = true;
                    enc.out = Vec::new();
                    return Some(Err(e));
                }
            };
            enc.done = last;
            if !out.is_empty() {
                enc.len += out.len() as u64;
                enc.out.push(out.clone());
            }
            if last {
                if let Some(src) = &self.source {
                    let e = Encoded {
                        body: std::mem::take(&mut enc.out).into(),
                        len: enc.len,
                    };
                    src.variant.encoded.set(enc.coding, e);
                    src.store.reweigh(&src.key, &src.variant);
                }
            }
            if !out.is_empty() {
                return Some(Ok(out));
            }
        }
        None
    }
}

/// A response being stored as it streams: its variant (the head), and
/// the body so far.
pub(crate) struct Storing {
    pub(crate) store: Arc<Store>,
    pub(crate) key: Bytes,
    pub(crate) url: String,
    /// Those waiting for this key are told when it ends.
    pub(crate) guard: Option<FillGuard>,
    /// The head, with no body yet.
    pub(crate) variant: Variant,
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
        let mut v = s.variant;
        v.body = s.chunks.into();
        v.len = s.len;
        s.store.put(s.key, &s.url, Arc::new(v), s.replaces.as_ref());
        // Those waiting look again now: it is there.
        drop(s.guard);
    }
}
