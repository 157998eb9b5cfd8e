//! A response being stored, readable while it grows: the fetch that fills
//! a key writes each piece of the body as it comes ([`Writer`]), and the
//! misses that waited for that fetch stream it from the start
//! ([`Reader`]) instead of waiting for its end. The pieces form a chain
//! that each is set once (read without a lock); a `watch` counter wakes
//! the readers when a piece or the end arrives.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::watch;

use super::entry::Variant;

/// One link of the body: the piece that follows it, once written.
#[derive(Default)]
struct Node {
    next: OnceLock<(Bytes, Arc<Node>)>,
}

/// A response being stored: its head, and its body so far.
pub(crate) struct Growing {
    /// The stored response's head (its body empty).
    pub(crate) head: Arc<Variant>,
    first: Arc<Node>,
    /// `true` once the body is complete, `false` if it never will be.
    end: OnceLock<bool>,
    /// Bumped after each piece and at the end.
    progress: watch::Sender<u64>,
}

/// The fetch's end of a [`Growing`]; dropped before [`Writer::finish`],
/// the body is given up (readers see an error).
pub(crate) struct Writer {
    growing: Arc<Growing>,
    tail: Arc<Node>,
}

impl Writer {
    /// A body to write for the response `head`.
    pub(crate) fn new(head: Arc<Variant>) -> Writer {
        let first = Arc::new(Node::default());
        Writer {
            growing: Arc::new(Growing {
                head,
                first: first.clone(),
                end: OnceLock::new(),
                progress: watch::Sender::new(0),
            }),
            tail: first,
        }
    }

    /// What readers read from.
    pub(crate) fn growing(&self) -> Arc<Growing> {
        self.growing.clone()
    }

    /// Readers now.
    pub(crate) fn readers(&self) -> usize {
        self.growing.progress.receiver_count()
    }

    pub(crate) fn push(&mut self, piece: Bytes) {
        let next = Arc::new(Node::default());
        // (Only this writer sets a link, each once.)
        let _ = self.tail.next.set((piece, next.clone()));
        self.tail = next;
        self.wake();
    }

    /// Tells the readers there is more, waking them only when there are
    /// any (a wake-up through tokio's notify shards costs about 800
    /// instructions, read or not). A reader looks a last time after
    /// taking the channel's lock, before it waits ([`Reader::poll_next`]):
    /// what was set before this is seen there, and one counted here is
    /// woken.
    fn wake(&self) {
        let tx = &self.growing.progress;
        tx.send_if_modified(|n| {
            *n += 1;
            tx.receiver_count() > 0
        });
    }

    /// The body is complete.
    pub(crate) fn finish(self) {
        self.end(true);
    }

    fn end(&self, complete: bool) {
        if self.growing.end.set(complete).is_ok() {
            self.wake();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// The body stopped before its end (the fetch failed or was abandoned).
#[derive(Debug, thiserror::Error)]
#[error("the response being stored, which this one streamed, broke off")]
pub(crate) struct BrokeOff;

/// A reader of a [`Growing`] body, from its start.
pub(crate) struct Reader {
    growing: Arc<Growing>,
    at: Arc<Node>,
    rx: Option<watch::Receiver<u64>>,
    /// Waiting for the next piece (the receiver comes back with it).
    wait: Option<Pin<Box<dyn Future<Output = watch::Receiver<u64>> + Send>>>,
    over: bool,
}

impl Reader {
    pub(crate) fn new(growing: Arc<Growing>) -> Reader {
        Reader {
            at: growing.first.clone(),
            rx: Some(growing.progress.subscribe()),
            growing,
            wait: None,
            over: false,
        }
    }

    /// Whether the body was read to its end.
    pub(crate) fn is_end(&self) -> bool {
        self.over
    }

    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BrokeOff>>> {
        loop {
            if self.over {
                return Poll::Ready(None);
            }
            if let Some((piece, next)) = self.at.next.get() {
                let piece = piece.clone();
                self.at = next.clone();
                return Poll::Ready(Some(Ok(piece)));
            }
            // (The writer sets a piece, or the end, before it wakes us.)
            match self.growing.end.get() {
                Some(true) => {
                    self.over = true;
                    return Poll::Ready(None);
                }
                Some(false) => {
                    self.over = true;
                    return Poll::Ready(Some(Err(BrokeOff)));
                }
                None => {}
            }
            if self.wait.is_none() {
                let Some(mut rx) = self.rx.take() else {
                    self.over = true;
                    return Poll::Ready(Some(Err(BrokeOff)));
                };
                // Through the channel's lock, then a last look: a piece
                // (or the end) set before the writer took the lock is
                // seen now; one set after wakes this reader, counted.
                rx.borrow_and_update();
                if self.at.next.get().is_some() || self.growing.end.get().is_some() {
                    self.rx = Some(rx);
                    continue;
                }
                self.wait = Some(Box::pin(async move {
                    // (The sender lives in `growing`, which this holds.)
                    let _ = rx.changed().await;
                    rx
                }));
            }
            let Some(wait) = self.wait.as_mut() else {
                continue;
            };
            match wait.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(rx) => {
                    self.rx = Some(rx);
                    self.wait = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    fn head() -> Arc<Variant> {
        Arc::new(crate::cache::entry::tests_variant())
    }

    async fn read_all(mut r: Reader) -> Result<Vec<u8>, BrokeOff> {
        let mut out = Vec::new();
        while let Some(p) = poll_fn(|cx| r.poll_next(cx)).await {
            out.extend_from_slice(&p?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn readers_get_every_piece_from_the_start_as_it_comes() {
        let mut w = Writer::new(head());
        w.push(Bytes::from_static(b"one "));
        let early = tokio::spawn(read_all(Reader::new(w.growing())));
        tokio::task::yield_now().await;
        w.push(Bytes::from_static(b"two "));
        let late = Reader::new(w.growing());
        w.push(Bytes::from_static(b"three"));
        w.finish();
        assert_eq!(early.await.unwrap().unwrap(), b"one two three");
        assert_eq!(read_all(late).await.unwrap(), b"one two three");
    }

    /// A writer wakes only readers it counts: one that subscribes as it
    /// writes, on another thread, still gets every piece (no lost wake-up).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_on_other_threads_miss_no_wake_up() {
        for _ in 0..300 {
            let mut w = Writer::new(head());
            let g = w.growing();
            let reader = tokio::spawn(async move { read_all(Reader::new(g)).await });
            let writer = tokio::spawn(async move {
                for p in [&b"a"[..], b"b", b"c"] {
                    w.push(Bytes::from_static(p));
                    tokio::task::yield_now().await;
                }
                w.finish();
            });
            let got = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
                .await
                .expect("the reader was woken");
            assert_eq!(got.unwrap().unwrap(), b"abc");
            writer.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_writer_dropped_before_the_end_breaks_the_readers_off() {
        let mut w = Writer::new(head());
        w.push(Bytes::from_static(b"part"));
        let r = tokio::spawn(read_all(Reader::new(w.growing())));
        tokio::task::yield_now().await;
        drop(w);
        assert!(r.await.unwrap().is_err());
    }
}
