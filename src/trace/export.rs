//! The OTLP/HTTP exporter: a thread of its own with a single-threaded
//! runtime. Every 100 ms it takes what the workers queued; it POSTs a
//! batch (`Content-Type: application/x-protobuf`, an
//! `ExportTraceServiceRequest`) once 512 spans are waiting or a second
//! after the last export, over one kept-alive HTTP/1.1 connection, each
//! request under `timeout`. A batch that fails (no connection, a timeout,
//! a status other than 2xx) is dropped and counted, and logged at most
//! once a minute. At shutdown what is queued is sent, within `timeout`.
//!
//! A span's attributes: `http.request.method`, `url.path`,
//! `server.address` (the request's host), `client.address`,
//! `http.response.status_code`, `tidegate.route` (the route's name, or
//! `routes[i]`), `tidegate.upstream.address` (the server that answered),
//! `tidegate.retries` (other servers tried before it), `tidegate.outcome`
//! (the access log's: `done`, `error`, `aborted`, `cancelled`), and the
//! phases of the upstream hop: `tidegate.upstream.connect.duration` (time
//! to have a connection, from the pool or new, with
//! `tidegate.upstream.connection_reused`) and
//! `tidegate.upstream.response_head.duration` (from the send to the
//! response head), in seconds, with an event at the end of each
//! (`upstream connected`, `upstream response head`). Its name is the
//! method and the route (`GET api`); its status is ERROR for a 5xx.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use prost::Message;
use tokio::sync::watch;

use super::proto::{self, KeyValue, Value};
use super::{Record, Sink, Stats};
use crate::config::Tracing;

/// How often the queue is emptied.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Spans per export request, at most.
const MAX_BATCH: usize = 512;
/// Longest a span waits for a batch to fill.
const EXPORT_EVERY: Duration = Duration::from_secs(1);
/// Least time between two log lines about failed exports.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// A running exporter for one `[tracing]` section. Dropped, its thread
/// goes on until every worker has let go of its [`Sink`] (a reload's old
/// requests end), sends what is left, and ends; [`Exporter::finish`] ends
/// it now.
pub(crate) struct Exporter {
    pub(crate) settings: Tracing,
    sink: Sink,
    /// Set to stop the thread.
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// Starts the thread that exports to `settings.otlp_endpoint`.
    pub(crate) fn start(settings: &Tracing, stats: Arc<Stats>) -> std::io::Result<Exporter> {
        let (tx, rx) = sync_channel(settings.queue);
        let (stop, stopped) = watch::channel(false);
        let thread = {
            let client = Client::new(settings, stats.clone(), stopped);
            std::thread::Builder::new()
                .name("tidegate-trace".into())
                .spawn(move || run(rx, client))?
        };
        Ok(Exporter {
            settings: settings.clone(),
            sink: Sink {
                tx,
                stats,
                bound: super::ratio_bound(settings.sample_ratio),
            },
            stop,
            thread: Some(thread),
        })
    }

    /// Where workers put their spans.
    pub(crate) fn sink(&self) -> Sink {
        self.sink.clone()
    }

    /// Sends what is queued (an export in flight and the rest, within
    /// `timeout` from now) and ends the thread.
    pub(crate) fn finish(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: Receiver<Record>, mut client: Client) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("trace exporter not started: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let mut batch = Vec::new();
        let mut last = Instant::now();
        loop {
            let mut stop = client.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(DRAIN_EVERY) => {}
                // (An exporter let go of without a stop ends when its
                // queue's senders are gone.)
                Ok(_) = stop.wait_for(|s| *s) => {}
            }
            let mut end = *client.stop.borrow();
            loop {
                match rx.try_recv() {
                    Ok(r) => {
                        batch.push(r);
                        if batch.len() >= MAX_BATCH && !end {
                            client.export(&mut batch).await;
                            last = Instant::now();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        end = true;
                        break;
                    }
                }
            }
            if end {
                client.stopping();
                while !batch.is_empty() {
                    client.export(&mut batch).await;
                }
                client.report();
                return;
            }
            if !batch.is_empty() && last.elapsed() >= EXPORT_EVERY {
                client.export(&mut batch).await;
                last = Instant::now();
            }
        }
    });
}

/// The HTTP/1.1 client of the collector, and what it counts.
struct Client {
    settings: Tracing,
    /// `host:port` to connect to, and the `Host` field.
    authority: String,
    host: String,
    port: u16,
    conn: Option<SendRequest<Full<Bytes>>>,
    stats: Arc<Stats>,
    resource: proto::Resource,
    stop: watch::Receiver<bool>,
    /// Once stopping: when the last export must be over.
    deadline: Option<tokio::time::Instant>,
    /// Failures not yet logged, the last reason, and when the last line
    /// was written.
    unlogged: u64,
    reason: String,
    logged: Option<Instant>,
}

