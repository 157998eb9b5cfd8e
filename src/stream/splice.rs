//! Bytes both ways between a stream's client and its server, until both
//! directions end: an end of file read on one side is passed on as a
//! half-close (TCP `shutdown(SHUT_WR)`, TLS `close_notify`) to the other,
//! which may go on sending (a client that closed its sending side still
//! gets its answer). Each side counts its bytes and the time of its last
//! one; a stream with none either way for its idle timeout is closed.
//!
//! Each direction reads into a buffer, writes it all to the other side,
//! and reads again: nothing is read while the other side cannot take it
//! (backpressure), and memory is at most one buffer per direction. A
//! direction waiting for bytes gives its (empty) buffer back to its
//! thread's pool: an idle stream holds none, and a busy one takes a warm
//! one again (no allocation, no page faults per connection).

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// A direction's buffer: large enough that a bulk transfer takes few
/// system calls (nginx reads 16 KiB at a time, HAProxy 16 KiB).
const BUFFER: usize = 64 * 1024;

/// Buffers a thread keeps for its streams between uses.
const POOLED: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUFFER].into_boxed_slice())
}

fn give_back(buf: Box<[u8]>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED {
            p.push(buf);
        }
    });
}

/// One direction of a stream: bytes read and not yet written.
#[derive(Default)]
struct Direction {
    buf: Option<Box<[u8]>>,
    pos: usize,
    end: usize,
    /// The reading side ended (end of file).
    eof: bool,
    /// Written since the last flush (TLS keeps records until flushed).
    unflushed: bool,
    done: bool,
}

impl Drop for Direction {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            give_back(b);
        }
    }
}

