//! An upstream body compressed on its way to the client
//! ([`crate::compress`]): each data frame is compressed and flushed as it
//! comes (nothing waits for more of the body: server-sent events stay
//! live), the coding's end is written when the upstream's body ends, and
//! trailers follow it. The access log counts the compressed bytes.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;

use super::exchange::{BodyError, Ended, ProxyBody, UpstreamBody};
use super::request::Compression;
use crate::compress::Encoder;

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

pub(crate) struct Compressed {
    body: UpstreamBody,
    encoder: Encoder,
    /// Trailers, sent after the coding's last bytes.
    trailers: Option<HeaderMap>,
    done: bool,
}

impl Compressed {
    pub(crate) fn new(body: UpstreamBody, encoder: Encoder) -> Compressed {
        Compressed {
            body,
            encoder,
            trailers: None,
            done: false,
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            if self.done {
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let out = match self.body.poll_raw(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    self.body.finish(Ended::UpstreamFailed);
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match self.encoder.chunk(&data) {
                        Ok(out) if self.body.upstream_ended() => self.end(Some(out)),
                        Ok(out) => Ok(out),
                        Err(e) => Err(e),
                    },
                    Err(frame) => {
                        self.trailers = frame.into_trailers().ok();
                        self.end(None)
                    }
                },
                Poll::Ready(None) => self.end(None),
            };
            match out {
                Ok(b) if b.is_empty() => continue,
                Ok(b) => {
                    self.body.sent(b.len());
                    if self.done {
                        self.body.finish(Ended::Done);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Err(e) => {
                    tracing::warn!("compressing a response body failed: {e}");
                    self.done = true;
                    self.trailers = None;
                    self.body.finish(Ended::UpstreamFailed);
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    /// The upstream's body ended: the coding's last bytes, after `before`
    /// (the last data frame's).
    fn end(&mut self, before: Option<Bytes>) -> std::io::Result<Bytes> {
        self.done = true;
        let last = self.encoder.finish()?;
        let out = match before {
            Some(b) if !b.is_empty() => {
                let mut all = Vec::with_capacity(b.len() + last.len());
                all.extend_from_slice(&b);
                all.extend_from_slice(&last);
                Bytes::from(all)
            }
            _ => last,
        };
        if out.is_empty() {
            // Nothing to send: the exchange ends here.
            self.body.finish(Ended::Done);
        }
        Ok(out)
    }
}
