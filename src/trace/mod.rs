//! Traces (`[tracing]`): W3C Trace Context on every request, and one
//! OpenTelemetry span per sampled request, exported with OTLP/HTTP.
//!
//! **Propagation.** A request that carries one valid `traceparent`
//! (version `00`, or a later version read as `00`; a trace ID and a parent
//! ID that are lowercase hex and not all zero) continues that trace: the
//! upstream gets a `traceparent` with the same trace ID and flags and our
//! span's ID as its parent, and the `tracestate` fields unchanged. Any
//! other request (none, several, or an invalid one) starts a new trace, as
//! the W3C spec says: a new trace ID, and the `tracestate` of the refused
//! context dropped. Unsampled requests are propagated the same way; they
//! only make no span.
//!
//! **Sampling** is parent-based: a continued trace follows its parent's
//! sampled flag; a new one is sampled when its trace ID falls under
//! `sample_ratio` (OpenTelemetry's `TraceIdRatioBased`: the last 8 bytes of
//! the ID, as a big-endian number shifted right once, below `ratio * 2^63`),
//! so every proxy with the same ratio decides the same way.
//!
//! **The span** is of kind SERVER: it stands for the proxy's handling of
//! the request, from its head to the end of its response (the access-log
//! line's time), and the upstream's own server span is its child. It is
//! finished where the access-log line is ([`crate::proxy::exchange`]),
//! with the attributes listed at [`export`].
//!
//! **Cost.** Without `[tracing]` a request pays one `Option` check. With
//! it: two random numbers from the thread's generator (no system call),
//! the `traceparent` value (one small allocation), and for a sampled
//! request its record, moved at the end into a bounded queue
//! (`try_send`: no lock, no system call; a full queue drops the span and
//! counts it). The exporter thread takes spans from the queue every
//! 100 ms and does everything else.

pub(crate) mod export;
mod proto;

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, Uri};
use tokio::time::Instant;

use crate::message::admit::Authority;

pub(crate) use crate::message::headers::{TRACEPARENT, TRACESTATE};

/// Longest `tracestate` recorded on a span (the W3C spec asks that at
/// least 512 characters be propagated; the header itself goes upstream as
/// it came, within the request-head limit).
const MAX_TRACESTATE: usize = 512;

/// A `traceparent`: trace ID, parent (span) ID, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Context {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) flags: u8,
}

/// One lowercase hex digit's value.
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// `out.len() * 2` lowercase hex digits into bytes.
fn unhex(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *o = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(())
}

/// Bytes as lowercase hex.
#[cfg(test)]
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    crate::random::put_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

impl Context {
    /// A `traceparent` value (W3C Trace Context §3.2), or `None` when it is
    /// not a valid one.
    pub(crate) fn parse(v: &[u8]) -> Option<Context> {
        // version "-" trace-id "-" parent-id "-" flags: 2+1+32+1+16+1+2.
        if v.len() < 55 {
            return None;
        }
        let mut version = [0u8];
        unhex(&v[0..2], &mut version)?;
        match version[0] {
            0xff => return None,
            // Version 00 is exactly this long; a later one may go on
            // after a dash, and is read as far as 00 goes.
            0 if v.len() != 55 => return None,
            _ if v.len() > 55 && v[55] != b'-' => return None,
            _ => {}
        }
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let mut c = Context {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: 0,
        };
        unhex(&v[3..35], &mut c.trace_id)?;
        unhex(&v[36..52], &mut c.span_id)?;
        let mut flags = [0u8];
        unhex(&v[53..55], &mut flags)?;
        c.flags = flags[0];
        if c.trace_id == [0; 16] || c.span_id == [0; 8] {
            return None;
        }
        Some(c)
    }

    /// The `traceparent` value (version 00) for this context, as bytes.
    pub(crate) fn value(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        self.write(&mut out);
        out
    }

    /// Writes the IDs and flags into `out`, a version 00 `traceparent`
    /// value's 55 bytes (its dashes and version already there).
    pub(crate) fn write(&self, out: &mut [u8]) {
        crate::random::put_hex(&mut out[3..35], &self.trace_id);
        crate::random::put_hex(&mut out[36..52], &self.span_id);
        crate::random::put_hex(&mut out[53..55], &[self.flags]);
    }

    /// The `traceparent` value (version 00) for this context.
    pub(crate) fn header(&self) -> HeaderValue {
        let out = self.value();
        // Hex digits and dashes are always a valid field value. (The
        // array moved into the value's one allocation, not copied.)
        HeaderValue::from_maybe_shared(Bytes::from_owner(out)).unwrap_or(HeaderValue::from_static(
            "00-00000000000000000000000000000000-0000000000000000-00",
        ))
    }

