//! Runtime glue for hyper on Tidegate's thread-per-core layout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Spawns hyper's background futures (HTTP/2 streams and connection
/// drivers) on the current thread's `LocalSet`.
///
/// Every worker runs a single-threaded runtime, and the request path holds
/// `Rc`s, so those futures are not `Send`: they must stay on the thread that
/// made them. Must be used from inside a `LocalSet`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Runs the future `make` gives on a thread of its own, named `name`,
/// under a current-thread runtime (IO and timers): the shape of the
/// background services (health checks, DNS refreshes, the admin listener,
/// JWKS fetches). The runtime is made here, so that failing to make it is
/// this call's error; the future is made on the new thread, so it need
/// not be `Send`.
pub(crate) fn on_own_thread<M, F>(
    name: &str,
    make: M,
) -> io::Result<std::thread::JoinHandle<F::Output>>
where
    M: FnOnce() -> F + Send + 'static,
    F: Future,
    F::Output: Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || rt.block_on(make()))
}

/// A socket, plain or with TLS over it: `T` is tokio-rustls' server stream
/// for client connections ([`crate::downstream::state::ClientIo`]) and its client
/// stream for upstream ones ([`crate::upstream::Io`]).
pub enum MaybeTls<T> {
    Plain(TcpStream),
    Tls(Box<T>),
}

macro_rules! delegate {
    ($self:ident, $io:ident => $e:expr) => {
        match $self.get_mut() {
            MaybeTls::Plain($io) => {
                let $io = Pin::new($io);
                $e
            }
            MaybeTls::Tls($io) => {
                let $io = Pin::new(&mut **$io);
                $e
            }
        }
    };
}

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_read(cx, buf))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(io) => io.is_write_vectored(),
            MaybeTls::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_shutdown(cx))
    }
}
