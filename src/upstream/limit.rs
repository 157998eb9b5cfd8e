//! A server's concurrency cap, shared by every thread.

use std::sync::Arc;
use std::time::Duration;

/// A server's cap on concurrent requests (`max_connections`: with HTTP/1.1
/// upstreams, one connection each), shared by all threads, and how many
/// requests may wait for a turn (`max_pending`); past both, 503 at once.
#[derive(Debug)]
pub(crate) struct ServerLimit {
    pub(super) permits: Arc<tokio::sync::Semaphore>,
    pending: std::sync::atomic::AtomicU32,
    max_pending: u32,
}

impl ServerLimit {
    pub(crate) fn new(max_connections: u32, max_pending: u32) -> Arc<ServerLimit> {
        Arc::new(ServerLimit {
            permits: Arc::new(tokio::sync::Semaphore::new(max_connections as usize)),
            pending: std::sync::atomic::AtomicU32::new(0),
            max_pending,
        })
    }

    /// A turn to send to this server, waiting at most `wait`; `None` when
    /// the server is full and its queue too, or the wait ran out.
    pub(crate) async fn acquire(
        &self,
        wait: Duration,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Some(p);
        }
        if self.pending.fetch_add(1, Relaxed) >= self.max_pending {
            self.pending.fetch_sub(1, Relaxed);
            return None;
        }
        let got = tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await;
        self.pending.fetch_sub(1, Relaxed);
        got.ok().and_then(Result::ok)
    }
}
