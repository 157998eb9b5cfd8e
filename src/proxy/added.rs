//! What a request adds to its fields for the upstream, where it goes out
//! ([`crate::message::added`]): the ID given to it, and the trace
//! context it carries on. Until then they are in no field map, so what
//! reads the request's fields on the way (a route's `request_headers`
//! rules, forward auth's subrequest, a background revalidation) has them
//! inserted first ([`Added::insert_now`]). What chooses by a request's
//! fields (a balancer's hash, a rate limit's or a cache's key, the access
//! log's `$http_*`) sees what the client sent, as nginx's `$http_*` do:
//! an ID or a `traceparent` the proxy makes is not among them.

use std::cell::Cell;

use http::{HeaderMap, HeaderName};

use crate::message::added::encode_field;
use crate::message::id::Id;
use crate::trace::{Context, TRACEPARENT};

/// The request's added fields (see the module doc).
#[derive(Default)]
pub(crate) struct Added<'c> {
    /// An ID given by the proxy (a client's kept one is in the fields).
    pub(crate) id: Option<(&'c HeaderName, Id)>,
    /// The trace context, sent as `traceparent`.
    pub(crate) trace: Option<Context>,
    /// Inserted in the request's fields already: nothing left to add.
    inserted: Cell<bool>,
}

impl Added<'_> {
    /// What is left to add where the request goes out.
    pub(crate) fn pending(&self) -> Option<&dyn crate::message::added::Added> {
        let any = self.id.is_some() || self.trace.is_some();
        (any && !self.inserted.get()).then_some(self as _)
    }

    /// Inserts the fields in `h` now, for what reads them before the
    /// request goes out.
    pub(crate) fn insert_now(&self, h: &mut HeaderMap) {
        if let Some(a) = self.pending() {
            a.insert(h);
            self.inserted.set(true);
        }
    }
}

impl crate::message::added::Added for Added<'_> {
    fn encode(&self, dst: &mut Vec<u8>) {
        if let Some((name, v)) = &self.id {
            encode_field(dst, name.as_str().as_bytes(), v.as_bytes());
        }
        if let Some(t) = &self.trace {
            // The whole field in one piece (its length is fixed), its
            // digits written in place.
            let at = dst.len();
            dst.extend_from_slice(
                b"traceparent: 00-00000000000000000000000000000000-0000000000000000-00\r\n",
            );
            t.write(&mut dst[at + 13..at + 68]);
        }
    }

    fn insert(&self, h: &mut HeaderMap) {
        if let Some((name, v)) = &self.id {
            h.insert((*name).clone(), v.value());
        }
        if let Some(t) = &self.trace {
            h.insert(TRACEPARENT, t.header());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn fields_are_encoded_as_inserted_and_only_once() {
        let name = HeaderName::from_static("x-request-id");
        let t = Context::parse(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        let a = Added {
            id: Some((&name, Id::Kept(HeaderValue::from_static("abc")))),
            trace: Some(t),
            ..Added::default()
        };
        let mut b = Vec::new();
        a.pending().unwrap().encode(&mut b);
        assert_eq!(
            &b[..],
            b"x-request-id: abc\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
        );
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("client's"));
        a.insert_now(&mut h);
        assert_eq!(h["x-request-id"], "abc");
        assert_eq!(
            h["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert!(a.pending().is_none(), "inserted once, not added again");
        assert!(Added::default().pending().is_none());
    }
}
