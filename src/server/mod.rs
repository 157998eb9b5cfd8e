//! Server: the runtime layout, listeners, and shutdown.
//!
//! The layout is chosen here and nowhere else: `threads` worker threads,
//! each running a single-threaded tokio runtime with its own listening
//! socket per listener (SO_REUSEPORT: the kernel spreads connections across
//! them) and its own upstream pool. A request never leaves the thread that
//! accepted its connection, so nothing on the request path is shared
//! between threads or locked.
//!
//! Shutdown: the accept loops stop and drop their sockets (new connections
//! are refused), every connection finishes its current exchange and closes,
//! and after `shutdown_grace` whatever remains is closed hard.
//!
//! Reload: a new validated config is sent to every worker, which builds a
//! new [`Worker`](crate::worker::Worker) (routes, pool, balancers, log) and swaps it in. Each
//! request takes the worker current when it starts and keeps it to its end,
//! so in-flight requests finish on the config they began with while new
//! ones see the new config. Idle upstream connections to servers in both
//! configs move to the new pool. Listeners added by the new config are
//! bound before anything changes (a failure leaves the old config in
//! place); removed ones stop accepting; the others are not touched.
//!
//! Each config is put into service as a [`Generation`]: certificates read,
//! names resolved, and upstream state from the server's
//! [`UpstreamRegistry`], which keeps each server's health and limit by (group,
//! address) across reloads.
//!
//! DNS: servers given by name are re-resolved on a thread of their own
//! ([`crate::upstream::dns`]); a changed address set becomes new upstreams
//! for the same config, swapped in the same way (listeners untouched).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, watch};

use crate::access_log::{AccessLog, Writer as LogWriter};
use crate::config::{Config, ConfigError, CpuAffinity};
use crate::downstream::listener::Gate;
use crate::trace::export::Exporter;
use crate::upstream::registry::Registry as UpstreamRegistry;
use crate::worker::Generation;

mod admin;
mod privilege;
mod services;
mod sockets;
mod spawn;
mod upgrade;
mod workers;

pub(crate) use spawn::detach_if_asked;
use upgrade::Copies;
pub(crate) use upgrade::Inherited;

use admin::{caches, drain, gauges, in_force};
use services::{follow_acme, start_checks, start_exporter, stop_checks};
use sockets::{bind_all, copies, gate, open_all, open_files_limit};
use workers::{run_worker, Reload};

/// One listener's socket for one thread: the address as configured, the
/// socket, and what all threads' sockets of it share.
type ThreadSocket = (SocketAddr, std::net::TcpListener, Arc<Gate>);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start worker thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("cannot start the trace exporter: {0}")]
    TraceExporter(#[source] std::io::Error),
}

/// A started proxy.
pub struct Running {
    /// (address as configured, address bound), in config order.
    listeners: Vec<(SocketAddr, SocketAddr)>,
    addrs: Vec<SocketAddr>,
    threads: usize,
    shutdown: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    /// What a reload changes, shared with the DNS refresher (which swaps
    /// in new server sets the same way). Never touched by requests.
    shared: Arc<Mutex<Shared>>,
    /// The background re-resolution of the config's DNS names.
    dns: Option<crate::upstream::dns::Refresher>,
    /// The admin listener, if configured, and the metrics it shows.
    admin: Option<(crate::admin::Admin, Arc<crate::admin::State>)>,
    /// Copies of every listening socket (each listener's per-thread ones,
    /// by configured address; the admin listener's), for a binary upgrade.
    /// Closed when shutdown begins (else they would keep the ports open).
    sockets: Mutex<Copies>,
}

