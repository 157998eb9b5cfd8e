//! Static files, the pure part: a request path made a path under the root
//! (`path.rs`), preconditions (`conditional.rs`), `Range` (`range.rs`),
//! `Content-Type` (`mime.rs`), and [`answer`]: the status, head and body
//! parts (bytes of our own, spans of the file) a GET or HEAD gets for one
//! representation of a file. The file system is the request path's
//! (`proxy/static_files.rs`), which streams the parts.

pub(crate) mod conditional;
pub(crate) mod mime;
pub(crate) mod path;
pub(crate) mod range;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use crate::config::compress::Coding;
use conditional::{Precondition, Validators};
use range::Ranges;

/// One representation of a file: the file itself or a precompressed
/// sibling.
#[derive(Debug, Clone)]
pub(crate) struct Representation {
    pub(crate) len: u64,
    /// Strong, quotes included.
    pub(crate) etag: HeaderValue,
    /// Seconds since the epoch.
    pub(crate) modified: u64,
    pub(crate) content_type: &'static str,
    /// The sibling's coding (`Content-Encoding`).
    pub(crate) coding: Option<Coding>,
    /// Siblings exist: the choice depends on `Accept-Encoding`.
    pub(crate) vary: bool,
}

/// A piece of the response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    /// Bytes of our own (a multipart boundary and part head).
    Text(Bytes),
    /// `len` bytes of the file from `start`.
    File { start: u64, len: u64 },
}

/// A response, less the body's bytes.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// In order; their lengths sum to `Content-Length`.
    pub(crate) parts: Vec<Part>,
}

/// A strong entity-tag from a file's identity: inode, size and
/// modification time to the nanosecond, and the sibling's coding (a
/// representation of its own).
pub(crate) fn etag(inode: u64, len: u64, mtime_nanos: u128, coding: Option<Coding>) -> HeaderValue {
    // On the stack, without `fmt`: `"` inode `-` len `-` mtime [`-` coding] `"`.
    let mut out = [0u8; 96];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(b"\"");
    put(hex(u128::from(inode), &mut [0; 32]));
    put(b"-");
    put(hex(u128::from(len), &mut [0; 32]));
    put(b"-");
    put(hex(mtime_nanos, &mut [0; 32]));
    if let Some(c) = coding {
        put(b"-");
        put(c.token().as_bytes());
    }
    put(b"\"");
    HeaderValue::from_bytes(&out[..at]).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// `n` in lowercase hex without leading zeros, written at the end of `buf`.
fn hex(mut n: u128, buf: &mut [u8; 32]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// `Last-Modified` for `secs` since the epoch. The last one made is kept
/// per thread: the files of a site mostly share a few times.
fn last_modified(secs: u64) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u64, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((s, v)) = &*last {
            if *s == secs {
                return Some(v.clone());
            }
        }
        let date = UNIX_EPOCH + Duration::from_secs(secs);
        let v = HeaderValue::try_from(httpdate::fmt_http_date(date)).ok()?;
        *last = Some((secs, v.clone()));
        Some(v)
    })
}

