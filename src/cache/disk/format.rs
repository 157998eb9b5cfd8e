//! One disk tier file: what one key holds (every variant), in a format
//! of our own, written and read whole. All integers little-endian.
//!
//! ```text
//! prefix (32 bytes):
//!   magic     8   b"TIDEGATE"
//!   version   u32 1
//!   head_len  u32
//!   body_len  u64  (every variant's body, end to end)
//!   head_crc  u32  CRC-32 of the head (checked when the folder is scanned)
//!   crc       u32  CRC-32 of head and bodies (checked when read)
//! head:
//!   key, url                       bytes
//!   variants                       u32, then per variant:
//!     status                       u16
//!     response_time                u64 seconds since 1970 + u32 nanoseconds
//!     corrected_initial_age        u64 seconds + u32 nanoseconds
//!     lifetime                     u64 seconds + u32 nanoseconds
//!     body length                  u64
//!     fields                       u32, then name bytes, value bytes each
//!     vary                         u32, then name bytes, and a value:
//!                                  u8 0 (absent) or 1 and bytes
//! bodies, in variant order
//! ```
//! `bytes` is a u32 length and that many bytes: field values are kept
//! as bytes (they need not be UTF-8).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::{BufMut, Bytes};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use crate::cache::entry::{Entry, Variant};
use crate::cache::policy::{ResponseControl, Rules, Times, VaryNames};

const MAGIC: &[u8; 8] = b"TIDEGATE";
const VERSION: u32 = 1;
/// Bytes before the head.
pub(super) const PREFIX: usize = 32;
/// A head larger than this is not ours (a length gone wrong).
const MAX_HEAD: u32 = 64 << 20;

/// Why a file was refused.
pub(super) type Corrupt = &'static str;

/// The lengths and checksums a file starts with.
pub(super) struct Prefix {
    pub(super) head_len: u32,
    pub(super) body_len: u64,
    head_crc: u32,
    crc: u32,
}

impl Prefix {
    /// The file's size as its prefix says.
    pub(super) fn file_len(&self) -> u64 {
        PREFIX as u64 + u64::from(self.head_len) + self.body_len
    }
}

/// The file for `key` holding `entry`: its prefix and head, then the
/// bodies to write after them.
pub(super) fn encode(key: &[u8], entry: &Entry) -> (Vec<u8>, Vec<Bytes>) {
    let mut head = Vec::with_capacity(512);
    put_bytes(&mut head, key);
    put_bytes(&mut head, entry.url.as_bytes());
    head.put_u32_le(entry.variants.len() as u32);
    let mut bodies = Vec::new();
    for v in &entry.variants {
        head.put_u16_le(v.status.as_u16());
        put_duration(
            &mut head,
            v.times
                .response_time
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        );
        put_duration(&mut head, v.times.corrected_initial_age);
        put_duration(&mut head, v.times.lifetime);
        head.put_u64_le(v.len);
        head.put_u32_le(v.headers.len() as u32);
        for (n, val) in &v.headers {
            put_bytes(&mut head, n.as_str().as_bytes());
            put_bytes(&mut head, val.as_bytes());
        }
        head.put_u32_le(v.vary.0.len() as u32);
        for (i, n) in v.vary.0.iter().enumerate() {
            put_bytes(&mut head, n.as_str().as_bytes());
            match v.vary_values.get(i).and_then(Option::as_ref) {
                None => head.put_u8(0),
                Some(val) => {
                    head.put_u8(1);
                    put_bytes(&mut head, val);
                }
            }
        }
        bodies.extend(v.body.iter().cloned());
    }
    let body_len: u64 = bodies.iter().map(|b| b.len() as u64).sum();
    let head_crc = crc32fast::hash(&head);
    let mut all = crc32fast::Hasher::new();
    all.update(&head);
    for b in &bodies {
        all.update(b);
    }
    let mut out = Vec::with_capacity(PREFIX + head.len());
    out.extend_from_slice(MAGIC);
    out.put_u32_le(VERSION);
    out.put_u32_le(head.len() as u32);
    out.put_u64_le(body_len);
    out.put_u32_le(head_crc);
    out.put_u32_le(all.finalize());
    out.extend_from_slice(&head);
    (out, bodies)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.extend_from_slice(b);
}

