//! The upstream response-head timeout: a deadline from the moment the
//! request goes out, pushed back by every chunk of request body still being
//! sent (nginx's `proxy_send_timeout` and `proxy_read_timeout` in one).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::body::BodyProgress;
use crate::downstream::state::HeadTimer;

/// Waits for the response head. The deadline runs from `start` (when
/// the request goes out, read by the caller, which times the exchange
/// with it too), pushed back by every chunk of request body still being
/// sent. `shared`: the connection's [`HeadTimer`], used when free;
/// otherwise a timer of its own. `fut` is pinned where the caller made
/// it: the exchange's future is large, and each move copies it whole.
pub(crate) fn with_head_timeout<'a, F: Future>(
    fut: Pin<&'a mut F>,
    start: Instant,
    timeout: Duration,
    progress: Option<&'a BodyProgress>,
    shared: Option<&'a HeadTimer>,
) -> HeadTimeout<'a, F> {
    HeadTimeout {
        fut,
        own: None,
        deadline: start + timeout,
        armed: false,
        timeout,
        progress,
        shared,
    }
}

pin_project_lite::pin_project! {
    /// `Some(output)`, or `None` when the upstream took too long.
    pub(crate) struct HeadTimeout<'a, F> {
        fut: Pin<&'a mut F>,
        #[pin]
        own: Option<tokio::time::Sleep>,
        deadline: Instant,
        // The timer in use (shared or own) is set to `deadline`.
        armed: bool,
        timeout: Duration,
        progress: Option<&'a BodyProgress>,
        shared: Option<&'a HeadTimer>,
    }
}

impl<F: Future> Future for HeadTimeout<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(r) = this.fut.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        let mut shared = this.shared.and_then(|t| t.0.try_borrow_mut().ok());
        loop {
            let deadline = *this.deadline;
            let fired = match shared.as_deref_mut() {
                Some(slot) => {
                    let sleep = slot.get_or_insert_with(|| Box::pin(sleep_until(deadline)));
                    poll_until(sleep.as_mut(), deadline, this.armed, cx)
                }
                None => {
                    if this.own.is_none() {
                        this.own.set(Some(sleep_until(deadline)));
                    }
                    let own = this.own.as_mut().as_pin_mut();
                    own.is_some_and(|sleep| poll_until(sleep, deadline, this.armed, cx))
                }
            };
            if !fired {
                return Poll::Pending;
            }
            let next = match this.progress {
                Some(p) => p.last_progress.get() + *this.timeout,
                None => return Poll::Ready(None),
            };
            if next <= Instant::now() {
                return Poll::Ready(None);
            }
            *this.deadline = next;
            *this.armed = false;
        }
    }
}

/// Polls `sleep` for `deadline`, moving it there first unless `armed`
/// says it already is.
#[inline]
fn poll_until(
    mut sleep: Pin<&mut tokio::time::Sleep>,
    deadline: Instant,
    armed: &mut bool,
    cx: &mut Context<'_>,
) -> bool {
    if !std::mem::replace(armed, true) {
        sleep.as_mut().reset(deadline);
    }
    sleep.poll(cx).is_ready()
}
