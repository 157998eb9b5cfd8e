//! The respond phase's end: the [`Exchange`] a response body (see
//! [`super::response_body`]) finishes when it ends: the access-log line,
//! the balancer's count, and the upstream connection back to the pool
//! once request and response are both complete (else the rest of the
//! request body is relayed first, or the connection closed).

use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;

use tokio::time::Instant;

use crate::access_log::Entry;
use crate::body::BodyProgress;
use crate::downstream::state::InFlight;
use crate::upstream::{Lease, Sender};
use crate::worker::Worker;

/// The access-log line of one request (`None` when the log is off),
/// written when dropped, whichever way the request ended: a local answer,
/// an error, the end of a streamed body or of a tunnel, or the client
/// cancelling (dropped as made: 499, as nginx writes). The one place
/// lines are written.
pub(crate) struct LogLine(Option<Box<Line>>);

struct Line {
    /// What the access log writes (`None` with the log off: the metrics
    /// need only the start). Boxed apart: with the log off the line is a
    /// third of the size, and a smaller allocation (jemalloc's thread
    /// cache kept the larger ones poorly with 50 lines at a time).
    entry: Option<Box<Entry>>,
    start: Instant,
    worker: Rc<Worker>,
    /// The listener's index in the worker's config.
    listener: usize,
    /// The route's config index, once routed.
    route: Option<usize>,
    /// The server that answered (the pool's flat index).
    server: Option<usize>,
    status: u16,
    bytes: u64,
    upstream: Option<SocketAddr>,
    outcome: &'static str,
    /// An HTTP/2 stream.
    h2: bool,
    /// The request's span, when it is traced and sampled.
    span: Option<Box<crate::trace::Span>>,
}

/// Where a request's ID goes in its access-log entry (`None`: the log is
/// off).
pub(crate) type IdSlot<'a> = Option<&'a mut Option<crate::message::id::Id>>;

impl LogLine {
    /// The end record of the request `entry` describes, if the log, the
    /// metrics or a span are on. (The metrics count and the span ends at
    /// the same end: one place for all.)
    pub(crate) fn new(
        worker: &Rc<Worker>,
        listener: usize,
        h2: bool,
        span: Option<Box<crate::trace::Span>>,
        entry: impl FnOnce(Instant) -> Entry,
    ) -> LogLine {
        let log = worker.log.enabled();
        let on = log || worker.counters.is_some() || span.is_some();
        LogLine(on.then(|| {
            // Written straight into its allocation, with no entry (set
            // after, when the log is on): built on the stack and moved into
            // a box, the whole line (entry included) was copied once more.
            let start = Instant::now();
            let mut line = Box::write(
                Box::new_uninit(),
                Line {
                    span,
                    start,
                    entry: None,
                    worker: worker.clone(),
                    listener,
                    route: None,
                    server: None,
                    status: 499,
                    bytes: 0,
                    upstream: None,
                    outcome: "cancelled",
                    h2,
                },
            );
            if log {
                line.entry = Some(Box::write(Box::new_uninit(), entry(start)));
            }
            line
        }))
    }

    /// Where the forward phase notes its timings, for a span, and where
    /// an ID given after the line was begun goes (both borrowed at once:
    /// the forward phase holds them together).
    pub(crate) fn split(&mut self) -> (Option<&crate::trace::Hop>, IdSlot<'_>) {
        match self.0.as_deref_mut() {
            None => (None, None),
            Some(l) => (
                l.span.as_ref().map(|s| &s.hop),
                l.entry.as_mut().map(|e| &mut e.request_id),
            ),
        }
    }

    /// The request's route (config index), once found.
    pub(crate) fn route(&mut self, route: Option<usize>) {
        if let Some(l) = &mut self.0 {
            l.route = route;
        }
    }

    /// The user basic auth let in, for the log's `$remote_user`.
    pub(crate) fn user(&mut self, user: Option<std::sync::Arc<str>>) {
        if let Some(e) = self.0.as_mut().and_then(|l| l.entry.as_mut()) {
            e.user = user;
        }
    }

    /// The server whose response this was (the pool's flat index).
    pub(crate) fn server(&mut self, server: usize) {
        if let Some(l) = &mut self.0 {
            l.server = Some(server);
        }
    }

    /// How the request ended, for when the line is written.
    pub(crate) fn set(
        &mut self,
        status: u16,
        bytes: u64,
        upstream: Option<SocketAddr>,
        outcome: &'static str,
    ) {
        if let Some(l) = &mut self.0 {
            (l.status, l.bytes, l.upstream, l.outcome) = (status, bytes, upstream, outcome);
        }
    }
}

impl LogLine {
    /// Writes the line, the request having ended at `now` (a clock read
    /// the caller makes for something else too).
    pub(crate) fn end(mut self, now: Instant) {
        if let Some(l) = self.0.take() {
            l.write(now);
        }
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if let Some(l) = self.0.take() {
            l.write(Instant::now());
        }
    }
}

