//! The body the client receives ([`ProxyBody`]): the upstream's,
//! streamed frame by frame with backpressure (and compressed on the way,
//! [`Compressed`]), a stored one from the cache, or a short one of our
//! own, or a static file's.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::exchange::Ended;
pub(crate) use super::upstream_body::UpstreamBody;
use crate::compress::Encoder;

/// The body the client receives.
pub(crate) enum ProxyBody {
    /// Streamed from the upstream.
    Upstream(UpstreamBody),
    /// Streamed from the upstream, compressed on the way.
    Compressed(Box<Compressed>),
    /// A short body of our own (errors); `None` once sent.
    Full(Option<Bytes>),
    /// A stored response's body, from the cache, with the exchange that
    /// revalidated it, if one did (its log line counts these bytes, and
    /// ends with this body).
    Cached(Box<(super::cache::body::CachedBody, Option<UpstreamBody>)>),
    /// A static file's answer, read in chunks.
    File(Box<super::file_body::FileBody>),
}

/// Why a body stopped before its end: the upstream's failure, or the
/// compressor's.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl ProxyBody {
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        ProxyBody::Full(if b.is_empty() { None } else { Some(b) })
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut *self {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Cached(c) => {
                let (body, upstream) = &mut **c;
                let Poll::Ready(next) = body.poll_chunk(cx) else {
                    return Poll::Pending;
                };
                match &next {
                    Some(Ok(b)) => {
                        if let Some(u) = upstream {
                            u.sent(b.len());
                        }
                    }
                    Some(Err(e)) => tracing::warn!("a stored body broke off: {e}"),
                    // The exchange ends with the last byte (the upstream's
                    // body, a 304's, has ended).
                    None => *upstream = None,
                }
                Poll::Ready(next.map(|b| b.map(Frame::data).map_err(Into::into)))
            }
            ProxyBody::Compressed(c) => c.poll_frame(cx),
            ProxyBody::File(f) => match f.poll_chunk(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!("a static file broke off: {e}");
                    Poll::Ready(Some(Err(e.into())))
                }
            },
            ProxyBody::Upstream(u) => match u.poll_raw(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        u.bytes += d.len() as u64;
                    }
                    if u.upstream_ended() {
                        u.finish(Ended::Done);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    u.finish(Ended::UpstreamFailed);
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Ready(None) => {
                    u.finish(Ended::Done);
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Cached(c) => c.0.is_end(),
            ProxyBody::Upstream(u) => u.upstream_ended(),
            ProxyBody::Compressed(c) => c.is_end_stream(),
            ProxyBody::File(f) => f.is_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Cached(c) => {
                c.0.left()
                    .map_or_else(SizeHint::default, SizeHint::with_exact)
            }
            ProxyBody::Upstream(u) => u.size_hint(),
            ProxyBody::File(f) => SizeHint::with_exact(f.left()),
            // Not known before it ends.
            ProxyBody::Compressed(_) => SizeHint::default(),
        }
    }
}

/// An upstream body compressed on its way to the client
/// ([`crate::compress`]): each data frame is compressed and flushed as it
/// comes (nothing waits for more of the body: server-sent events stay
/// live), the coding's end is written when the upstream's body ends, and
/// trailers follow it. The access log counts the compressed bytes.
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