/// The config in force and what follows it.
struct Shared {
    threads: usize,
    control: Vec<mpsc::UnboundedSender<Reload>>,
    /// What outlives configs: upstream state by (group, address).
    registry: UpstreamRegistry,
    /// The config in force and what was built from it.
    current: Generation,
    /// The active health checks of that config, and their stop switch.
    checks: Option<(JoinHandle<()>, watch::Sender<bool>)>,
    /// Each listener's gate, by configured address (open connections).
    gates: Vec<(SocketAddr, Arc<Gate>)>,
    /// The access log's writer thread, if the log is on.
    writer: Option<LogWriter>,
    /// What DNS refreshes did, by name, across reloads.
    dns: crate::upstream::dns::DnsStats,
    /// The trace exporter of the config in force (`[tracing]`), and its
    /// counts, which go on across reloads.
    exporter: Option<Exporter>,
    trace_stats: Arc<crate::trace::Stats>,
    /// The ACME thread (`[acme]`); its certificates are the generations'
    /// `acme`, the same across reloads.
    acme: Option<crate::acme::Manager>,
}

impl Shared {
    /// Sends `config` to every worker (with the listeners to add, per
    /// thread, and those to remove) and restarts the health checks. The
    /// receiver returned gets its `Err` once every worker has swapped.
    fn swap(
        &mut self,
        mut generation: Generation,
        added: Vec<Vec<ThreadSocket>>,
        removed: Vec<SocketAddr>,
    ) -> Result<std::sync::mpsc::Receiver<()>, StartError> {
        // The same target keeps its writer (and file); another one gets its own.
        let config = generation.config.clone();
        let writer = if config.access_log == self.current.config.access_log {
            self.writer.clone()
        } else {
            start_log(&config)?
        };
        // The same `[tracing]` keeps its exporter; other settings get a new
        // one, and the old one ends once the old config's requests have.
        if self.exporter.as_ref().map(|e| &e.settings) != config.tracing.as_ref() {
            self.exporter = start_exporter(&config, &self.trace_stats)?;
        }
        generation.trace = self.exporter.as_ref().map(Exporter::sink);
        self.acme = follow_acme(self.acme.take(), &generation);
        let logs: Vec<AccessLog> = (0..self.threads)
            .map(|_| AccessLog::new(writer.clone(), &config.access_log_format))
            .collect();
        self.writer = writer;
        stop_checks(self.checks.take());
        self.checks = start_checks(&generation);
        self.current = generation.clone();
        let added = added.into_iter().chain(std::iter::repeat_with(Vec::new));
        let (applied, swapped) = std::sync::mpsc::channel();
        for ((tx, add), log) in self.control.iter().zip(added).zip(logs) {
            // A worker that is gone drops its message, and its sender.
            let _ = tx.send(Reload {
                generation: generation.clone(),
                log,
                add,
                remove: removed.clone(),
                applied: applied.clone(),
            });
        }
        Ok(swapped)
    }
}

fn lock<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts re-resolving the DNS names of the config in force; a changed
/// address set is swapped in like a reload.
fn start_dns(shared: &Arc<Mutex<Shared>>) -> Option<crate::upstream::dns::Refresher> {
    let (settings, names, stats) = {
        let shared = lock(shared);
        (
            shared.current.config.dns.clone(),
            shared.registry.answers(),
            shared.dns.clone(),
        )
    };
    let weak = Arc::downgrade(shared);
    let apply: crate::upstream::dns::Apply =
        Arc::new(move |host: &str, ips: &[std::net::IpAddr]| {
            let Some(shared) = weak.upgrade() else { return };
            let mut shared = lock(&shared);
            let Shared {
                registry, current, ..
            } = &mut *shared;
            let Some(upstreams) =
                registry.with_addresses(&current.config, &current.upstreams, host, ips)
            else {
                return;
            };
            let generation = current.with_upstreams(upstreams);
            // Applied by each worker in its turn: nothing waits for it.
            if let Err(e) = shared.swap(generation, Vec::new(), Vec::new()) {
                tracing::error!(host, "DNS: new addresses not applied: {e}");
            }
        });
    crate::upstream::dns::Refresher::spawn(&settings, names, apply, stats)
}

/// Puts `config` into service without starting it: reads its certificates
/// and resolves its names, as start and reload do (`tidegate check`).
pub fn check(config: Config) -> Result<(), ConfigError> {
    // What start would find too: the access log's file.
    let log = crate::access_log::check_target(&config.access_log).err();
    let source = config.source.clone();
    let built =
        Generation::build(config, &mut UpstreamRegistry::default(), &Arc::default()).map(drop);
    let Some(reason) = log else { return built };
    let mut problems: Vec<(String, String)> = match &built {
        Ok(()) => Vec::new(),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| (p.field.clone(), p.reason.clone()))
            .collect(),
    };
    problems.push(("server.access_log".into(), reason));
    Err(source.invalid(problems))
}

