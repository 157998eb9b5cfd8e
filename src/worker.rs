//! One worker thread's state under one config: the compiled routes, the
//! thread's upstream pool and access-log buffer, hyper's settings. Each
//! thread has its own, swapped whole on reload ([`Current`]) and read
//! without a lock.

use std::rc::Rc;
use std::sync::Arc;

use hyper::server::conn::http1;

use crate::access_log::AccessLog;
use crate::config::{Config, ConfigError};
use crate::downstream::tls::ServerTls;
use crate::metrics::{Counters, Labels, Registry as MetricsRegistry};
use crate::router::Router;
use crate::upstream::registry::{Registry, Upstreams};
use crate::upstream::Pool;

/// A config put into service: the pure config and what was built from it
/// (certificates read, names resolved, upstream state carried over by the
/// registry). Shared by every thread.
#[derive(Debug, Clone)]
pub(crate) struct Generation {
    pub config: Arc<Config>,
    pub upstreams: Arc<Upstreams>,
    /// Each listener's TLS, in config order.
    pub tls: Arc<Vec<Option<Arc<ServerTls>>>>,
    /// The label values of this generation's metrics.
    pub labels: Arc<Labels>,
    /// The state of the config's rate limits (built afresh on reload).
    pub limiters: Arc<crate::ratelimit::Limiters>,
    /// The config's caches (what they store kept across reloads).
    pub caches: Arc<crate::cache::Caches>,
    /// Where spans go, with `[tracing]` (set by the server, which runs
    /// the exporter).
    pub trace: Option<crate::trace::Sink>,
    /// The fetches of the config's `jwks_url` key sets, while any copy of
    /// this generation (or a DNS change's, same config) is in service:
    /// started by the server ([`Generation::fetching_jwks`]), never by
    /// `tidegate check`.
    pub jwks: Option<Arc<crate::auth::jwt::fetch::Fetcher>>,
    /// The process's ACME certificates and challenge answers (kept by
    /// the server's ACME thread with `[acme]`; empty without).
    pub acme: Arc<crate::acme::Certs>,
}

impl Generation {
    /// Reads `config`'s certificates and builds its upstreams with
    /// `registry`; every problem found is reported, with its line.
    pub(crate) fn build(
        config: Config,
        registry: &mut Registry,
        acme: &Arc<crate::acme::Certs>,
    ) -> Result<Generation, ConfigError> {
        let mut problems = Vec::new();
        let mut tls = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            tls.push(match &l.tls {
                None => None,
                Some(t) => match ServerTls::build(t, alpn(l), acme) {
                    Ok(t) => Some(Arc::new(t)),
                    Err(e) => {
                        problems.push((tls_field(i, l, t, &e), e.to_string()));
                        None
                    }
                },
            });
        }
        // The ACME storage and the disk tiers' folders: made and writable
        // (`check` says so too).
        if let Some(a) = &config.acme {
            if let Err(e) = crate::acme::disk::prepare(&a.storage) {
                problems.push(("acme.storage".into(), e));
            }
        }
        for c in &config.caches {
            if let Some(d) = &c.disk {
                if let Err(e) = crate::cache::disk::prepare(&d.path) {
                    problems.push((format!("caches.{}.disk.path", c.name), e));
                }
            }
        }
        let upstreams = registry.build(&config);
        let upstreams = match upstreams {
            Ok(u) if problems.is_empty() => u,
            Ok(_) => return Err(config.source.invalid(problems)),
            Err(e) => {
                problems.extend(
                    e.problems()
                        .iter()
                        .map(|p| (p.field.clone(), p.reason.clone())),
                );
                return Err(config.source.invalid(problems));
            }
        };
        Ok(Generation {
            labels: Arc::new(Labels::new(&config, &upstreams)),
            limiters: Arc::new(crate::ratelimit::Limiters::new(
                &config.rate_limits,
                &config.concurrency_limits,
            )),
            caches: Arc::new(crate::cache::Caches::new(&config.caches)),
            config: Arc::new(config),
            upstreams: Arc::new(upstreams),
            tls: Arc::new(tls),
            trace: None,
            jwks: None,
            acme: acme.clone(),
        })
    }

    /// Starts fetching the key sets of the routes' `jwks_url`s.
    pub(crate) fn fetching_jwks(mut self) -> Generation {
        let jwts = self.config.routes.iter().filter_map(|r| r.jwt.as_deref());
        self.jwks = crate::auth::jwt::fetch::Fetcher::start(jwts).map(Arc::new);
        self
    }

    /// Takes over `old`'s state of every rate and concurrency limit left
    /// unchanged, and what its caches stored.
    pub(crate) fn keep_limits(&mut self, old: &Generation) {
        self.limiters = Arc::new(
            old.limiters
                .carried(&self.config.rate_limits, &self.config.concurrency_limits),
        );
        self.caches = Arc::new(old.caches.carried(&self.config.caches));
    }

    /// Opens the caches' disk tiers (their folders scanned in the
    /// background): by the server once the caches are final, never by
    /// `tidegate check`.
    pub(crate) fn opening_disks(mut self) -> Result<Generation, ConfigError> {
        match self.caches.with_disks() {
            Ok(c) => self.caches = Arc::new(c),
            Err(p) => return Err(self.config.source.invalid(vec![p])),
        }
        Ok(self)
    }

    /// The same config with other upstreams (after a DNS change).
    pub(crate) fn with_upstreams(&self, upstreams: Upstreams) -> Generation {
        Generation {
            labels: Arc::new(Labels::new(&self.config, &upstreams)),
            upstreams: Arc::new(upstreams),
            ..self.clone()
        }
    }
}

