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
    let text = match coding {
        None => format!("\"{inode:x}-{len:x}-{mtime_nanos:x}\""),
        Some(c) => format!("\"{inode:x}-{len:x}-{mtime_nanos:x}-{}\"", c.token()),
    };
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("\"0\""))
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
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, rep.etag.clone());
    let modified = UNIX_EPOCH + Duration::from_secs(rep.modified);
    if let Ok(d) = HeaderValue::try_from(httpdate::fmt_http_date(modified)) {
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
        Some(r) if *method == Method::GET && conditional::range_applies(req, v) => {
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
