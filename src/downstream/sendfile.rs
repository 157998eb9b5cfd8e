//! A static file's spans sent with `sendfile(2)` on a plain HTTP/1.1
//! connection: the kernel copies from the page cache to the socket, and
//! the file's bytes never come up to the proxy (nginx's `sendfile on`).
//!
//! hyper writes what a body gives it and knows nothing of files, so a
//! span goes through it as a *stand-in*: bytes of [`stand_in`], a region
//! of zeros set aside once and never read, as long as the span. The
//! body puts the span ([`Region`]) in the connection's [`Regions`] as it
//! hands the stand-in to hyper; hyper queues it behind the head and
//! what came before (a chunk of [`MIN`] bytes or more is queued as it
//! is, never copied: hyper patch 16), and when its write reaches the
//! stand-in, the socket's writer ([`send`]) sends the front
//! region's file bytes in its place and answers with the count sent, as
//! a write of the stand-in would have. Everything hyper counts (the
//! `Content-Length` it checks, the bytes the log and metrics count) is
//! thus the file's.
//!
//! A stand-in is known by its address (inside the set-aside region), and
//! checked against the front region (same place, same length left): a
//! stand-in out of step with the regions fails the connection; zeros are
//! never sent for a file's bytes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The longest stand-in, and so the most one `sendfile` call is asked
/// to send (nginx's `sendfile_max_chunk` is 2 MiB).
pub(crate) const MAX: usize = 1024 * 1024;

/// The shortest stand-in: hyper copies a chunk shorter than 8 KiB into
/// its buffer (hyper patch 16), where it would be a stand-in no more.
/// A span's end shorter than this is read and sent as bytes.
pub(crate) const MIN: usize = 16 * 1024;

/// One span of a file, to be sent in place of its stand-in.
struct Region {
    file: Arc<std::fs::File>,
    /// Where in the file the span starts.
    start: u64,
    /// Its length (that of its stand-in).
    len: usize,
    /// Sent so far.
    sent: usize,
}

/// The spans whose stand-ins hyper holds, in the order it was given
/// them: a connection's, shared by its responses' bodies and its socket's
/// writer (one task: no lock).
#[derive(Default)]
pub(crate) struct Regions(RefCell<VecDeque<Region>>);

impl Regions {
    /// `len` bytes of `file` from `start` (`MIN..=MAX` long), and the
    /// stand-in to hand hyper for them.
    pub(crate) fn push(&self, file: Arc<std::fs::File>, start: u64, len: usize) -> Bytes {
        debug_assert!((MIN..=MAX).contains(&len));
        self.0.borrow_mut().push_back(Region {
            file,
            start,
            len,
            sent: 0,
        });
        Bytes::from_static(&stand_in()[..len])
    }

    /// Whether a stand-in may be written now.
    pub(crate) fn any(&self) -> bool {
        !self.0.borrow().is_empty()
    }
}

/// The set-aside region stand-ins are cut from: [`MAX`] bytes of zeros,
/// allocated once per process (nothing reads them).
fn stand_in() -> &'static [u8] {
    static ZEROS: OnceLock<&'static [u8]> = OnceLock::new();
    ZEROS.get_or_init(|| Box::leak(vec![0u8; MAX].into_boxed_slice()))
}

/// Where in the set-aside region `b` starts, if it is (part of) a
/// stand-in.
fn place(b: &[u8]) -> Option<usize> {
    let zeros = stand_in();
    if b.is_empty() || !zeros.as_ptr_range().contains(&b.as_ptr()) {
        return None;
    }
    Some(b.as_ptr() as usize - zeros.as_ptr() as usize)
}

/// What a connection with spans waiting writes next of `bufs`.
pub(crate) enum Next<'a, 'b> {
    /// Bytes, up to the first stand-in (or all of them).
    Bytes(&'a [io::IoSlice<'b>]),
    /// A stand-in, at the front: to be [`send`]t.
    StandIn(&'a [u8]),
}

pub(crate) fn next<'a, 'b>(bufs: &'a [io::IoSlice<'b>]) -> Next<'a, 'b> {
    match bufs.iter().position(|b| place(b).is_some()) {
        None => Next::Bytes(bufs),
        Some(0) => Next::StandIn(&bufs[0]),
        Some(k) => Next::Bytes(&bufs[..k]),
    }
}

pub(crate) fn out_of_step() -> io::Error {
    io::Error::other("sendfile: a file's stand-in out of step with its spans")
}

/// Sends the front region's file bytes in place of `stand_in`, the part
/// of its stand-in not yet written.
pub(crate) fn send(
    tcp: &TcpStream,
    regions: &Regions,
    cx: &mut Context<'_>,
    stand_in: &[u8],
) -> Poll<io::Result<usize>> {
    let mut queue = regions.0.borrow_mut();
    let Some(region) = queue.front_mut() else {
        return Poll::Ready(Err(out_of_step()));
    };
    if place(stand_in) != Some(region.sent) || stand_in.len() != region.len - region.sent {
        return Poll::Ready(Err(out_of_step()));
    }
    loop {
        ready!(tcp.poll_write_ready(cx))?;
        let mut at = region.start + region.sent as u64;
        let left = region.len - region.sent;
        let sent = tcp.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(tcp, &*region.file, Some(&mut at), left).map_err(io::Error::from)
        });
        match sent {
            Ok(0) => {
                // (The file shrank since its length was sent.)
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "sendfile: the file ended before its length",
                )));
            }
            Ok(n) => {
                region.sent += n;
                if region.sent == region.len {
                    queue.pop_front();
                }
                return Poll::Ready(Ok(n));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// A write of `buf` alone (hyper's flattened head) when spans wait: a
/// stand-in never goes this way.
pub(crate) fn check_flat(buf: &[u8]) -> io::Result<()> {
    match place(buf) {
        Some(_) => Err(out_of_step()),
        None => Ok(()),
    }
}
