//! The waits of a connection's set-up (a PROXY header, a TLS handshake,
//! the h2c sniff of the first bytes), each until its own deadline, on
//! one timer: a later phase moves the timer an earlier one registered
//! (to a later deadline, tokio only notes it, with no new registration
//! with the driver), where a timer per phase registered and removed one
//! each time.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::state::STOP_LINGER;

/// The set-up's one timer (made at its first wait).
pub(super) struct Timer<'a> {
    sleep: Pin<&'a mut Option<Sleep>>,
    /// It has been polled, so tokio registered it: moved, not made again.
    polled: bool,
}

impl<'a> Timer<'a> {
    /// A timer in `slot` (`std::pin::pin!(None)`).
    pub(super) fn new(slot: Pin<&'a mut Option<Sleep>>) -> Self {
        Timer {
            sleep: slot,
            polled: false,
        }
    }

    /// Fires at `at` from now on.
    fn until(&mut self, at: Instant) {
        match self.sleep.as_mut().as_pin_mut() {
            Some(s) if self.polled => s.reset(at),
            // Never polled: a new one costs what a reset would (tokio
            // would register it at once), and registers only if waited on.
            _ => self.sleep.set(Some(tokio::time::sleep_until(at))),
        }
    }

    /// Fires no more (until moved again).
    pub(super) fn stop(&mut self) {
        self.sleep.set(None);
        self.polled = false;
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.sleep.as_mut().as_pin_mut() {
            Some(s) => {
                self.polled = true;
                s.poll(cx)
            }
            None => Poll::Pending,
        }
    }
}

/// `fut` until `deadline` (`None`: not done by then); once shutdown (or
/// an upgrade's hand-over) begins, for at most [`STOP_LINGER`] more: a
/// client that connected just as it began has its request on the way,
/// and is served (its first exchange, then the connection closes) rather
/// than dropped. `fut` is pinned where it is made: moved into the wait,
/// it was copied whole once more.
///
/// `span`: the phase's whole time, which `deadline` is at most that far
/// ahead. One no longer than the linger ends by its deadline either way:
/// it keeps no watch on shutdown (the PROXY header's default second).
///
/// The work is polled first: one done at its first poll (its bytes there
/// already) neither arms the timer nor waits on the watch.
pub(super) async fn within<F: Future>(
    mut fut: Pin<&mut F>,
    timer: &mut Timer<'_>,
    (deadline, span): (Instant, Duration),
    shutdown: &mut watch::Receiver<bool>,
) -> Option<F::Output> {
    timer.until(deadline);
    if span > STOP_LINGER && !*shutdown.borrow_and_update() {
        let mut changed = pin!(shutdown.changed());
        let first = poll_fn(|cx| {
            if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(Some(r)));
            }
            if timer.poll(cx).is_ready() {
                return Poll::Ready(Some(None));
            }
            // (A closed watch: the server is gone, as for shutdown.)
            changed.as_mut().poll(cx).map(|_| None)
        })
        .await;
        if let Some(done) = first {
            return done;
        }
        let linger = Instant::now() + STOP_LINGER;
        if linger < deadline {
            timer.until(linger);
        }
    }
    poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(r) => Poll::Ready(Some(r)),
        Poll::Pending => timer.poll(cx).map(|()| None),
    })
    .await
}
