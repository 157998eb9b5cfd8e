//! Concurrency limits (`[concurrency_limits.NAME]`, a route's
//! `concurrency_limit`; nginx's `limit_conn`): an origin that holds every
//! response until the test releases it keeps requests in flight, so that
//! nothing hangs on timing. `max` requests of a key are in flight, the
//! next gets 429 (a gRPC call RESOURCE_EXHAUSTED) while another key is
//! not limited; once one response has been read whole a new request is
//! admitted; a response whose body is still streaming still counts; a
//! client that goes away mid-request (HTTP/1.1: its connection closed;
//! HTTP/2: its stream reset) gives its place back; a WebSocket counts
//! until its tunnel closes; a reload keeps the count of requests in
//! flight; `tidegate check` names bad fields.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::config::{Route, TestConfig};
use crate::common::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

/// An origin that answers each request only once the test releases it
/// (one permit, one answer): `/held` holds the whole response; `/stream`
/// sends the head at once and holds the body.
struct Holding {
    origin: Backend,
    /// Requests the origin has seen.
    arrived: Arc<AtomicUsize>,
    release: Arc<Semaphore>,
}

impl Holding {
    fn new() -> Holding {
        let arrived = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Semaphore::new(0));
        let (a, r) = (arrived.clone(), release.clone());
        let origin = backend(move |req: Request<hyper::body::Incoming>| {
            let (arrived, release) = (a.clone(), r.clone());
            async move {
                arrived.fetch_add(1, Ordering::SeqCst);
                if req.uri().path() == "/stream" {
                    let (mut tx, body) = BodyChannel::new();
                    tokio::spawn(async move {
                        release.acquire().await.unwrap().forget();
                        tx.send(Bytes::from_static(b"the end")).await;
                    });
                    return Response::new(body);
                }
                release.acquire().await.unwrap().forget();
                text(200, "ok")
            }
        });
        Holding {
            origin,
            arrived,
            release,
        }
    }

    fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    async fn until_arrived(&self, n: usize) {
        until(&format!("{n} requests at the origin"), || {
            self.arrived() >= n
        })
        .await;
    }
}

/// `/held` and `/stream` limited by `per_client` (key X-Client, `max`).
fn limited(origin: SocketAddr, max: u32) -> TestConfig {
    TestConfig::proxying(origin)
        .set("concurrency_limits.per_client.key", "header:X-Client")
        .set("concurrency_limits.per_client.max", max)
        .route(
            Route::to("app")
                .path_regex("^/(held|stream)$")
                .set("concurrency_limit", "per_client"),
        )
}

/// GET `path` as `client`: status, head and the whole body.
async fn get_as(addr: SocketAddr, path: &str, client: &str) -> (u16, http::HeaderMap, Bytes) {
    get_with(addr, path, &[("x-client", client)]).await
}