/// What `method` (GET or HEAD) with fields `req` gets of `rep` at `now`;
/// `boundary` separates the parts of a multipart answer.
pub(crate) fn answer(
    method: &Method,
    req: &HeaderMap,
    rep: &Representation,
    now: SystemTime,
    boundary: &str,
) -> Answer {
    let v = Validators {
        etag: rep.etag.as_bytes(),
        modified: rep.modified,
    };
    // (Room for every field an answer has: no growth on the way.)
    let mut h = HeaderMap::with_capacity(8);
    h.insert(header::ETAG, rep.etag.clone());
    if let Some(d) = last_modified(rep.modified) {
        h.insert(header::LAST_MODIFIED, d);
    }
    if rep.vary {
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    let status = match conditional::evaluate(method, req, v, now) {
        Precondition::NotModified => StatusCode::NOT_MODIFIED,
        Precondition::Failed => StatusCode::PRECONDITION_FAILED,
        Precondition::Proceed => StatusCode::OK,
    };
    if status != StatusCode::OK {
        if status == StatusCode::PRECONDITION_FAILED {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        }
        return Answer {
            status,
            headers: h,
            parts: Vec::new(),
        };
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(c) = rep.coding {
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(c.token()),
        );
    }
    let ranges = match req.get(header::RANGE) {
        Some(r) if *method == Method::GET && conditional::range_applies(req, v, now) => {
            range::parse(r.as_bytes(), rep.len)
        }
        _ => Ranges::Whole,
    };
    let content_type = HeaderValue::from_static(rep.content_type);
    let (status, parts) = match ranges {
        Ranges::Whole => {
            h.insert(header::CONTENT_TYPE, content_type);
            let parts = match rep.len {
                0 => Vec::new(),
                len => vec![Part::File { start: 0, len }],
            };
            (StatusCode::OK, parts)
        }
        Ranges::Unsatisfiable => {
            h.insert(header::CONTENT_RANGE, content_range(None, rep.len));
            (StatusCode::RANGE_NOT_SATISFIABLE, Vec::new())
        }
        Ranges::Parts(ranges) => match ranges.as_slice() {
            [(first, last)] => {
                h.insert(header::CONTENT_TYPE, content_type);
                h.insert(
                    header::CONTENT_RANGE,
                    content_range(Some((*first, *last)), rep.len),
                );
                let part = Part::File {
                    start: *first,
                    len: last - first + 1,
                };
                (StatusCode::PARTIAL_CONTENT, vec![part])
            }
            many => {
                let multipart = format!("multipart/byteranges; boundary={boundary}");
                if let Ok(v) = HeaderValue::try_from(multipart) {
                    h.insert(header::CONTENT_TYPE, v);
                }
                let mut parts = Vec::with_capacity(many.len() * 2 + 1);
                for &(first, last) in many {
                    let head = format!(
                        "\r\n--{boundary}\r\ncontent-type: {}\r\ncontent-range: bytes {first}-{last}/{}\r\n\r\n",
                        rep.content_type, rep.len
                    );
                    parts.push(Part::Text(Bytes::from(head)));
                    parts.push(Part::File {
                        start: first,
                        len: last - first + 1,
                    });
                }
                parts.push(Part::Text(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
                (StatusCode::PARTIAL_CONTENT, parts)
            }
        },
    };
    let len: u64 = parts
        .iter()
        .map(|p| match p {
            Part::Text(b) => b.len() as u64,
            Part::File { len, .. } => *len,
        })
        .sum();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Answer {
        status,
        headers: h,
        parts,
    }
}

/// `bytes first-last/len`, or `bytes */len` for a 416.
fn content_range(range: Option<(u64, u64)>, len: u64) -> HeaderValue {
    let text = match range {
        Some((first, last)) => format!("bytes {first}-{last}/{len}"),
        None => format!("bytes */{len}"),
    };
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("bytes */0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep() -> Representation {
        Representation {
            len: 100,
            etag: etag(1, 100, 5, None),
            modified: 1_700_000_000,
            content_type: "text/plain; charset=utf-8",
            coding: None,
            vary: false,
        }
    }

    fn ask(method: Method, fields: &[(header::HeaderName, &str)]) -> Answer {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.insert(n.clone(), HeaderValue::from_str(v).expect("value"));
        }
        answer(&method, &h, &rep(), SystemTime::now(), "B")
    }

    fn text(p: &Part) -> &[u8] {
        match p {
            Part::Text(b) => b,
            Part::File { .. } => b"",
        }
    }

    #[test]
    fn etags_are_written_as_format_would() {
        let n = 0x1234_5678_9abc_def0_1122_3344_5566_7788u128;
        for (ino, len, nanos, c) in [
            (0, 0, 0, None),
            (0x1a2b, 1, n, Some(Coding::Br)),
            (u64::MAX, 4096, 7, Some(Coding::Gzip)),
        ] {
            let want = match c {
                None => format!("\"{ino:x}-{len:x}-{nanos:x}\""),
                Some(c) => format!("\"{ino:x}-{len:x}-{nanos:x}-{}\"", c.token()),
            };
            assert_eq!(etag(ino, len, nanos, c), want.as_str());
        }
        assert_eq!(
            last_modified(784_111_777).unwrap(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            last_modified(784_111_777).unwrap(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(last_modified(0).unwrap(), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn whole_file() {
        let a = ask(Method::GET, &[]);
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.parts, vec![Part::File { start: 0, len: 100 }]);
        assert_eq!(a.headers[header::CONTENT_LENGTH], "100");
        assert_eq!(a.headers[header::ACCEPT_RANGES], "bytes");
        assert_eq!(a.headers[header::ETAG], "\"1-64-5\"");
        assert_eq!(
            a.headers[header::LAST_MODIFIED],
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
        assert!(!a.headers.contains_key(header::VARY));
    }

    #[test]
    fn ranges() {
        let a = ask(Method::GET, &[(header::RANGE, "bytes=10-19")]);
        assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(a.headers[header::CONTENT_RANGE], "bytes 10-19/100");
        assert_eq!(a.parts, vec![Part::File { start: 10, len: 10 }]);
        // HEAD ignores Range.
        assert_eq!(
            ask(Method::HEAD, &[(header::RANGE, "bytes=10-19")]).status,
            StatusCode::OK
        );
        let a = ask(Method::GET, &[(header::RANGE, "bytes=200-")]);
        assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(a.headers[header::CONTENT_RANGE], "bytes */100");
        // A stale If-Range: the whole file.
        let a = ask(
            Method::GET,
            &[
                (header::RANGE, "bytes=10-19"),
                (header::IF_RANGE, "\"old\""),
            ],
        );
        assert_eq!(a.status, StatusCode::OK);
    }

    #[test]
    fn multipart() {
        let a = ask(Method::GET, &[(header::RANGE, "bytes=0-9,20-29")]);
        assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            a.headers[header::CONTENT_TYPE],
            "multipart/byteranges; boundary=B"
        );
        assert_eq!(a.parts.len(), 5);
        assert_eq!(
            text(&a.parts[0]),
            b"\r\n--B\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-range: bytes 0-9/100\r\n\r\n"
        );
        assert_eq!(a.parts[3], Part::File { start: 20, len: 10 });
        assert_eq!(text(&a.parts[4]), b"\r\n--B--\r\n");
        let total: usize = a.parts.iter().map(|p| text(p).len()).sum::<usize>() + 20;
        assert_eq!(
            a.headers[header::CONTENT_LENGTH],
            total.to_string().as_str()
        );
    }

    #[test]
    fn conditionals() {
        let a = ask(Method::GET, &[(header::IF_NONE_MATCH, "\"1-64-5\"")]);
        assert_eq!(a.status, StatusCode::NOT_MODIFIED);
        assert!(a.parts.is_empty());
        assert!(a.headers.contains_key(header::ETAG));
        let a = ask(Method::GET, &[(header::IF_MATCH, "\"other\"")]);
        assert_eq!(a.status, StatusCode::PRECONDITION_FAILED);
    }

    #[test]
    fn encoded_representation() {
        let mut r = rep();
        r.coding = Some(Coding::Br);
        r.vary = true;
        r.etag = etag(2, 100, 5, Some(Coding::Br));
        let a = answer(&Method::GET, &HeaderMap::new(), &r, SystemTime::now(), "B");
        assert_eq!(a.headers[header::CONTENT_ENCODING], "br");
        assert_eq!(a.headers[header::VARY], "accept-encoding");
        assert_eq!(a.headers[header::ETAG], "\"2-64-5-br\"");
    }
}
