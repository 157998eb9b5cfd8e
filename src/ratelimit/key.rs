//! A limit's key, hashed: the request's key parts (client address, route,
//! a header's or a cookie's value) fed into SipHash-1-3 under a random
//! key drawn per table, so clients cannot aim at one another's slot.
//! Shared by every kind of limit table.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use http::header::HeaderMap;
use siphasher::sip::SipHasher13;

use crate::config::KeyPart;

/// One table's hash key.
#[derive(Debug)]
pub(crate) struct Keyed {
    sip: (u64, u64),
}

impl Keyed {
    /// A fresh random hash key.
    pub(crate) fn new() -> Keyed {
        Keyed {
            sip: (crate::random::next_u64(), crate::random::next_u64()),
        }
    }

    /// A fixed hash key (a global limit's: the same in every instance).
    pub(crate) const fn fixed(k0: u64, k1: u64) -> Keyed {
        Keyed { sip: (k0, k1) }
    }

    /// A hasher for one key.
    pub(crate) fn hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.sip.0, self.sip.1)
    }

    /// The hash of a request's `key`; `None` when the request lacks one
    /// of its parts (no such header or cookie), which leaves it out of
    /// the limit, as nginx skips an empty key.
    pub(crate) fn hash(
        &self,
        key: &[KeyPart],
        route: usize,
        client: IpAddr,
        headers: &HeaderMap,
    ) -> Option<u64> {
        let mut h = self.hasher();
        key.iter()
            .all(|k| hash_part(k, route, client, headers, &mut h))
            .then(|| h.finish())
    }
}

/// The kinds of `key`'s parts (`client_ip`, `header+cookie`...), for logs:
/// never their values.
pub(crate) fn kinds(key: &[KeyPart]) -> String {
    key.iter().map(KeyPart::kind).collect::<Vec<_>>().join("+")
}

/// Feeds one key part into `h`; `false` when the request lacks it.
fn hash_part(
    part: &KeyPart,
    route: usize,
    client: IpAddr,
    headers: &HeaderMap,
    h: &mut SipHasher13,
) -> bool {
    match part {
        KeyPart::ClientIp => client.hash(h),
        KeyPart::Route => route.hash(h),
        KeyPart::Header(name) => match headers.get(name) {
            Some(v) => v.as_bytes().hash(h),
            None => return false,
        },
        KeyPart::Cookie(name) => match crate::message::headers::cookie(headers, name) {
            Some(v) => v.hash(h),
            None => return false,
        },
    }
    true
}