    pub(crate) fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// A new span ID: random, never all zero.
fn span_id() -> [u8; 8] {
    crate::random::next_u64().max(1).to_be_bytes()
}

/// A new trace ID: random, never all zero.
fn trace_id() -> [u8; 16] {
    let (a, b) = crate::random::next_u128();
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&a.to_be_bytes());
    id[8..].copy_from_slice(&b.max(1).to_be_bytes());
    id
}

/// `TraceIdRatioBased`'s bound for `ratio`: a trace ID is sampled when its
/// last 8 bytes, shifted right once, are below it.
pub(crate) fn ratio_bound(ratio: f64) -> u64 {
    (ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64
}

fn ratio_sampled(trace_id: &[u8; 16], bound: u64) -> bool {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    (u64::from_be_bytes(low) >> 1) < bound
}

/// The exporter's counts, for `/metrics`; they go on across reloads.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Spans the collector accepted.
    pub(crate) exported: AtomicU64,
    /// Spans dropped before export: the queue was full (or the exporter
    /// gone).
    pub(crate) dropped: AtomicU64,
    /// Export requests that failed (their spans are dropped, and counted
    /// here, not in `dropped`).
    pub(crate) failures: AtomicU64,
}

/// Where a worker's spans go: the exporter's queue, and the sampling
/// bound of its settings.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    tx: SyncSender<Record>,
    stats: Arc<Stats>,
    bound: u64,
}

/// One worker's tracer under one config.
#[derive(Debug)]
pub(crate) struct Tracer {
    sink: Sink,
    /// Route labels, by config index.
    routes: Box<[Arc<str>]>,
}

/// What one phase of the upstream hop took, noted by the forward phase
/// (the last server tried: the one that answered).
#[derive(Debug, Default)]
pub(crate) struct Hop {
    /// Servers tried.
    servers: Cell<u32>,
    /// When the connection was asked for, and when it was there.
    connect: Cell<Option<(Instant, Instant)>>,
    /// It came from the pool.
    reused: Cell<bool>,
    /// When the request was sent, and when its response head came.
    head: Cell<Option<(Instant, Instant)>>,
}

impl Hop {
    /// One more server is tried.
    pub(crate) fn server(&self) {
        self.servers.set(self.servers.get().saturating_add(1));
    }

    /// The connection asked for at `since` is there (`reused`: from the pool).
    pub(crate) fn connected(&self, since: Instant, reused: bool) {
        self.connect.set(Some((since, Instant::now())));
        self.reused.set(reused);
    }

    /// The response head to the request sent at `since` came.
    pub(crate) fn answered(&self, since: Instant) {
        self.head.set(Some((since, Instant::now())));
    }
}

/// A sampled request's span, while the request runs.
#[derive(Debug)]
pub(crate) struct Span {
    /// Our span's context (its ID is the upstream's parent).
    ctx: Context,
    /// The incoming parent's span ID.
    parent: Option<[u8; 8]>,
    trace_state: Option<HeaderValue>,
    method: Method,
    target: Uri,
    host: Option<Authority>,
    client: SocketAddr,
    pub(crate) hop: Hop,
}

/// How the request ended, for its span.
pub(crate) struct End {
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    /// The route's config index.
    pub(crate) route: Option<usize>,
    pub(crate) status: u16,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) outcome: &'static str,
}

/// A finished span, on its way to the exporter.
#[derive(Debug)]
pub(crate) struct Record {
    span: Box<Span>,
    start: std::time::Instant,
    end: std::time::Instant,
    route: Option<Arc<str>>,
    status: u16,
    upstream: Option<SocketAddr>,
    outcome: &'static str,
}

impl Tracer {
    pub(crate) fn new(sink: &Sink, config: &crate::config::Config) -> Tracer {
        Tracer {
            sink: sink.clone(),
            routes: config.routes.iter().map(|r| r.label().into()).collect(),
        }
    }

