//! Body wrappers: how bytes stream through the proxy.
//!
//! Neither body is ever collected: each frame is handed on as it arrives,
//! and hyper only asks for the next one once the previous one was written,
//! which gives backpressure in both directions.
//!
//! - [`RequestBody`] carries the client's body to the upstream, enforcing the
//!   route's size limit while streaming and noting progress for the
//!   upstream response-head timeout.
//! - [`ProxyBody`] carries the upstream's body (or a short synthetic one) to
//!   the client, counting bytes and telling the exchange when it ended, so
//!   the upstream connection goes back to the pool and the access log gets
//!   its line.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::proxy::Exchange;

/// What went wrong while streaming a client's body upstream.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("request body exceeds {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the client's body: {0}")]
    Client(#[source] hyper::Error),
}

/// Shared between a [`RequestBody`] (polled by the upstream connection's
/// task) and the request's own future, which reads it to classify failures
/// and to extend the response-head timeout while the body still flows.
#[derive(Debug)]
pub struct BodyProgress {
    pub too_large: Cell<bool>,
    pub client_failed: Cell<bool>,
    pub last_progress: Cell<Instant>,
}

/// The client's request body on its way to the upstream.
pub struct RequestBody {
    /// `None` for a body held whole in `full`, or empty.
    inner: Option<Incoming>,
    /// A body read ahead whole (kept so a request can be sent again).
    full: Option<Bytes>,
    seen: u64,
    limit: u64,
    progress: Option<Rc<BodyProgress>>,
}

impl RequestBody {
    /// `progress` is `None` for bodies known to be empty.
    pub fn new(inner: Incoming, limit: Option<u64>, progress: Option<Rc<BodyProgress>>) -> Self {
        RequestBody {
            inner: Some(inner),
            full: None,
            seen: 0,
            limit: limit.unwrap_or(u64::MAX),
            progress,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        RequestBody::full(Bytes::new())
    }

    /// A body already read whole.
    pub fn full(b: Bytes) -> Self {
        RequestBody {
            inner: None,
            full: (!b.is_empty()).then_some(b),
            seen: 0,
            limit: u64::MAX,
            progress: None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = &mut *self;
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(this.full.take().map(|b| Ok(Frame::data(b))));
        };
        let res = match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        match res {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        if let Some(p) = &this.progress {
                            p.too_large.set(true);
                        }
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge {
                            limit: this.limit,
                        })));
                    }
                }
                if let Some(p) = &this.progress {
                    p.last_progress.set(Instant::now());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                if let Some(p) = &this.progress {
                    p.client_failed.set(true);
                }
                Poll::Ready(Some(Err(RequestBodyError::Client(e))))
            }
            None => {
                if let Some(p) = &this.progress {
                    p.last_progress.set(Instant::now());
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Some(b) => b.is_end_stream(),
            None => self.full.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) => b.size_hint(),
            None => SizeHint::with_exact(self.full.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// The body the client receives.
pub enum ProxyBody {
    /// Streamed from the upstream.
    Upstream(UpstreamBody),
    /// A short body of our own (errors); `None` once sent.
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        ProxyBody::Full(if b.is_empty() { None } else { Some(b) })
    }
}

/// An upstream response body plus the exchange to finish when it ends.
pub struct UpstreamBody {
    inner: Incoming,
    bytes: u64,
    exchange: Option<Exchange>,
}

impl UpstreamBody {
    pub fn new(inner: Incoming, exchange: Exchange) -> Self {
        UpstreamBody {
            inner,
            bytes: 0,
            exchange: Some(exchange),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(ex) = self.exchange.take() {
            ex.end(complete, self.bytes);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper may stop polling once `is_end_stream` says so; only a body
        // dropped before its end is an aborted one.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut *self {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(u) => {
                let mut polled = Pin::new(&mut u.inner).poll_frame(cx);
                if polled.is_pending() {
                    // Let the upstream connection read, then look again.
                    if let Some(ex) = &mut u.exchange {
                        ex.drive(cx);
                    }
                    polled = Pin::new(&mut u.inner).poll_frame(cx);
                }
                match polled {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            u.bytes += d.len() as u64;
                        }
                        if u.inner.is_end_stream() {
                            u.finish(true);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        u.finish(false);
                        Poll::Ready(Some(Err(e)))
                    }
                    Poll::Ready(None) => {
                        u.finish(true);
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(u) => u.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Upstream(u) => u.inner.size_hint(),
        }
    }
}
