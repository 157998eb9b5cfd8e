//! Health: whether a server may take requests.
//!
//! Two sources feed one [`ServerHealth`] per server, shared by every worker
//! thread through atomics (reading it on the request path takes no lock):
//!
//! - **Active checks** (a group's `[upstreams.NAME.health]`): a background
//!   thread requests `method path` from each server every `interval`; after
//!   `unhealthy_threshold` failed checks in a row the server is marked down,
//!   after `healthy_threshold` good ones up again. The thread stops on
//!   shutdown and is replaced on reload.
//! - **Passive outlier ejection** (`[upstreams.NAME.outlier]`, on by
//!   default): `consecutive_failures` connect failures or 5xx answers in a
//!   row eject a server for `base_ejection`, doubled on each ejection after
//!   the last (up to `max_ejection`); never more than `max_ejected_percent`
//!   of a group at once.
//!
//! A reload keeps the health of servers present in both configs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

use crate::config::Config;

/// Active check settings of a group.
#[derive(Debug, Clone)]
pub struct Check {
    pub method: Method,
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    /// Statuses that count as healthy.
    pub expect: Vec<StatusCode>,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// Passive ejection settings of a group.
#[derive(Debug, Clone)]
pub struct Outlier {
    /// 0 turns passive ejection off.
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected_percent: u32,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One server's health, shared by all threads.
#[derive(Debug, Default)]
pub struct ServerHealth {
    /// Marked down by active checks.
    down: AtomicBool,
    /// Active checks passed in a row, and failed in a row.
    streak: AtomicU32,
    bad_streak: AtomicU32,
    /// Ejected by passive detection until this many ms after the base.
    ejected_until: AtomicU64,
    failures: AtomicU32,
    ejections: AtomicU32,
}

impl ServerHealth {
    pub fn new() -> Arc<ServerHealth> {
        Arc::new(ServerHealth::default())
    }

    /// May this server take a request now?
    pub fn available(&self) -> bool {
        if self.down.load(Ordering::Relaxed) {
            return false;
        }
        // Never ejected (or cleared since): no clock read.
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= now_ms()
    }

    fn ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms()
    }