/// The access log's writer; a file that cannot be opened is a problem of
/// the config's `server.access_log` (file, line, path and why).
fn start_log(config: &Config) -> Result<Option<LogWriter>, StartError> {
    LogWriter::start(&config.access_log).map_err(|e| {
        let shown = match &config.access_log {
            crate::config::AccessLogTarget::File(p) => p.display().to_string(),
            _ => "stdout".into(),
        };
        let reason = format!("cannot open {shown}: {e}");
        StartError::Config(
            config
                .source
                .invalid(vec![("server.access_log".into(), reason)]),
        )
    })
}

impl Running {
    /// The bound address of each listener, in config order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Swaps in a new config (see the module doc), and returns once every
    /// worker serves it. On error nothing changed. The thread count cannot
    /// change without a restart.
    pub fn reload(&mut self, config: Config) -> Result<(), StartError> {
        // The refresher stops first: it must not swap in a set of the old
        // config's names after this. `config` was resolved just now.
        if let Some(dns) = self.dns.take() {
            dns.stop();
        }
        let result = self.swap_in(config).map(|swapped| {
            // Returns once every worker serves the new config: a request
            // sent after this sees it.
            while swapped.recv().is_ok() {}
        });
        self.dns = start_dns(&self.shared);
        match &result {
            Ok(()) => self.reloaded(true),
            Err(_) => self.reloaded(false),
        }
        result
    }

    /// Counts a reload (one refused before it got here, too: a file that
    /// did not load).
    pub fn reloaded(&self, ok: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some((_, state)) = &self.admin {
            state.metrics.last_reload_failed.store(!ok, Relaxed);
            if ok {
                state.metrics.reloads_ok.fetch_add(1, Relaxed);
                state
                    .metrics
                    .last_reload
                    .store(crate::metrics::unix_now(), Relaxed);
            } else {
                state.metrics.reloads_failed.fetch_add(1, Relaxed);
            }
        }
    }

    /// Reopens the access-log file (SIGUSR1, after logrotate moved it).
    pub fn reopen_logs(&self) {
        if let Some(w) = &lock(&self.shared).writer {
            w.reopen();
        }
    }

    /// Where the admin listener's `POST /reload` requests arrive, for the
    /// owner of this `Running` to carry out (with [`Running::reload`]) and
    /// answer. Taken once, by a process that has a config file to reload;
    /// until then the admin listener answers that there is none. `None`
    /// without an admin listener, or when taken before.
    pub(crate) fn admin_reloads(&self) -> Option<mpsc::Receiver<crate::admin::ReloadAsk>> {
        let (_, state) = self.admin.as_ref()?;
        let (tx, rx) = mpsc::channel(1);
        state.reloads.set(tx).ok()?;
        Some(rx)
    }

