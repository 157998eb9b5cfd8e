//! The PROXY protocol header Tidegate sends at the start of a connection
//! to a server of a group with `proxy_protocol = "v1" | "v2"` (HAProxy's
//! `send-proxy`, `send-proxy-v2`): the client connection's addresses, and
//! in v2 the TLS details known of it (the server name the client asked
//! for, the protocol ALPN settled) as TLVs. v2 is encoded by the `ppp`
//! crate; v1 is one line.

use std::net::{IpAddr, SocketAddr};

use ppp::v2;

use crate::config::proxy_protocol::Version;

/// The client connection a header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Client<'a> {
    /// The client (the peer, or what its own PROXY header said).
    pub src: SocketAddr,
    /// The listener it connected to.
    pub dst: SocketAddr,
    /// TLS: the server name it asked for.
    pub sni: Option<&'a str>,
    /// TLS: the protocol ALPN settled.
    pub alpn: Option<&'a [u8]>,
    /// The client connection, among this worker's (what a pooled
    /// connection is kept for: its requests alone).
    pub conn: Owner,
}

/// A client connection of this worker thread (a number never given
/// twice), which a pooled connection serves alone (its header named it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner(pub(crate) std::num::NonZeroU64);

/// Both addresses in one family (v1 and v2 carry one): an IPv4 one beside
/// an IPv6 one is written IPv4-mapped.
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    match (src.is_ipv4(), dst.is_ipv4()) {
        (true, false) | (false, true) => (v6(src), v6(dst)),
        _ => (src, dst),
    }
}

/// PP2_TYPE_ALPN and PP2_TYPE_AUTHORITY (the spec's §2.2.1, 2.2.2).
const ALPN: u8 = 0x01;
const AUTHORITY: u8 = 0x02;

/// The header for `client`; `None`: a connection of Tidegate's own (a
/// health check), sent as v2 `LOCAL` or v1 `UNKNOWN`.
pub(crate) fn header(version: Version, client: Option<&Client<'_>>) -> Vec<u8> {
    match (version, client) {
        (Version::V1, None) => b"PROXY UNKNOWN\r\n".to_vec(),
        (Version::V1, Some(c)) => {
            let (src, dst) = same_family(c.src, c.dst);
            let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            )
            .into_bytes()
        }
        (Version::V2, None) => v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap_or_default(),
        (Version::V2, Some(c)) => {
            let base = || {
                v2::Builder::with_addresses(
                    v2::Version::Two | v2::Command::Proxy,
                    v2::Protocol::Stream,
                    same_family(c.src, c.dst),
                )
            };
            let mut b = Ok(base());
            if let Some(alpn) = c.alpn {
                b = b.and_then(|b| b.write_tlv(ALPN, alpn));
            }
            if let Some(sni) = c.sni {
                b = b.and_then(|b| b.write_tlv(AUTHORITY, sni.as_bytes()));
            }
            // (Writing fails only past 64 KiB: a server name is at most
            // 255 bytes. The addresses alone, then.)
            b.and_then(v2::Builder::build)
                .or_else(|_| base().build())
                .unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::HeaderResult;

    fn client(src: &str, dst: &str) -> Client<'static> {
        Client {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sni: Some("a.test"),
            alpn: Some(b"h2"),
            conn: Owner(std::num::NonZeroU64::MIN),
        }
    }

    #[test]
    fn v1_lines_in_one_family() {
        let c = client("192.0.2.7:51000", "10.0.0.1:443");
        assert_eq!(
            header(Version::V1, Some(&c)),
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n"
        );
        let c = client("[2001:db8::7]:4000", "10.0.0.1:443");
        assert_eq!(
            header(Version::V1, Some(&c)),
            b"PROXY TCP6 2001:db8::7 ::ffff:10.0.0.1 4000 443\r\n"
        );
        assert_eq!(header(Version::V1, None), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_reads_back_with_its_tlvs() {
        let c = client("192.0.2.7:51000", "10.0.0.1:443");
        let h = header(Version::V2, Some(&c));
        let HeaderResult::V2(Ok(parsed)) = HeaderResult::parse(&h) else {
            panic!("{h:?}")
        };
        assert_eq!(parsed.command, v2::Command::Proxy);
        assert_eq!(parsed.addresses, (c.src, c.dst).into());
        let tlvs: Vec<(u8, Vec<u8>)> = parsed
            .tlvs()
            .map(|t| {
                let t = t.unwrap();
                (t.kind, t.value.to_vec())
            })
            .collect();
        assert_eq!(
            tlvs,
            [(ALPN, b"h2".to_vec()), (AUTHORITY, b"a.test".to_vec())]
        );
        assert_eq!(parsed.len(), h.len());
        let local = header(Version::V2, None);
        let HeaderResult::V2(Ok(parsed)) = HeaderResult::parse(&local) else {
            panic!("{local:?}")
        };
        assert_eq!(parsed.command, v2::Command::Local);
    }
}