    /// A request to this server succeeded.
    pub fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejected_until.load(Ordering::Relaxed) != 0 && !self.ejected() {
            // Serving again after an ejection: the next one starts short.
            self.ejected_until.store(0, Ordering::Relaxed);
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A request to this server failed (connect failure or 5xx). `group`
    /// is every server of its group, to cap how many are ejected at once.
    /// Returns the ejection time when this failure ejected it.
    pub fn failure(&self, policy: &Outlier, group: &[Arc<ServerHealth>]) -> Option<Duration> {
        if policy.consecutive_failures == 0 {
            return None;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < policy.consecutive_failures || self.ejected() {
            return None;
        }
        let ejected = group.iter().filter(|h| h.ejected()).count();
        let cap = group.len() * policy.max_ejected_percent as usize / 100;
        if ejected + 1 > cap {
            return None;
        }
        let k = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let time = policy
            .base_ejection
            .saturating_mul(1 << k)
            .min(policy.max_ejection);
        self.ejected_until
            .store(now_ms() + time.as_millis() as u64, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        Some(time)
    }

    /// An active check's result; returns the new state when it flipped.
    fn checked(&self, ok: bool, check: &Check) -> Option<bool> {
        if ok {
            self.bad_streak.store(0, Ordering::Relaxed);
            let good = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
            if self.down.load(Ordering::Relaxed) && good >= check.healthy_threshold {
                self.down.store(false, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.streak.store(0, Ordering::Relaxed);
            let bad = self.bad_streak.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.down.load(Ordering::Relaxed) && bad >= check.unhealthy_threshold {
                self.down.store(true, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }
}

/// Runs a config's active checks on a thread of their own until `stop`
/// says so. Returns `None` when no group has checks.
pub fn spawn_checks(
    config: &Config,
    stop: watch::Receiver<bool>,
) -> Option<std::thread::JoinHandle<()>> {
    let mut targets = Vec::new();
    for g in &config.upstreams {
        let Some(check) = &g.health else { continue };
        for s in &g.servers {
            targets.push((
                g.name.clone(),
                Target {
                    addr: s.addr,
                    authority: s.authority.clone(),
                    tls: s.tls.clone(),
                    protocol: s.protocol,
                },
                s.health.clone(),
                check.clone(),
            ));
        }
    }
    if targets.is_empty() {
        return None;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    std::thread::Builder::new()
        .name("tidegate-health".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for (group, target, health, check) in targets {
                    let addr = target.addr;
                    let mut stop = stop.clone();
                    tasks.spawn(async move {
                        let mut tick = tokio::time::interval(check.interval);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        loop {
                            tokio::select! {
                                _ = tick.tick() => {}
                                _ = stop.changed() => return,
                            }
                            let result = probe(&target, &check).await;
                            let ok = matches!(&result, Ok(s) if check.expect.contains(s));
                            match health.checked(ok, &check) {
                                Some(true) => tracing::info!(%addr, group, "health check passing again: server back in service"),
                                Some(false) => tracing::warn!(%addr, group, "health check failing ({}): server taken out of service", describe(&result)),
                                None => {}
                            }
                        }
                    });
                }
                while tasks.join_next().await.is_some() {}
            })
        })
        .ok()
}

fn describe(r: &Result<StatusCode, String>) -> String {
    match r {
        Ok(s) => format!("status {}", s.as_u16()),
        Err(e) => e.clone(),
    }
}

/// Where a check goes, and how it connects (as requests do: TLS for
/// `https://` servers, HTTP/2 when the group speaks it).
struct Target {
    addr: SocketAddr,
    authority: http::HeaderValue,
    tls: Option<crate::upstream::tls::ServerTls>,
    protocol: crate::upstream::tls::Protocol,
}

/// One check: a fresh connection, one request, the status.
async fn probe(target: &Target, check: &Check) -> Result<StatusCode, String> {
    let attempt = async {
        let (io, alpn_h2) = crate::upstream::open(target.addr, target.tls.as_ref(), check.timeout)
            .await
            .map_err(|e| e.to_string())?;
        let h2 = target.protocol.speaks_h2(alpn_h2);
        let builder = http::Request::builder()
            .method(check.method.clone())
            .header(http::header::USER_AGENT, "tidegate-health-check");
        let resp = if h2 {
            let scheme = if target.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let uri = format!(
                "{scheme}://{}{}",
                target.authority.to_str().unwrap_or_default(),
                check.path
            );
            let req = builder
                .uri(uri)
                .body(Empty::<bytes::Bytes>::new())
                .map_err(|e| e.to_string())?;
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            sender.send_request(req).await
        } else {
            let req = builder
                .uri(check.path.clone())
                .header(http::header::HOST, &target.authority)
                .body(Empty::<bytes::Bytes>::new())
                .map_err(|e| e.to_string())?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            sender.send_request(req).await
        }
        .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        Ok(status)
    };
    tokio::time::timeout(check.timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", check.timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_grows_and_respects_the_cap() {
        let policy = Outlier {
            consecutive_failures: 2,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(30),
            max_ejected_percent: 50,
        };
        let group: Vec<Arc<ServerHealth>> = (0..4).map(|_| ServerHealth::new()).collect();
        assert_eq!(group[0].failure(&policy, &group), None);
        assert_eq!(
            group[0].failure(&policy, &group),
            Some(Duration::from_secs(10))
        );
        assert!(!group[0].available());
        // A second server may go (2 of 4 = 50%), a third may not.
        group[1].failure(&policy, &group);
        assert!(group[1].failure(&policy, &group).is_some());
        group[2].failure(&policy, &group);
        assert_eq!(group[2].failure(&policy, &group), None);
        assert!(group[2].available());
        // Repeated ejections grow, capped.
        let h = ServerHealth::new();
        let solo = vec![h.clone(), ServerHealth::new()];
        for want in [10, 20, 30, 30] {
            h.ejected_until.store(0, Ordering::Relaxed);
            h.failure(&policy, &solo);
            assert_eq!(h.failure(&policy, &solo), Some(Duration::from_secs(want)));
        }
    }

    #[test]
    fn active_thresholds() {
        let check = Check {
            method: Method::GET,
            path: http::uri::PathAndQuery::from_static("/"),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            expect: vec![StatusCode::OK],
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        };
        let h = ServerHealth::new();
        assert_eq!(h.checked(false, &check), None);
        assert_eq!(h.checked(false, &check), None);
        assert_eq!(h.checked(false, &check), Some(false));
        assert!(!h.available());
        assert_eq!(h.checked(true, &check), None);
        assert_eq!(h.checked(true, &check), Some(true));
        assert!(h.available());
    }
}
