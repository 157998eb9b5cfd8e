//! A small HTTP/2 frame writer and reader over plain TCP (h2c, prior
//! knowledge), for requests that real clients refuse to send: no
//! `:authority`, resets at chosen moments. Headers go as HPACK literals
//! without indexing; of the answers only `:status` is decoded (the static
//! table's statuses, or a literal of digits, plain or Huffman-coded), so
//! read one response per connection.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;

/// One frame as read.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// GOAWAY's error code, or RST_STREAM's.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// How a request's stream ended, as far as this reader tells.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    Reset(u32),
    GoAway(u32),
    Closed,
}

pub struct H2Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl H2Raw {
    /// Connects and sends the preface and an empty SETTINGS frame.
    pub async fn connect(addr: SocketAddr) -> H2Raw {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        frame(&mut out, SETTINGS, 0, 0, &[]);
        stream.write_all(&out).await.expect("preface");
        H2Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next frame; SETTINGS and PING are acknowledged on the way.
    /// `None` once the server closed.
    pub async fn frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5] & 0x7f,
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]),
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    let mut reply = Vec::new();
                    if f.kind == SETTINGS && f.flags & ACK == 0 {
                        frame(&mut reply, SETTINGS, ACK, 0, &[]);
                    } else if f.kind == PING && f.flags & ACK == 0 {
                        frame(&mut reply, PING, ACK, 0, &f.payload);
                    }
                    if !reply.is_empty() {
                        // The server may have closed already.
                        let _ = self.stream.write_all(&reply).await;
                    }
                    return Some(f);
                }
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until stream `id` gets its response head, a reset, or the
    /// connection a GOAWAY or its end.
    pub async fn answer(&mut self, id: u32) -> Answer {
        while let Some(f) = self.frame().await {
            match f.kind {
                HEADERS if f.stream == id => {
                    return Answer::Status(status(&f.payload).expect(":status first"))
                }
                RST_STREAM if f.stream == id => return Answer::Reset(f.error_code().unwrap_or(0)),
                GOAWAY => return Answer::GoAway(f.error_code().unwrap_or(0)),
                _ => {}
            }
        }
        Answer::Closed
    }
}

/// Appends one frame.
pub fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A HEADERS frame carrying `fields`, each an HPACK literal without
/// indexing (pseudo-fields first, as given).
pub fn headers(out: &mut Vec<u8>, stream: u32, fields: &[(&str, &str)], end_stream: bool) {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0);
        int(&mut block, 7, 0, name.len());
        block.extend_from_slice(name.as_bytes());
        int(&mut block, 7, 0, value.len());
        block.extend_from_slice(value.as_bytes());
    }
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(out, HEADERS, flags, stream, &block);
}

pub fn rst_stream(out: &mut Vec<u8>, stream: u32, code: u32) {
    frame(out, RST_STREAM, 0, stream, &code.to_be_bytes());
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn int(out: &mut Vec<u8>, n: u32, flags: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// `:status` from the start of a response's header block.
fn status(block: &[u8]) -> Option<u16> {
    let first = *block.first()?;
    // Indexed, from the static table (RFC 7541 Appendix A).
    let statics = [200, 204, 206, 304, 400, 404, 500];
    if first & 0x80 != 0 {
        let i = (first & 0x7f) as usize;
        return statics.get(i.checked_sub(8)?).copied();
    }
    // A literal whose name is static entry 8..=14 (`:status`), with
    // incremental indexing (01), without (0000) or never indexed (0001).
    let index = if first & 0xc0 == 0x40 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    if !(8..=14).contains(&index) {
        return None;
    }
    let len_byte = *block.get(1)?;
    let len = (len_byte & 0x7f) as usize;
    let value = block.get(2..2 + len)?;
    let digits = if len_byte & 0x80 != 0 {
        huffman_digits(value)?
    } else {
        String::from_utf8(value.to_vec()).ok()?
    };
    digits.parse().ok()
}

/// Decodes a Huffman-coded string of digits (their codes are 5 or 6 bits).
fn huffman_digits(b: &[u8]) -> Option<String> {
    let bits: Vec<u8> = b
        .iter()
        .flat_map(|byte| (0..8).rev().map(move |i| (byte >> i) & 1))
        .collect();
    let take = |at: usize, n: usize| -> Option<u32> {
        let s = bits.get(at..at + n)?;
        Some(s.iter().fold(0u32, |v, &b| v << 1 | u32::from(b)))
    };
    let mut out = String::new();
    let mut at = 0;
    while at < bits.len() {
        if bits[at..].iter().all(|&b| b == 1) && bits.len() - at < 8 {
            break;
        }
        match take(at, 5)? {
            c @ 0..=2 => {
                out.push(char::from(b'0' + c as u8));
                at += 5;
            }
            _ => match take(at, 6)? {
                c @ 0b011001..=0b011111 => {
                    out.push(char::from(b'3' + (c - 0b011001) as u8));
                    at += 6;
                }
                _ => return None,
            },
        }
    }
    Some(out)
}
