//! Redis for the global limits: each worker thread's own connection per
//! Redis (one server, multiplexed, or a Redis Cluster client), made on
//! first use and dropped on an error so that the next try reconnects; and
//! the GCRA script (`gcra.lua`) that grants a batch of requests at once,
//! run by EVALSHA with EVAL on NOSCRIPT (the crate's `Script`).
//!
//! The connections live in a thread-local map, no lock: a worker thread
//! runs one current-thread runtime, and a connection's driver task runs
//! on it. They outlive a reload (same URLs, same connection).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::LazyLock;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::RedisResult;

use crate::config::RedisBackend;

/// The script, its SHA1 computed once.
static GCRA: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("gcra.lua")));

thread_local! {
    /// This thread's connections, by [`id`].
    static CONNS: RefCell<HashMap<String, Conn>> = RefCell::new(HashMap::new());
}

#[derive(Clone)]
enum Conn {
    One(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// What tells one Redis from another in the map.
pub(crate) fn id(r: &RedisBackend) -> String {
    format!(
        "{}{}",
        if r.cluster { "cluster:" } else { "" },
        r.nodes.join(",")
    )
}

/// One batch asked of Redis.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask {
    /// Requests wanted.
    pub want: u32,
    /// Requests leased earlier and not spent, given back first.
    pub refund: u32,
    /// The limit's GCRA, in microseconds.
    pub interval_us: u64,
    pub tolerance_us: u64,
}

/// Runs the script on `key`: how many requests Redis granted, and how
/// far ahead of now (µs) the key's TAT is after the grant. A cached
/// connection that fails (Redis restarted since) is replaced and the call
/// made once more on the new one.
pub(crate) async fn take(
    r: &RedisBackend,
    id: &str,
    key: &str,
    ask: Ask,
) -> RedisResult<(u64, u64)> {
    let cached = CONNS.with(|c| c.borrow().get(id).cloned());
    let out = match cached {
        Some(c) => match call(c, key, ask).await {
            Err(e)
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() =>
            {
                CONNS.with(|m| m.borrow_mut().remove(id));
                call(connected(r, id).await?, key, ask).await
            }
            out => out,
        },
        None => call(connected(r, id).await?, key, ask).await,
    };
    if out.is_err() {
        CONNS.with(|m| m.borrow_mut().remove(id));
    }
    let (granted, ahead) = out?;
    Ok((granted.max(0) as u64, ahead.max(0) as u64))
}

async fn call(conn: Conn, key: &str, ask: Ask) -> RedisResult<(i64, i64)> {
    let mut call = GCRA.key(key);
    call.arg(ask.interval_us)
        .arg(ask.tolerance_us)
        .arg(ask.want)
        .arg(ask.refund);
    match conn {
        Conn::One(mut c) => call.invoke_async(&mut c).await,
        Conn::Cluster(mut c) => call.invoke_async(&mut c).await,
    }
}

/// A new connection, kept for this thread's next calls.
async fn connected(r: &RedisBackend, id: &str) -> RedisResult<Conn> {
    let c = connect(r).await?;
    CONNS.with(|m| m.borrow_mut().insert(id.to_string(), c.clone()));
    Ok(c)
}

/// A connection whose only bound on an answer is the limit's `timeout`,
/// which the caller puts around the whole call (connecting included).
/// The crate's own defaults (500 ms per response and 1 s per connection
/// attempt for one server) would otherwise cut a longer `timeout` short,
/// and turn a slow answer into an I/O error that `take` retries on a new
/// connection. A Redis Cluster client has no response timeout unless told;
/// its connection attempts (some in the background, outside the caller's
/// bound) get the limit's `timeout`.
async fn connect(r: &RedisBackend) -> RedisResult<Conn> {
    if r.cluster {
        let client = redis::cluster::ClusterClient::builder(r.nodes.clone())
            .connection_timeout(r.timeout)
            .build()?;
        return Ok(Conn::Cluster(client.get_async_connection().await?));
    }
    let url = r.nodes.first().map(String::as_str).unwrap_or_default();
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(r.timeout))
        .set_response_timeout(None);
    Ok(Conn::One(
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await?,
    ))
}

/// Drops this thread's connection to `id`, if any: the next call
/// connects afresh. For a call cut short by the limit's `timeout`, whose
/// connection may be stuck on a peer that is gone without a word.
pub(crate) fn forget(id: &str) {
    CONNS.with(|m| m.borrow_mut().remove(id));
}
