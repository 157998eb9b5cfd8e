//! The request body: how a client's bytes stream to the upstream.
//!
//! Neither body is ever collected: each frame is handed on as it arrives,
//! and hyper only asks for the next one once the previous one was written,
//! which gives backpressure in both directions.
//!
//! - [`RequestBody`] carries the client's body to the upstream, enforcing the
//!   route's size limit while streaming and noting progress for the
//!   upstream response-head timeout.
//! - The response's way back is [`crate::proxy::response_body::ProxyBody`].

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

/// What went wrong while streaming a client's body upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestBodyError {
    #[error("request body exceeds {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the client's body: {0}")]
    Client(#[source] hyper::Error),
}

/// Shared between a [`RequestBody`] (polled by the upstream connection's
/// task) and the request's own future, which reads it to extend the
/// response-head timeout while the body still flows, and the exchange,
/// which returns an upstream connection to the pool only once the whole
/// request went out. (Why a send failed is read from the error's source
/// chain, not from here.)
#[derive(Debug)]
pub(crate) struct BodyProgress {
    /// The body broke the route's limit or the client's stream failed:
    /// nothing of it is left to discard.
    pub failed: Cell<bool>,
    pub last_progress: Cell<Instant>,
    /// The body's end was handed to the upstream connection.
    pub ended: Cell<bool>,
    /// How long the upstream may go without taking any of the body.
    pub stall: Duration,
}

impl BodyProgress {
    pub(crate) fn new(stall: Duration) -> Rc<BodyProgress> {
        Rc::new(BodyProgress {
            failed: Cell::new(false),
            last_progress: Cell::new(Instant::now()),
            ended: Cell::new(false),
            stall,
        })
    }
}

/// Takes a client's request body that nobody reads any more (its upstream
/// answered early and stopped reading, or failed): the client connection
/// reads and drops the rest (HTTP/1.1), or resets the stream with NO_ERROR
/// (HTTP/2), so that the client stops sending and reads the response.
pub(crate) trait Discard {
    fn discard(&self, body: Incoming);
}

/// The client's request body on its way to the upstream.
pub(crate) struct RequestBody {
    /// `None` for a body held whole in `full`, or empty.
    inner: Option<Incoming>,
    /// A body read ahead whole (kept so a request can be sent again).
    full: Option<Bytes>,
    seen: u64,
    limit: u64,
    progress: Option<Rc<BodyProgress>>,
    /// Where the rest of the body goes if this is dropped before its end.
    discard: Option<Rc<dyn Discard>>,
}

impl RequestBody {
    /// `progress` is `None` for bodies known to be empty.
    pub(crate) fn new(
        inner: Incoming,
        limit: Option<u64>,
        progress: Option<Rc<BodyProgress>>,
        discard: Option<Rc<dyn Discard>>,
    ) -> Self {
        RequestBody {
            inner: Some(inner),
            full: None,
            seen: 0,
            limit: limit.unwrap_or(u64::MAX),
            progress,
            discard,
        }
    }

    /// A body read ahead whole, its end noted in `progress`.
    pub(crate) fn full_with(b: Bytes, progress: Rc<BodyProgress>) -> Self {
        let mut body = RequestBody::full(b);
        if body.full.is_none() {
            // Never polled: there is nothing to send.
            progress.ended.set(true);
        }
        body.progress = Some(progress);
        body
    }

    /// An empty body.
    pub(crate) fn empty() -> Self {
        RequestBody::full(Bytes::new())
    }

    /// A body already read whole.
    pub(crate) fn full(b: Bytes) -> Self {
        RequestBody {
            inner: None,
            full: (!b.is_empty()).then_some(b),
            seen: 0,
            limit: u64::MAX,
            progress: None,
            discard: None,
        }
    }

    fn ended(&self) {
        if let Some(p) = &self.progress {
            p.last_progress.set(Instant::now());
            p.ended.set(true);
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let (Some(inner), Some(sink)) = (self.inner.take(), self.discard.take()) else {
            return;
        };
        // Not a body that ended, failed, or broke the route's limit (that
        // one is cut, and its connection closes lingering).
        let failed = self
            .progress
            .as_ref()
            .is_some_and(|p| p.ended.get() || p.failed.get());
        if !failed && !inner.is_end_stream() {
            sink.discard(inner);
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
        // hyper stops polling once `is_end_stream` says so: the end is
        // noted with the last frame.
        let Some(inner) = &mut this.inner else {
            let frame = this.full.take().map(|b| Ok(Frame::data(b)));
            this.ended();
            return Poll::Ready(frame);
        };
        let res = match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        let at_end = inner.is_end_stream();
        match res {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        if let Some(p) = &this.progress {
                            p.failed.set(true);
                        }
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge {
                            limit: this.limit,
                        })));
                    }
                }
                if at_end {
                    this.ended();
                } else if let Some(p) = &this.progress {
                    p.last_progress.set(Instant::now());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                if let Some(p) = &this.progress {
                    p.failed.set(true);
                }
                Poll::Ready(Some(Err(RequestBodyError::Client(e))))
            }
            None => {
                this.ended();
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
