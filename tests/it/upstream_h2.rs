//! HTTP/2 to upstreams: by ALPN over TLS and by config (h2c); many client
//! requests share few upstream connections; trailers pass both ways;
//! health checks speak HTTP/2 to h2c groups; max_connections counts
//! connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::pki::Ca;
use crate::common::tls_origin::*;
use crate::common::*;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// An origin that holds every answer until `n` requests are in, then
/// answers each with the HTTP version it came over.
fn gathering(
    n: usize,
) -> impl Fn(
    Request<Incoming>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>
       + Send
       + Sync
       + Clone
       + 'static {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    move |req: Request<Incoming>| {
        let barrier = barrier.clone();
        Box::pin(async move {
            barrier.wait().await;
            text(200, &format!("{:?}", req.version()))
        })
    }
}

/// `n` concurrent GETs, each on its own client connection; every one
/// must answer 200 with `body`.
async fn concurrent(addr: std::net::SocketAddr, n: usize, body: &str) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        tasks.spawn(get(addr, "/"));
    }
    let answers = tokio::time::timeout(HANG, tasks.join_all())
        .await
        .expect("all answered");
    for (status, _, b) in answers {
        assert_eq!(status, 200);
        assert_eq!(b, body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_by_alpn_multiplexes_concurrent_requests() {
    let ca = Ca::new("test ca");
    let leaf = ca.server(&["127.0.0.1"]);
    let origin = tls_origin(
        TlsOrigin {
            leaf: &leaf,
            alpn: &["h2", "http/1.1"],
            client_ca: None,
        },
        gathering(50),
    );
    let threads = 2;
    let proxy = Proxy::start(&config(
        threads,
        &format!("\"https://{}\"", origin.addr),
        &format!("[upstreams.app.tls]\nca_file = \"{}\"", ca.file.arg()),
    ));
    // All 50 are held at the origin at once, over at most one connection
    // per worker thread.
    concurrent(proxy.addr, 50, "HTTP/2.0").await;
    let conns = origin.seen.connections.load(Ordering::SeqCst);
    assert!(conns <= threads, "{conns} connections for 50 requests");
    assert!(origin
        .seen
        .alpn
        .lock()
        .unwrap()
        .iter()
        .all(|p| p.as_deref() == Some("h2")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_http1_offers_only_http1_by_alpn() {
    let ca = Ca::new("test ca");
    let leaf = ca.server(&["127.0.0.1"]);
    let origin = tls_origin(
        TlsOrigin {
            leaf: &leaf,
            alpn: &["h2", "http/1.1"],
            client_ca: None,
        },
        version_answer,
    );
    let proxy = Proxy::start(&config(
        1,
        &format!("\"https://{}\"", origin.addr),
        &format!(
            "protocol = \"http1\"\n[upstreams.app.tls]\nca_file = \"{}\"",
            ca.file.arg()
        ),
    ));
    let (status, _, body) = get(proxy.addr, "/").await;
    assert_eq!(status, 200);
    assert_eq!(body, "HTTP/1.1");
}

/// The fields the proxy adds (a request ID, a `traceparent`) reach an
/// HTTP/2 upstream too, once each: there they go in the request's fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_upstream_gets_the_request_id_and_traceparent() {
    let origin = h2c_origin(|req: Request<Incoming>| async move {
        let all = |n: &str| all_values(req.headers(), n);
        crate::common::text(
            200,
            &format!("{} {}", all("x-req"), all("traceparent").len()),
        )
    });
    let toml = config(
        1,
        &format!("\"{}\"", origin.addr),
        "protocol = \"h2\"\n[tracing]\notlp_endpoint = \"http://127.0.0.1:9/v1/traces\"\nsample_ratio = 0.0",
    )
    .replace(
        "address = \"127.0.0.1:0\"\n",
        "address = \"127.0.0.1:0\"\nrequest_id = { header = \"x-req\" }\n",
    );
    let proxy = Proxy::start(&toml);
    for _ in 0..2 {
        let (status, h, body) = get(proxy.addr, "/").await;
        let id = h["x-req"].to_str().unwrap();
        assert_eq!((status, id.len()), (200, 32));
        assert_eq!(body, format!("{id} 55"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_by_config() {
    let origin = h2c_origin(version_answer);
    let proxy = Proxy::start(&config(
        1,
        &format!("\"{}\"", origin.addr),
        "protocol = \"h2\"",
    ));
    for _ in 0..3 {
        let (status, _, body) = get(proxy.addr, "/").await;
        assert_eq!(status, 200);
        assert_eq!(body, "HTTP/2.0");
    }
    // The client's HTTP/1.1 connection stays alive across answers that
    // came over HTTP/2.
    let mut conn = RawConn::connect(proxy.addr).await;
    for _ in 0..2 {
        conn.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
        let resp = conn.response().await;
        assert_eq!((resp.version.as_str(), resp.status), ("HTTP/1.1", 200));
        assert_eq!(resp.text(), "HTTP/2.0");
    }
    assert_eq!(origin.seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_max_connections_counts_connections_not_requests() {
    let origin = h2c_origin(gathering(20));
    let proxy = Proxy::start(&config(
        1,
        &format!("\"{}\"", origin.addr),
        "protocol = \"h2\"\nmax_connections = 1",
    ));
    concurrent(proxy.addr, 20, "HTTP/2.0").await;
    assert_eq!(origin.seen.connections.load(Ordering::SeqCst), 1);
}

/// Answers with a streamed body and an `x-checksum` trailer (announced in
/// `Trailer`); echoes what it got: `te`, `:authority`, the path, and the
/// request's own trailer `x-req`, if any.
async fn trailers_origin(req: Request<Incoming>) -> Response<Body> {
    let te = header(req.headers(), "te");
    let authority = req.uri().authority().map_or("-".into(), |a| a.to_string());
    let path = req.uri().path().to_string();
    let collected = req.into_body().collect().await.expect("request body");
    let req_trailer = collected
        .trailers()
        .map_or("-".into(), |t| header(t, "x-req"));
    let body = collected.to_bytes();
    let echo = format!(
        "te={te} authority={authority} path={path} body={} x-req={req_trailer}",
        String::from_utf8_lossy(&body)
    );
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
    // Of unknown length, as a gRPC stream's: chunked to HTTP/1.1 clients.
    let body = Unsized(full(Bytes::from(echo)))
        .with_trailers(async move { Some(Ok(trailers)) })
        .boxed();
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert("trailer", HeaderValue::from_static("x-checksum"));
    resp
}

/// A body that does not tell its length.
struct Unsized(Body);

impl http_body::Body for Unsized {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx)
    }
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_both_ways_with_an_h2_upstream() {
    let origin = h2c_origin(trailers_origin);
    let proxy = Proxy::start(&config(
        1,
        &format!("\"{}\"", origin.addr),
        "protocol = \"h2\"",
    ));
    // The client's chunked body ends with a trailer; it accepts trailers.
    let wire = raw(
        proxy.addr,
        b"POST /grpc.Service/Call HTTP/1.1\r\nHost: app.test\r\nTE: trailers\r\n\
          Connection: close\r\nTrailer: x-req\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\nx-req: from-client\r\n\r\n",
    )
    .await;
    let resp = parse_raw(&wire);
    assert_eq!(resp.status, 200, "{wire}");
    assert!(resp.chunked, "{wire}");
    assert_eq!(
        resp.text(),
        "te=trailers authority=app.test path=/grpc.Service/Call body=hello x-req=from-client"
    );
    // The upstream's trailer follows the last chunk.
    assert!(
        wire.ends_with("\r\n0\r\nx-checksum: abc123\r\n\r\n"),
        "no trailer in {wire:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_speak_h2_to_h2c_groups() {
    let checks = Arc::new(AtomicUsize::new(0));
    let c = checks.clone();
    let origin = h2c_origin(move |req: Request<Incoming>| {
        let c = c.clone();
        async move {
            if req.uri().path() == "/healthz" {
                c.fetch_add(1, Ordering::SeqCst);
            }
            text(200, "ok")
        }
    });
    let proxy = Proxy::start(&config(
        1,
        &format!("\"{}\"", origin.addr),
        "protocol = \"h2\"\n[upstreams.app.health]\npath = \"/healthz\"\ninterval = \"20ms\"\n\
         unhealthy_threshold = 1\n",
    ));
    // The origin speaks only HTTP/2: a check it answered came over it.
    tokio::time::timeout(HANG, async {
        while checks.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("health checks arrive");
    let (status, _, body) = get(proxy.addr, "/").await;
    assert_eq!(status, 200);
    assert_eq!(body, "ok");
}

/// An h2c origin that closes each connection (GOAWAY) after one answer.
fn one_answer_per_connection() -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    tokio::runtime::Runtime,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    rt.spawn(async move {
        let l = tokio::net::TcpListener::from_std(l).expect("listener");
        while let Ok((stream, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
                let done = std::sync::Mutex::new(Some(done_tx));
                let svc = hyper::service::service_fn(move |_req| {
                    if let Some(tx) = done.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    async { Ok::<_, std::convert::Infallible>(text(200, "once")) }
                });
                let conn =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = done_rx => {}
                }
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            });
        }
    });
    (addr, conns, rt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connections_closed_by_the_server_are_replaced() {
    let (addr, conns, rt) = one_answer_per_connection();
    let proxy = Proxy::start(&config(1, &format!("\"{addr}\""), "protocol = \"h2\""));
    for _ in 0..5 {
        let (status, _, body) = get(proxy.addr, "/").await;
        assert_eq!((status, body.as_ref()), (200, &b"once"[..]));
    }
    assert!(conns.load(Ordering::SeqCst) >= 5);
    rt.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_reach_an_http1_upstream() {
    let origin = backend(trailers_origin);
    let proxy = Proxy::to(origin.addr, "");
    let wire = raw(
        proxy.addr,
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\
          Trailer: x-req\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\nx-req: from-client\r\n\r\n",
    )
    .await;
    let resp = parse_raw(&wire);
    assert_eq!(resp.status, 200, "{wire}");
    assert!(
        resp.text().ends_with("body=hello x-req=from-client"),
        "{wire}"
    );
}

/// Signals when dropped: an origin handler's future dropped because its
/// stream was reset.
struct Dropped(Arc<tokio::sync::Semaphore>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_resets_the_upstream_stream() {
    let arrived = Arc::new(tokio::sync::Semaphore::new(0));
    let dropped = Arc::new(tokio::sync::Semaphore::new(0));
    let (a, d) = (arrived.clone(), dropped.clone());
    let origin = h2c_origin(move |_req: Request<Incoming>| {
        let (a, d) = (a.clone(), d.clone());
        async move {
            let _guard = Dropped(d);
            a.add_permits(1);
            std::future::pending::<()>().await;
            text(200, "never")
        }
    });
    let proxy = Proxy::start(&config(
        1,
        &format!("\"{}\"", origin.addr),
        "protocol = \"h2\"\n",
    ));
    let mut c = crate::common::h2raw::H2Raw::connect(proxy.addr).await;
    let mut out = Vec::new();
    crate::common::h2raw::headers(
        &mut out,
        1,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "a.test"),
        ],
        true,
    );
    c.send(&out).await;
    let wait = |s: Arc<tokio::sync::Semaphore>| async move {
        tokio::time::timeout(HANG, s.acquire())
            .await
            .expect("in time")
            .expect("open")
            .forget();
    };
    wait(arrived).await;
    let mut out = Vec::new();
    crate::common::h2raw::rst_stream(&mut out, 1, 0x8);
    c.send(&out).await;
    // The origin's handler is dropped: its stream was reset upstream.
    wait(dropped).await;
}
