//! The PROXY protocol header (v1 text, v2 binary; HAProxy's spec) that a
//! trusted load balancer sends before a connection's first byte: read
//! before anything else (TLS included), so that the address it carries
//! is the client's everywhere (logs, `X-Forwarded-For`, `access` rules,
//! rate-limit keys, hashing).
//!
//! An HTTP or TLS listener reads the header off with plain reads
//! ([`read_off`]) and hands what followed it in those reads to the
//! connection first (TLS's early bytes, HTTP's first bytes): no byte is
//! lost, a connection without a header (`mode = "optional"`) included, and
//! a connection costs no more system calls than without one. A stream
//! listener hands its socket on as it is: there the socket is peeked, not
//! read, until the header is known to be one, and never more than the
//! header is taken off ([`read`]). Parsing is the `ppp` crate's;
//! [`examine`] (fuzzed) decides what to do with what has been seen.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::proxy_protocol::MAX_HEADER;

/// The signatures: v1's text, v2's binary.
pub(crate) const V1: &[u8] = b"PROXY ";
pub(crate) const V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Why a trusted peer's connection was closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("no PROXY protocol header (required from this peer)")]
    Missing,
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    #[error("closed before its PROXY protocol header ended")]
    Closed,
    #[error("reading its PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

/// What the bytes seen so far (`seen`, of which the first `taken` are off
/// the socket already) call for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Not a PROXY header (and nothing taken): a plain connection.
    Plain,
    /// Part of a header: wait for more. `take`: what is seen is all
    /// header, so it may be taken off the socket (which then waits for
    /// more by itself); else the signature is not whole yet and nothing
    /// may be taken.
    More {
        take: bool,
    },
    /// A whole header of `len` bytes, naming the client and the address
    /// it connected to (`None`: a v2 `LOCAL` connection, an `UNKNOWN` or
    /// non-IP one: the connection's own).
    Done {
        len: usize,
        addrs: Option<(SocketAddr, SocketAddr)>,
    },
    Refuse(String),
}

/// Decides on `seen` (the connection's first bytes; `taken` of them
/// already off the socket, which happens only once they are known to be
/// a header).
pub(crate) fn examine(seen: &[u8], taken: usize) -> Step {
    let sig = if seen.first() == Some(&b'\r') { V2 } else { V1 };
    let n = seen.len().min(sig.len());
    if seen[..n] != sig[..n] {
        return match taken {
            0 => Step::Plain,
            _ => Step::Refuse("not a PROXY protocol signature".into()),
        };
    }
    if n < sig.len() {
        return Step::More { take: false };
    }
    let parsed = HeaderResult::parse(seen);
    if parsed.is_incomplete() {
        // (v2: its length field is known from the 16th byte on.)
        let over = match seen.get(14..16) {
            Some(l) if sig == V2 => 16 + usize::from(u16::from_be_bytes([l[0], l[1]])) > MAX_HEADER,
            _ => seen.len() >= MAX_HEADER,
        };
        return match over {
            true => Step::Refuse(format!("longer than {MAX_HEADER} bytes")),
            false => Step::More { take: true },
        };
    }
    match parsed {
        HeaderResult::V1(Ok(h)) => Step::Done {
            len: h.header.len(),
            addrs: match h.addresses {
                v1::Addresses::Tcp4(a) => Some(ends4(a)),
                v1::Addresses::Tcp6(a) => Some(ends6(a)),
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(h)) => Step::Done {
            len: h.len(),
            addrs: match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => Some(ends4(a)),
                (_, v2::Addresses::IPv6(a)) => Some(ends6(a)),
                (_, v2::Addresses::Unix(_) | v2::Addresses::Unspecified) => None,
            },
        },
        HeaderResult::V1(Err(e)) => Step::Refuse(e.to_string()),
        HeaderResult::V2(Err(e)) => Step::Refuse(e.to_string()),
    }
}

/// (source, destination) of a header's IPv4 or IPv6 addresses (one type
/// in `ppp` for v1 and v2).
fn ends4(a: v1::IPv4) -> (SocketAddr, SocketAddr) {
    (
        (a.source_address, a.source_port).into(),
        (a.destination_address, a.destination_port).into(),
    )
}

fn ends6(a: v1::IPv6) -> (SocketAddr, SocketAddr) {
    (
        (a.source_address, a.source_port).into(),
        (a.destination_address, a.destination_port).into(),
    )
}

/// How long to wait before looking again at a first segment too short
/// to tell a header from a request (a few bytes: never seen from a load
/// balancer, which sends the header in one write).
const SHORT: Duration = Duration::from_millis(5);

/// Reads the header off `stream` (`required`: the connection must have
/// one): the client and the address it connected to. `Ok(None)`: no
/// header (when optional), or one that names no client; the connection's
/// own addresses stand. (The caller bounds the time.)
pub(crate) async fn read(
    stream: &mut TcpStream,
    required: bool,
) -> Result<Option<(SocketAddr, SocketAddr)>, Refused> {
    // Seen first into a small buffer on the stack, which holds most
    // headers (v1's longest is 107 bytes; v2's with IPv6 addresses 52,
    // and a few TLVs); a longer one goes on in one of `MAX_HEADER` (a
    // zeroed 4 KiB allocation per connection otherwise).
    let mut small = [0u8; SMALL];
    let mut large = Vec::new();
    let mut taken = 0;
    loop {
        if taken == SMALL && large.is_empty() {
            large = vec![0u8; MAX_HEADER];
            large[..SMALL].copy_from_slice(&small);
        }
        let buf: &mut [u8] = match large.is_empty() {
            true => &mut small,
            false => &mut large,
        };
        let n = stream.peek(&mut buf[taken..]).await?;
        if n == 0 {
            return Err(Refused::Closed);
        }
        match examine(&buf[..taken + n], taken) {
            Step::Plain if required => return Err(Refused::Missing),
            Step::Plain => return Ok(None),
            Step::More { take: true } => {
                stream.read_exact(&mut buf[taken..taken + n]).await?;
                taken += n;
            }
            // (A first segment of under 12 bytes: look again shortly.)
            Step::More { take: false } => tokio::time::sleep(SHORT).await,
            Step::Done { len, addrs } => {
                stream.read_exact(&mut buf[taken..len]).await?;
                return Ok(addrs);
            }
            Step::Refuse(why) => return Err(Refused::Invalid(why)),
        }
    }
}

