//! A limit's key, hashed: the request's key parts (client address, route,
//! a header's or a cookie's value) fed into a keyed hash, so that clients
//! cannot aim at one another's slot. Shared by every kind of limit table.
//!
//! A table in this process hashes with aHash under random keys drawn per
//! table (what the cache's maps use: a client address costs about 40
//! instructions where SipHash-1-3 took 180, bench/callgrind.sh). A global
//! limit's keys are named alike by every instance in Redis, so they take
//! SipHash-1-3 under a fixed key: aHash's output is not the same across
//! versions and machines.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use http::header::HeaderMap;
use siphasher::sip::SipHasher13;

use crate::config::KeyPart;

/// One table's hash key.
#[derive(Debug)]
pub(crate) enum Keyed {
    /// This process's own table: aHash, random keys.
    Local(ahash::RandomState),
    /// Names shared between instances: SipHash-1-3, this key.
    Shared(u64, u64),
}

impl Keyed {
    /// A fresh random hash key.
    pub(crate) fn new() -> Keyed {
        Keyed::Local(ahash::RandomState::new())
    }

    /// A fixed hash key (a global limit's: the same in every instance).
    pub(crate) const fn fixed(k0: u64, k1: u64) -> Keyed {
        Keyed::Shared(k0, k1)
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
        fn all<H: Hasher>(
            mut h: H,
            key: &[KeyPart],
            route: usize,
            client: IpAddr,
            headers: &HeaderMap,
        ) -> Option<u64> {
            key.iter()
                .all(|k| hash_part(k, route, client, headers, &mut h))
                .then(|| h.finish())
        }
        match self {
            Keyed::Local(s) => all(s.build_hasher(), key, route, client, headers),
            Keyed::Shared(k0, k1) => all(
                SipHasher13::new_with_keys(*k0, *k1),
                key,
                route,
                client,
                headers,
            ),
        }
    }

    /// The hash of one value, as a table would make it (tests fill
    /// tables with many keys).
    #[cfg(test)]
    pub(crate) fn hash_one<T: Hash>(&self, v: &T) -> u64 {
        match self {
            Keyed::Local(s) => s.hash_one(v),
            Keyed::Shared(k0, k1) => {
                let mut h = SipHasher13::new_with_keys(*k0, *k1);
                v.hash(&mut h);
                h.finish()
            }
        }
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
    h: &mut impl Hasher,
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
