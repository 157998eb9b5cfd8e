//! The bodies of the cache's part of the request path: a stored body
//! sent to the client ([`CachedBody`], compressed on the way when the
//! route compresses: the first hit in a coding makes that form, which is
//! kept with the stored response for the next ones), and an upstream
//! body copied into the store as it streams to the client ([`Storing`],
//! kept by the upstream body: nothing waits for the whole body, and the
//! client's pace is the upstream's).

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};

use crate::cache::entry::Encoded;
use crate::cache::growing;
use crate::cache::store::{FillGuard, Store, Variant};
use crate::compress::Encoder;
use crate::config::compress::Coding;

/// A stored body (or a range of it) on its way to a client, or one being
/// stored (streamed as it grows, to a miss that waited for its fetch);
/// compressed on the way when a route's `compress` says so
/// ([`CachedBody::encode`]).
pub(crate) struct CachedBody {
    pieces: Pieces,
    /// Whole (not a range): it may be compressed.
    whole: bool,
    /// A whole stored body's variant (where its compressed forms are
    /// kept), with the store and key holding it.
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
    /// The coded form being kept (when there is a stored variant).
    out: Joined,
    len: u64,
    done: bool,
}

enum Pieces {
    Stored(Reader),
    Growing(growing::Reader),
}

impl Pieces {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<std::io::Result<Bytes>>> {
        match self {
            Pieces::Stored(r) => Poll::Ready(r.next_chunk().map(Ok)),
            Pieces::Growing(r) => r
                .poll_next(cx)
                .map(|p| p.map(|p| p.map_err(std::io::Error::other))),
        }
    }
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
            pieces: Pieces::Stored(Reader {
                chunks,
                next: 0,
                skip,
                left: len,
            }),
            whole: false,
            source: None,
            encoding: None,
        }
    }

    /// `source`'s whole body.
    pub(crate) fn whole(source: Source) -> CachedBody {
        let mut b = CachedBody::new(source.variant.body.clone(), 0, source.variant.len);
        b.whole = true;
        b.source = Some(source);
        b
    }

    /// The body of a response being stored, as it grows.
    pub(crate) fn growing(g: Arc<growing::Growing>) -> CachedBody {
        CachedBody {
            pieces: Pieces::Growing(growing::Reader::new(g)),
            whole: true,
            source: None,
            encoding: None,
        }
    }

    /// Whether it is a whole body (one that may be compressed).
    pub(crate) fn is_whole(&self) -> bool {
        self.whole
    }

    /// The body in `coding`: its kept form when there is one (`Some`: its
    /// length), else compressed by `encoder` as it is sent (and kept with
    /// its stored variant, if it has one, once complete).
    pub(crate) fn encode(&mut self, coding: Coding, encoder: Encoder) -> Option<u64> {
        if let Some(e) = self
            .source
            .as_ref()
            .and_then(|s| s.variant.encoded.get(coding))
        {
            let len = e.len;
            self.pieces = Pieces::Stored(Reader {
                chunks: e.body.clone(),
                next: 0,
                skip: 0,
                left: len,
            });
            self.source = None;
            return Some(len);
        }
        self.encoding = Some(Box::new(Encoding {
            encoder,
            coding,
            out: Joined::default(),
            len: 0,
            done: false,
        }));
        None
    }

    /// Whether all of it was sent.
    pub(crate) fn is_end(&self) -> bool {
        match (&self.encoding, &self.pieces) {
            (Some(e), _) => e.done,
            (None, Pieces::Stored(r)) => r.left == 0,
            (None, Pieces::Growing(r)) => r.is_end(),
        }
    }

    /// Bytes left to send, when known.
    pub(crate) fn left(&self) -> Option<u64> {
        match (&self.encoding, &self.pieces) {
            (None, Pieces::Stored(r)) => Some(r.left),
            _ => None,
        }
    }

    /// The next piece to send, if any is left.
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::io::Result<Bytes>>> {
        let Some(enc) = self.encoding.as_deref_mut() else {
            return self.pieces.poll_next(cx);
        };
        while !enc.done {
            let (out, last) = match self.pieces.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(c))) => (enc.encoder.feed(&c), false),
                Poll::Ready(Some(Err(e))) => (Err(e), false),
                Poll::Ready(None) => (enc.encoder.finish(), true),
            };
            let out = match out {
                Ok(out) => out,
                Err(e) => {
                    enc.done = true;
                    enc.out = Joined::default();
                    return Poll::Ready(Some(Err(e)));
                }
            };
            enc.done = last;
            if !out.is_empty() {
                enc.len += out.len() as u64;
                if self.source.is_some() {
                    enc.out.push(&out);
                }
            }
            if last {
                if let Some(src) = &self.source {
                    let e = Encoded {
                        body: std::mem::take(&mut enc.out).finish(),
                        len: enc.len,
                    };
                    src.variant.encoded.set(enc.coding, e);
                    src.store.reweigh(&src.key, &src.variant);
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(out)));
            }
        }
        Poll::Ready(None)
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
    pub(crate) body: Joined,
    pub(crate) len: u64,
    /// Its length was declared (and is within `max_object`): it may be
    /// shown, as it grows, to misses that wait for it.
    pub(crate) declared: bool,
    /// What those waiting for it stream.
    pub(crate) writer: Option<growing::Writer>,
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
            self.body.push(data);
            if let Some(w) = &mut self.writer {
                w.push(data.clone());
            }
        }
        true
    }

    /// Shows the response, as it grows, to the misses that wait (or will
    /// wait) for this fetch: from its head on when its length is
    /// declared (one that may turn out too large is not shown: those
    /// streaming it would be cut off).
    pub(crate) fn offer(&mut self) {
        let Some(guard) = self.guard.as_ref().filter(|_| self.declared) else {
            return;
        };
        let w = growing::Writer::new(Arc::new(self.variant.head()));
        guard.publish(w.growing());
        self.writer = Some(w);
    }

    /// Whether misses stream it as it grows.
    pub(crate) fn streamed(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| w.readers() > 0)
    }

    /// The body is complete: stored.
    pub(crate) fn commit(self: Box<Self>) {
        let s = *self;
        if let Some(w) = s.writer {
            w.finish();
        }
        let mut v = s.variant;
        v.body = s.body.finish();
        v.len = s.len;
        s.store.put(s.key, &s.url, Arc::new(v), s.replaces.as_ref());
        // Those waiting look again now: it is there.
        drop(s.guard);
    }
}

