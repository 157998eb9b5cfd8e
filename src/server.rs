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

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::connection;
use crate::proxy::Worker;
use crate::router::Router;
use crate::upstream::Pool;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open access log: {0}")]
    AccessLog(#[source] std::io::Error),
    #[error("cannot start worker thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A started proxy.
pub struct Running {
    addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
}

impl Running {
    /// The bound address of each listener, in config order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Begins graceful shutdown; returns at once.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Blocks until every worker has stopped.
    pub fn wait(self) {
        for w in self.workers {
            let _ = w.join();
        }
    }

    /// Graceful shutdown, then waits for it.
    pub fn stop(self) {
        self.shutdown();
        self.wait();
    }
}

const BACKLOG: i32 = 4096;

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Binds every listener and starts the workers.
pub fn start(config: Config) -> Result<Running, StartError> {
    let threads = config.threads.max(1);
    // sockets[t] holds thread t's socket for every listener.
    let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..threads).map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    for l in &config.listeners {
        let first = bind(l.addr).map_err(|source| StartError::Bind {
            addr: l.addr,
            source,
        })?;
        // Port 0 becomes a real port; the other threads join that one.
        let addr = first.local_addr().map_err(|source| StartError::Bind {
            addr: l.addr,
            source,
        })?;
        sockets[0].push(first);
        for per_thread in sockets.iter_mut().skip(1) {
            per_thread.push(bind(addr).map_err(|source| StartError::Bind { addr, source })?);
        }
        addrs.push(addr);
    }
    // Open the log once so a bad path fails startup, then one handle per thread.
    AccessLog::open(&config.access_log).map_err(StartError::AccessLog)?;

    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(config.limits.max_connections));
    let (shutdown, _) = watch::channel(false);
    let mut workers = Vec::new();
    for (i, listeners) in sockets.into_iter().enumerate() {
        let config = config.clone();
        let permits = permits.clone();
        let rx = shutdown.subscribe();
        let log = AccessLog::open(&config.access_log).map_err(StartError::AccessLog)?;
        let handle = std::thread::Builder::new()
            .name(format!("tidegate-{i}"))
            .spawn(move || run_worker(config, listeners, log, permits, rx))
            .map_err(StartError::Thread)?;
        workers.push(handle);
    }
    Ok(Running {
        addrs,
        shutdown,
        workers,
    })
}

/// Live connections of one worker, so shutdown can wait for them.
struct Live {
    count: Cell<usize>,
    zero: Notify,
}

fn run_worker(
    config: Arc<Config>,
    listeners: Vec<std::net::TcpListener>,
    log: AccessLog,
    permits: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start worker runtime: {e}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let worker = Rc::new(Worker {
            router: Router::new(&config.routes),
            pool: Pool::new(&config),
            log,
            config: config.clone(),
        });
        let builder = Rc::new(connection::server_builder(
            config.limits.max_request_head_bytes,
        ));
        let live = Rc::new(Live {
            count: Cell::new(0),
            zero: Notify::new(),
        });
        for l in listeners {
            match TcpListener::from_std(l) {
                Ok(l) => {
                    tokio::task::spawn_local(accept_loop(
                        l,
                        worker.clone(),
                        builder.clone(),
                        permits.clone(),
                        live.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => tracing::error!("cannot register listener: {e}"),
            }
        }
        tokio::task::spawn_local(housekeeping(worker.clone()));

        let mut rx = shutdown.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                break;
            }
        }
        // Accept loops have stopped; let connections finish.
        let grace = config.shutdown_grace;
        let drained = async {
            while live.count.get() > 0 {
                live.zero.notified().await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                open = live.count.get(),
                "shutdown grace period over; closing remaining connections"
            );
        }
        worker.log.flush();
    });
}

async fn accept_loop(
    listener: TcpListener,
    worker: Rc<Worker>,
    builder: Rc<hyper::server::conn::http1::Builder>,
    permits: Arc<Semaphore>,
    live: Rc<Live>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        // Past max_connections, wait here: new connections stay in the
        // kernel's backlog until one closes. No permit is held while
        // waiting in accept: the waiting connection may be in another
        // thread's backlog, and that thread must be able to take it.
        tokio::select! {
            p = permits.acquire() => if p.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        // Another thread may have taken the last permit meanwhile; then
        // this connection waits for one (at most one per thread does).
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = shutdown.changed() => return,
            },
        };
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if is_per_connection(&e) {
                    continue;
                }
                // Out of file descriptors or memory: back off, don't spin.
                tracing::error!("accept failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        let _ = stream.set_nodelay(true);
        live.count.set(live.count.get() + 1);
        let live = live.clone();
        let conn = connection::serve(
            stream,
            client,
            worker.clone(),
            builder.clone(),
            shutdown.clone(),
        );
        tokio::task::spawn_local(async move {
            conn.await;
            drop(permit);
            let n = live.count.get() - 1;
            live.count.set(n);
            if n == 0 {
                live.zero.notify_one();
            }
        });
    }
}

fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// How often the idle upstream pool drops connections that went unused.
const PURGE_EVERY_SECS: u32 = 5;

/// Periodic per-worker chores, once a second: flush the access log, expire
/// idle upstream connections, and every few seconds trim the pool to what
/// the load used.
async fn housekeeping(worker: Rc<Worker>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    loop {
        tick.tick().await;
        worker.log.flush();
        n = n.wrapping_add(1);
        worker.pool.sweep(n.is_multiple_of(PURGE_EVERY_SECS));
    }
}
