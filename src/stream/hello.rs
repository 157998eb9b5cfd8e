//! The TLS ClientHello, read far enough to route a connection without
//! terminating it: its SNI host name and its ALPN protocols (RFC 8446
//! §4.1.2, RFC 6066 §3, RFC 7301 §3.1). Bounds-checked at every length
//! field and fuzzed (`fuzz/fuzz_targets/client_hello.rs`): the bytes are
//! the client's, before anything is known of it.
//!
//! The handshake message may span several records (large post-quantum
//! key shares), and the records several reads; [`parse`] says how many
//! more bytes it needs until the ClientHello is whole.

/// What the bytes read so far are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hello {
    /// Not whole yet: read more (the ClientHello ends later).
    More,
    /// A whole ClientHello: the server name asked for (lower case, as
    /// sent otherwise) and the protocols offered.
    Done {
        sni: Option<String>,
        alpn: Vec<Vec<u8>>,
    },
    /// Not a TLS ClientHello, or a malformed one.
    Invalid(&'static str),
}

/// TLS record content type `handshake`, and handshake type `client_hello`.
const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
/// The extensions this reads.
const SERVER_NAME: u16 = 0;
const ALPN: u16 = 16;
/// The largest record payload (2^14, RFC 8446 §5.1).
const MAX_RECORD: usize = 16 * 1024;

/// Parses `buf`, a connection's first bytes.
pub(crate) fn parse(buf: &[u8]) -> Hello {
    // The handshake bytes, gathered from the records read so far.
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        let Some(header) = rest.get(..5) else {
            return match check_header(rest) {
                Err(e) => Hello::Invalid(e),
                Ok(()) => Hello::More,
            };
        };
        if let Err(e) = check_header(header) {
            return Hello::Invalid(e);
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Hello::Invalid("bad TLS record length");
        }
        let Some(payload) = rest.get(5..5 + len) else {
            // A whole record is needed; what is there may already hold
            // the whole message (never relied on: records are small).
            return Hello::More;
        };
        handshake.extend_from_slice(payload);
        rest = &rest[5 + len..];
        match handshake.get(..4) {
            None => continue,
            Some(h) if h[0] != CLIENT_HELLO => return Hello::Invalid("not a ClientHello"),
            Some(h) => {
                let body = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
                if let Some(body) = handshake.get(4..4 + body) {
                    return client_hello(body);
                }
            }
        }
    }
}

/// A record header's first bytes: handshake, TLS 1.0 to 1.3's record
/// version (`3.x`).
fn check_header(h: &[u8]) -> Result<(), &'static str> {
    match h {
        [t, ..] if *t != HANDSHAKE => Err("not a TLS handshake"),
        [_, major, ..] if *major != 3 => Err("not a TLS record version"),
        _ => Ok(()),
    }
}

/// A cursor over bytes whose every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = self.u8()?;
        self.take(usize::from(n)).map(Reader)
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = self.u16()?;
        self.take(usize::from(n)).map(Reader)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The ClientHello's body (after its handshake header).
fn client_hello(body: &[u8]) -> Hello {
    let mut r = Reader(body);
    let fixed = r
        .take(2 + 32) // legacy_version, random
        .and_then(|_| r.vec8()) // legacy_session_id
        .and_then(|_| r.vec16()) // cipher_suites
        .and_then(|_| r.vec8()); // legacy_compression_methods
    if fixed.is_none() {
        return Hello::Invalid("truncated ClientHello");
    }
    let (mut sni, mut alpn) = (None, Vec::new());
    // (A ClientHello without extensions is TLS 1.2's; it names nothing.)
    if r.is_empty() {
        return Hello::Done { sni, alpn };
    }
    let Some(mut exts) = r.vec16() else {
        return Hello::Invalid("truncated ClientHello extensions");
    };
    let (mut seen_sni, mut seen_alpn) = (false, false);
    while !exts.is_empty() {
        let (Some(kind), Some(mut data)) = (exts.u16(), exts.vec16()) else {
            return Hello::Invalid("truncated ClientHello extension");
        };
        match kind {
            SERVER_NAME => {
                if std::mem::replace(&mut seen_sni, true) {
                    return Hello::Invalid("two server_name extensions");
                }
                match server_name(&mut data) {
                    Ok(name) => sni = name,
                    Err(e) => return Hello::Invalid(e),
                }
            }
            ALPN => {
                if std::mem::replace(&mut seen_alpn, true) {
                    return Hello::Invalid("two ALPN extensions");
                }
                match protocols(&mut data) {
                    Some(list) => alpn = list,
                    None => return Hello::Invalid("malformed ALPN extension"),
                }
            }
            _ => {}
        }
    }
    Hello::Done { sni, alpn }
}

