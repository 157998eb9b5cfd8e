//! A static file's response body: the parts of a
//! [`crate::files::Answer`] sent in order, the file's spans read in
//! chunks of [`CHUNK`] bytes, on the worker thread as hyper asks for
//! them (`io = "inline"`, nginx's way) or on tokio's blocking pool (`io
//! = "pool"`); one chunk at a time: memory stays bounded whatever the
//! file's size, and a slow client holds one chunk. A small answer comes
//! read already, as bytes. On a plain HTTP/1.1 connection the spans go
//! out with `sendfile` instead (`sendfile = true`, the default with
//! `io = "inline"`; [`crate::downstream::sendfile`]).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::downstream::sendfile;
use crate::downstream::state::ConnState;
use crate::files::Part;

/// The most read from the file at once.
pub(crate) const CHUNK: u64 = 256 * 1024;

/// The body of a file's answer.
pub(crate) struct FileBody {
    file: Option<Arc<std::fs::File>>,
    parts: VecDeque<Part>,
    /// The chunk being read.
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    /// Bytes not sent yet.
    left: u64,
    /// Chunks read on the worker thread itself.
    inline: bool,
    /// A plain HTTP/1.1 connection's state, when the file's spans go out
    /// with `sendfile` ([`crate::downstream::sendfile`]): each span is
    /// handed on as a stand-in, not read.
    sendfile: Option<Rc<ConnState>>,
}

impl FileBody {
    /// `parts` of `file` (none needed when every part is bytes).
    pub(crate) fn new(
        file: Option<Arc<std::fs::File>>,
        parts: Vec<Part>,
        inline: bool,
    ) -> FileBody {
        let left = parts
            .iter()
            .map(|p| match p {
                Part::Text(b) => b.len() as u64,
                Part::File { len, .. } => *len,
            })
            .sum();
        FileBody {
            file,
            parts: parts.into(),
            reading: None,
            left,
            inline,
            sendfile: None,
        }
    }

    /// Sends the file's spans with `sendfile` on `conn`, a plain HTTP/1.1
    /// connection's, whose socket writer takes the stand-ins.
    pub(crate) fn send_with(&mut self, conn: Rc<ConnState>) {
        self.sendfile = Some(conn);
    }

    pub(crate) fn left(&self) -> u64 {
        self.left
    }

    pub(crate) fn is_end(&self) -> bool {
        self.reading.is_none() && self.parts.is_empty()
    }

    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if let Some(reading) = &mut self.reading {
                let Poll::Ready(read) = Pin::new(reading).poll(cx) else {
                    return Poll::Pending;
                };
                self.reading = None;
                let read = read.map_err(io::Error::other).and_then(|r| r);
                return Poll::Ready(Some(self.got(read)));
            }
            match self.parts.pop_front() {
                None => return Poll::Ready(None),
                Some(Part::Text(b)) => {
                    self.left = self.left.saturating_sub(b.len() as u64);
                    if !b.is_empty() {
                        return Poll::Ready(Some(Ok(b)));
                    }
                }
                Some(Part::File { start, len }) => {
                    let Some(file) = self.file.clone() else {
                        self.parts.clear();
                        return Poll::Ready(Some(Err(io::Error::other("no file to read"))));
                    };
                    // Sent as a stand-in (an end shorter than one can be
                    // is read), or read in chunks.
                    let stand_in = len.min(sendfile::MAX as u64);
                    let conn = self
                        .sendfile
                        .as_ref()
                        .filter(|_| stand_in >= sendfile::MIN as u64);
                    let n = match conn {
                        Some(_) => stand_in,
                        None => len.min(CHUNK),
                    };
                    if len > n {
                        self.parts.push_front(Part::File {
                            start: start + n,
                            len: len - n,
                        });
                    }
                    if let Some(conn) = conn {
                        self.left = self.left.saturating_sub(n);
                        // (`n` is at most `sendfile::MAX`.)
                        let stand_in = conn.sendfile.push(file, start, n as usize);
                        return Poll::Ready(Some(Ok(stand_in)));
                    }
                    if self.inline {
                        let read = read_at(&file, start, n);
                        return Poll::Ready(Some(self.got(read)));
                    }
                    self.reading = Some(tokio::task::spawn_blocking(move || {
                        read_at(&file, start, n)
                    }));
                }
            }
        }
    }
}

impl FileBody {
    /// A chunk read, or why not.
    fn got(&mut self, read: io::Result<Bytes>) -> io::Result<Bytes> {
        match read {
            Ok(b) => {
                self.left = self.left.saturating_sub(b.len() as u64);
                Ok(b)
            }
            Err(e) => {
                // (The file shrank, or the disk failed: the length
                // promised cannot be kept.)
                self.parts.clear();
                self.left = 0;
                Err(e)
            }
        }
    }
}

/// `len` bytes of `file` from `start` (an error if the file is shorter).
pub(crate) fn read_at(file: &std::fs::File, start: u64, len: u64) -> io::Result<Bytes> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, start)?;
    Ok(Bytes::from(buf))
}