fn put_duration(out: &mut Vec<u8>, d: Duration) {
    out.put_u64_le(d.as_secs());
    out.put_u32_le(d.subsec_nanos());
}

/// The prefix of a file of `file_len` bytes.
pub(super) fn prefix(b: &[u8], file_len: u64) -> Result<Prefix, Corrupt> {
    let mut r = Reader(b.get(..PREFIX).ok_or("shorter than its prefix")?);
    if r.take(8)? != MAGIC {
        return Err("bad magic");
    }
    if r.u32()? != VERSION {
        return Err("unknown version");
    }
    let p = Prefix {
        head_len: r.u32()?,
        body_len: r.u64()?,
        head_crc: r.u32()?,
        crc: r.u32()?,
    };
    if p.head_len > MAX_HEAD {
        return Err("head length out of range");
    }
    if p.file_len() != file_len {
        return Err("length differs from its prefix (truncated?)");
    }
    Ok(p)
}

/// The key and URL of a file whose prefix is `p`, from its `head`
/// (checked against the head's checksum, and parsed whole).
pub(super) fn head(p: &Prefix, head: &[u8]) -> Result<(Bytes, Arc<str>), Corrupt> {
    if crc32fast::hash(head) != p.head_crc {
        return Err("head checksum mismatch");
    }
    let (key, url, variants) = parse_head(head)?;
    let total: u64 = variants.iter().map(|v| v.len).sum();
    if total != p.body_len {
        return Err("body lengths differ from the prefix");
    }
    Ok((key, url))
}

/// A whole file (`data`, as read) as the entry it holds and its key;
/// `rules`: its cache's, to read the directives again.
pub(super) fn decode(data: Bytes, rules: &Rules) -> Result<(Bytes, Entry), Corrupt> {
    let p = prefix(&data, data.len() as u64)?;
    let rest = data.slice(PREFIX..);
    if crc32fast::hash(&rest) != p.crc {
        return Err("checksum mismatch");
    }
    let head_len = p.head_len as usize;
    let (key, url, parsed) = parse_head(rest.get(..head_len).ok_or("short head")?)?;
    let mut at = PREFIX + head_len;
    let mut variants = Vec::with_capacity(parsed.len());
    for v in parsed {
        let end = usize::try_from(v.len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|&e| e <= data.len())
            .ok_or("body past the end")?;
        let body: Arc<[Bytes]> = match v.len {
            0 => Arc::new([]),
            _ => Arc::new([data.slice(at..end)]),
        };
        at = end;
        let control = ResponseControl::parse(&v.headers, rules);
        variants.push(Arc::new(Variant {
            status: v.status,
            headers: v.headers,
            control,
            times: v.times,
            vary: v.vary,
            vary_values: v.vary_values,
            body,
            len: v.len,
            encoded: Default::default(),
        }));
    }
    if at != data.len() {
        return Err("bytes past the last body");
    }
    Ok((key, Entry { url, variants }))
}

/// A variant's head as read.
struct Head {
    status: StatusCode,
    times: Times,
    len: u64,
    headers: HeaderMap,
    vary: VaryNames,
    vary_values: Vec<Option<Bytes>>,
}