async fn get_with(
    addr: SocketAddr,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, http::HeaderMap, Bytes) {
    let mut req = Request::get(path).header("host", "test.local");
    for (n, v) in fields {
        req = req.header(*n, *v);
    }
    tokio::time::timeout(HANG, async {
        let resp = send(addr, req.body(empty()).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let head = resp.headers().clone();
        (
            status,
            head,
            resp.into_body().collect().await.unwrap().to_bytes(),
        )
    })
    .await
    .expect("no hang")
}

/// Retries GET `path` as `client` (10 ms apart, bounded by [`HANG`]) until
/// it is not refused: for a place given back by something the test cannot
/// wait on directly (a client gone away).
async fn until_admitted(addr: SocketAddr, path: &str, client: &str) -> u16 {
    tokio::time::timeout(HANG, async {
        loop {
            let (status, ..) = get_as(addr, path, client).await;
            if status != 429 {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a place given back")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_then_429_until_one_ends_and_other_keys_pass() {
    let h = Holding::new();
    let proxy = Proxy::start(&limited(h.origin.addr, 2).threads(2).toml());
    let addr = proxy.addr;
    let mut held = tokio::task::JoinSet::new();
    for _ in 0..2 {
        held.spawn(async move { get_as(addr, "/held", "a").await });
    }
    h.until_arrived(2).await;

    // A third from the same key: refused at once, never reaching the
    // origin.
    let (status, head, body) = get_as(addr, "/held", "a").await;
    assert_eq!(status, 429, "{head:?}");
    assert_eq!(&body[..], b"429 Too Many Requests\n");
    assert!(!head.contains_key("retry-after"), "{head:?}");
    // A gRPC call over the limit: RESOURCE_EXHAUSTED.
    let (status, head, _) = get_with(
        addr,
        "/held",
        &[("x-client", "a"), ("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(status, 200, "{head:?}");
    assert_eq!(head["grpc-status"], "8", "{head:?}");
    assert_eq!(h.arrived(), 2);

    // Another key has its own count; a request without the key part is
    // not limited.
    held.spawn(async move { get_as(addr, "/held", "b").await });
    held.spawn(async move { get_with(addr, "/held", &[]).await });
    h.until_arrived(4).await;

    // One response read whole: its place is free, and a new request of
    // `a` is admitted (it reaches the origin).
    h.release.add_permits(1);
    let (status, ..) = held.join_next().await.unwrap().unwrap();
    assert_eq!(status, 200);
    held.spawn(async move { get_as(addr, "/held", "a").await });
    h.until_arrived(5).await;
    h.release.add_permits(4);
    while let Some(done) = held.join_next().await {
        assert_eq!(done.unwrap().0, 200);
    }
    // Every place given back: `max` at once again.
    let (a, b, c) = tokio::join!(
        get_as(addr, "/held", "a"),
        get_as(addr, "/held", "a"),
        async {
            h.until_arrived(7).await;
            let refused = get_as(addr, "/held", "a").await.0;
            h.release.add_permits(2);
            refused
        }
    );
    assert_eq!((a.0, b.0, c), (200, 200, 429));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_whose_body_still_streams_counts() {
    let h = Holding::new();
    let proxy = Proxy::start(&limited(h.origin.addr, 1).toml());
    let addr = proxy.addr;
    let req = Request::get("/stream")
        .header("host", "test.local")
        .header("x-client", "a")
        .body(empty())
        .unwrap();
    let resp = tokio::time::timeout(HANG, send(addr, req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The head is here, the body is not: still in flight.
    assert_eq!(get_as(addr, "/stream", "a").await.0, 429);
    h.release.add_permits(1);
    let body = tokio::time::timeout(HANG, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"the end");
    // Read whole: the place is free.
    let next = tokio::spawn(async move { get_as(addr, "/stream", "a").await });
    h.until_arrived(2).await;
    h.release.add_permits(1);
    let (status, _, body) = next.await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"the end"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_request_gives_its_place_back() {
    let h = Holding::new();
    let proxy = Proxy::start(&limited(h.origin.addr, 1).toml());
    let addr = proxy.addr;
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /held HTTP/1.1\r\nHost: test.local\r\nX-Client: a\r\n\r\n")
        .await
        .unwrap();
    h.until_arrived(1).await;
    assert_eq!(get_as(addr, "/held", "a").await.0, 429);
    // Gone before any answer: the origin still holds the request, but the
    // proxy no longer counts it.
    drop(client);
    let admitted = tokio::spawn(async move { until_admitted(addr, "/held", "a").await });
    h.until_arrived(2).await;
    h.release.add_permits(2);
    assert_eq!(admitted.await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_count_of_requests_in_flight() {
    let h = Holding::new();
    let config = limited(h.origin.addr, 1);
    let mut proxy = Proxy::start(&config.toml());
    let addr = proxy.addr;
    let first = tokio::spawn(async move { get_as(addr, "/held", "a").await });
    h.until_arrived(1).await;
    // Another route added; `per_client` as it was.
    proxy.reload(&config.route(Route::respond(204).path("/new")).toml());
    tokio::time::timeout(HANG, async {
        while get_as(addr, "/new", "a").await.0 != 204 {}
    })
    .await
    .expect("the new config serving");
    // The request from before the reload still counts under the new one.
    assert_eq!(get_as(addr, "/held", "a").await.0, 429);
    h.release.add_permits(1);
    assert_eq!(first.await.unwrap().0, 200);
    // And its end gave the place back to the table the new config uses.
    let next = tokio::spawn(async move { get_as(addr, "/held", "a").await });
    h.until_arrived(2).await;
    h.release.add_permits(1);
    assert_eq!(next.await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_limits_are_refused_by_check_with_their_line_and_field() {
    let toml = r#"
[[listeners]]
address = "127.0.0.1:8080"

[concurrency_limits.per_client]
key = ["client_ip", "header:a b"]
max = 0

[[routes]]
upstream = "app"
concurrency_limit = "per_client"

[[routes]]
path = "/x"
upstream = "app"
concurrency_limit = ["nope"]

[upstreams.app]
servers = ["http://127.0.0.1:9000"]
"#;
    check_refuses(
        toml,
        &[
            "{f}:6: concurrency_limits.per_client.key: `a b` is not a header name",
            "{f}:7: concurrency_limits.per_client.max: must be at least 1",
            "{f}:16: routes[1].concurrency_limit: no [concurrency_limits.nope] table",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_reset_before_its_answer_gives_its_place_back() {
    use crate::common::h2raw::{self, Answer, H2Raw};
    let h = Holding::new();
    let proxy = Proxy::start(&limited(h.origin.addr, 1).toml());
    let addr = proxy.addr;
    let mut c = H2Raw::connect(addr).await;
    let request = |out: &mut Vec<u8>, id| {
        h2raw::headers(
            out,
            id,
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/held"),
                (":authority", "test.local"),
                ("x-client", "a"),
            ],
            true,
        )
    };
    let mut out = Vec::new();
    request(&mut out, 1);
    c.send(&out).await;
    h.until_arrived(1).await;
    let mut out = Vec::new();
    request(&mut out, 3);
    c.send(&out).await;
    let refused = tokio::time::timeout(HANG, c.answer(3)).await.unwrap();
    assert_eq!(refused, Answer::Status(429));
    // Stream 1 reset (CANCEL); the connection stays open.
    let mut out = Vec::new();
    h2raw::rst_stream(&mut out, 1, 0x8);
    c.send(&out).await;
    let admitted = tokio::spawn(async move { until_admitted(addr, "/held", "a").await });
    h.until_arrived(2).await;
    h.release.add_permits(2);
    assert_eq!(admitted.await.unwrap(), 200);
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_counts_until_its_tunnel_closes() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};
    let origin = raw_backend(|stream| async move {
        if let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await {
            crate::common::ws::echo(&mut ws, "").await;
        }
    });
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .set("concurrency_limits.one.max", 1)
            .route(Route::to("app").path("/ws").set("concurrency_limit", "one"))
            .toml(),
    );
    let addr = proxy.addr;
    // A WebSocket handshake through the proxy: the 101, or the refusal's
    // status.
    let connect = || async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        match tokio::time::timeout(
            HANG,
            tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp),
        )
        .await
        .expect("handshake in time")
        {
            Ok((ws, _)) => Ok(ws),
            Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("{e}"),
        }
    };
    let mut ws = connect().await.expect("the first is admitted");
    ws.send(Message::text("hi")).await.unwrap();
    // The tunnel is open: a second is refused.
    assert_eq!(connect().await.err(), Some(429));
    ws.close(None).await.unwrap();
    drop(ws);
    // Once the tunnel has closed, the place is free again.
    let again = tokio::time::timeout(HANG, async {
        loop {
            match connect().await {
                Ok(ws) => return ws,
                Err(429) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                Err(s) => panic!("{s}"),
            }
        }
    })
    .await
    .expect("the tunnel's place given back");
    drop(again);
}
