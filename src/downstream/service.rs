//! What hyper calls for each request of a client connection: the
//! services of HTTP/1.1 ([`Svc`]) and HTTP/2 ([`SvcH2`]) connections,
//! around what answers a request ([`Handler`], `proxy::handle`), and the
//! fields written after a response's own on HTTP/1.1 (`Svc::extra`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::state::ConnCtx;
use crate::message::headers::CACHE_STATUS;
use crate::proxy::{self, response_body::ProxyBody};

/// What answers a request: [`proxy::handle`], as a type parameter (a
/// function item: no size, no indirect call) so that the type of its
/// future, which has no name, can be hyper's HTTP/1.1 service future.
pub(crate) trait Handler: Copy + 'static {
    type Future: Future<Output = http::Response<ProxyBody>> + 'static;

    fn handle(self, ctx: Rc<ConnCtx>, req: http::Request<hyper::body::Incoming>) -> Self::Future;
}

impl<H, F> Handler for H
where
    H: Fn(Rc<ConnCtx>, http::Request<hyper::body::Incoming>) -> F + Copy + 'static,
    F: Future<Output = http::Response<ProxyBody>> + 'static,
{
    type Future = F;

    fn handle(self, ctx: Rc<ConnCtx>, req: http::Request<hyper::body::Incoming>) -> F {
        self(ctx, req)
    }
}

/// The service hyper calls for each request of an HTTP/1.1 connection.
/// Its future is not boxed: hyper moves it into the connection's slot,
/// made at the first request and kept for the next ones (hyper patch 13),
/// so a request costs no allocation for it, and the future is built in
/// that slot. (Boxing it took a 4.6 KiB allocation, a copy into it and
/// its free per request: about 1,170 instructions; bench/callgrind.sh.)
#[derive(Clone)]
pub(crate) struct Svc<H> {
    pub(super) ctx: Rc<ConnCtx>,
    pub(super) handle: H,
}

pin_project_lite::pin_project! {
    /// A request's whole exchange, as hyper's service future.
    pub(crate) struct Answer<F> {
        #[pin]
        fut: F,
    }
}

impl<F: Future<Output = http::Response<ProxyBody>>> Future for Answer<F> {
    type Output = Result<http::Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().fut.poll(cx).map(Ok)
    }
}

impl<H: Handler> hyper::service::Service<http::Request<hyper::body::Incoming>> for Svc<H> {
    type Response = http::Response<ProxyBody>;
    type Error = Infallible;
    type Future = Answer<H::Future>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        Answer {
            fut: self.handle.handle(self.ctx.clone(), req),
        }
    }

    /// The listener's request ID and the cache's `Cache-Status`, for the
    /// response whose future `call` made last (hyper patch 15;
    /// `proxy::handle` leaves them here: the ID when the response has no
    /// field of that name).
    fn extra(&self, write: &mut dyn FnMut(&[&[u8]])) {
        if let Some(status) = self.ctx.cache_status.take() {
            write(&crate::message::added::field(
                CACHE_STATUS.as_str().as_bytes(),
                status.as_bytes(),
            ));
        }
        if let (Some(id), Some(cfg)) = (self.ctx.response_id.take(), &self.ctx.request_id) {
            write(&crate::message::added::field(
                cfg.header.as_str().as_bytes(),
                id.as_bytes(),
            ));
        }
    }
}

/// The service of an HTTP/2 connection: each stream's future is boxed
/// once, as hyper moves it into the stream's task (several moves of a
/// large future, each a pointer copy instead).
#[derive(Clone)]
pub(crate) struct SvcH2(pub(super) Rc<ConnCtx>);

/// A stream's whole exchange, boxed once.
pub(crate) struct Handled(Pin<Box<dyn Future<Output = http::Response<ProxyBody>>>>);

impl Future for Handled {
    type Output = Result<http::Response<ProxyBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for SvcH2 {
    type Response = http::Response<ProxyBody>;
    type Error = Infallible;
    type Future = Handled;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Handled {
        Handled(Box::pin(proxy::handle(self.0.clone(), req)))
    }
}
