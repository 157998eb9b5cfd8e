//! An upstream response compressed on its way to the client
//! ([`crate::compress`] decides and rewrites the head; the body is
//! [`Compressed`]).

use super::exchange::{Compressed, ProxyBody};

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
    if !matches!(resp.body(), ProxyBody::Upstream(_))
        || !crate::compress::eligible(&c.method, resp.status())
    {
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
        (_, body) => body,
    };
    http::Response::from_parts(parts, body)
}
