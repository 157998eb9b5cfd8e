//! An upstream response compressed on its way to the client
//! ([`crate::compress`] decides and rewrites the head; the body is
//! [`Compressed`]), or a stored one (its body compressed by the cache's
//! body, which keeps each coding's form for the next hits).

use super::response_body::{Compressed, ProxyBody};

/// What the respond phase needs to compress a response.
pub(crate) struct Compression {
    pub(crate) config: std::sync::Arc<crate::config::compress::Compress>,
    /// The request's choice among the offered codings.
    pub(crate) coding: Option<crate::config::compress::Coding>,
    pub(crate) method: http::Method,
}

/// `resp` compressed as `c` says, if it is an upstream's response that
/// may be (see [`crate::compress`]).
pub(super) fn response(
    resp: http::Response<ProxyBody>,
    c: Compression,
) -> http::Response<ProxyBody> {
    let compressible = match resp.body() {
        ProxyBody::Upstream(_) => true,
        // A stored response's whole body (not a range).
        ProxyBody::Cached(b) => b.0.is_whole(),
        _ => false,
    };
    if !compressible || !crate::compress::eligible(&c.method, resp.status()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let body = match (
        crate::compress::prepare(&c.config, c.coding, &mut parts.headers),
        body,
    ) {
        (Some(encoder), ProxyBody::Upstream(u)) => {
            ProxyBody::Compressed(Box::new(Compressed::new(u, encoder)))
        }
        (Some(encoder), ProxyBody::Cached(mut b)) => {
            // (`prepare` gave an encoder: the request chose a coding.)
            if let Some(coding) = c.coding {
                if let Some(len) = b.0.encode(coding, encoder) {
                    parts
                        .headers
                        .insert(http::header::CONTENT_LENGTH, len.into());
                }
            }
            ProxyBody::Cached(b)
        }
        (_, body) => body,
    };
    http::Response::from_parts(parts, body)
}