fn parse_head(b: &[u8]) -> Result<(Bytes, Arc<str>, Vec<Head>), Corrupt> {
    let mut r = Reader(b);
    let key = Bytes::copy_from_slice(r.bytes()?);
    let url: Arc<str> = Arc::from(std::str::from_utf8(r.bytes()?).map_err(|_| "URL not UTF-8")?);
    let n = r.u32()?;
    let mut variants = Vec::new();
    for _ in 0..n {
        let status = StatusCode::from_u16(r.u16()?).map_err(|_| "bad status")?;
        let response_time = UNIX_EPOCH
            .checked_add(r.duration()?)
            .ok_or("bad response time")?;
        let times = Times {
            response_time,
            corrected_initial_age: r.duration()?,
            lifetime: r.duration()?,
        };
        let len = r.u64()?;
        let mut headers = HeaderMap::new();
        for _ in 0..r.u32()? {
            let name = HeaderName::from_bytes(r.bytes()?).map_err(|_| "bad field name")?;
            let value = HeaderValue::from_bytes(r.bytes()?).map_err(|_| "bad field value")?;
            headers.append(name, value);
        }
        let mut vary = Vec::new();
        let mut vary_values = Vec::new();
        for _ in 0..r.u32()? {
            vary.push(HeaderName::from_bytes(r.bytes()?).map_err(|_| "bad vary name")?);
            vary_values.push(match r.u8()? {
                0 => None,
                1 => Some(Bytes::copy_from_slice(r.bytes()?)),
                _ => return Err("bad vary value"),
            });
        }
        variants.push(Head {
            status,
            times,
            len,
            headers,
            vary: VaryNames(vary),
            vary_values,
        });
    }
    if !r.0.is_empty() {
        return Err("bytes past the head");
    }
    Ok((key, url, variants))
}

/// Reads a head front to back; every read checks its length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if self.0.len() < n {
            return Err("short head");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Corrupt> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, Corrupt> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Corrupt> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Corrupt> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn duration(&mut self) -> Result<Duration, Corrupt> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err("bad duration");
        }
        Ok(Duration::new(secs, nanos))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Corrupt> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        headers.append("x-raw", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let times = Times {
            response_time: UNIX_EPOCH + Duration::new(1_700_000_000, 5),
            corrected_initial_age: Duration::from_secs(3),
            lifetime: Duration::from_secs(60),
        };
        let v = Variant {
            status: StatusCode::OK,
            control: ResponseControl::parse(&headers, &Rules::default()),
            headers,
            times,
            vary: VaryNames(vec![HeaderName::from_static("accept-language")]),
            vary_values: vec![Some(Bytes::from_static(b"de"))],
            body: Arc::new([Bytes::from_static(b"hello "), Bytes::from_static(b"world")]),
            len: 11,
            encoded: Default::default(),
        };
        Entry {
            url: Arc::from("http://a.test/x"),
            variants: vec![Arc::new(v)],
        }
    }

    fn file() -> Bytes {
        let (mut out, bodies) = encode(b"the key", &entry());
        for b in bodies {
            out.extend_from_slice(&b);
        }
        Bytes::from(out)
    }

    #[test]
    fn a_file_reads_back_as_written() {
        let data = file();
        let (key, e) = decode(data.clone(), &Rules::default()).unwrap();
        assert_eq!(&key[..], b"the key");
        assert_eq!(&*e.url, "http://a.test/x");
        let v = &e.variants[0];
        assert_eq!(v.status, StatusCode::OK);
        assert_eq!(v.headers["x-raw"].as_bytes(), b"caf\xe9");
        assert_eq!(v.times, entry().variants[0].times);
        assert_eq!(v.vary_values, vec![Some(Bytes::from_static(b"de"))]);
        assert_eq!(v.body.concat(), b"hello world");
        let p = prefix(&data, data.len() as u64).unwrap();
        let head_end = PREFIX + p.head_len as usize;
        assert_eq!(head(&p, &data[PREFIX..head_end]).unwrap().0, key);
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let data = file();
        let short = data.slice(..data.len() - 1);
        assert!(decode(short.clone(), &Rules::default()).is_err());
        assert!(prefix(&short, short.len() as u64).is_err());
        assert!(decode(data.slice(..10), &Rules::default()).is_err());
        let mut flipped = data.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            decode(Bytes::from(flipped), &Rules::default()).err(),
            Some("checksum mismatch")
        );
        let mut magic = data.to_vec();
        magic[0] = b'X';
        assert_eq!(
            decode(Bytes::from(magic), &Rules::default()).err(),
            Some("bad magic")
        );
    }
}
