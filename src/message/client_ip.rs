//! The real client address behind trusted proxies (nginx's
//! `set_real_ip_from` + `real_ip_header` + `real_ip_recursive on`): when
//! the TCP peer is trusted, the addresses its `X-Forwarded-For` (or
//! `Forwarded: for=`, RFC 7239) lists are walked from the right, past the
//! trusted ones; the first that is not trusted is the client (all trusted:
//! the leftmost). Anything that is not an address where the walk must read
//! one (`unknown`, an obfuscated `_node`, garbage) makes it the peer again.
//! An untrusted peer is its own client, whatever it sends.
//!
//! The walk reads the fields once, left to right, keeping the rightmost
//! untrusted address seen so far: no allocation.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};

use super::cidr::{any_contains, Cidr};
use super::headers::X_FORWARDED_FOR;

static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Which field names the addresses (`real_ip_header`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum RealIpHeader {
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239's `Forwarded`, its `for=` parameters.
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// A listener's `trusted_proxies` and `real_ip_header`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RealIp {
    pub trusted_proxies: Box<[Cidr]>,
    pub header: RealIpHeader,
}

/// One entry of the list, as the walk sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    Addr(IpAddr),
    /// Not an address: `unknown`, obfuscated, malformed.
    Bad,
}

/// The walk, left to right (see the module's doc).
#[derive(Default)]
struct Walk {
    leftmost: Option<Node>,
    /// The rightmost untrusted address so far.
    untrusted: Option<IpAddr>,
    /// Something not an address right of `untrusted` (or of the start).
    bad: bool,
}

impl Walk {
    fn push(&mut self, node: Node, trusted: &[Cidr]) {
        self.leftmost.get_or_insert(node);
        match node {
            Node::Bad => self.bad = true,
            Node::Addr(ip) if any_contains(trusted, ip) => {}
            Node::Addr(ip) => {
                self.untrusted = Some(ip);
                self.bad = false;
            }
        }
    }

    fn client(self) -> Option<IpAddr> {
        if self.bad {
            return None;
        }
        match (self.untrusted, self.leftmost) {
            (Some(ip), _) | (None, Some(Node::Addr(ip))) => Some(ip),
            _ => None,
        }
    }
}

impl RealIp {
    /// The client of a request from `peer` with fields `h`. The result
    /// has the peer's port when it is the peer, else port 0.
    pub fn client(&self, peer: SocketAddr, h: &HeaderMap) -> SocketAddr {
        if !any_contains(&self.trusted_proxies, peer.ip()) {
            return peer;
        }
        let mut walk = Walk::default();
        let mut push = |n| walk.push(n, &self.trusted_proxies);
        match self.header {
            RealIpHeader::XForwardedFor => {
                for v in h.get_all(&X_FORWARDED_FOR) {
                    x_forwarded_for(v.as_bytes(), &mut push);
                }
            }
            RealIpHeader::Forwarded => {
                for v in h.get_all(&FORWARDED) {
                    forwarded(v.as_bytes(), &mut push);
                }
            }
        }
        match walk.client() {
            Some(ip) if ip != peer.ip() => SocketAddr::new(ip, 0),
            _ => peer,
        }
    }
}

/// Calls `f` with each entry of an `X-Forwarded-For` value, left to right
/// (empty list elements skipped). An entry may carry a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), which is dropped.
pub(crate) fn x_forwarded_for(v: &[u8], f: &mut impl FnMut(Node)) {
    for entry in v.split(|&b| b == b',') {
        let entry = entry.trim_ascii();
        if !entry.is_empty() {
            f(address(entry));
        }
    }
}

/// An address, with or without a port; [`Node::Bad`] if std reads
/// neither.
fn address(text: &[u8]) -> Node {
    let Ok(text) = std::str::from_utf8(text) else {
        return Node::Bad;
    };
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Node::Addr(ip);
    }
    match text.parse::<SocketAddr>() {
        Ok(sa) => Node::Addr(sa.ip()),
        Err(_) => Node::Bad,
    }
}

