//! One worker thread's state under one config: the compiled routes, the
//! thread's upstream pool and access-log buffer, hyper's settings. Each
//! thread has its own, swapped whole on reload ([`Current`]) and read
//! without a lock.

use std::rc::Rc;
use std::sync::Arc;

use hyper::server::conn::http1;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::router::Router;
use crate::upstream::Pool;

/// Everything one worker thread needs to proxy under one config: the
/// config-derived parts plus the thread's own pool and log buffer.
pub struct Worker {
    pub config: Arc<Config>,
    pub router: Router,
    pub pool: Pool,
    pub log: AccessLog,
    /// hyper's settings for new client connections.
    pub http1: hyper::server::conn::http1::Builder,
}

impl Worker {
    /// Builds a worker for `config`; idle upstream connections to servers
    /// that `old` also had move over.
    pub fn new(config: Arc<Config>, log: AccessLog, old: Option<&Pool>) -> Worker {
        Worker {
            router: Router::new(&config.routes),
            pool: Pool::new(&config, old),
            log,
            http1: server_builder(config.limits.max_request_head_bytes),
            config,
        }
    }
}

/// A thread's current worker, swapped whole on reload. A request takes it
/// once, when it starts.
pub struct Current(std::cell::RefCell<Rc<Worker>>);

impl Current {
    pub fn new(w: Worker) -> Current {
        Current(std::cell::RefCell::new(Rc::new(w)))
    }

    pub fn get(&self) -> Rc<Worker> {
        self.0.borrow().clone()
    }

    pub fn set(&self, w: Worker) {
        *self.0.borrow_mut() = Rc::new(w);
    }
}

/// The hyper server settings for client connections.
pub fn server_builder(max_head: usize) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.keep_alive(true)
        .half_close(false)
        .writev(false)
        .header_read_timeout(None)
        .max_buf_size(max_head.max(8192))
        .max_header_size(max_head);
    b
}