impl Line {
    /// The line's one write: the access log, the metrics, the span.
    fn write(self: Box<Self>, now: Instant) {
        let l = self;
        let elapsed = now.saturating_duration_since(l.start);
        if let Some(e) = &l.entry {
            let end = crate::access_log::End {
                status: l.status,
                bytes: l.bytes,
                upstream: l.upstream,
                outcome: l.outcome,
                elapsed,
            };
            l.worker.log.record(e, &end);
        }
        if let Some(c) = &l.worker.counters {
            c.ended(&crate::metrics::Ended {
                listener: l.listener,
                route: l.route,
                server: l.server,
                status: l.status,
                bytes: l.bytes,
                elapsed,
                h2: l.h2,
            });
        }
        if let (Some(span), Some(tracer)) = (l.span, &l.worker.trace) {
            tracer.end(
                span,
                crate::trace::End {
                    start: l.start,
                    end: now,
                    route: l.route,
                    status: l.status,
                    upstream: l.upstream,
                    outcome: l.outcome,
                },
            );
        }
    }
}

/// A request whose response body is streaming: finished by the body when
/// it ends or is dropped.
pub(crate) struct Exchange {
    pub(crate) worker: Rc<Worker>,
    pub(crate) lease: Lease,
    pub(crate) status: u16,
    pub(crate) line: LogLine,
    /// How the request body went (`None`: it had none).
    pub(crate) progress: Option<Rc<BodyProgress>>,
    pub(crate) in_flight: InFlight,
    pub(crate) permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The request's places in its concurrency limits, given back when
    /// the response ends.
    pub(crate) held: crate::ratelimit::concurrency::Held,
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Sent whole.
    Done,
    /// The upstream broke off.
    UpstreamFailed,
    /// The client went away (or reset its stream) before the end.
    ClientGone,
}

impl Exchange {
    /// Called once, when the response body ended or was abandoned.
    pub(crate) fn end(self, how: Ended, bytes: u64) {
        let Exchange {
            worker,
            lease,
            status,
            mut line,
            progress,
            in_flight,
            permit,
            held,
        } = self;
        // The response has ended (whole, or abandoned): the request is no
        // longer in flight for its concurrency limits.
        drop(held);
        let outcome = if how == Ended::Done {
            "done"
        } else {
            "aborted"
        };
        line.server(lease.server);
        line.set(status, bytes, Some(worker.pool.addr(lease.server)), outcome);
        // One clock read for the line's end, the upstream connection's
        // idle time and the client connection's.
        let now = Instant::now();
        line.end(now);
        worker.pool.end(lease.server);
        match how {
            // Pooled only once the request went out whole too.
            Ended::Done => match progress {
                // An HTTP/2 upstream's stream sends the body on its own.
                Some(p) if !p.ended.get() && matches!(lease.sender, Sender::H1(_)) => {
                    tokio::task::spawn_local(relay(worker, lease, p, in_flight, permit));
                    return;
                }
                Some(p) if !p.ended.get() => {}
                _ => worker.pool.checkin(lease, now),
            },
            Ended::UpstreamFailed => {}
            Ended::ClientGone => in_flight.client_reset(),
        }
        in_flight.end_at(now);
    }

    /// Drives the upstream connection; the response body calls this on
    /// every poll that finds no data ready.
    pub(crate) fn drive(&mut self, cx: &mut std::task::Context<'_>) {
        self.lease.drive(cx);
    }
}

/// The upstream answered before the whole request body went out (an early
/// 200, 401 or 413): the body goes on to it while it reads, and once the
/// request is complete too the connection returns to the pool. An upstream
/// that closes, or stops reading for the route's `upstream_response_head`
/// (which a body still streaming pushes back, as nginx's
/// `proxy_send_timeout`), has its connection closed; the client's
/// connection then takes the rest of the body ([`crate::body::Discard`]).
/// The request counts as in flight on its client connection until then,
/// and keeps its server's turn.
pub(crate) async fn relay(
    worker: Rc<Worker>,
    mut lease: Lease,
    progress: Rc<BodyProgress>,
    _in_flight: InFlight,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    loop {
        let seen = progress.last_progress.get();
        let moved = tokio::time::timeout(
            progress.stall,
            std::future::poll_fn(|cx| {
                lease.drive(cx);
                if lease.is_dead() || progress.ended.get() || progress.last_progress.get() != seen {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }),
        )
        .await;
        let addr = worker.pool.addr(lease.server);
        if moved.is_err() {
            tracing::debug!(upstream = %addr, "answered early and stopped reading the request body; closing its connection");
            return;
        }
        if lease.is_dead() {
            tracing::debug!(upstream = %addr, "answered early and closed before the end of the request body");
            return;
        }
        if progress.ended.get() {
            worker.pool.checkin(lease, Instant::now());
            return;
        }
    }
}
