//! Request IDs (`request_id` on a listener or a route): every request
//! gets one, sent upstream and back to the client in the configured
//! field, and written in the access log (`$request_id`, JSON
//! `request_id`) and in the error log's line for the request.
//!
//! A listener's ID is given as the request arrives. When some route of
//! the config has its own `request_id` (which wins for the requests it
//! takes), every ID waits until the route is known ([`Late`]): the
//! route's settings, else the listener's. A config without route-level
//! IDs pays nothing for them.
//!
//! An ID is 32 lowercase hex digits (128 bits): a per-thread generator
//! seeded from the operating system's randomness, then advanced by
//! SplitMix64 per ID ([`crate::random`]), so making one costs no system
//! call. IDs need to be unique, not secret.

use http::{HeaderMap, HeaderValue};

use super::exchange::IdSlot;
use crate::config::RequestId;
use crate::message::id::Id;
use crate::router::Route;

/// A new ID: bytes, made a field value only where one goes in a map
/// ([`Id`]).
pub(crate) fn generate() -> Id {
    let (a, b) = crate::random::next_u128();
    let mut words = [0u8; 16];
    words[..8].copy_from_slice(&a.to_be_bytes());
    words[8..].copy_from_slice(&b.to_be_bytes());
    let mut out = [0u8; 32];
    crate::random::put_hex(&mut out, &words);
    Id::New(out)
}

/// Whether a client's ID may be kept: 1 to 200 visible ASCII characters.
fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=200).contains(&b.len()) && b.iter().all(|c| c.is_ascii_graphic())
}

/// The request's ID: the client's, when trusted and well-formed (kept in
/// `headers`), else a new one, the second item `true`: added where the
/// request goes out ([`super::added`]), any client's field of that name
/// removed. `sent`: `headers` has a field of that name (from the proxy's
/// one pass over them), so most requests look nothing up.
/// Inlined: with two callers LLVM stopped inlining it into `handle`,
/// which cost the listener's path about 20 instructions per request
/// (bench/callgrind.sh).
#[inline(always)]
pub(crate) fn give(cfg: &RequestId, headers: &mut HeaderMap, sent: bool) -> (Id, bool) {
    if sent {
        if let Some(v) = kept(cfg, headers) {
            return (v, false);
        }
        headers.remove(&cfg.header);
    }
    (generate(), true)
}

/// The client's ID, when trusted and well-formed.
fn kept(cfg: &RequestId, headers: &HeaderMap) -> Option<Id> {
    if !cfg.trust_incoming {
        return None;
    }
    let mut sent = headers.get_all(&cfg.header).iter();
    match (sent.next(), sent.next()) {
        (Some(v), None) if acceptable(v) => Some(Id::Kept(v.clone())),
        _ => None,
    }
}

/// The request's ID, a new one set in `headers` at once (an ID given once
/// the route is known: [`Late`]).
fn assign(cfg: &RequestId, headers: &mut HeaderMap) -> Id {
    if let Some(v) = kept(cfg, headers) {
        return v;
    }
    let id = generate();
    headers.insert(cfg.header.clone(), id.value());
    id
}

/// Where an ID given once the request's route is known goes (see the
/// module doc). Only pointers: the request's future, which holds it
/// across the forward phase, grows by no more.
pub(crate) struct Late<'l, 'c> {
    /// The request's access-log line, which takes the ID at once: a
    /// request cancelled after routing still logs it.
    pub(crate) line: IdSlot<'l>,
    /// The ID, and the settings that gave it (their field).
    pub(crate) id: &'l mut Option<(&'c RequestId, Id)>,
}

impl<'c> Late<'_, 'c> {
    /// Gives the request its ID: by `route`'s settings if it has its own
    /// (`None`: not routed), else by the `listener`'s, if any.
    pub(crate) fn assign(
        self,
        route: Option<&'c Route>,
        listener: Option<&'c RequestId>,
        headers: &mut HeaderMap,
    ) {
        let Some(cfg) = route.and_then(|r| r.request_id.as_ref()).or(listener) else {
            return;
        };
        let id = assign(cfg, headers);
        if let Some(slot) = self.line {
            *slot = Some(id.clone());
        }
        *self.id = Some((cfg, id));
    }
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
            let s = id.as_str().unwrap();
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
        assert_eq!(h["x-request-id"], mine.value());
        // Two of them, or a bad one: replaced even when trusted.
        let mut h = HeaderMap::new();
        h.append("x-request-id", HeaderValue::from_static("a"));
        h.append("x-request-id", HeaderValue::from_static("b"));
        let id = assign(&cfg(true), &mut h);
        assert_eq!(h.get_all("x-request-id").iter().count(), 1);
        assert_eq!(id.as_bytes().len(), 32);
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_eq!(assign(&cfg(true), &mut h).as_bytes().len(), 32);
    }

    #[test]
    fn a_given_id_is_left_to_be_added_and_the_clients_removed() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(
            give(&cfg(true), &mut h, true),
            (Id::Kept("abc-123".parse().unwrap()), false)
        );
        assert_eq!(h["x-request-id"], "abc-123");
        let (id, new) = give(&cfg(false), &mut h, true);
        assert!(new && id.as_bytes().len() == 32);
        assert!(h.is_empty(), "the client's ID is not sent on");
        let (_, new) = give(&cfg(true), &mut h, false);
        assert!(new && h.is_empty());
    }
}