/// Everything one worker thread needs to proxy under one config: the
/// config-derived parts plus the thread's own pool and log buffer.
pub(crate) struct Worker {
    pub config: Arc<Config>,
    /// Each listener's TLS, in config order.
    pub tls: Arc<Vec<Option<Arc<ServerTls>>>>,
    pub router: Router,
    pub pool: Pool,
    pub log: AccessLog,
    /// This thread's metrics under this config (admin listener on).
    pub counters: Option<Arc<Counters>>,
    /// Trace propagation and spans (`[tracing]` on).
    pub trace: Option<crate::trace::Tracer>,
    /// hyper's settings for new client connections.
    pub http1: hyper::server::conn::http1::Builder,
    /// Some listener has `trusted_proxies` or `access` rules (else a
    /// request looks for neither).
    pub client_rules: bool,
    /// Some upstream group sends PROXY protocol headers: a connection's
    /// local address is asked for at accept (on a wildcard listener).
    pub sends_proxy_protocol: bool,
    /// Some listener or route has `compress` (else no request looks).
    pub compress: bool,
    /// Every thread's shared rate-limit state.
    pub limiters: Arc<crate::ratelimit::Limiters>,
    /// Every thread's shared caches.
    pub caches: Arc<crate::cache::Caches>,
    /// With `[acme]`: the HTTP-01 answers plain listeners give.
    pub acme: Option<Arc<crate::acme::Certs>>,
}

impl Worker {
    /// Builds a worker for `config`; idle upstream connections to servers
    /// that `old` also had move over.
    pub(crate) fn new(
        g: &Generation,
        log: AccessLog,
        old: Option<&Pool>,
        metrics: Option<&MetricsRegistry>,
    ) -> Worker {
        let config = g.config.clone();
        let counters = metrics.map(|m| m.counters(g.labels.clone()));
        let stats = counters.as_ref().map(|c| c.pool.clone());
        Worker {
            counters,
            trace: g
                .trace
                .as_ref()
                .map(|sink| crate::trace::Tracer::new(sink, &config)),
            router: Router::new(&config.routes),
            pool: Pool::new(&config, &g.upstreams, old, stats),
            log,
            http1: server_builder(config.limits.max_request_head_bytes),
            tls: g.tls.clone(),
            limiters: g.limiters.clone(),
            caches: Arc::new(g.caches.for_thread()),
            acme: config.acme.as_ref().map(|_| g.acme.clone()),
            client_rules: config
                .listeners
                .iter()
                .any(|l| l.real_ip.is_some() || l.access.is_some()),
            sends_proxy_protocol: config.upstreams.iter().any(|g| g.proxy_protocol.is_some()),
            compress: config.listeners.iter().any(|l| l.compress.is_some())
                || config.routes.iter().any(|r| r.compress.is_some()),
            config,
        }
    }
}

/// A thread's current worker, swapped whole on reload. A request takes it
/// once, when it starts.
pub(crate) struct Current(std::cell::RefCell<Rc<Worker>>);

impl Current {
    pub(crate) fn new(w: Worker) -> Current {
        Current(std::cell::RefCell::new(Rc::new(w)))
    }

    pub(crate) fn get(&self) -> Rc<Worker> {
        self.0.borrow().clone()
    }

    pub(crate) fn set(&self, w: Worker) {
        *self.0.borrow_mut() = Rc::new(w);
    }
}

/// The hyper server settings for client connections.
pub(crate) fn server_builder(max_head: usize) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.keep_alive(true)
        .half_close(false)
        .writev(false)
        .header_read_timeout(None)
        .max_buf_size(max_head.max(8192))
        .max_header_size(max_head);
    b
}

/// What a listener's TLS offers in ALPN: HTTP's protocols, or a
/// stream's own.
fn alpn(l: &crate::config::Listener) -> Vec<Vec<u8>> {
    match &l.stream {
        Some(s) => s.alpn.clone(),
        None => crate::downstream::tls::http_alpn(l.http2),
    }
}

/// The field a listener's TLS problem is in: the certificate, key or CA
/// file it names, else the table.
fn tls_field(
    i: usize,
    l: &crate::config::Listener,
    t: &crate::config::ListenerTls,
    e: &crate::downstream::tls::TlsError,
) -> String {
    use crate::downstream::tls::TlsError;
    let table = match &l.stream {
        Some(s) => format!("streams[{}].tls", s.index),
        None => format!("listeners[{i}].tls"),
    };
    let path = match e {
        TlsError::Read { path, .. }
        | TlsError::NoCertificate { path }
        | TlsError::Key { path, .. }
        | TlsError::NoNames { path } => path,
        TlsError::Rustls(_) => return table,
    };
    let is = |p: &std::path::Path| p.display().to_string() == *path;
    if t.client_ca.as_deref().is_some_and(is) {
        return format!("{table}.client_ca");
    }
    let found = t
        .certificates
        .iter()
        .enumerate()
        .find_map(|(k, (cert, key))| {
            let which = match (is(cert), is(key), e) {
                (_, true, TlsError::Key { .. } | TlsError::Read { .. }) => "key",
                (true, _, _) => "cert",
                (_, true, _) => "key",
                _ => return None,
            };
            Some(format!("{table}.certificates[{k}].{which}"))
        });
    found.unwrap_or(table)
}
