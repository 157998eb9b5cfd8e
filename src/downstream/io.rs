//! The client socket as a connection sees it: bytes read are counted for
//! its watch ([`Watched`]), an h2c client told from an HTTP/1 one by its
//! first bytes, and the lingering close after an early answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::sendfile::{self, Next};
use super::state::{ClientIo, ConnState};

/// The client socket, counting the bytes read for the watchdog.
pub(super) struct Watched {
    pub(super) io: ClientIo,
    /// Bytes read while telling HTTP/2 from HTTP/1 (h2c), handed to hyper
    /// before anything else.
    pub(super) prefix: Option<Bytes>,
    pub(super) state: Rc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // The vendored hyper reads into no space to wait for data before it
        // takes a buffer (a new connection, an idle one): readiness.
        if buf.remaining() == 0 {
            return match &this.io {
                ClientIo::Plain(tcp) if this.prefix.is_none() => tcp.poll_read_ready(cx),
                _ => Poll::Ready(Ok(())),
            };
        }
        if let Some(p) = &mut this.prefix {
            let n = p.len().min(buf.remaining());
            buf.put_slice(&p.split_to(n));
            if p.is_empty() {
                this.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        this.state.read.set(this.state.read.get() + n);
        if let Some(m) = &this.state.meter {
            m.count(crate::metrics::Conn::BytesIn, n);
        }
        res
    }
}

impl Watched {
    fn wrote(&self, res: &Poll<io::Result<usize>>) {
        if let (Some(m), Poll::Ready(Ok(n))) = (&self.state.meter, res) {
            m.count(crate::metrics::Conn::BytesOut, *n as u64);
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.state.sendfile.any() {
            sendfile::check_flat(buf)?;
        }
        let res = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(&res);
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let res = match this.state.sendfile.any() {
            false => Pin::new(&mut this.io).poll_write_vectored(cx, bufs),
            // A static file's spans wait (`sendfile`): their stand-ins
            // are sent as the file's bytes.
            true => match (sendfile::next(bufs), &this.io) {
                (Next::Bytes(bytes), _) => Pin::new(&mut this.io).poll_write_vectored(cx, bytes),
                (Next::StandIn(s), ClientIo::Plain(tcp)) => {
                    sendfile::send(tcp, &this.state.sendfile, cx, s)
                }
                (Next::StandIn(_), ClientIo::Tls(_)) => Poll::Ready(Err(sendfile::out_of_step())),
            },
        };
        this.wrote(&res);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads a plain connection's first bytes to tell an h2c client (prior
/// knowledge: it opens with the preface) from an HTTP/1 one. What was read
/// is kept in `prefix` for the protocol's server to read first.
pub(super) async fn sniff_h2c(io: &mut Watched) -> io::Result<bool> {
    use tokio::io::AsyncReadExt;
    // No buffer is held before the client sends something (unless it
    // has: what followed a PROXY header).
    if let (ClientIo::Plain(tcp), None) = (&io.io, &io.prefix) {
        tcp.readable().await?;
    }
    let mut buf = bytes::BytesMut::with_capacity(512);
    loop {
        // Through `Watched`, which counts the bytes for the watchdog.
        if io.read_buf(&mut buf).await? == 0 {
            return Ok(false);
        }
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] {
            io.prefix = Some(buf.freeze());
            return Ok(false);
        }
        if n == PREFACE.len() {
            io.prefix = Some(buf.freeze());
            return Ok(true);
        }
    }
}

pin_project_lite::pin_project! {
    /// The h2c sniff, ended early (`None`) when the connection is closed to
    /// make room (`max_connections`) or by its watch.
    pub(super) struct Sniff<'a, F> {
        #[pin]
        pub(super) fut: F,
        pub(super) state: &'a Rc<ConnState>,
    }
}

impl<F: Future> Future for Sniff<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // Evicted (max_connections) or cut by its watch: closed now. At
        // shutdown (`stopping`) the first bytes, perhaps on their way,
        // are still waited for, briefly (`phase::within`).
        let state = this.state;
        if state.cut.get().is_some() || (state.draining.get() && !state.stopping.get()) {
            return Poll::Ready(None);
        }
        state.register(cx);
        this.fut.poll(cx).map(Some)
    }
}

/// How long a lingering close waits for the client to stop sending.
const LINGER: Duration = Duration::from_secs(5);

/// Reads and discards until the client closes, errs, or `LINGER` passes.
pub(super) async fn linger(mut io: Watched) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = io.io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
