//! Response compression (`compress` on a listener or route): which coding
//! a request accepts ([`negotiate`]), whether a response is one to
//! compress and its head rewritten for it ([`prepare`]), and the encoder
//! that compresses its body frame by frame ([`Encoder`]).
//!
//! What is never compressed: a response to HEAD, statuses other than 200,
//! 403 and 404 (nginx's set: not 206 ranges, not 204/304 without a body),
//! a body already encoded (`Content-Encoding` other than `identity`), one
//! marked `Cache-Control: no-transform` (RFC 9110 §7.7), a media type not
//! in `types`, one declared shorter than `min_size`. A compressed response
//! loses `Content-Length` (its length is not known before it ends) and
//! `Accept-Ranges` (ranges of the compressed form are not served), gets
//! `Content-Encoding`, `Vary: Accept-Encoding`, and a strong `ETag` made
//! weak (RFC 9110 §8.8.3: the bytes differ from the identity form's).
//! Every response that could have been compressed gets the `Vary`, so
//! that a cache keeps the forms apart.

pub(crate) mod negotiate;

use std::io::Write;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use crate::config::compress::{Coding, Compress};

pub(crate) use negotiate::negotiate;

/// Whether `status`'s response to `method` may be compressed.
#[inline]
pub(crate) fn eligible(method: &Method, status: StatusCode) -> bool {
    *method != Method::HEAD
        && matches!(
            status,
            StatusCode::OK | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
        )
}

/// Whether the response with head `h` gets `coding` (the request's
/// choice, or `None` if it accepts none of `c`'s): rewrites the head for
/// it and returns the encoder when it does.
pub(crate) fn prepare(c: &Compress, coding: Option<Coding>, h: &mut HeaderMap) -> Option<Encoder> {
    if let Some(e) = h.get(header::CONTENT_ENCODING) {
        if !e.as_bytes().eq_ignore_ascii_case(b"identity") {
            return None;
        }
    }
    let media = h.get(header::CONTENT_TYPE)?.to_str().ok()?;
    if !c.takes(media) || no_transform(h) {
        return None;
    }
    let length = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|n| n < c.min_size) {
        return None;
    }
    // The form depends on Accept-Encoding from here on, sent or not.
    if !vary_names_accept_encoding(h) {
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    let coding = coding?;
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::ACCEPT_RANGES);
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    if let Some(tag) = h.get(header::ETAG) {
        if !tag.as_bytes().starts_with(b"W/") {
            let mut weak = Vec::with_capacity(tag.len() + 2);
            weak.extend_from_slice(b"W/");
            weak.extend_from_slice(tag.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                h.insert(header::ETAG, v);
            }
        }
    }
    Some(Encoder::new(c, coding))
}

fn no_transform(h: &HeaderMap) -> bool {
    h.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    })
}

fn vary_names_accept_encoding(h: &HeaderMap) -> bool {
    h.get_all(header::VARY).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|n| {
            let n = n.trim_ascii();
            n == b"*" || n.eq_ignore_ascii_case(b"accept-encoding")
        })
    })
}

/// One body's compressor: data in, compressed bytes out, flushed after
/// every piece so that nothing waits for more input.
pub(crate) enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    /// Finished (or failed).
    Done,
}

/// brotli's window: 2^19 bytes (512 KiB, nginx's brotli module's default)
/// rather than 4 MiB, to bound the memory of each compressed response.
const BR_WINDOW_LOG: u32 = 19;
/// zstd's window, bounded as brotli's.
const ZSTD_WINDOW_LOG: u32 = 19;