/// The `server_name` extension's host name (RFC 6066 §3: one of type
/// `host_name`, ASCII, no trailing dot).
fn server_name(data: &mut Reader<'_>) -> Result<Option<String>, &'static str> {
    let mut list = data.vec16().ok_or("malformed server_name extension")?;
    let mut host = None;
    while !list.is_empty() {
        let kind = list.u8().ok_or("malformed server_name extension")?;
        let name = list.vec16().ok_or("malformed server_name extension")?.0;
        if kind != 0 {
            continue;
        }
        if host.is_some() {
            return Err("two host names in server_name");
        }
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            && !name.starts_with(b".")
            && !name.ends_with(b".");
        if !valid {
            return Err("invalid host name in server_name");
        }
        host = Some(String::from_utf8_lossy(name).to_ascii_lowercase());
    }
    Ok(host)
}

/// The ALPN extension's protocol names (each 1 to 255 bytes).
fn protocols(data: &mut Reader<'_>) -> Option<Vec<Vec<u8>>> {
    let mut list = data.vec16()?;
    let mut out = Vec::new();
    while !list.is_empty() {
        let p = list.vec8()?;
        if p.0.is_empty() {
            return None;
        }
        out.push(p.0.to_vec());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello with these extensions, in one record per
    /// `split` bytes of handshake (all in one when 0).
    fn hello(exts: &[(u16, Vec<u8>)], pad: usize, split: usize) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one cipher suite
        body.extend([1, 0]); // null compression
        let mut e = Vec::new();
        for (kind, data) in exts {
            e.extend(kind.to_be_bytes());
            e.extend((data.len() as u16).to_be_bytes());
            e.extend(data);
        }
        // A key share's worth of padding (extension 21).
        e.extend(21u16.to_be_bytes());
        e.extend((pad as u16).to_be_bytes());
        e.extend(std::iter::repeat_n(0, pad));
        body.extend((e.len() as u16).to_be_bytes());
        body.extend(e);
        let mut hs = vec![CLIENT_HELLO];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let split = if split == 0 { hs.len() } else { split };
        let mut out = Vec::new();
        for chunk in hs.chunks(split) {
            out.extend([HANDSHAKE, 3, 1]);
            out.extend((chunk.len() as u16).to_be_bytes());
            out.extend(chunk);
        }
        out
    }

    fn sni(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name);
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend(entry);
        (SERVER_NAME, data)
    }

    fn alpn(list: &[&[u8]]) -> (u16, Vec<u8>) {
        let mut names = Vec::new();
        for p in list {
            names.push(p.len() as u8);
            names.extend(*p);
        }
        let mut data = (names.len() as u16).to_be_bytes().to_vec();
        data.extend(names);
        (ALPN, data)
    }

    #[test]
    fn sni_and_alpn_from_whole_and_partial_hellos() {
        let h = hello(
            &[sni(b"Db.Example.COM"), alpn(&[b"h2", b"postgresql"])],
            1200,
            0,
        );
        let want = Hello::Done {
            sni: Some("db.example.com".into()),
            alpn: vec![b"h2".to_vec(), b"postgresql".to_vec()],
        };
        assert_eq!(parse(&h), want);
        // Every prefix is `More`, never a wrong answer.
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n]), Hello::More, "{n}");
        }
        // The handshake spread over several records.
        let split = hello(
            &[sni(b"db.example.com"), alpn(&[b"h2", b"postgresql"])],
            1200,
            300,
        );
        assert!(split.len() > h.len());
        assert_eq!(parse(&split), want);
        for n in 0..split.len() {
            assert_eq!(parse(&split[..n]), Hello::More, "{n}");
        }
        // Bytes after it (none are sent before the server answers, but
        // they do no harm).
        let mut more = h.clone();
        more.extend(b"later");
        assert_eq!(parse(&more), want);
    }

    #[test]
    fn no_extensions_no_sni() {
        let h = hello(&[], 0, 0);
        assert_eq!(
            parse(&h),
            Hello::Done {
                sni: None,
                alpn: vec![]
            }
        );
    }

    #[test]
    fn refusals() {
        let inv = |b: &[u8]| match parse(b) {
            Hello::Invalid(e) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(inv(b"GET / HTTP/1.1\r\n"), "not a TLS handshake");
        assert_eq!(inv(&[HANDSHAKE, 4]), "not a TLS record version");
        assert_eq!(inv(&[HANDSHAKE, 3, 1, 0, 0]), "bad TLS record length");
        assert_eq!(
            inv(&[HANDSHAKE, 3, 1, 0, 4, 2, 0, 0, 0]),
            "not a ClientHello"
        );
        assert_eq!(
            inv(&hello(&[sni(b"a..b/c")], 0, 0)),
            "invalid host name in server_name"
        );
        assert_eq!(
            inv(&hello(&[sni(b"a.b.")], 0, 0)),
            "invalid host name in server_name"
        );
        assert_eq!(
            inv(&hello(&[sni(b"a"), sni(b"b")], 0, 0)),
            "two server_name extensions"
        );
        assert_eq!(
            inv(&hello(&[alpn(&[b""])], 0, 0)),
            "malformed ALPN extension"
        );
        // A length that runs past its extension.
        let mut bad = hello(&[sni(b"example.com")], 0, 0);
        let at = bad.len() - 4 - 16; // the server_name list's length
        bad[at] = 0xff;
        assert!(
            matches!(parse(&bad), Hello::Invalid(_)),
            "{:?}",
            parse(&bad)
        );
    }
}