    /// The admin listener's bound address, if it has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(a, _)| a.addr)
    }

    fn swap_in(&mut self, config: Config) -> Result<std::sync::mpsc::Receiver<()>, StartError> {
        let shared = self.shared.clone();
        let mut shared = lock(&shared);
        // Servers in both configs keep their health: the registry knows them.
        let acme = shared.current.acme.clone();
        let mut generation =
            Generation::build(config, &mut shared.registry, &acme)?.fetching_jwks();
        generation.keep_limits(&shared.current);
        let generation = generation.opening_disks()?;
        let config = &generation.config;
        if config.threads != self.threads {
            tracing::warn!(
                "reload: `threads` changes only on restart; keeping {}",
                self.threads
            );
        }
        let configured: Vec<SocketAddr> = config.listeners.iter().map(|l| l.addr).collect();
        let mut added: Vec<Vec<ThreadSocket>> = (0..self.threads).map(|_| Vec::new()).collect();
        let mut listeners = Vec::new();
        let mut gates = Vec::new();
        let nofile = open_files_limit();
        for (l, addr) in config.listeners.iter().zip(&configured) {
            match self.listeners.iter().find(|(c, _)| c == addr) {
                Some(&kept) => {
                    listeners.push(kept);
                    gates.extend(shared.gates.iter().filter(|(a, _)| a == addr).cloned());
                }
                None => {
                    let ours = self.listeners.iter().any(|(c, _)| c.port() == addr.port());
                    let (bound, per_thread) = bind_all(*addr, self.threads, !ours)?;
                    lock(&self.sockets)
                        .listeners
                        .push((*addr, copies(&per_thread)));
                    let gate = gate(config, l, nofile);
                    for (t, sock) in per_thread.into_iter().enumerate() {
                        added[t].push((*addr, sock, gate.clone()));
                    }
                    gates.push((*addr, gate));
                    listeners.push((*addr, bound));
                }
            }
        }
        let removed: Vec<SocketAddr> = self
            .listeners
            .iter()
            .map(|(c, _)| *c)
            .filter(|c| !configured.contains(c))
            .collect();
        lock(&self.sockets)
            .listeners
            .retain(|(a, _)| !removed.contains(a));
        let swapped = shared.swap(generation, added, removed)?;
        shared.gates = gates;
        self.addrs = listeners.iter().map(|(_, b)| *b).collect();
        self.listeners = listeners;
        Ok(swapped)
    }

    /// Begins graceful shutdown; returns at once.
    pub fn shutdown(&self) {
        *lock(&self.sockets) = Copies::default();
        if let Some((_, state)) = &self.admin {
            state
                .ready
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = self.shutdown.send(true);
    }

    /// Blocks until every worker has stopped.
    pub fn wait(self) {
        if let Some(dns) = self.dns {
            dns.stop();
        }
        for w in self.workers {
            let _ = w.join();
        }
        let (checks, writer, exporter, acme) = {
            let mut s = lock(&self.shared);
            (
                s.checks.take(),
                s.writer.take(),
                s.exporter.take(),
                s.acme.take(),
            )
        };
        stop_checks(checks);
        if let Some(m) = acme {
            m.stop();
        }
        // What is queued is sent (within the export timeout).
        if let Some(e) = exporter {
            e.finish();
        }
        // The workers' logs are gone: the writer writes what they handed
        // over, and ends.
        if let Some(w) = writer {
            w.finish();
        }
        if let Some((admin, _)) = self.admin {
            admin.stop();
        }
    }

    /// Graceful shutdown, then waits for it.
    pub fn stop(self) {
        self.shutdown();
        self.wait();
    }
}

/// Binds every listener and starts the workers.
pub fn start(config: Config) -> Result<Running, StartError> {
    start_with(config, None)
}

