//! A connection (or HTTP/2 stream) lent to one request, and how it is
//! driven: the HTTP/1.1 connection's driver travels with its lease and is
//! polled by whoever waits on the connection.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::connect::{h1_request, SendResult};
use super::{Io, Sender};
use crate::body::RequestBody;
use crate::message::added::Added;

type Driver = http1::Connection<TokioIo<Io>, RequestBody>;

/// Streams one HTTP/2 connection carries before another one is opened.
pub(crate) const H2_STREAMS: u32 = 100;

/// What an [`Exchange`] ends with: a response, or why the request failed
/// (with the request if it never went out). The failure is boxed: rare,
/// and hyper's holds the whole request, so the result was more than twice
/// a response's size, copied whole by each layer it passes up.
pub(crate) type Sent = Result<Response<Incoming>, Box<TrySendError<Request<RequestBody>>>>;

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
    /// HTTP/1.1 only: what became of a request sent in place, kept when
    /// its connection ended under it (the driver goes, the answer stays).
    pub(super) settled: Option<Box<SendResult>>,
}

impl Lease {
    /// Lets the connection make progress (read, write, notice a close).
    /// Call it from every poll of whatever waits on this connection.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) {
        let Some(driver) = &mut self.driver else {
            return;
        };
        if let Poll::Ready(res) = driver.as_mut().poll(cx) {
            self.settled = driver.as_mut().take_in_place(true).map(Box::new);
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
            settled: None,
        }
    }

    /// Closed, as far as is known without polling. A pooled HTTP/1.1
    /// connection is not polled before it is lent: it takes a request at
    /// any time (and writes it once done with the last one), and one that
    /// the server closed meanwhile gives the request back unsent
    /// ([`exchange`](Self::exchange)), for `send` to take it to a fresh
    /// connection. Polling it at checkout cost a pass of its dispatcher
    /// per request, only to find what the request's own first poll finds.
    pub(crate) fn is_dead(&self) -> bool {
        match &self.sender {
            Sender::H1(_) => self.driver.is_none(),
            Sender::H2 { sender, .. } => sender.is_closed(),
        }
    }

    /// Sends `req` and waits for the response head, driving the
    /// connection meanwhile. An HTTP/1.1 connection driven here takes the
    /// request in place (no channel or callback between this task and the
    /// connection); an HTTP/2 stream, or a connection whose driver runs as
    /// a task of its own, takes it through hyper's `SendRequest`. As with
    /// hyper's `try_send_request`, a request that never went out comes
    /// back in the error. `added`: fields to add where it goes out
    /// ([`Added`]): encoded into the connection's buffer for them, which
    /// hyper writes after the request's own fields, when it goes in place;
    /// else inserted in its fields (a request that comes back has them).
    pub(crate) fn exchange(
        &mut self,
        mut req: Request<RequestBody>,
        added: Option<&dyn Added>,
    ) -> Exchange<'_, impl Future<Output = SendResult> + 'static> {
        if let (Some(driver), Sender::H1(_)) = (&mut self.driver, &self.sender) {
            let extra = |buf: &mut Vec<u8>| {
                if let Some(a) = added {
                    a.encode(buf);
                }
            };
            return match driver.as_mut().send_in_place(h1_request(req), extra) {
                Ok(()) => Exchange::InPlace { lease: self },
                Err(e) => Exchange::Refused { err: Some(e) },
            };
        }
        if let Some(a) = added {
            a.insert(req.headers_mut());
        }
        let fut = self.sender.try_send_request(req);
        Exchange::Channel { lease: self, fut }
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

pin_project_lite::pin_project! {
    /// A request on its way: see [`Lease::exchange`].
    #[project = ExchangeProj]
    pub(crate) enum Exchange<'a, F> {
        InPlace { lease: &'a mut Lease },
        Channel { lease: &'a mut Lease, #[pin] fut: F },
        Refused { err: Option<TrySendError<Request<RequestBody>>> },
    }
}

impl<F: Future<Output = SendResult>> Future for Exchange<'_, F> {
    type Output = Sent;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Sent> {
        match self.project() {
            ExchangeProj::InPlace { lease } => {
                lease.drive(cx);
                if let Some(settled) = lease.settled.take() {
                    return Poll::Ready(settled.map_err(Box::new));
                }
                // (The driver is there: had it ended, the request sent on
                // it would have settled above.)
                match lease
                    .driver
                    .as_mut()
                    .and_then(|d| d.as_mut().take_in_place(false))
                {
                    Some(res) => Poll::Ready(res.map_err(Box::new)),
                    None => Poll::Pending,
                }
            }
            ExchangeProj::Channel { lease, fut } => {
                lease.drive(cx);
                fut.poll(cx).map(|r| r.map_err(Box::new))
            }
            ExchangeProj::Refused { err } => match err.take() {
                Some(e) => Poll::Ready(Err(Box::new(e))),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A lease on a fresh connection to `addr`, driven here, as the pool
    /// makes them.
    async fn lease(addr: std::net::SocketAddr) -> Lease {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, driver) = http1::Builder::new()
            .driven_by_sender(true)
            .handshake(TokioIo::new(Io::Plain(tcp)))
            .await
            .unwrap();
        Lease {
            sender: Sender::H1(sender),
            driver: Some(Box::pin(driver)),
            _stream: None,
            server: 0,
            idle_for: None,
            owner: None,
            settled: None,
        }
    }

    fn get(path: &str) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::empty());
        *req.uri_mut() = path.parse().unwrap();
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("origin"));
        req
    }

    /// An origin on a free port that takes one connection to `serve`.
    async fn origin<F, Fut>(serve: F) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { serve(listener.accept().await.unwrap().0).await });
        (addr, task)
    }

    /// Reads one request head (these have no body).
    async fn read_head(s: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn requests_sent_in_place_are_answered_in_turn_on_one_connection() {
        let (addr, origin) = origin(|mut s| async move {
            for body in ["one", "two"] {
                let head = read_head(&mut s).await;
                assert!(
                    head.starts_with(&format!("GET /{body} HTTP/1.1\r\n")),
                    "{head}"
                );
                let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n{body}");
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        })
        .await;
        let mut lease = lease(addr).await;
        for body in ["one", "two"] {
            assert!(!lease.is_dead());
            let resp = lease
                .exchange(get(&format!("/{body}")), None)
                .await
                .map_err(|e| e.into_error())
                .unwrap();
            assert_eq!(resp.status(), 200);
            let got = lease
                .with(http_body_util::BodyExt::collect(resp.into_body()))
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(got, body.as_bytes());
        }
        origin.await.unwrap();
    }

    #[tokio::test]
    async fn a_request_in_place_on_a_connection_closed_before_it_went_out_comes_back() {
        let (addr, origin) = origin(|s| async move { drop(s) }).await;
        let mut lease = lease(addr).await;
        // The server's close has reached our socket before we send.
        origin.await.unwrap();
        let Err(mut e) = lease.exchange(get("/"), None).await else {
            panic!("answered");
        };
        let back = e.take_message().expect("the unsent request comes back");
        assert_eq!(back.uri(), "/");
        assert!(lease.is_dead());
    }

    #[tokio::test]
    async fn a_request_in_place_that_went_out_fails_without_coming_back() {
        let (addr, origin) = origin(|mut s| async move {
            read_head(&mut s).await;
        })
        .await;
        let mut lease = lease(addr).await;
        let Err(mut e) = lease.exchange(get("/"), None).await else {
            panic!("answered");
        };
        assert!(e.take_message().is_none(), "{}", e.error());
        origin.await.unwrap();
    }
}