/// Calls `f` with the `for=` node of each element of a `Forwarded` value
/// (RFC 7239 §4), left to right: quoted strings may hold `,` and `;`; an
/// element without a `for` that reads as an address, or with two, is
/// [`Node::Bad`]; so is the rest of a value whose quote never closes.
pub(crate) fn forwarded(v: &[u8], f: &mut impl FnMut(Node)) {
    let mut i = 0;
    // The element's `for`, if any; whether the element has anything.
    let mut node: Option<Node> = None;
    let mut any = false;
    loop {
        while i < v.len() && matches!(v[i], b' ' | b'\t' | b';') {
            i += 1;
        }
        if i >= v.len() || v[i] == b',' {
            if any {
                f(node.take().unwrap_or(Node::Bad));
            }
            node = None;
            any = false;
            if i >= v.len() {
                return;
            }
            i += 1;
            continue;
        }
        any = true;
        let start = i;
        while i < v.len() && !matches!(v[i], b'=' | b';' | b',') {
            i += 1;
        }
        let name = v[start..i].trim_ascii();
        let mut value: Option<&[u8]> = None;
        if i < v.len() && v[i] == b'=' {
            i += 1;
            while i < v.len() && matches!(v[i], b' ' | b'\t') {
                i += 1;
            }
            if i < v.len() && v[i] == b'"' {
                i += 1;
                let open = i;
                while i < v.len() && v[i] != b'"' {
                    // A quoted pair: its second byte is taken as it is.
                    i += if v[i] == b'\\' { 2 } else { 1 };
                }
                if i >= v.len() {
                    f(Node::Bad);
                    return;
                }
                value = Some(&v[open..i]);
                i += 1;
                // Only white space may follow a quoted string.
                while i < v.len() && !matches!(v[i], b';' | b',') {
                    if !matches!(v[i], b' ' | b'\t') {
                        value = None;
                    }
                    i += 1;
                }
            } else {
                let open = i;
                while i < v.len() && !matches!(v[i], b';' | b',') {
                    i += 1;
                }
                value = Some(v[open..i].trim_ascii());
            }
        }
        if name.eq_ignore_ascii_case(b"for") {
            node = Some(match (node, value) {
                (None, Some(value)) => forwarded_node(value),
                _ => Node::Bad,
            });
        }
    }
}