/// Starts as [`start`] does, on the sockets `inherited` from the process
/// this one upgrades (those of listeners still configured; the others
/// are bound).
pub(crate) fn start_with(
    config: Config,
    mut inherited: Option<&mut Inherited>,
) -> Result<Running, StartError> {
    let mut registry = UpstreamRegistry::default();
    let mut generation = Generation::build(config, &mut registry, &Arc::default())?
        .fetching_jwks()
        .opening_disks()?;
    let config = generation.config.clone();
    let threads = config.threads.max(1);
    let nofile = open_files_limit();
    let metrics = config
        .admin
        .as_ref()
        .map(|_| Arc::new(crate::metrics::Registry::default()));
    let mut gates = Vec::new();
    // sockets[t] holds thread t's socket for every listener.
    let mut sockets: Vec<Vec<ThreadSocket>> = (0..threads).map(|_| Vec::new()).collect();
    let mut listeners = Vec::new();
    let mut kept = Vec::new();
    for l in &config.listeners {
        let (bound, per_thread) = open_all(l.addr, threads, inherited.as_deref_mut())?;
        kept.push((l.addr, copies(&per_thread)));
        let gate = gate(&config, l, nofile);
        tracing::info!(
            "listener {bound}: max_connections {} (open files limit {nofile})",
            gate.max
        );
        for (t, sock) in per_thread.into_iter().enumerate() {
            sockets[t % threads].push((l.addr, sock, gate.clone()));
        }
        gates.push((l.addr, gate));
        listeners.push((l.addr, bound));
    }
    let handed = inherited.and_then(|i| i.admin.take());
    let admin_socket = match &config.admin {
        Some(a) => Some(match handed {
            Some((addr, socket)) if addr == a.addr => socket,
            _ => crate::admin::Admin::bind(a.addr).map_err(|source| StartError::Bind {
                addr: a.addr,
                source,
            })?,
        }),
        None => None,
    };
    let admin_copy = match (&config.admin, &admin_socket) {
        (Some(a), Some(s)) => s.try_clone().ok().map(|c| (a.addr, c)),
        _ => None,
    };
    // One writer for the log (a bad path fails startup), a buffer per thread.
    let writer = start_log(&config)?;
    let trace_stats = Arc::new(crate::trace::Stats::default());
    let exporter = start_exporter(&config, &trace_stats)?;
    generation.trace = exporter.as_ref().map(Exporter::sink);
    privilege::drop_privileges(&config)?; // All that needs root is open.
                                          // Started as the user that runs (the storage is its own).
    let acme = follow_acme(None, &generation);

    let (shutdown, _) = watch::channel(false);
    let mut workers = Vec::new();
    let mut control = Vec::new();
    // The CPUs this process may run on, in order (`auto` affinity).
    let cpus = match config.cpu_affinity {
        CpuAffinity::Off => Vec::new(),
        CpuAffinity::Auto => core_affinity::get_core_ids().unwrap_or_default(),
    };
    if config.cpu_affinity == CpuAffinity::Auto && cpus.is_empty() {
        tracing::warn!(
            "cpu_affinity = \"auto\": cannot read this process's CPU set; threads stay unbound"
        );
    }
    // Each worker binds itself before anything else; startup returns once
    // all have, so the first request already runs where it is meant to.
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<()>();
    for (i, socks) in sockets.into_iter().enumerate() {
        let generation = generation.clone();
        let metrics = metrics.clone();
        let rx = shutdown.subscribe();
        let log = AccessLog::new(writer.clone(), &config.access_log_format);
        let (tx, reloads) = mpsc::unbounded_channel();
        let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
        let bound = bound_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("tidegate-{i}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if !core_affinity::set_for_current(cpu) {
                        tracing::warn!(
                            "cpu_affinity: cannot bind worker {i} to CPU {}; it stays unbound",
                            cpu.id
                        );
                    }
                }
                let _ = bound.send(());
                drop(bound);
                run_worker(generation, socks, log, rx, reloads, metrics)
            })
            .map_err(StartError::Thread)?;
        workers.push(handle);
        control.push(tx);
    }
    drop(bound_tx);
    // Each worker's sender is gone once it has bound itself (or died).
    while bound_rx.recv().is_ok() {}
    let shared = Arc::new(Mutex::new(Shared {
        threads,
        control,
        checks: start_checks(&generation),
        registry,
        current: generation,
        gates,
        writer,
        dns: Default::default(),
        exporter,
        trace_stats,
        acme,
    }));
    let admin = match (&config.admin, metrics, admin_socket) {
        (Some(a), Some(metrics), Some(socket)) => {
            let state = Arc::new(crate::admin::State {
                metrics,
                gauges: gauges(&shared),
                drain: drain(&shared),
                config: in_force(&shared),
                caches: caches(&shared),
                reloads: std::sync::OnceLock::new(),
                ready: true.into(),
                token: a.token.as_deref().and_then(|t| t.parse().ok()),
                samples: Default::default(),
            });
            match crate::admin::Admin::serve(socket, state.clone()) {
                Ok(admin) => {
                    tracing::info!("admin listener on http://{}", admin.addr);
                    Some((admin, state))
                }
                Err(e) => {
                    tracing::error!("admin listener not started: {e}");
                    None
                }
            }
        }
        _ => None,
    };
    Ok(Running {
        addrs: listeners.iter().map(|(_, b)| *b).collect(),
        listeners,
        threads,
        shutdown,
        workers,
        dns: start_dns(&shared),
        shared,
        admin,
        sockets: Mutex::new(Copies {
            listeners: kept,
            admin: admin_copy,
        }),
    })
}
