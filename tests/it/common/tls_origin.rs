//! In-process origins for upstream TLS and HTTP/2 (tokio-rustls + hyper)
//! that record what they saw: connections, SNI, ALPN, client
//! certificates. Their certificates come from [`super::pki`].
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::pki::{Ca, Leaf};
use super::Body;

/// What an origin saw.
#[derive(Default)]
pub struct Seen {
    pub connections: AtomicUsize,
    /// Per TLS connection: the SNI name sent, if any.
    pub sni: Mutex<Vec<Option<String>>>,
    /// Per TLS connection: the protocol ALPN settled on, if any.
    pub alpn: Mutex<Vec<Option<String>>>,
    /// TLS handshakes the origin refused, with why.
    pub refused: Mutex<Vec<String>>,
}

/// How a TLS origin is set up.
pub struct TlsOrigin<'a> {
    pub leaf: &'a Leaf,
    /// Protocols offered by ALPN, most preferred first.
    pub alpn: &'a [&'a str],
    /// Require a client certificate signed by this CA.
    pub client_ca: Option<&'a Ca>,
}

/// An origin on a runtime of its own; stopped on drop.
pub struct Origin {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn server_config(o: &TlsOrigin<'_>) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match o.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der.clone()).expect("client ca");
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(o.leaf.chain(), o.leaf.key())
        .expect("server cert");
    config.alpn_protocols = o.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("origin runtime")
}

fn bind() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind origin");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("origin addr");
    (l, addr)
}

/// Serves one connection: HTTP/2 if `h2`, else HTTP/1.1.
async fn serve<I, F, Fut>(io: I, h2: bool, f: F)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let f = f.clone();
        async move { Ok::<_, Infallible>(f(req).await) }
    });
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), svc)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), svc)
            .await;
    }
}

/// A TLS origin serving `f`, HTTP/2 when ALPN settles on it.
pub fn tls_origin<F, Fut>(o: TlsOrigin<'_>, f: F) -> Origin
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&o)));
    let (listener, addr) = bind();
    let seen = Arc::new(Seen::default());
    let rt = runtime();
    let s = seen.clone();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            s.connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, f, s) = (acceptor.clone(), f.clone(), s.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(stream).await {
                    Ok(t) => t,
                    Err(e) => {
                        s.refused.lock().unwrap().push(e.to_string());
                        return;
                    }
                };
                let conn = tls.get_ref().1;
                let alpn = conn
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                s.sni
                    .lock()
                    .unwrap()
                    .push(conn.server_name().map(str::to_string));
                let h2 = alpn.as_deref() == Some("h2");
                s.alpn.lock().unwrap().push(alpn);
                serve(tls, h2, f).await;
            });
        }
    });
    Origin {
        addr,
        seen,
        rt: Some(rt),
    }
}

/// A plain-TCP origin that speaks HTTP/2 only (h2c, prior knowledge).
pub fn h2c_origin<F, Fut>(f: F) -> Origin
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let (listener, addr) = bind();
    let seen = Arc::new(Seen::default());
    let rt = runtime();
    let s = seen.clone();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            s.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, true, f.clone()));
        }
    });
    Origin {
        addr,
        seen,
        rt: Some(rt),
    }
}

/// One thread, every path to group `app` of `servers` (TOML array items);
/// `extra` goes inside `[upstreams.app]` (keys first, then tables).
pub fn config(threads: usize, servers: &str, extra: &str) -> String {
    format!(
        "[server]\nthreads = {threads}\nlog_level = \"error\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [[routes]]\nupstream = \"app\"\n[upstreams.app]\nservers = [{servers}]\n{extra}\n"
    )
}

/// An answer naming the HTTP version the origin received.
pub async fn version_answer(req: Request<Incoming>) -> Response<Body> {
    crate::common::text(200, &format!("{:?}", req.version()))
}