/// A `Forwarded` node (RFC 7239 §6): `192.0.2.43`, `192.0.2.43:47011`,
/// `[2001:db8::17]`, `[2001:db8::17]:4711`; `unknown` and obfuscated
/// `_names` are not addresses. (A bare IPv6 address, which the RFC says
/// must be bracketed and quoted, is read too.)
fn forwarded_node(text: &[u8]) -> Node {
    let Ok(text) = std::str::from_utf8(text) else {
        return Node::Bad;
    };
    let port_ok = |p: &str| {
        (p.len() <= 5 && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            || (p.starts_with('_') && p.len() > 1)
    };
    if let Some(rest) = text.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Node::Bad;
        };
        let port_fine = after.is_empty() || after.strip_prefix(':').is_some_and(port_ok);
        return match inside.parse::<std::net::Ipv6Addr>() {
            Ok(ip) if port_fine => Node::Addr(IpAddr::V6(ip)),
            _ => Node::Bad,
        };
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Node::Addr(ip);
    }
    match text.split_once(':') {
        Some((host, port)) if port_ok(port) => match host.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => Node::Addr(IpAddr::V4(ip)),
            Err(_) => Node::Bad,
        },
        _ => Node::Bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn real_ip(header: RealIpHeader) -> RealIp {
        RealIp {
            trusted_proxies: ["10.0.0.0/8", "127.0.0.1", "::1"]
                .iter()
                .map(|c| Cidr::parse(c).unwrap())
                .collect(),
            header,
        }
    }

    fn client(header: RealIpHeader, peer: &str, fields: &[&str]) -> String {
        let name = match header {
            RealIpHeader::XForwardedFor => &X_FORWARDED_FOR,
            RealIpHeader::Forwarded => &FORWARDED,
        };
        let mut h = HeaderMap::new();
        for v in fields {
            h.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        let peer: SocketAddr = peer.parse().unwrap();
        let got = real_ip(header).client(peer, &h);
        if got == peer {
            "peer".to_string()
        } else {
            got.ip().to_string()
        }
    }

    fn xff(peer: &str, fields: &[&str]) -> String {
        client(RealIpHeader::XForwardedFor, peer, fields)
    }

    fn fwd(peer: &str, fields: &[&str]) -> String {
        client(RealIpHeader::Forwarded, peer, fields)
    }

    #[test]
    fn an_untrusted_peer_is_its_own_client() {
        assert_eq!(xff("192.0.2.1:5000", &["203.0.113.9"]), "peer");
        assert_eq!(fwd("192.0.2.1:5000", &["for=203.0.113.9"]), "peer");
    }

    #[test]
    fn the_walk_takes_the_rightmost_untrusted_address() {
        let peer = "127.0.0.1:5000";
        assert_eq!(xff(peer, &["203.0.113.9"]), "203.0.113.9");
        assert_eq!(
            xff(peer, &["1.1.1.1, 203.0.113.9, 10.0.0.2"]),
            "203.0.113.9"
        );
        assert_eq!(
            xff(peer, &["1.1.1.1, 203.0.113.9", "10.0.0.2,10.3.0.1"]),
            "203.0.113.9"
        );
        // All trusted: the leftmost.
        assert_eq!(xff(peer, &["10.0.0.5, 10.0.0.2"]), "10.0.0.5");
        // Ports, IPv6, IPv4-mapped, empty elements.
        assert_eq!(xff(peer, &["203.0.113.9:4711"]), "203.0.113.9");
        assert_eq!(xff(peer, &["[2001:db8::1]:4711, ::1"]), "2001:db8::1");
        assert_eq!(xff(peer, &["2001:db8::1,,"]), "2001:db8::1");
        assert_eq!(xff(peer, &[]), "peer");
        assert_eq!(xff(peer, &[""]), "peer");
        // The client is the peer itself.
        assert_eq!(xff(peer, &["127.0.0.1"]), "peer");
    }

    #[test]
    fn garbage_where_the_walk_reads_gives_the_peer() {
        let peer = "10.9.9.9:5000";
        assert_eq!(xff(peer, &["unknown"]), "peer");
        assert_eq!(xff(peer, &["203.0.113.9, nonsense"]), "peer");
        assert_eq!(xff(peer, &["203.0.113.9, 10.0.0.1, 300.1.1.1"]), "peer");
        assert_eq!(xff(peer, &["nonsense, 10.0.0.1"]), "peer");
        // Left of the client it is never read.
        assert_eq!(
            xff(peer, &["nonsense, 203.0.113.9, 10.0.0.1"]),
            "203.0.113.9"
        );
    }

    #[test]
    fn forwarded_for_nodes() {
        let peer = "[::1]:5000";
        assert_eq!(
            fwd(peer, &["for=192.0.2.60;proto=http;by=203.0.113.43"]),
            "192.0.2.60"
        );
        assert_eq!(
            fwd(peer, &[r#"for="[2001:db8:cafe::17]:4711""#]),
            "2001:db8:cafe::17"
        );
        assert_eq!(fwd(peer, &[r#"For="[2001:db8::17]""#]), "2001:db8::17");
        assert_eq!(fwd(peer, &[r#"for="192.0.2.43:47011""#]), "192.0.2.43");
        assert_eq!(
            fwd(
                peer,
                &["for=192.0.2.43, for=198.51.100.17;by=10.0.0.1, for=10.0.0.7"]
            ),
            "198.51.100.17"
        );
        assert_eq!(fwd(peer, &["for=192.0.2.43", "for=10.1.1.1"]), "192.0.2.43");
        // Quoted `,` and `;` do not split.
        assert_eq!(
            fwd(peer, &[r#"for=192.0.2.43;ext="a,b;c", for=10.1.1.1"#]),
            "192.0.2.43"
        );
        // Not addresses.
        for bad in [
            "for=unknown",
            "for=_hidden",
            r#"for="_gazonk""#,
            "for=\"[2001:db8::1\"",
            "for=\"[2001:db8::1]:x\"",
            "proto=https",
            "for=192.0.2.1;for=192.0.2.2",
            "for=\"192.0.2.1",
            "for=\"192.0.2.1\"x",
            "for",
        ] {
            assert_eq!(fwd(peer, &[bad]), "peer", "{bad}");
        }
        assert_eq!(fwd(peer, &["for=192.0.2.9, for=unknown"]), "peer");
    }
}