impl Encoder {
    fn new(c: &Compress, coding: Coding) -> Encoder {
        match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(c.gzip_level),
            )),
            Coding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                c.br_level,
                BR_WINDOW_LOG,
            ))),
            Coding::Zstd => match zstd::stream::write::Encoder::new(Vec::new(), c.zstd_level)
                .and_then(|mut e| {
                    e.window_log(ZSTD_WINDOW_LOG)?;
                    Ok(e)
                }) {
                Ok(e) => Encoder::Zstd(e),
                // Only an allocation failure: such a body is then cut.
                Err(_) => Encoder::Done,
            },
        }
    }

    /// Compresses `data` and flushes: what the client can decode so far.
    pub(crate) fn chunk(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        self.write(data, true)
    }

    /// Compresses `data` without flushing (a body that is all there: the
    /// coding chooses its blocks), what it made of it so far.
    pub(crate) fn feed(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        self.write(data, false)
    }

    fn write(&mut self, data: &[u8], flush: bool) -> std::io::Result<Bytes> {
        fn step<W: Write>(w: &mut W, data: &[u8], flush: bool) -> std::io::Result<()> {
            w.write_all(data)?;
            match flush {
                true => w.flush(),
                false => Ok(()),
            }
        }
        let out = match self {
            Encoder::Gzip(e) => {
                step(e, data, flush)?;
                std::mem::take(e.get_mut())
            }
            Encoder::Br(e) => {
                step(e.as_mut(), data, flush)?;
                std::mem::take(e.get_mut())
            }
            Encoder::Zstd(e) => {
                step(e, data, flush)?;
                std::mem::take(e.get_mut())
            }
            Encoder::Done => return Err(std::io::Error::other("compression failed")),
        };
        Ok(Bytes::from(out))
    }

    /// Ends the stream: its last bytes.
    pub(crate) fn finish(&mut self) -> std::io::Result<Bytes> {
        let out = match std::mem::replace(self, Encoder::Done) {
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Br(e) => e.into_inner(),
            Encoder::Zstd(e) => e.finish()?,
            Encoder::Done => return Err(std::io::Error::other("compression failed")),
        };
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Compress {
        crate::config::compress::tests_default()
    }

    fn head(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_head_is_rewritten_for_the_coding() {
        let c = config();
        let mut h = head(&[
            ("content-type", "text/html"),
            ("content-length", "5000"),
            ("accept-ranges", "bytes"),
            ("etag", "\"abc\""),
            ("vary", "Cookie"),
        ]);
        assert!(prepare(&c, Some(Coding::Gzip), &mut h).is_some());
        assert_eq!(h["content-encoding"], "gzip");
        assert!(!h.contains_key("content-length") && !h.contains_key("accept-ranges"));
        assert_eq!(h["etag"], "W/\"abc\"");
        let vary: Vec<_> = h.get_all("vary").iter().collect();
        assert_eq!(vary, ["Cookie", "accept-encoding"]);
    }

    #[test]
    fn what_is_left_alone() {
        let c = config();
        for pairs in [
            &[("content-type", "image/png")][..],
            &[("content-type", "text/html"), ("content-encoding", "br")],
            &[("content-type", "text/html"), ("content-length", "10")],
            &[
                ("content-type", "text/html"),
                ("cache-control", "public, No-Transform"),
            ],
            &[],
        ] {
            let mut h = head(pairs);
            assert!(
                prepare(&c, Some(Coding::Gzip), &mut h).is_none(),
                "{pairs:?}"
            );
            assert!(!h.contains_key("content-encoding") || pairs.len() == 2);
        }
        // A client that accepts none still gets the Vary.
        let mut h = head(&[("content-type", "text/html")]);
        assert!(prepare(&c, None, &mut h).is_none());
        assert_eq!(h["vary"], "accept-encoding");
        assert!(!eligible(&Method::HEAD, StatusCode::OK));
        assert!(!eligible(&Method::GET, StatusCode::PARTIAL_CONTENT));
        assert!(eligible(&Method::POST, StatusCode::NOT_FOUND));
    }

    #[test]
    fn every_coding_round_trips_piece_by_piece() {
        use std::io::Read;
        let c = config();
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("line {i} of the body\n").into_bytes())
            .collect();
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            let mut h = head(&[("content-type", "text/plain")]);
            let mut e = prepare(&c, Some(coding), &mut h).unwrap();
            let mut out = Vec::new();
            for piece in text.chunks(7000) {
                let b = e.chunk(piece).unwrap();
                // Flushed: each piece yields output at once.
                assert!(!b.is_empty(), "{coding:?}");
                out.extend_from_slice(&b);
            }
            out.extend_from_slice(&e.finish().unwrap());
            assert!(out.len() < text.len() / 4, "{coding:?}: {}", out.len());
            let mut back = Vec::new();
            match coding {
                Coding::Gzip => flate2::read::GzDecoder::new(&out[..])
                    .read_to_end(&mut back)
                    .unwrap(),
                Coding::Br => brotli::Decompressor::new(&out[..], 4096)
                    .read_to_end(&mut back)
                    .unwrap(),
                Coding::Zstd => zstd::stream::read::Decoder::new(&out[..])
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap(),
            };
            assert!(back == text, "{coding:?}");
        }
    }
}