/// The most bytes of a stored body joined into one piece.
const PIECE: usize = 256 * 1024;

/// A body kept as it comes (each upstream read's chunk: 2 KiB, then
/// larger), joined into pieces of up to [`PIECE`] bytes as the chunks
/// come: a hit then goes out in one write per piece, not one per read
/// that brought it; the cache holds no slice of a larger read buffer; and
/// the copy is spread over the body's arrival, not made at its end. A body
/// of one chunk, and a chunk of [`PIECE`] or more, are kept as they are.
#[derive(Debug, Default)]
pub(crate) struct Joined {
    done: Vec<Bytes>,
    /// The first chunk, kept as it is until a second comes.
    first: Option<Bytes>,
    piece: BytesMut,
    /// The bytes not yet joined, when the length is known: a piece is
    /// given its room at once.
    left: Option<u64>,
}

impl Joined {
    /// For a body of `len` bytes, if known.
    pub(crate) fn new(len: Option<u64>) -> Joined {
        Joined {
            done: Vec::new(),
            first: None,
            piece: BytesMut::new(),
            left: len,
        }
    }

    pub(crate) fn push(&mut self, c: &Bytes) {
        if self.done.is_empty() && self.piece.is_empty() && self.first.is_none() {
            self.first = Some(c.clone());
            return;
        }
        if let Some(f) = self.first.take() {
            self.join(&f);
        }
        self.join(c);
    }

    fn join(&mut self, c: &Bytes) {
        if !self.piece.is_empty() && self.piece.len() + c.len() > PIECE {
            self.done.push(self.piece.split().freeze());
        }
        if self.piece.is_empty() && c.len() >= PIECE {
            self.done.push(c.clone());
        } else {
            if self.piece.is_empty() {
                if let Some(left) = self.left {
                    self.piece
                        .reserve(usize::try_from(left).unwrap_or(PIECE).min(PIECE));
                }
            }
            self.piece.extend_from_slice(c);
        }
        self.left = self.left.map(|l| l.saturating_sub(c.len() as u64));
    }

    /// The pieces, in order.
    pub(crate) fn finish(mut self) -> Arc<[Bytes]> {
        if let Some(f) = self.first.take() {
            self.done.push(f);
        }
        if !self.piece.is_empty() {
            self.done.push(self.piece.freeze());
        }
        self.done.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_joined_into_pieces_in_order() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let cut = |sizes: &[usize]| {
            let mut at = 0;
            sizes
                .iter()
                .map(|&n| {
                    let c = Bytes::copy_from_slice(&data[at..at + n]);
                    at += n;
                    c
                })
                .collect::<Vec<_>>()
        };
        // Joined as they come, with the length known and not.
        let both = |sizes: &[usize]| {
            let total: usize = sizes.iter().sum();
            let join = |mut j: Joined| {
                for c in cut(sizes) {
                    j.push(&c);
                }
                j.finish()
            };
            let known = join(Joined::new(Some(total as u64)));
            let unknown = join(Joined::default());
            assert_eq!(known, unknown);
            assert_eq!(known.concat(), data[..total]);
            known.iter().map(Bytes::len).collect::<Vec<_>>()
        };
        // A 100 KiB body as an upstream's reads bring it: one piece.
        let sizes = [1_700, 4_096, 8_192, 16_384, 32_768, 39_260];
        assert_eq!(both(&sizes), [102_400]);
        // Past a piece: pieces of up to PIECE bytes, a large chunk kept.
        let sizes = [65_536; 6]
            .into_iter()
            .chain([300_000, 10])
            .collect::<Vec<_>>();
        assert_eq!(both(&sizes), [262_144, 131_072, 300_000, 10]);
        // One chunk, or none: as they are.
        assert_eq!(both(&[5]), [5]);
        assert_eq!(both(&[]), [0usize; 0]);
    }
}
