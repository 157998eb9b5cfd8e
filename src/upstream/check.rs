//! Active health checks (a group's `[upstreams.NAME.health]`): a
//! background thread requests `method path` from each server every
//! `interval`, connecting as requests do, and feeds the result to the
//! server's [`ServerHealth`](crate::upstream::health::ServerHealth). The
//! thread stops on shutdown and is replaced on reload.

use std::net::SocketAddr;

use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

use crate::config::{Check, Config};
use crate::upstream::registry::Upstreams;

/// Runs a config's active checks on a thread of their own until `stop`
/// says so. Returns `None` when no group has checks.
pub(crate) fn spawn_checks(
    config: &Config,
    upstreams: &Upstreams,
    stop: watch::Receiver<bool>,
) -> Option<std::thread::JoinHandle<()>> {
    let mut targets = Vec::new();
    for (g, built) in config.upstreams.iter().zip(&upstreams.groups) {
        let Some(check) = &g.health else { continue };
        for s in &built.servers {
            targets.push((
                g.name.clone(),
                Target {
                    addr: s.addr,
                    authority: s.authority.clone(),
                    tls: s.tls.clone(),
                    protocol: s.protocol,
                    proxy_protocol: g.proxy_protocol,
                },
                s.health.clone(),
                check.clone(),
            ));
        }
    }
    if targets.is_empty() {
        return None;
    }
    crate::rt::on_own_thread("tidegate-health", move || async move {
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
                    let result = match check.kind {
                        crate::config::CheckKind::Http => probe(&target, &check).await,
                        crate::config::CheckKind::Tcp => connects(&target, &check).await,
                    };
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
    .ok()
}

fn describe(r: &Result<StatusCode, ProbeError>) -> String {
    match r {
        Ok(s) => format!("status {}", s.as_u16()),
        Err(e) => e.to_string(),
    }
}

/// Why a check got no status.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    /// As a request's connect would fail (refused, TLS...).
    #[error("{}", .0.chain())]
    Connect(#[source] crate::error::ProxyError),
    #[error("request: {0}")]
    Build(#[source] http::Error),
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("request: {0}")]
    Request(#[source] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// Where a check goes, and how it connects (as requests do: TLS for
/// `https://` servers, HTTP/2 when the group speaks it).
struct Target {
    addr: SocketAddr,
    authority: http::HeaderValue,
    tls: Option<crate::upstream::tls::ServerTls>,
    protocol: crate::config::Protocol,
    /// The group sends PROXY protocol headers: a check sends `LOCAL`.
    proxy_protocol: Option<crate::config::proxy_protocol::Version>,
}

/// A TCP check: the connection opens (the PROXY protocol's `LOCAL`
/// header sent, the TLS handshake done for `https://` servers) within
/// the check's timeout; it stands for a 200 (`expect` is not asked).
async fn connects(target: &Target, check: &Check) -> Result<StatusCode, ProbeError> {
    let header = target
        .proxy_protocol
        .map(|v| crate::upstream::proxy_protocol::header(v, None));
    let tls = target.tls.as_ref().map(|t| t.without_alpn());
    crate::upstream::open(target.addr, tls.as_ref(), check.timeout, header.as_deref())
        .await
        .map_err(ProbeError::Connect)?;
    Ok(StatusCode::OK)
}

/// One check: a fresh connection, one request, the status.
async fn probe(target: &Target, check: &Check) -> Result<StatusCode, ProbeError> {
    let attempt = async {
        let header = target
            .proxy_protocol
            .map(|v| crate::upstream::proxy_protocol::header(v, None));
        let (io, alpn_h2) = crate::upstream::open(
            target.addr,
            target.tls.as_ref(),
            check.timeout,
            header.as_deref(),
        )
        .await
        .map_err(ProbeError::Connect)?;
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
                .map_err(ProbeError::Build)?;
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                    .await
                    .map_err(ProbeError::Handshake)?;
            tokio::spawn(conn);
            sender.send_request(req).await
        } else {
            let req = builder
                .uri(check.path.clone())
                .header(http::header::HOST, &target.authority)
                .body(Empty::<bytes::Bytes>::new())
                .map_err(ProbeError::Build)?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(ProbeError::Handshake)?;
            tokio::spawn(conn);
            sender.send_request(req).await
        }
        .map_err(ProbeError::Request)?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        Ok(status)
    };
    tokio::time::timeout(check.timeout, attempt)
        .await
        .unwrap_or(Err(ProbeError::Timeout(check.timeout)))
}
