//! Request IDs (`request_id` on a listener): every request gets one,
//! sent upstream and back to the client in the configured field, and
//! written in the access log (`$request_id`, JSON `request_id`) and in
//! the error log's line for the request.
//!
//! An ID is 32 lowercase hex digits (128 bits): a per-thread generator
//! seeded from the operating system's randomness, then advanced by
//! SplitMix64 per ID ([`crate::random`]), so making one costs no system
//! call. IDs need to be unique, not secret.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use crate::config::RequestId;

/// A new ID.
pub(crate) fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (a, b) = crate::random::next_u128();
    // On the stack, then one allocation for the value.
    let mut out = [0u8; 32];
    for (half, word) in [a, b].into_iter().enumerate() {
        for i in 0..16 {
            out[half * 16 + i] = HEX[((word >> ((15 - i) * 4)) & 0xf) as usize];
        }
    }
    // Hex digits are always a valid field value.
    HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&out))
        .unwrap_or(HeaderValue::from_static("-"))
}

/// Whether a client's ID may be kept: 1 to 200 visible ASCII characters.
fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=200).contains(&b.len()) && b.iter().all(|c| c.is_ascii_graphic())
}

/// The request's ID, set in `headers` (the client's one kept only when
/// trusted and well-formed).
pub(crate) fn assign(cfg: &RequestId, headers: &mut HeaderMap) -> HeaderValue {
    if cfg.trust_incoming {
        let mut sent = headers.get_all(&cfg.header).iter();
        if let (Some(v), None) = (sent.next(), sent.next()) {
            if acceptable(v) {
                return v.clone();
            }
        }
    }
    let id = generate();
    headers.insert(cfg.header.clone(), id.clone());
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(trust: bool) -> RequestId {
        RequestId {
            header: http::HeaderName::from_static("x-request-id"),
            trust_incoming: trust,
        }
    }

    #[test]
    fn ids_are_32_hex_digits_and_differ() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| generate()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(10) {
            let s = id.to_str().unwrap();
            assert_eq!(s.len(), 32);
            assert!(s
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
    }

    #[test]
    fn a_clients_id_is_kept_only_when_trusted_and_well_formed() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(assign(&cfg(true), &mut h), "abc-123");
        let mine = assign(&cfg(false), &mut h);
        assert_ne!(mine, "abc-123");
        assert_eq!(h["x-request-id"], mine);
        // Two of them, or a bad one: replaced even when trusted.
        let mut h = HeaderMap::new();
        h.append("x-request-id", HeaderValue::from_static("a"));
        h.append("x-request-id", HeaderValue::from_static("b"));
        let id = assign(&cfg(true), &mut h);
        assert_eq!(h.get_all("x-request-id").iter().count(), 1);
        assert_eq!(id.len(), 32);
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_eq!(assign(&cfg(true), &mut h).len(), 32);
    }
}
