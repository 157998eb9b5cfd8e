//! The `jwks_url` fetches of a config: a thread of its own with a
//! single-threaded runtime (as the health checks and the trace exporter
//! have), one task per URL. Each task fetches at once, then every
//! `jwks_refresh` (every [`RETRY`] after a failure, until one works), and
//! whenever a request with an unknown `kid` asks (`keys.rs`). A fetch is
//! one GET on a fresh connection (HTTP/1.1, TLS with the system's trust
//! roots for `https://`) within [`TIMEOUT`]; a failed or refused fetch
//! keeps the set in force and logs why. Requests never wait on this
//! thread except for that ask. Owned by the config's `Generation`: it
//! stops once no copy of that is in service (a reload's old requests
//! done, or shutdown).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::keys::{KeySet, Keys};

/// One fetch, connection to body, at most.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Time to the next try after a failed fetch.
const RETRY: Duration = Duration::from_secs(10);
/// Larger documents are refused.
const MAX_BYTES: usize = 1 << 20;

/// The running fetches of one config; dropped, they stop.
pub(crate) struct Fetcher {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").finish_non_exhaustive()
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Fetcher {
    /// Starts fetching the key sets of `jwts` that have a `jwks_url`;
    /// `None` when none has.
    pub(crate) fn start<'a>(jwts: impl Iterator<Item = &'a super::Jwt>) -> Option<Fetcher> {
        let sources: Vec<Arc<Keys>> = jwts
            .filter(|j| j.keys.remote.is_some())
            .map(|j| j.keys.clone())
            .collect();
        if sources.is_empty() {
            return None;
        }
        let (stop, stopped) = watch::channel(false);
        let thread = crate::rt::on_own_thread("tidegate-jwks", move || async move {
            let mut tasks = tokio::task::JoinSet::new();
            for keys in sources {
                tasks.spawn(keep(keys, stopped.clone()));
            }
            while tasks.join_next().await.is_some() {}
        })
        .map_err(|e| tracing::error!("JWKS fetches not started: {e}"))
        .ok()?;
        Some(Fetcher {
            stop,
            thread: Some(thread),
        })
    }
}

/// Keeps one set fetched until `stop`.
async fn keep(keys: Arc<Keys>, mut stop: watch::Receiver<bool>) {
    let Some(remote) = keys.remote.clone() else {
        return;
    };
    let url = remote.url.to_string();
    let tls = Tls::default();
    loop {
        keys.fetching.store(true, Ordering::Release);
        let fetched = tokio::select! {
            r = tokio::time::timeout(TIMEOUT, get(&remote.url, &tls)) => {
                r.unwrap_or_else(|_| Err(format!("no answer within {TIMEOUT:?}")))
            }
            _ = stop.changed() => return,
        };
        let set = fetched.and_then(|text| KeySet::parse(&text));
        let next = match set {
            Ok(set) => {
                tracing::debug!(url, keys = set.len(), "JWKS fetched");
                keys.store(set);
                remote.refresh
            }
            Err(e) => {
                tracing::warn!(url, "JWKS fetch failed, keeping the keys in force: {e}");
                RETRY.min(remote.refresh)
            }
        };
        // (In this order: see `Keys::refreshed`.)
        keys.ended.fetch_add(1, Ordering::Release);
        keys.done.send_replace(());
        keys.fetching.store(false, Ordering::Release);
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = keys.wake.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// The TLS client of `https://` URLs, made on first use.
#[derive(Default)]
struct Tls(std::sync::OnceLock<Result<tokio_rustls::TlsConnector, String>>);

impl Tls {
    fn connector(&self) -> Result<tokio_rustls::TlsConnector, String> {
        self.0
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS setup: {e}"))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
            })
            .clone()
    }
}

/// GETs `url`: its body, if the answer is 200.
async fn get(url: &http::Uri, tls: &Tls) -> Result<String, String> {
    let host = url
        .host()
        .ok_or("no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let https = url.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let authority = url.authority().map_or(host.as_str(), |a| a.as_str());
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = if https {
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("`{host}`: {e}"))?;
        let stream = tls
            .connector()?
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(stream), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    if resp.status() != http::StatusCode::OK {
        return Err(format!("the server answered {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".into())
}

async fn send<IO>(
    io: IO,
    req: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.send_request(req).await.map_err(|e| e.to_string())
}
