//! Opening a connection to an upstream server (TCP, then TLS) and sending
//! a request on it, HTTP/1.1 or HTTP/2 (the request made absolute for
//! HTTP/2, `TE: trailers` for clients that accept trailers).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use tokio::net::TcpStream;

use crate::body::RequestBody;
use crate::error::ProxyError;
use crate::message::headers::TeTrailers;
use crate::upstream::tls::ServerTls;

/// An upstream socket: plain TCP, or TLS over it.
pub type Io = crate::rt::MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

/// Connects to `addr` (TCP, a PROXY protocol `header` if given, then TLS
/// when `tls` is set) within `timeout`; says whether TLS settled on
/// HTTP/2. Shared with the health checks.
pub async fn open(
    addr: SocketAddr,
    tls: Option<&ServerTls>,
    timeout: Duration,
    header: Option<&[u8]>,
) -> Result<(Io, bool), ProxyError> {
    let attempt = async {
        let mut tcp = tcp_connect(addr)
            .await
            .map_err(|source| ProxyError::Connect { addr, source })?;
        if let Some(h) = header {
            use tokio::io::AsyncWriteExt;
            tcp.write_all(h)
                .await
                .map_err(|source| ProxyError::Connect { addr, source })?;
        }
        match tls {
            None => Ok((Io::Plain(tcp), false)),
            Some(t) => {
                let s = t
                    .handshake(tcp)
                    .await
                    .map_err(|source| ProxyError::Tls { addr, source })?;
                let h2 = crate::upstream::tls::negotiated_h2(&s);
                Ok((Io::Tls(Box::new(s)), h2))
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(ProxyError::ConnectTimeout { addr }),
        Ok(r) => r,
    }
}

/// A TCP connection to `addr`, with `TCP_NODELAY`. As tokio's
/// `TcpStream::connect`, less the `getsockopt(SO_ERROR)` it makes once
/// the connection is up: a connection that failed shows as an error or a
/// closed writing side in the readiness that ends the wait, and only then
/// is its error read (one system call less per connection opened).
async fn tcp_connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    use tokio::io::Interest;
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    let _ = socket.set_tcp_nodelay(true);
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if rustix::io::Errno::from_io_error(&e) == Some(rustix::io::Errno::INPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let tcp = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    let ready = tcp.ready(Interest::WRITABLE.add(Interest::ERROR)).await?;
    if ready.is_error() || ready.is_write_closed() {
        return Err(tcp
            .take_error()?
            .unwrap_or_else(|| std::io::ErrorKind::NotConnected.into()));
    }
    Ok(tcp)
}

/// How a request goes out on a connection.
pub(crate) enum Sender {
    H1(http1::SendRequest<RequestBody>),
    /// An HTTP/2 connection shared with other requests; `https` picks the
    /// `:scheme`.
    H2 {
        sender: http2::SendRequest<RequestBody>,
        https: bool,
    },
}

/// A response, or why the request failed (with the request if it never
/// went out).
pub(crate) type SendResult = Result<Response<Incoming>, TrySendError<Request<RequestBody>>>;

impl Sender {
    /// Sends `req`; as hyper's `try_send_request`, a request that never
    /// went out comes back in the error. For HTTP/2 the target becomes
    /// absolute (`:scheme`, and `:authority` from `Host`).
    pub(crate) fn try_send_request(
        &mut self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = SendResult> + 'static {
        match self {
            Sender::H1(s) => Either::A {
                fut: s.try_send_request(h1_request(req)),
            },
            Sender::H2 { sender, https } => Either::B {
                fut: sender.try_send_request(h2_request(req, *https)),
            },
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2 { sender, .. } => sender.is_closed(),
        }
    }
}

/// `TE: trailers` upstream for clients that accept trailers (either
/// version; [`h2_request`] ends here too).
pub(super) fn h1_request(mut req: Request<RequestBody>) -> Request<RequestBody> {
    if req.extensions().get::<TeTrailers>().is_some() {
        req.headers_mut()
            .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    }
    req
}

/// The request as hyper's HTTP/2 client wants it.
fn h2_request(mut req: Request<RequestBody>, https: bool) -> Request<RequestBody> {
    let authority = req
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
    let has_authority = req.uri().authority().is_some();
    if has_authority || authority.is_some() {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(if https {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        if !has_authority {
            parts.authority = authority;
        }
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        // Scheme, authority and path are all set: this cannot fail.
        *req.uri_mut() = http::Uri::from_parts(parts).unwrap_or_default();
    }
    // Without an authority, hyper sends the path alone.
    *req.version_mut() = http::Version::HTTP_2;
    h1_request(req)
}

pin_project_lite::pin_project! {
    #[project = EitherProj]
    enum Either<A, B> {
        A { #[pin] fut: A },
        B { #[pin] fut: B },
    }
}

impl<A: Future, B: Future<Output = A::Output>> Future for Either<A, B> {
    type Output = A::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<A::Output> {
        match self.project() {
            EitherProj::A { fut } => fut.poll(cx),
            EitherProj::B { fut } => fut.poll(cx),
        }
    }
}