/// Reads the header off `stream` as [`read`] does, but with reads, not a
/// peek then a read: what comes after the header in the same reads is
/// returned, for the connection to take first (TLS or HTTP). Two system
/// calls fewer per connection, for a listener that can take those bytes
/// (not a stream listener, which hands the socket on as it is).
pub(crate) async fn read_off(
    stream: &mut TcpStream,
    required: bool,
) -> Result<(Option<(SocketAddr, SocketAddr)>, Vec<u8>), Refused> {
    let mut buf = Vec::with_capacity(SMALL * 2);
    loop {
        if buf.len() == buf.capacity() {
            // (`examine` refuses a header past `MAX_HEADER`.)
            buf.reserve(MAX_HEADER.saturating_sub(buf.len()).max(SMALL));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(Refused::Closed);
        }
        // (Nothing is left on the socket to look at again: all is taken.)
        match examine(&buf, 0) {
            Step::Plain if required => return Err(Refused::Missing),
            Step::Plain => return Ok((None, buf)),
            Step::More { .. } => {}
            Step::Done { len, addrs } => {
                let rest = buf.split_off(len);
                return Ok((addrs, rest));
            }
            Step::Refuse(why) => return Err(Refused::Invalid(why)),
        }
    }
}

/// The first look's buffer (see [`read`]).
const SMALL: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addr: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2.to_vec();
        h.push(0x20 | command);
        h.push(family | 1);
        h.extend_from_slice(&((addr.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(addr);
        h.extend_from_slice(tlvs);
        h
    }

    #[test]
    fn v1_tcp4_and_tcp6_name_the_client_and_their_length() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            examine(h, 0),
            Step::Done {
                len: 45,
                addrs: Some((
                    "192.0.2.7:51000".parse().unwrap(),
                    "198.51.100.1:443".parse().unwrap()
                ))
            }
        );
        let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 80\r\n\x16\x03\x01";
        assert_eq!(
            examine(h, 0),
            Step::Done {
                len: 44,
                addrs: Some((
                    "[2001:db8::7]:4000".parse().unwrap(),
                    "[2001:db8::1]:80".parse().unwrap()
                ))
            }
        );
        assert_eq!(
            examine(b"PROXY UNKNOWN\r\nGET", 0),
            Step::Done {
                len: 15,
                addrs: None
            }
        );
    }

    #[test]
    fn v2_proxy_and_local_with_tlvs() {
        let addr = [192, 0, 2, 7, 198, 51, 100, 1, 0xc7, 0x38, 0x01, 0xbb];
        let mut h = v2(1, 0x10, &addr, &[0x02, 0x00, 0x03, b'a', b'.', b'b']);
        let len = h.len();
        h.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            examine(&h, 0),
            Step::Done {
                len,
                addrs: Some((
                    "192.0.2.7:51000".parse().unwrap(),
                    "198.51.100.1:443".parse().unwrap()
                ))
            }
        );
        let h = v2(0, 0x10, &addr, &[]);
        assert_eq!(
            examine(&h, 0),
            Step::Done {
                len: h.len(),
                addrs: None
            }
        );
    }

    #[test]
    fn requests_and_tls_are_plain_and_partial_signatures_wait() {
        assert_eq!(examine(b"GET / HTTP/1.1\r\n", 0), Step::Plain);
        assert_eq!(examine(b"PUT / HTTP/1.1\r\n", 0), Step::Plain);
        assert_eq!(examine(b"\x16\x03\x01\x02\x00", 0), Step::Plain);
        assert_eq!(examine(b"PRI * HTTP/2.0\r\n", 0), Step::Plain);
        assert_eq!(examine(b"PRO", 0), Step::More { take: false });
        assert_eq!(examine(b"\r\n\r\n\0", 0), Step::More { take: false });
        assert_eq!(examine(b"PROXY TCP4 192.0", 0), Step::More { take: true });
        // Once taken, a mismatch is refused, not served.
        assert!(matches!(examine(b"GET", 3), Step::Refuse(_)));
    }

    #[test]
    fn bad_and_long_headers_are_refused() {
        assert!(matches!(
            examine(b"PROXY TCP4 nope 1.2.3.4 1 2\r\n", 0),
            Step::Refuse(_)
        ));
        assert!(matches!(
            examine(b"PROXY TCP9 1.2.3.4 1.2.3.4 1 2\r\n", 0),
            Step::Refuse(_)
        ));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(examine(&long, 0), Step::Refuse(_)));
        // A v2 length past the cap is refused before its bytes come.
        let mut h = V2.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0x10, 0x00]);
        assert!(matches!(examine(&h, 0), Step::Refuse(_)));
        // Version 3, command 2: refused.
        let mut h = V2.to_vec();
        h.extend_from_slice(&[0x31, 0x11, 0x00, 0x0c]);
        assert!(matches!(examine(&h, 0), Step::Refuse(_)));
    }
}