impl Client {
    fn new(settings: &Tracing, stats: Arc<Stats>, stop: watch::Receiver<bool>) -> Client {
        let authority = settings
            .otlp_endpoint
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let host = settings
            .otlp_endpoint
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Client {
            port: settings.otlp_endpoint.port_u16().unwrap_or(80),
            host,
            authority,
            conn: None,
            stats,
            resource: proto::Resource {
                attributes: vec![
                    KeyValue::new("service.name", Value::text(settings.service_name.clone())),
                    KeyValue::new("telemetry.sdk.name", Value::static_text("tidegate")),
                    KeyValue::new("telemetry.sdk.language", Value::static_text("rust")),
                ],
            },
            settings: settings.clone(),
            stop,
            deadline: None,
            unlogged: 0,
            reason: String::new(),
            logged: None,
        }
    }

    /// From now on, exports end within `timeout` from now.
    fn stopping(&mut self) {
        if self.deadline.is_none() {
            self.deadline = Some(tokio::time::Instant::now() + self.settings.timeout);
        }
    }

    /// Exports up to [`MAX_BATCH`] spans of `batch` (taken out of it).
    async fn export(&mut self, batch: &mut Vec<Record>) {
        let n = batch.len().min(MAX_BATCH);
        let body = self.encode(batch.drain(..n));
        match self.send(body).await {
            Ok(()) => {
                self.stats.exported.fetch_add(n as u64, Relaxed);
                if self.unlogged > 0 || !self.reason.is_empty() {
                    self.report();
                    tracing::info!(endpoint = %self.settings.otlp_endpoint, "trace export works again");
                    self.reason.clear();
                }
            }
            Err(reason) => {
                self.conn = None;
                self.stats.failures.fetch_add(1, Relaxed);
                self.unlogged += 1;
                self.reason = reason;
                if self.logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    self.report();
                }
            }
        }
    }

    /// Logs the failures not logged yet.
    fn report(&mut self) {
        if self.unlogged == 0 {
            return;
        }
        tracing::warn!(
            endpoint = %self.settings.otlp_endpoint,
            "trace export failed {} time(s), spans dropped; last: {}",
            self.unlogged,
            self.reason
        );
        self.unlogged = 0;
        self.logged = Some(Instant::now());
    }

    /// The request body for `spans`.
    fn encode(&self, spans: impl Iterator<Item = Record>) -> Bytes {
        // One clock reading for the batch: spans' monotonic times are
        // placed before it.
        let now = (SystemTime::now(), Instant::now());
        let spans = spans
            .map(|r| Bytes::from(span(r, now).encode_to_vec()))
            .collect();
        let req = proto::ExportTraceServiceRequest {
            resource_spans: vec![proto::ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![proto::ScopeSpans {
                    scope: Some(proto::InstrumentationScope {
                        name: "tidegate".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    spans,
                }],
            }],
        };
        Bytes::from(req.encode_to_vec())
    }

    /// POSTs `body` within `timeout`; a stop while it waits gives it
    /// `timeout` from the stop at most.
    async fn send(&mut self, body: Bytes) -> Result<(), String> {
        let timeout = self.settings.timeout;
        let mut stop = self.stop.clone();
        let mut deadline = self.deadline;
        let mut watching = deadline.is_none();
        let mut limit = tokio::time::Instant::now() + timeout;
        let result = {
            let post = self.post(body);
            tokio::pin!(post);
            loop {
                if let Some(d) = deadline {
                    limit = limit.min(d);
                }
                tokio::select! {
                    r = &mut post => break r,
                    () = tokio::time::sleep_until(limit) => {
                        break Err(format!("no answer in {timeout:?}"));
                    }
                    r = stop.wait_for(|s| *s), if watching => {
                        watching = false;
                        if r.is_ok() {
                            deadline = Some(tokio::time::Instant::now() + timeout);
                        }
                    }
                }
            }
        };
        self.deadline = deadline;
        result
    }

    /// POSTs `body` on the kept connection, or on a new one if there is
    /// none or the kept one turns out closed before it answered.
    async fn post(&mut self, body: Bytes) -> Result<(), String> {
        if let Some(conn) = self.conn.take().filter(|c| !c.is_closed()) {
            match self.post_on(conn, body.clone()).await {
                Err(Failed::Connection(_)) => {}
                done => return done.map_err(Failed::into_reason),
            }
        }
        let conn = self.connect().await?;
        self.post_on(conn, body).await.map_err(Failed::into_reason)
    }

    async fn post_on(
        &mut self,
        mut conn: SendRequest<Full<Bytes>>,
        body: Bytes,
    ) -> Result<(), Failed> {
        conn.ready().await.map_err(Failed::connection)?;
        let req = Request::post(self.settings.otlp_endpoint.path())
            .header(header::HOST, &self.authority)
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|e| Failed::Other(e.to_string()))?;
        let resp = conn.send_request(req).await.map_err(Failed::connection)?;
        let status = resp.status();
        // Read whole, so the connection can carry the next batch.
        let _ = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Failed::Other(e.to_string()))?;
        if !status.is_success() {
            return Err(Failed::Other(format!("the collector answered {status}")));
        }
        self.conn = Some(conn);
        Ok(())
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }
}

