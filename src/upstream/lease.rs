//! A connection (or HTTP/2 stream) lent to one request, and how it is
//! driven: the HTTP/1.1 connection's driver travels with its lease and is
//! polled by whoever waits on the connection.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::{Io, Sender};
use crate::body::RequestBody;

type Driver = http1::Connection<TokioIo<Io>, RequestBody>;

/// Streams one HTTP/2 connection carries before another one is opened.
pub(crate) const H2_STREAMS: u32 = 100;

/// One stream on a shared HTTP/2 connection, released on drop.
pub(super) struct StreamSlot(pub(super) Rc<H2Conn>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get().saturating_sub(1));
        self.0.last_used.set(Instant::now());
    }
}

/// A shared HTTP/2 connection of one thread; its driver runs as a task.
pub(super) struct H2Conn {
    pub(super) sender: http2::SendRequest<RequestBody>,
    pub(super) active: Cell<u32>,
    pub(super) last_used: Cell<Instant>,
}

/// An upstream connection (or, for HTTP/2, a stream on one), held by one
/// request at a time.
pub(crate) struct Lease {
    pub sender: Sender,
    /// HTTP/1.1 only. `None` once finished: the connection is closed, and
    /// dropping the driver fails whatever still waited on it (a response,
    /// a body).
    pub(super) driver: Option<Pin<Box<Driver>>>,
    /// HTTP/2 only: the stream this request counts as.
    pub(super) _stream: Option<StreamSlot>,
    /// Flat index of the server, for [`Pool::checkin`](super::Pool::checkin).
    pub server: usize,
    /// How long it sat idle in the pool; `None` for a fresh connection.
    pub idle_for: Option<Duration>,
    /// Opened with a PROXY protocol header: the client connection it
    /// serves, alone.
    pub(super) owner: Option<super::proxy_protocol::Owner>,
}

impl Lease {
    /// Lets the connection make progress (read, write, notice a close).
    /// Call it from every poll of whatever waits on this connection.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) {
        let Some(driver) = &mut self.driver else {
            return;
        };
        if let Poll::Ready(res) = driver.as_mut().poll(cx) {
            self.driver = None;
            if let Err(e) = res {
                tracing::debug!(server = self.server, "upstream connection ended: {e}");
            }
        }
    }

    /// A connection whose driver runs as a task of its own (an upgrade's,
    /// see [`crate::proxy::tunnel`]): never pooled, as it reads as dead here.
    pub(crate) fn detached(sender: Sender, server: usize) -> Lease {
        Lease {
            sender,
            driver: None,
            _stream: None,
            server,
            idle_for: None,
            owner: None,
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        match &self.sender {
            Sender::H1(_) => self.driver.is_none(),
            Sender::H2 { sender, .. } => sender.is_closed(),
        }
    }

    /// Ready for a request; `false` if the connection turned out closed.
    pub(super) async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            self.drive(cx);
            let Sender::H1(sender) = &mut self.sender else {
                return Poll::Ready(!self.is_dead());
            };
            match sender.poll_ready(cx) {
                Poll::Ready(r) => Poll::Ready(r.is_ok()),
                Poll::Pending if self.is_dead() => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Runs `fut` (which waits on this connection) while driving it.
    pub(crate) fn with<F: Future>(&mut self, fut: F) -> Driving<'_, F> {
        Driving { lease: self, fut }
    }
}

pin_project_lite::pin_project! {
    /// A future polled together with the connection it waits on. (A plain
    /// struct: an `async fn` would hold `fut` twice, as argument and as
    /// pinned local, in every request's state.)
    pub struct Driving<'a, F> {
        lease: &'a mut Lease,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Driving<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.lease.drive(cx);
        this.fut.poll(cx)
    }
}
