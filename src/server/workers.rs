//! A worker thread's life: its runtime, its accept loops, reloads as they
//! come, the once-a-second chores, and the drain at shutdown.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::ThreadSocket;
use crate::access_log::AccessLog;
use crate::downstream::accept::{accept_loop, reindex, Accepting, Admission, Live};
use crate::downstream::listener::Registry;
use crate::worker::{Current, Generation, Worker};

/// What a worker receives on reload.
pub(super) struct Reload {
    pub(super) generation: Generation,
    pub(super) log: AccessLog,
    /// New listeners (configured address, this thread's socket).
    pub(super) add: Vec<ThreadSocket>,
    /// Configured addresses of listeners to close.
    pub(super) remove: Vec<SocketAddr>,
    /// Dropped once the new config is in force on this thread: whoever
    /// holds the receiver knows every thread has swapped when all are.
    pub(super) applied: std::sync::mpsc::Sender<()>,
}

/// Threads each worker's blocking pool runs at most (nginx's default
/// `thread_pool` has 32): password hashes, static files with `io =
/// "pool"`, disk-cache reads. More jobs wait in its queue, whose length
/// the connection and stream limits bound; tokio's default, 512 per
/// worker, let a burst of wrong passwords start hundreds of threads.
const BLOCKING_THREADS: usize = 32;

pub(super) fn run_worker(
    generation: Generation,
    listeners: Vec<ThreadSocket>,
    log: AccessLog,
    shutdown: watch::Receiver<bool>,
    mut reloads: mpsc::UnboundedReceiver<Reload>,
    metrics: Option<Arc<crate::metrics::Registry>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
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
        let current = Rc::new(Current::new(Worker::new(
            &generation,
            log,
            None,
            metrics.as_deref(),
        )));
        let live = Rc::new(Live {
            count: Cell::new(0),
            zero: Notify::new(),
        });
        let registry = Rc::new(Registry::default());
        // Each listener's accept loop, stopped by dropping its sender.
        let mut accepting: Vec<Accepting> = Vec::new();
        let open = |accepting: &mut Vec<Accepting>, (addr, l, gate): ThreadSocket| {
            match TcpListener::from_std(l) {
                Ok(l) => {
                    let (stop_tx, stop) = oneshot::channel();
                    let index = Rc::new(Cell::new(0));
                    tokio::task::spawn_local(accept_loop(
                        l,
                        index.clone(),
                        current.clone(),
                        Admission {
                            addr,
                            gate,
                            registry: registry.clone(),
                        },
                        live.clone(),
                        shutdown.clone(),
                        stop,
                    ));
                    accepting.push(Accepting {
                        addr,
                        _stop: stop_tx,
                        index,
                    });
                }
                Err(e) => tracing::error!("cannot register listener {addr}: {e}"),
            }
        };
        for l in listeners {
            open(&mut accepting, l);
        }
        reindex(&accepting, &current.get().config);
        tokio::task::spawn_local(housekeeping(current.clone()));

        let mut rx = shutdown.clone();
        loop {
            if *rx.borrow_and_update() {
                break;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                msg = reloads.recv() => {
                    let Some(msg) = msg else { continue };
                    let old = current.get();
                    current.set(Worker::new(
                        &msg.generation,
                        msg.log,
                        Some(&old.pool),
                        metrics.as_deref(),
                    ));
                    old.log.flush();
                    crate::proxy::forget_static_roots();
                    accepting.retain(|a| {
                        let removed = msg.remove.contains(&a.addr);
                        // Its connections, still open, are no listener's
                        // of the new config (its rules and metrics labels
                        // are gone with it).
                        if removed {
                            a.index.set(usize::MAX);
                        }
                        !removed
                    });
                    for l in msg.add {
                        open(&mut accepting, l);
                    }
                    reindex(&accepting, &current.get().config);
                    drop(msg.applied);
                }
            }
        }
        // Accept loops have stopped; let connections finish.
        registry.drain_all();
        let grace = current.get().config.shutdown_grace;
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
        current.get().log.flush();
    });
}

/// How often the idle upstream pool drops connections that went unused.
const PURGE_EVERY_SECS: u32 = 5;

/// Periodic per-worker chores, once a second: flush the access log, expire
/// idle upstream connections, and every few seconds trim the pool to what
/// the load used.
async fn housekeeping(current: Rc<Current>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    loop {
        tick.tick().await;
        let worker = current.get();
        worker.log.flush();
        n = n.wrapping_add(1);
        worker.pool.sweep(n.is_multiple_of(PURGE_EVERY_SECS));
    }
}