/// Why an export request failed: its connection (before any answer:
/// a kept one may have been closed by the collector meanwhile), or else.
enum Failed {
    Connection(String),
    Other(String),
}

impl Failed {
    fn connection(e: hyper::Error) -> Failed {
        Failed::Connection(e.to_string())
    }

    fn into_reason(self) -> String {
        match self {
            Failed::Connection(r) | Failed::Other(r) => r,
        }
    }
}

/// Unix nanoseconds of `t`, given the wall time `now` and the monotonic
/// time it was read at.
fn unix_nanos(t: Instant, (wall, mono): (SystemTime, Instant)) -> u64 {
    let at = wall
        .checked_sub(mono.saturating_duration_since(t))
        .unwrap_or(wall);
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A finished span as OTLP writes it.
fn span(r: Record, now: (SystemTime, Instant)) -> proto::Span {
    let s = &r.span;
    let mut attributes = vec![
        KeyValue::new("http.request.method", Value::text(s.method.to_string())),
        KeyValue::new("url.path", Value::text(s.target.path())),
        KeyValue::new("client.address", Value::text(s.client.ip().to_string())),
        KeyValue::new("http.response.status_code", Value::Int(i64::from(r.status))),
        KeyValue::new(
            "tidegate.retries",
            Value::Int(i64::from(s.hop.servers.get().saturating_sub(1))),
        ),
        KeyValue::new("tidegate.outcome", Value::static_text(r.outcome)),
    ];
    if let Some(h) = &s.host {
        attributes.push(KeyValue::new("server.address", Value::text(h.host())));
    }
    if let Some(route) = &r.route {
        attributes.push(KeyValue::new("tidegate.route", Value::text(&**route)));
    }
    if let Some(u) = r.upstream {
        attributes.push(KeyValue::new(
            "tidegate.upstream.address",
            Value::text(u.to_string()),
        ));
    }
    let mut events = Vec::new();
    let mut phase = |attr: &'static str,
                     event: &str,
                     (from, to): (tokio::time::Instant, tokio::time::Instant)| {
        let (from, to) = (from.into_std(), to.into_std());
        attributes.push(KeyValue::new(
            attr,
            Value::Double(to.saturating_duration_since(from).as_secs_f64()),
        ));
        events.push(proto::Event {
            time_unix_nano: unix_nanos(to, now),
            name: event.into(),
            attributes: Vec::new(),
        });
    };
    if let Some(c) = s.hop.connect.get() {
        phase(
            "tidegate.upstream.connect.duration",
            "upstream connected",
            c,
        );
    }
    if let Some(h) = s.hop.head.get() {
        phase(
            "tidegate.upstream.response_head.duration",
            "upstream response head",
            h,
        );
    }
    if s.hop.connect.get().is_some() {
        attributes.push(KeyValue::new(
            "tidegate.upstream.connection_reused",
            Value::Bool(s.hop.reused.get()),
        ));
    }
    let name = match &r.route {
        Some(route) => format!("{} {route}", s.method),
        None => s.method.to_string(),
    };
    let start = unix_nanos(r.start, now);
    proto::Span {
        trace_id: s.ctx.trace_id.to_vec(),
        span_id: s.ctx.span_id.to_vec(),
        trace_state: s
            .trace_state
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name,
        kind: proto::SPAN_KIND_SERVER,
        start_time_unix_nano: start,
        end_time_unix_nano: unix_nanos(r.end, now).max(start),
        attributes,
        events,
        status: (r.status >= 500).then(|| proto::Status {
            message: format!("{} {}", r.status, r.outcome),
            code: proto::STATUS_CODE_ERROR,
        }),
        flags: u32::from(s.ctx.flags)
            | proto::FLAGS_HAS_IS_REMOTE
            | if s.parent.is_some() {
                proto::FLAGS_IS_REMOTE
            } else {
                0
            },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_are_placed_before_the_reading() {
        let mono = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let earlier = mono.checked_sub(Duration::from_millis(250)).unwrap_or(mono);
        let back = mono.duration_since(earlier).as_nanos() as u64;
        assert_eq!(unix_nanos(mono, (wall, mono)), 1_000_000_000_000);
        assert_eq!(unix_nanos(earlier, (wall, mono)), 1_000_000_000_000 - back);
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(crate::trace::hex(&[0x00, 0xab, 0x10]), "00ab10");
    }
}