    /// The request's trace context, for the `traceparent` it sends
    /// upstream (added where it goes out: `proxy::added`), and its span if
    /// it is sampled. The client's `traceparent` is taken out of `parts`
    /// (and its `tracestate` unless the parent was valid). `found`: what
    /// the proxy's one pass over the request's fields saw, so that most
    /// requests hash neither name.
    pub(crate) fn begin(
        &self,
        parts: &mut http::request::Parts,
        found: &crate::message::headers::Found,
        host: Option<&Authority>,
        client: SocketAddr,
    ) -> (Context, Option<Box<Span>>) {
        let headers = &mut parts.headers;
        let parent = match found.trace_parent {
            false => None,
            true => match headers.entry(TRACEPARENT) {
                http::header::Entry::Occupied(o) => {
                    let (_, mut sent) = o.remove_entry_mult();
                    match (sent.next(), sent.next()) {
                        (Some(v), None) => Context::parse(v.as_bytes()),
                        _ => None,
                    }
                }
                http::header::Entry::Vacant(_) => None,
            },
        };
        let ctx = match parent {
            Some(p) => Context {
                span_id: span_id(),
                ..p
            },
            None => {
                let trace_id = trace_id();
                let sampled = ratio_sampled(&trace_id, self.sink.bound);
                Context {
                    trace_id,
                    span_id: span_id(),
                    flags: u8::from(sampled),
                }
            }
        };
        if parent.is_none() && found.trace_state {
            headers.remove(TRACESTATE);
        }
        if !ctx.sampled() {
            return (ctx, None);
        }
        let trace_state = parent.and_then(|_| single(headers, &TRACESTATE));
        let span = Box::new(Span {
            ctx,
            parent: parent.map(|p| p.span_id),
            trace_state: trace_state.filter(|v| v.len() <= MAX_TRACESTATE),
            method: parts.method.clone(),
            target: parts.uri.clone(),
            host: host.cloned(),
            client,
            hop: Hop::default(),
        });
        (ctx, Some(span))
    }

    /// Hands the finished `span` to the exporter; a full queue drops it.
    pub(crate) fn end(&self, span: Box<Span>, end: End) {
        let record = Record {
            span,
            start: end.start.into_std(),
            end: end.end.into_std(),
            route: end.route.and_then(|i| self.routes.get(i)).cloned(),
            status: end.status,
            upstream: end.upstream,
            outcome: end.outcome,
        };
        match self.sink.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.sink.stats.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The value of `name` when the request has exactly one.
fn single(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Some(v.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_parses_and_formats_back() {
        let c = Context::parse(VALID.as_bytes()).unwrap();
        assert_eq!(hex(&c.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&c.span_id), "00f067aa0ba902b7");
        assert_eq!(c.flags, 1);
        assert!(c.sampled());
        assert_eq!(c.header(), VALID);
        let c = Context::parse(VALID.replace("-01", "-00").as_bytes()).unwrap();
        assert!(!c.sampled());
        assert_eq!(c.header().to_str().unwrap(), VALID.replace("-01", "-00"));
    }

    #[test]
    fn a_later_version_is_read_as_00() {
        let v = VALID.replacen("00-", "cc-", 1);
        assert!(Context::parse(v.as_bytes()).is_some());
        let longer = format!("{v}-what-comes-next");
        let c = Context::parse(longer.as_bytes()).unwrap();
        assert_eq!(c.header(), VALID);
        // ...but not without its dash, and never version ff.
        assert!(Context::parse(format!("{v}x").as_bytes()).is_none());
        assert!(Context::parse(VALID.replacen("00-", "ff-", 1).as_bytes()).is_none());
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        let cases = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for c in cases {
            assert!(Context::parse(c.as_bytes()).is_none(), "{c:?}");
        }
    }

    #[test]
    fn ids_are_never_zero_and_differ() {
        let a = trace_id();
        let b = trace_id();
        assert_ne!(a, b);
        assert_ne!(a, [0; 16]);
        assert_ne!(span_id(), [0; 8]);
    }

    #[test]
    fn ratio_sampling_follows_the_trace_id() {
        let id = |low: u64| {
            let mut t = [0xffu8; 16];
            t[8..].copy_from_slice(&low.to_be_bytes());
            t
        };
        assert!(ratio_sampled(&id(u64::MAX), ratio_bound(1.0)));
        assert!(!ratio_sampled(&id(0), ratio_bound(0.0)));
        let half = ratio_bound(0.5);
        assert!(ratio_sampled(&id((1 << 62) - 1), half));
        assert!(!ratio_sampled(&id(u64::MAX), half));
        // About the ratio, over many random IDs.
        let n = 20_000;
        let sampled = (0..n)
            .filter(|_| ratio_sampled(&trace_id(), ratio_bound(0.25)))
            .count();
        assert!((4_000..6_000).contains(&sampled), "{sampled}");
    }
}