/// A stream's socket, as the splice ends it.
pub(crate) trait Ends: AsyncRead + AsyncWrite + Unpin {
    /// Whether closing it says all a half-close would (plain TCP: the
    /// FIN goes after the bytes queued); TLS has its `close_notify` to
    /// send first.
    fn close_is_half_close(&self) -> bool {
        false
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Ends for crate::rt::MaybeTls<T> {
    fn close_is_half_close(&self) -> bool {
        matches!(self, crate::rt::MaybeTls::Plain(_))
    }
}

impl Direction {
    /// Moves bytes from `r` to `w` until `r` has none ready; `Ready` once
    /// `r` ended and `w` was shut down (`last`: the other direction is
    /// done and closing `w` will do: no shutdown of its own).
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        last: bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pos == self.end && !self.eof {
                let buf = self.buf.get_or_insert_with(take_buffer);
                let mut rb = ReadBuf::new(buf);
                match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                    Poll::Pending => {
                        // Nothing to write: the buffer goes back while
                        // this direction waits.
                        if let Some(b) = self.buf.take() {
                            give_back(b);
                        }
                        if self.unflushed {
                            if let Poll::Ready(res) = Pin::new(&mut *w).poll_flush(cx) {
                                res?;
                                self.unflushed = false;
                            }
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(res) => res?,
                }
                let n = rb.filled().len();
                (self.pos, self.end) = (0, n);
                if n == 0 {
                    self.eof = true;
                }
            }
            if let Some(buf) = &self.buf {
                while self.pos < self.end {
                    let n = ready!(Pin::new(&mut *w).poll_write(cx, &buf[self.pos..self.end]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    self.pos += n;
                    self.unflushed = true;
                }
            }
            if self.eof {
                // Flushed, then the half-close passed on (or, the last
                // direction on plain TCP, left to the close that follows:
                // one system call fewer per connection).
                if last {
                    ready!(Pin::new(&mut *w).poll_flush(cx))?;
                } else {
                    ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                }
                self.done = true;
                if let Some(b) = self.buf.take() {
                    give_back(b);
                }
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Both directions of a pair, until both end or one fails.
struct Copy<'a, C, U> {
    client: &'a mut Side<C>,
    upstream: &'a mut Side<U>,
    up: Direction,
    down: Direction,
}

impl<C: Ends, U: Ends> std::future::Future for Copy<'_, C, U> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let last = this.down.done && this.upstream.io.close_is_half_close();
        let up = this.up.poll(cx, this.client, this.upstream, last)?;
        let last = this.up.done && this.client.io.close_is_half_close();
        let down = this.down.poll(cx, this.upstream, this.client, last)?;
        match (up, down) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }
}

/// One side of a stream: its socket, the bytes read from it and the
/// stream's last activity (shared by both sides).
pub(crate) struct Side<T> {
    io: T,
    read: Cell<u64>,
    last: Rc<Cell<Instant>>,
}

impl<T> Side<T> {
    pub(crate) fn read(&self) -> u64 {
        self.read.get()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Side<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read.set(self.read.get() + n as u64);
            self.last.set(Instant::now());
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Side<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How a splice ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// Both directions reached their end.
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
    /// A read or write failed (a reset, mostly).
    Error(io::Error),
    /// The deadline given (shutdown's grace) came.
    Deadline,
}

/// The two sides of a stream, ready to splice.
pub(crate) struct Pair<C, U> {
    pub(crate) client: Side<C>,
    pub(crate) upstream: Side<U>,
}

impl<C: Ends, U: Ends> Pair<C, U> {
    pub(crate) fn new(client: C, upstream: U) -> Self {
        let last = Rc::new(Cell::new(Instant::now()));
        Pair {
            client: Side {
                io: client,
                read: Cell::new(0),
                last: last.clone(),
            },
            upstream: Side {
                io: upstream,
                read: Cell::new(0),
                last,
            },
        }
    }

    /// Copies both ways until both end, one fails, nothing moves for
    /// `idle`, or `deadline` (once it is known) comes.
    pub(crate) async fn run(
        &mut self,
        idle: Duration,
        deadline: impl std::future::Future<Output = ()>,
    ) -> Ended {
        let last = self.client.last.clone();
        let copy = Copy {
            client: &mut self.client,
            upstream: &mut self.upstream,
            up: Direction::default(),
            down: Direction::default(),
        };
        let mut copy = std::pin::pin!(copy);
        let mut deadline = std::pin::pin!(deadline);
        let timer = tokio::time::sleep_until(last.get() + idle);
        let mut timer = std::pin::pin!(timer);
        loop {
            tokio::select! {
                r = copy.as_mut() => return match r {
                    Ok(_) => Ended::Closed,
                    Err(e) => Ended::Error(e),
                },
                _ = timer.as_mut() => {
                    let due = last.get() + idle;
                    if Instant::now() >= due {
                        return Ended::Idle;
                    }
                    // Bytes moved meanwhile: look again then.
                    timer.as_mut().reset(due);
                }
                _ = deadline.as_mut() => return Ended::Deadline,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    impl Ends for tokio::io::DuplexStream {}

    #[tokio::test]
    async fn half_close_passes_on_and_counts() {
        let (client, mut far_client) = tokio::io::duplex(64);
        let (upstream, mut far_upstream) = tokio::io::duplex(64);
        let mut pair = Pair::new(client, upstream);
        let run = pair.run(Duration::from_secs(60), std::future::pending());
        let talk = async {
            far_client.write_all(b"request").await.unwrap();
            far_client.shutdown().await.unwrap();
            let mut got = Vec::new();
            far_upstream.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"request");
            // The server answers after the client's half-close.
            far_upstream.write_all(b"answer, longer").await.unwrap();
            far_upstream.shutdown().await.unwrap();
            let mut got = Vec::new();
            far_client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"answer, longer");
        };
        let (ended, ()) = tokio::join!(run, talk);
        assert!(matches!(ended, Ended::Closed), "{ended:?}");
        assert_eq!(pair.client.read(), 7);
        assert_eq!(pair.upstream.read(), 14);
    }

    #[tokio::test]
    async fn idle_streams_end() {
        let (client, _far_client) = tokio::io::duplex(64);
        let (upstream, _far_upstream) = tokio::io::duplex(64);
        let mut pair = Pair::new(client, upstream);
        let ended = pair
            .run(Duration::from_millis(50), std::future::pending())
            .await;
        assert!(matches!(ended, Ended::Idle), "{ended:?}");
    }
}
