//! Runtime glue for hyper on Tidegate's thread-per-core layout.

use std::future::Future;

/// Spawns hyper's background futures (HTTP/2 streams and connection
/// drivers) on the current thread's `LocalSet`.
///
/// Every worker runs a single-threaded runtime, and the request path holds
/// `Rc`s, so those futures are not `Send`: they must stay on the thread that
/// made them. Must be used from inside a `LocalSet`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}
