//! A connection's watch: the client timeouts hyper has no separate knobs
//! for (the time to send a request head, the idle time of a kept-alive
//! connection) and the freeing of an idle connection's buffers, decided
//! from the counters in its [`ConnState`].

use std::time::Duration;

use tokio::time::Instant;

use super::state::{ConnState, Cut};

/// How long an HTTP/1.1 connection stays idle before its buffers are freed
/// (sooner, a busy connection would free and take them for every request).
const TRIM_AFTER: Duration = Duration::from_secs(1);

/// How often the watch of a connection with a request in flight (or a head
/// coming in) looks again, as it is not told when the request ends: an
/// idle connection's buffers are freed within this plus [`TRIM_AFTER`].
const TRIM_CHECK: Duration = Duration::from_secs(4);

/// The client timeouts hyper has no separate knobs for, and the freeing
/// of an idle connection's buffers: it looks at the counters the socket
/// wrapper and the request handler keep in `Cell`s when its timer fires,
/// flags what is due, and says when to look next. Its timer is polled with
/// the connection and fires only at those deadlines.
pub(super) struct Watch {
    head: Duration,
    idle: Duration,
    /// For a kept-alive connection the head's clock starts when the watch
    /// first sees its bytes: which idle period that was, and when.
    partial: Option<(Instant, Instant)>,
    /// The idle period whose buffers were freed.
    trimmed: Option<Instant>,
}

impl Watch {
    /// Acts on the connection's state at `now`: flags an idle connection
    /// past its timeout or a head past its time (`None`: cut), or one to
    /// trim; returns when to look again.
    pub(super) fn check(&mut self, state: &ConnState, now: Instant) -> Option<Instant> {
        let (head, idle) = (self.head, self.idle);
        if state.in_flight.get() > 0 {
            self.partial = None;
            // Back within `TRIM_CHECK`, to free the buffers of a connection
            // that has gone idle since.
            return Some(now + head.min(idle).min(TRIM_CHECK));
        }
        let since = state.idle_since.get();
        if state.read.get() == state.read_at_idle.get() {
            self.partial = None;
            let limit = if state.requests.get() == 0 {
                head
            } else {
                idle
            };
            let limit = match state.stopping.get() {
                true => limit.min(super::state::STOP_LINGER),
                false => limit,
            };
            let deadline = since + limit;
            if now >= deadline {
                state.cut.set(Some(Cut::Idle));
                return None;
            }
            return Some(match self.trimmed {
                Some(t) if t == since => deadline,
                _ if now >= since + TRIM_AFTER => {
                    self.trimmed = Some(since);
                    state.trim.set(true);
                    deadline
                }
                _ => deadline.min(since + TRIM_AFTER),
            });
        }
        let started = if state.requests.get() == 0 {
            since
        } else {
            match self.partial {
                Some((idle_mark, started)) if idle_mark == since => started,
                _ => {
                    self.partial = Some((since, now));
                    now
                }
            }
        };
        let deadline = started + head;
        if now >= deadline {
            state.cut.set(Some(Cut::HeadTimeout));
            return None;
        }
        // The head is probably a request about to start and end.
        Some(deadline.min(now + TRIM_CHECK))
    }
}

impl Watch {
    pub(super) fn new(head: Duration, idle: Duration) -> Watch {
        Watch {
            head,
            idle,
            partial: None,
            trimmed: None,
        }
    }
}
