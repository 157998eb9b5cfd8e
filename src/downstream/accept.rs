//! One listener's accept loop on one worker: admission by the listener's
//! [`Gate`] (caps, eviction of idle connections), a task per connection
//! holding its places until it ends, back-off on accept errors, and the
//! worker's count of live connections that shutdown waits for.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};

use super::connection;
use super::listener::{Gate, Registry};
use super::state::{ConnLimits, ConnState};
use crate::config::Config;
use crate::worker::Current;

/// Live connections of one worker, so shutdown can wait for them.
pub(crate) struct Live {
    pub(crate) count: Cell<usize>,
    pub(crate) zero: Notify,
}

/// One listener's accept loop, as its worker sees it.
pub(crate) struct Accepting {
    /// The address as configured (port 0 stays 0).
    pub(crate) addr: SocketAddr,
    /// Dropping it stops the loop.
    pub(crate) _stop: oneshot::Sender<()>,
    /// Which of the config's listeners this is, for its settings (TLS,
    /// HTTP/2...); kept right across reloads by [`reindex`].
    pub(crate) index: Rc<Cell<usize>>,
}

/// Points every accept loop at its entry in `config.listeners`, in order
/// (several entries may share an address such as `127.0.0.1:0`).
pub(crate) fn reindex(accepting: &[Accepting], config: &Config) {
    let mut taken = vec![false; config.listeners.len()];
    for a in accepting {
        let found = config
            .listeners
            .iter()
            .enumerate()
            .position(|(i, l)| !taken[i] && l.addr == a.addr);
        if let Some(i) = found {
            taken[i] = true;
            a.index.set(i);
        }
    }
}

/// A listener's admission state, and this thread's connections.
pub(crate) struct Admission {
    /// The listener's configured address.
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) gate: Arc<Gate>,
    pub(crate) registry: Rc<Registry>,
}

/// A connection counted in its worker's [`Live`] until dropped (even by a
/// panic of its task), so that shutdown waits for exactly the live ones.
struct LiveGuard(Rc<Live>);

impl LiveGuard {
    fn new(live: &Rc<Live>) -> LiveGuard {
        live.count.set(live.count.get() + 1);
        LiveGuard(live.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let n = self.0.count.get() - 1;
        self.0.count.set(n);
        if n == 0 {
            self.0.zero.notify_one();
        }
    }
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    index: Rc<Cell<usize>>,
    current: Rc<Current>,
    admission: Admission,
    live: Rc<Live>,
    mut shutdown: watch::Receiver<bool>,
    mut stop: oneshot::Receiver<()>,
) {
    let Admission {
        addr,
        gate,
        registry,
    } = admission;
    let mut backoff = Duration::from_millis(5);
    // The address connections arrive at (the port a `:0` listener got);
    // on a wildcard one, each connection's own is asked for.
    let bound = listener.local_addr().unwrap_or(addr);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = gate.eviction_asked() => {
                gate.evict_for_others(&registry);
                continue;
            }
            _ = shutdown.changed() => return,
            _ = &mut stop => return,
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
        // At the cap this waits (the next connections stay in the kernel's
        // backlog) while an idle connection makes room.
        let worker = current.get();
        let wait = worker.config.timeouts.client_header;
        // Biased: a connection admitted at once is served even when
        // shutdown (or an upgrade's hand-over) begins in the same instant
        // (an unbiased select dropped it now and then: its client saw an
        // empty reply). Only one still waiting at the cap is let go.
        let admitted = tokio::select! {
            biased;
            a = gate.admit(client.ip(), &registry, wait) => a,
            _ = shutdown.changed() => return,
        };
        let Some(admitted) = admitted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let meter = worker.counters.as_ref().and_then(|c| {
            c.accepted(addr);
            crate::downstream::state::Meter::new(c, addr)
        });
        // (Asked only when a PROXY header to an upstream may name it.)
        let ask = worker.sends_proxy_protocol && bound.ip().is_unspecified();
        let local = match ask {
            true => stream.local_addr().unwrap_or(bound),
            false => bound,
        };
        let state = Rc::new(ConnState::new(
            client,
            local,
            ConnLimits::of(&worker.config.limits),
            meter,
        ));
        drop(worker);
        let registered = registry.register(&gate, &state);
        let counted = LiveGuard::new(&live);

        let conn = connection::serve(
            stream,
            state,
            index.clone(),
            current.clone(),
            shutdown.clone(),
        );
        tokio::task::spawn_local(Holding {
            conn,
            _held: (admitted, registered, counted),
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

pin_project_lite::pin_project! {
    /// A connection's task with the places it holds, given back when it
    /// ends (not an `async` block: that would hold the connection's future
    /// twice, as captured and as awaited).
    struct Holding<F> {
        #[pin]
        conn: F,
        _held: (crate::downstream::listener::Admitted, crate::downstream::listener::Registered, LiveGuard),
    }
}

impl<F: std::future::Future> std::future::Future for Holding<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.project().conn.poll(cx)
    }
}
