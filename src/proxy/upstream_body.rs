//! An upstream's response body on its way to the client, with the
//! [`Exchange`] it finishes when it ends, and the copy into the cache
//! made as it streams. When the client goes away while misses stream the
//! response being stored from it, the rest is read into the cache by a
//! task of its own (those misses get it whole).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::exchange::{Ended, Exchange};

/// An upstream response body plus the exchange to finish when it ends.
pub(crate) struct UpstreamBody {
    /// `None` once handed to the task that reads it into the cache.
    inner: Option<Incoming>,
    pub(super) bytes: u64,
    exchange: Option<Exchange>,
    /// The response, copied into the cache as it streams.
    store: Option<Box<super::cache::body::Storing>>,
    /// Read on after its client left (its exchange ends as abandoned).
    client_gone: bool,
}

impl UpstreamBody {
    pub(crate) fn new(inner: Incoming, exchange: Exchange) -> Self {
        UpstreamBody {
            inner: Some(inner),
            bytes: 0,
            exchange: Some(exchange),
            store: None,
            client_gone: false,
        }
    }

    /// Copies the body into the cache as it streams.
    pub(crate) fn store(&mut self, s: Box<super::cache::body::Storing>) {
        self.store = Some(s);
    }

    /// Tells the copy into the cache what came: a data frame is kept,
    /// the end stores it, anything else (trailers, an error, too much)
    /// gives it up.
    fn tee(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, hyper::Error>>>) {
        let Some(s) = &mut self.store else { return };
        let keep = match polled {
            Poll::Pending => return,
            Poll::Ready(Some(Ok(f))) => f.data_ref().is_some_and(|d| s.data(d)),
            Poll::Ready(Some(Err(_))) => false,
            Poll::Ready(None) => true,
        };
        if !keep {
            self.store = None;
        } else if self.upstream_ended() || matches!(polled, Poll::Ready(None)) {
            if let Some(s) = self.store.take() {
                s.commit();
            }
        }
    }

    /// The upstream's next frame, letting its connection read first if
    /// none is there; counting and finishing are the caller's.
    pub(super) fn poll_raw(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let mut polled = Pin::new(&mut *inner).poll_frame(cx);
        if polled.is_pending() {
            // Let the upstream connection read, then look again.
            if let Some(ex) = &mut self.exchange {
                ex.drive(cx);
            }
            polled = Pin::new(inner).poll_frame(cx);
        }
        if self.store.is_some() {
            self.tee(&polled);
        }
        polled
    }

    /// Whether the upstream's body has ended.
    pub(super) fn upstream_ended(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    pub(super) fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(SizeHint::default, |b| b.size_hint())
    }

    /// Counts `n` bytes sent to the client.
    pub(super) fn sent(&mut self, n: usize) {
        self.bytes += n as u64;
    }

    pub(super) fn finish(&mut self, how: Ended) {
        if let Some(ex) = self.exchange.take() {
            ex.end(how, self.bytes);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // The client left mid-body while misses stream this response as
        // it is stored: the rest goes on into the cache, for them.
        if !self.upstream_ended()
            && !self.client_gone
            && self.store.as_ref().is_some_and(|s| s.streamed())
        {
            let rest = UpstreamBody {
                inner: self.inner.take(),
                bytes: self.bytes,
                exchange: self.exchange.take(),
                store: self.store.take(),
                client_gone: true,
            };
            tokio::task::spawn_local(read_into_cache(rest));
            return;
        }
        // hyper may stop polling once `is_end_stream` says so; only a body
        // dropped before its end is one the client abandoned.
        let how = if self.client_gone {
            Ended::ClientGone
        } else if self.upstream_ended() {
            if let Some(s) = self.store.take() {
                s.commit();
            }
            Ended::Done
        } else {
            Ended::ClientGone
        };
        self.finish(how);
    }
}

/// The rest of `body`, read into the cache for the misses streaming it;
/// a read that stalls past the cache's `lock_timeout` gives up (those
/// streaming it are cut off, as the client would have been).
async fn read_into_cache(mut body: UpstreamBody) {
    let stall = body
        .store
        .as_ref()
        .map_or(std::time::Duration::ZERO, |s| s.store.config.lock_timeout);
    loop {
        let next = std::future::poll_fn(|cx| match body.poll_raw(cx) {
            Poll::Ready(Some(Ok(f))) => {
                // (The tee kept it.)
                Poll::Ready(Some(f.is_data()))
            }
            Poll::Ready(Some(Err(_))) => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        });
        match tokio::time::timeout(stall, next).await {
            Ok(Some(_)) if !body.upstream_ended() => continue,
            _ => break,
        }
    }
}
