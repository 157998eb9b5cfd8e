//! gRPC end to end through the proxy: a tonic server behind an h2c
//! upstream group (`protocol = "h2"`), tonic clients over h2c (prior
//! knowledge, plain listener) and over TLS (ALPN h2). Unary, server, client
//! and bidirectional streaming; error statuses with their trailing
//! metadata; `te: trailers` and the content type reaching the server;
//! deadlines; resets passed on both ways (a client's cancel reaches the
//! server, a server's reset reaches the client, never as a clean end); the
//! proxy's response-head timeout cancelling the call upstream; large
//! messages; many concurrent calls on one channel.
//!
//! The service is written by hand on tonic's `server::Grpc` and
//! `client::Grpc` with prost messages derived in Rust: no `.proto` file and
//! no `protoc` needed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::common::config::{Route, TestConfig};
use crate::common::pki::{Ca, Client as TlsClient};
use crate::common::*;
use futures_core::Stream;
use http::uri::PathAndQuery;
use tokio::sync::mpsc;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// The one message type of the test service.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(uint32, tag = "1")]
    pub n: u32,
    #[prost(string, tag = "2")]
    pub text: String,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

fn msg(n: u32, text: &str) -> Msg {
    Msg {
        n,
        text: text.to_string(),
        data: Vec::new(),
    }
}

/// Largest message either side accepts (tonic's default is 4 MiB for
/// decoding, which a 4 MiB payload plus framing would exceed).
const MAX_MESSAGE: usize = 8 << 20;

const UNARY: &str = "/test.Echo/Unary";
const SERVER_STREAM: &str = "/test.Echo/ServerStream";
const CLIENT_STREAM: &str = "/test.Echo/ClientStream";
const BIDI: &str = "/test.Echo/Bidi";
/// A server stream that sends one message and then waits forever.
const ENDLESS: &str = "/test.Echo/Endless";
/// A client stream that reports how it ended, answered only at its end.
const COLLECT: &str = "/test.Echo/Collect";
/// One message, then the server resets the stream (no status).
const BROKEN: &str = "/test.Echo/Broken";

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

// ---------------------------------------------------------------- server

/// What the server saw of one call's request head.
#[derive(Debug, Clone)]
struct Head {
    path: String,
    te: Option<String>,
    content_type: Option<String>,
}

/// Sends `what` on the events channel when dropped: a handler (or a
/// response stream) that the server abandoned says so.
struct Signal(mpsc::UnboundedSender<&'static str>, &'static str);

impl Drop for Signal {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

/// A tower service (what tonic-build would generate) around one function.
struct Handler<F>(F);

impl<F, R, T, Fut> tower_service::Service<Request<R>> for Handler<F>
where
    F: FnMut(Request<R>) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    type Response = Response<T>;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<R>) -> Fut {
        (self.0)(req)
    }
}

/// The test service: routes by path, as generated code would.
#[derive(Clone)]
struct Echo {
    heads: Arc<Mutex<Vec<Head>>>,
    events: mpsc::UnboundedSender<&'static str>,
    /// Lets a [`BROKEN`] stream break.
    breaker: Arc<tokio::sync::Notify>,
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFut<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let header = |n: &str| {
            req.headers()
                .get(n)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let head = Head {
            path: req.uri().path().to_string(),
            te: header("te"),
            content_type: header("content-type"),
        };
        self.heads.lock().unwrap().push(head.clone());
        let events = self.events.clone();
        let breaker = self.breaker.clone();
        Box::pin(async move {
            // gRPC over HTTP/2 requires both (gRPC's PROTOCOL-HTTP2.md);
            // some servers refuse calls without them, this one too.
            if head.te.as_deref() != Some("trailers") {
                return Ok(Status::failed_precondition("te: trailers missing").into_http());
            }
            if !head
                .content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/grpc"))
            {
                return Ok(Status::failed_precondition("not application/grpc").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            let resp = match head.path.as_str() {
                UNARY => {
                    grpc.unary(Handler(move |r| unary(r, events.clone())), req)
                        .await
                }
                SERVER_STREAM => grpc.server_streaming(Handler(server_stream), req).await,
                CLIENT_STREAM => grpc.client_streaming(Handler(client_stream), req).await,
                BIDI => grpc.streaming(Handler(bidi), req).await,
                ENDLESS => {
                    grpc.server_streaming(Handler(move |r| endless(r, events.clone())), req)
                        .await
                }
                COLLECT => {
                    let e = events.clone();
                    let req = req.map(|b| tonic::body::Body::new(Probe(b, Some(e))));
                    grpc.client_streaming(Handler(move |r| collect(r, events.clone())), req)
                        .await
                }
                BROKEN => broken(breaker),
                _ => Status::unimplemented(head.path).into_http(),
            };
            Ok(resp)
        })
    }
}

/// Echoes `n + 1`, the text and the data. Text `"not found"` fails with
/// NotFound and trailing metadata; `"hang"` never answers.
async fn unary(
    req: Request<Msg>,
    events: mpsc::UnboundedSender<&'static str>,
) -> Result<Response<Msg>, Status> {
    let m = req.into_inner();
    match m.text.as_str() {
        "not found" => {
            let mut md = MetadataMap::new();
            md.insert("x-detail", "shelf 7 is empty".parse().unwrap());
            Err(Status::with_metadata(
                Code::NotFound,
                format!("no item {}", m.n),
                md,
            ))
        }
        "hang" => {
            let _signal = Signal(events.clone(), "unary dropped");
            let _ = events.send("unary started");
            std::future::pending().await
        }
        _ => {
            let mut resp = Response::new(Msg {
                n: m.n + 1,
                text: m.text,
                data: m.data,
            });
            resp.metadata_mut()
                .insert("x-served-by", "tonic".parse().unwrap());
            Ok(resp)
        }
    }
}

/// `n` messages numbered 0..n; with text `"then fail"`, an Aborted status
/// with metadata after them (so in the trailers, after data).
async fn server_stream(req: Request<Msg>) -> Result<Response<MsgStream>, Status> {
    let m = req.into_inner();
    let fail = m.text == "then fail";
    let count = m.n;
    let s = futures_util::stream::unfold(0u32, move |i| async move {
        if i < count {
            return Some((Ok(msg(i, "item")), i + 1));
        }
        if fail && i == count {
            let mut md = MetadataMap::new();
            md.insert("x-detail", "gave up after the last item".parse().unwrap());
            return Some((
                Err(Status::with_metadata(Code::Aborted, "stream broke", md)),
                i + 1,
            ));
        }
        None
    });
    Ok(Response::new(Box::pin(s) as MsgStream))
}

/// Counts the messages, sums their numbers, joins their texts.
async fn client_stream(req: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status> {
    let mut s = req.into_inner();
    let (mut count, mut sum, mut texts) = (0u32, 0u32, Vec::new());
    while let Some(m) = s.message().await? {
        count += 1;
        sum += m.n;
        texts.push(m.text);
    }
    Ok(Response::new(Msg {
        n: count,
        text: format!("sum={sum} {}", texts.join(",")),
        data: Vec::new(),
    }))
}

/// Answers each message as it arrives with `n * 2`.
async fn bidi(req: Request<Streaming<Msg>>) -> Result<Response<MsgStream>, Status> {
    let s = futures_util::stream::unfold(Some(req.into_inner()), |s| async move {
        let mut s = s?;
        match s.message().await {
            Ok(Some(m)) => Some((Ok(msg(m.n * 2, &m.text)), Some(s))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(Response::new(Box::pin(s) as MsgStream))
}

/// One message, then nothing, forever; says when the stream is dropped.
async fn endless(
    _req: Request<Msg>,
    events: mpsc::UnboundedSender<&'static str>,
) -> Result<Response<MsgStream>, Status> {
    let signal = Signal(events, "endless dropped");
    let s = futures_util::stream::unfold((signal, false), |(signal, sent)| async move {
        if sent {
            std::future::pending::<()>().await;
        }
        Some((Ok(msg(0, "first")), (signal, true)))
    });
    Ok(Response::new(Box::pin(s) as MsgStream))
}

/// Reads the client's stream to its end; says when the first message
/// came.
async fn collect(
    req: Request<Streaming<Msg>>,
    events: mpsc::UnboundedSender<&'static str>,
) -> Result<Response<Msg>, Status> {
    let mut s = req.into_inner();
    let mut count = 0;
    while s.message().await?.is_some() {
        count += 1;
        if count == 1 {
            let _ = events.send("collect started");
        }
    }
    Ok(Response::new(msg(count, "collected")))
}

/// A request body that says how it ended: cleanly (`END_STREAM`), or
/// broken (`RST_STREAM`: an error, or dropped unfinished when the server
/// gave up the call). tonic's `Streaming` cannot tell: it reads a request
/// stream the client cancelled as one that ended.
struct Probe(
    tonic::body::Body,
    Option<mpsc::UnboundedSender<&'static str>>,
);

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(events) = self.1.take() {
            let _ = events.send("collect broke");
        }
    }
}

impl http_body::Body for Probe {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        let polled = Pin::new(&mut self.0).poll_frame(cx);
        let end = match &polled {
            Poll::Ready(None) => Some("collect ended cleanly"),
            Poll::Ready(Some(Err(_))) => Some("collect broke"),
            _ => None,
        };
        if let Some(end) = end {
            if let Some(events) = self.1.take() {
                let _ = events.send(end);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}

/// A response written by hand: the head, one framed message, then (once
/// the test says so) a body error, which makes hyper reset the stream
/// (RST_STREAM INTERNAL_ERROR) where trailers would have been.
fn broken(breaker: Arc<tokio::sync::Notify>) -> http::Response<tonic::body::Body> {
    use prost::Message as _;
    let m = msg(1, "before the break").encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(m.len() as u32).to_be_bytes());
    framed.extend_from_slice(&m);
    type Frame = Result<http_body::Frame<bytes::Bytes>, Status>;
    let first: Frame = Ok(http_body::Frame::data(framed.into()));
    let frames = futures_util::stream::unfold(Some(first), move |first| {
        let breaker = breaker.clone();
        async move {
            match first {
                Some(f) => Some((f, None)),
                None => {
                    breaker.notified().await;
                    Some((Err(Status::internal("server broke")), None))
                }
            }
        }
    });
    let body = http_body_util::StreamBody::new(frames);
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::new(body))
        .expect("response")
}

/// A tonic server on 127.0.0.1:0, on the test's runtime.
struct Origin {
    addr: SocketAddr,
    breaker: Arc<tokio::sync::Notify>,
    heads: Arc<Mutex<Vec<Head>>>,
    events: mpsc::UnboundedReceiver<&'static str>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, events) = mpsc::unbounded_channel();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let breaker = Arc::new(tokio::sync::Notify::new());
        let svc = Echo {
            heads: heads.clone(),
            events: tx,
            breaker: breaker.clone(),
        };
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .serve_with_incoming(svc, incoming)
                .await
                .expect("grpc server");
        });
        Origin {
            addr,
            breaker,
            heads,
            events,
        }
    }

    /// The next event, or a panic if none comes.
    async fn event(&mut self) -> &'static str {
        tokio::time::timeout(HANG, self.events.recv())
            .await
            .expect("event in time")
            .expect("server alive")
    }
}

// ---------------------------------------------------------------- proxy

/// Certificate and key for the proxy's TLS listener.
struct Tls {
    ca: Ca,
    leaf: crate::common::pki::Leaf,
}

impl Tls {
    fn new() -> Tls {
        let ca = Ca::new("grpc test ca");
        let leaf = ca.server(&["grpc.test"]);
        Tls { ca, leaf }
    }
}

/// A plain listener (h2c by prior knowledge) first, a TLS one second; the
/// upstream group speaks h2c to the tonic server.
fn proxy(origin: SocketAddr, tls: &Tls) -> Proxy {
    proxy_with(origin, tls, Route::to("grpc"))
}

/// As [`proxy`], with its one route given.
fn proxy_with(origin: SocketAddr, tls: &Tls, route: Route) -> Proxy {
    Proxy::start(
        &TestConfig::new()
            .listener("127.0.0.1:0")
            .listener_tls(&[(tls.leaf.cert_file.arg(), tls.leaf.key_file.arg())])
            .route(route)
            .group("grpc", [origin])
            .set("upstreams.grpc.protocol", "h2")
            .toml(),
    )
}

// ---------------------------------------------------------------- client

type Grpc = tonic::client::Grpc<Channel>;

fn client(channel: Channel) -> Grpc {
    tonic::client::Grpc::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// A tonic channel over h2c to the proxy's plain listener.
async fn h2c_client(proxy: &Proxy) -> Grpc {
    let channel = Endpoint::from_shared(format!("http://{}", proxy.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("h2c channel");
    client(channel)
}

/// Connects to the proxy's TLS listener, offering only h2.
#[derive(Clone)]
struct TlsConnect {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

impl tower_service::Service<http::Uri> for TlsConnect {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = BoxFut<Result<Self::Response, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let (addr, config) = (self.addr, self.config.clone());
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from("grpc.test")
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let s = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            assert!(crate::common::pki::is_h2(&s), "ALPN settled on h2");
            Ok(hyper_util::rt::TokioIo::new(s))
        })
    }
}

/// A tonic channel over TLS (ALPN h2) to the proxy's second listener.
async fn tls_client(proxy: &Proxy, tls: &Tls) -> Grpc {
    let connect = TlsConnect {
        addr: proxy.running().local_addrs()[1],
        config: Arc::new(TlsClient::trusting(&tls.ca).alpn(&[b"h2"]).config()),
    };
    let channel = Endpoint::from_static("https://grpc.test")
        .connect_with_connector(connect)
        .await
        .expect("tls channel");
    client(channel)
}

fn codec() -> ProstCodec<Msg, Msg> {
    ProstCodec::default()
}

async fn call_unary(c: &mut Grpc, req: Request<Msg>) -> Result<Response<Msg>, Status> {
    c.ready().await.expect("channel ready");
    c.unary(req, PathAndQuery::from_static(UNARY), codec())
        .await
}

async fn call_server_stream(c: &mut Grpc, m: Msg) -> Result<Response<Streaming<Msg>>, Status> {
    c.ready().await.expect("channel ready");
    c.server_streaming(
        Request::new(m),
        PathAndQuery::from_static(SERVER_STREAM),
        codec(),
    )
    .await
}

/// A stream of what `rx` receives, for a client's request stream.
fn receiver_stream(rx: mpsc::Receiver<Msg>) -> impl Stream<Item = Msg> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

/// Bounds every wait on the network: only catches hangs.
async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(HANG, f).await.expect("no hang")
}

// ---------------------------------------------------------------- tests

/// A plain unary call, then one answered by a status and its metadata.
async fn unary_ok_and_error(c: &mut Grpc) {
    let resp = within(call_unary(c, Request::new(msg(41, "hello"))))
        .await
        .expect("unary ok");
    assert_eq!(
        resp.metadata()
            .get("x-served-by")
            .map(|v| v.to_str().unwrap()),
        Some("tonic")
    );
    assert_eq!(resp.into_inner(), msg(42, "hello"));

    let status = within(call_unary(c, Request::new(msg(7, "not found"))))
        .await
        .expect_err("NotFound");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "no item 7");
    assert_eq!(
        status
            .metadata()
            .get("x-detail")
            .map(|v| v.to_str().unwrap()),
        Some("shelf 7 is empty")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_over_h2c_and_tls() {
    let origin = Origin::start().await;
    let tls = Tls::new();
    let proxy = proxy(origin.addr, &tls);
    unary_ok_and_error(&mut h2c_client(&proxy).await).await;
    unary_ok_and_error(&mut tls_client(&proxy, &tls).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn te_trailers_and_content_type_reach_the_server() {
    let origin = Origin::start().await;
    let tls = Tls::new();
    let proxy = proxy(origin.addr, &tls);
    within(call_unary(
        &mut h2c_client(&proxy).await,
        Request::new(msg(1, "a")),
    ))
    .await
    .expect("h2c call");
    within(call_unary(
        &mut tls_client(&proxy, &tls).await,
        Request::new(msg(1, "b")),
    ))
    .await
    .expect("tls call");
    let heads = origin.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for h in heads {
        assert_eq!(h.path, UNARY);
        assert_eq!(h.te.as_deref(), Some("trailers"), "{h:?}");
        assert_eq!(h.content_type.as_deref(), Some("application/grpc"), "{h:?}");
    }
}

async fn server_streaming(c: &mut Grpc) {
    let mut s = within(call_server_stream(c, msg(100, "")))
        .await
        .expect("stream starts")
        .into_inner();
    for i in 0..100 {
        let m = within(s.message()).await.expect("message").expect("more");
        assert_eq!(m, msg(i, "item"));
    }
    // The end, with an OK status from the trailers (a stream without
    // them is an error to tonic).
    assert_eq!(within(s.message()).await.expect("clean end"), None);

    // Messages, then a failure in the trailers with its metadata.
    let mut s = within(call_server_stream(c, msg(3, "then fail")))
        .await
        .expect("stream starts")
        .into_inner();
    for i in 0..3 {
        let m = within(s.message()).await.expect("message").expect("more");
        assert_eq!(m.n, i);
    }
    let status = within(s.message()).await.expect_err("Aborted");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(status.message(), "stream broke");
    assert_eq!(
        status
            .metadata()
            .get("x-detail")
            .map(|v| v.to_str().unwrap()),
        Some("gave up after the last item")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_over_h2c_and_tls() {
    let origin = Origin::start().await;
    let tls = Tls::new();
    let proxy = proxy(origin.addr, &tls);
    server_streaming(&mut h2c_client(&proxy).await).await;
    server_streaming(&mut tls_client(&proxy, &tls).await).await;
}

async fn client_streaming(c: &mut Grpc) {
    let items: Vec<Msg> = (1..=50).map(|i| msg(i, &format!("m{i}"))).collect();
    let want_text = format!(
        "sum={} {}",
        (1..=50).sum::<u32>(),
        items
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    c.ready().await.expect("ready");
    let resp = within(c.client_streaming(
        Request::new(futures_util::stream::iter(items)),
        PathAndQuery::from_static(CLIENT_STREAM),
        codec(),
    ))
    .await
    .expect("client streaming");
    assert_eq!(resp.into_inner(), msg(50, &want_text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming_over_h2c_and_tls() {
    let origin = Origin::start().await;
    let tls = Tls::new();
    let proxy = proxy(origin.addr, &tls);
    client_streaming(&mut h2c_client(&proxy).await).await;
    client_streaming(&mut tls_client(&proxy, &tls).await).await;
}

/// Send one, receive its answer, and again: the answer to each message
/// must come before the next is sent, so nothing on the way may wait for
/// the whole stream.
async fn bidi_interleaved(c: &mut Grpc) {
    let (tx, rx) = mpsc::channel(1);
    c.ready().await.expect("ready");
    // The response head may wait for the first message.
    tx.send(msg(1, "round 1")).await.expect("send");
    let mut answers = within(c.streaming(
        Request::new(receiver_stream(rx)),
        PathAndQuery::from_static(BIDI),
        codec(),
    ))
    .await
    .expect("bidi starts")
    .into_inner();
    let first = within(answers.message())
        .await
        .expect("answer")
        .expect("one");
    assert_eq!(first, msg(2, "round 1"));
    for round in 2..=20 {
        tx.send(msg(round, &format!("round {round}")))
            .await
            .expect("send");
        let got = within(answers.message())
            .await
            .expect("answer")
            .expect("one");
        assert_eq!(got, msg(round * 2, &format!("round {round}")));
    }
    drop(tx);
    assert_eq!(within(answers.message()).await.expect("clean end"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_streaming_interleaves_over_h2c_and_tls() {
    let origin = Origin::start().await;
    let tls = Tls::new();
    let proxy = proxy(origin.addr, &tls);
    bidi_interleaved(&mut h2c_client(&proxy).await).await;
    bidi_interleaved(&mut tls_client(&proxy, &tls).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_exceeded_reaches_the_client_and_frees_the_call() {
    let mut origin = Origin::start().await;
    let tls = Tls::new();
    let proxy = proxy(origin.addr, &tls);
    let mut c = h2c_client(&proxy).await;
    let mut req = Request::new(msg(0, "hang"));
    req.set_timeout(Duration::from_millis(300));
    let status = within(call_unary(&mut c, req)).await.expect_err("deadline");
    // The server's deadline answers DeadlineExceeded; the client's own
    // timer (same deadline) says Cancelled if it fires first.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert_eq!(origin.event().await, "unary started");
    assert_eq!(origin.event().await, "unary dropped");
    // The channel and the proxy carry on.
    let resp = within(call_unary(&mut c, Request::new(msg(1, "after"))))
        .await
        .expect("call after the deadline");
    assert_eq!(resp.into_inner(), msg(2, "after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cancel_reaches_the_server() {
    let mut origin = Origin::start().await;
    let tls = Tls::new();
    let proxy = proxy(origin.addr, &tls);
    let mut c = h2c_client(&proxy).await;

    // Before the response head: a unary call that never answers, given
    // up by the client (no deadline: only the reset can tell the server).
    let mut c2 = c.clone();
    let call = tokio::spawn(async move { call_unary(&mut c2, Request::new(msg(0, "hang"))).await });
    assert_eq!(origin.event().await, "unary started");
    call.abort();
    assert_eq!(origin.event().await, "unary dropped");

    // Mid-stream: a server stream the client drops after its first
    // message.
    c.ready().await.expect("ready");
    let mut s = within(c.server_streaming(
        Request::new(msg(0, "")),
        PathAndQuery::from_static(ENDLESS),
        codec(),
    ))
    .await
    .expect("stream starts")
    .into_inner();
    let first = within(s.message()).await.expect("message").expect("one");
    assert_eq!(first, msg(0, "first"));
    drop(s);
    assert_eq!(origin.event().await, "endless dropped");

    // Mid request stream: the client gives up after a few messages. The
    // server must see the stream broken, never a clean (and so
    // complete-looking) end.
    let mut c3 = c.clone();
    let (tx, rx) = mpsc::channel(8);
    let mut req = Request::new(receiver_stream(rx));
    // tonic resets the stream (RST_STREAM CANCEL) on this handle; a call
    // merely dropped ends its request stream cleanly.
    let cancel = req.cancellation_handle();
    let call = tokio::spawn(async move {
        c3.ready().await.expect("ready");
        c3.client_streaming(req, PathAndQuery::from_static(COLLECT), codec())
            .await
    });
    for i in 0..3 {
        tx.send(msg(i, "part")).await.expect("send");
    }
    assert_eq!(origin.event().await, "collect started");
    cancel.cancel();
    assert_eq!(origin.event().await, "collect broke");
    let status = within(call).await.expect("joined").expect_err("cancelled");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    drop(tx);

    // And one that ends properly ends cleanly.
    let (tx, rx) = mpsc::channel(8);
    for i in 0..3 {
        tx.send(msg(i, "part")).await.expect("send");
    }
    drop(tx);
    c.ready().await.expect("ready");
    let resp = within(c.client_streaming(
        Request::new(receiver_stream(rx)),
        PathAndQuery::from_static(COLLECT),
        codec(),
    ))
    .await
    .expect("collect");
    assert_eq!(resp.into_inner(), msg(3, "collected"));
    assert_eq!(origin.event().await, "collect started");
    assert_eq!(origin.event().await, "collect ended cleanly");

    let resp = within(call_unary(&mut c, Request::new(msg(5, "after"))))
        .await
        .expect("call after the cancels");
    assert_eq!(resp.into_inner(), msg(6, "after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_message_passes_intact() {
    let origin = Origin::start().await;
    let tls = Tls::new();
    let proxy = proxy(origin.addr, &tls);
    let mut data = vec![0u8; 4 << 20];
    crate::common::Stream::new(7).fill(&mut data);
    let m = Msg {
        n: 1,
        text: "big".into(),
        data,
    };
    for mut c in [h2c_client(&proxy).await, tls_client(&proxy, &tls).await] {
        let resp = within(call_unary(&mut c, Request::new(m.clone())))
            .await
            .expect("large unary");
        let got = resp.into_inner();
        assert_eq!(got.n, 2);
        assert_eq!(got.data.len(), m.data.len());
        assert!(got.data == m.data, "payload changed on the way");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_share_one_channel() {
    let origin = Origin::start().await;
    let tls = Tls::new();
    let proxy = proxy(origin.addr, &tls);
    for c in [h2c_client(&proxy).await, tls_client(&proxy, &tls).await] {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..200u32 {
            let mut c = c.clone();
            calls.spawn(async move {
                let text = format!("call {i}");
                let resp = call_unary(&mut c, Request::new(msg(i, &text))).await;
                (i, text, resp)
            });
        }
        let results = within(calls.join_all()).await;
        assert_eq!(results.len(), 200);
        for (i, text, resp) in results {
            let resp = resp.unwrap_or_else(|s| panic!("call {i}: {s:?}"));
            assert_eq!(resp.into_inner(), msg(i + 1, &text));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_reaches_the_client_as_an_error() {
    let origin = Origin::start().await;
    let tls = Tls::new();
    let proxy = proxy(origin.addr, &tls);
    for mut c in [h2c_client(&proxy).await, tls_client(&proxy, &tls).await] {
        c.ready().await.expect("ready");
        let mut s = within(c.server_streaming(
            Request::new(msg(0, "")),
            PathAndQuery::from_static(BROKEN),
            codec(),
        ))
        .await
        .expect("stream starts")
        .into_inner();
        let first = within(s.message()).await.expect("message").expect("one");
        assert_eq!(first, msg(1, "before the break"));
        origin.breaker.notify_one();
        // Never a clean end: the reset passes on as one.
        let status = within(s.message()).await.expect_err("reset");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        // The channel carries on.
        let resp = within(call_unary(&mut c, Request::new(msg(1, "after"))))
            .await
            .expect("call after the reset");
        assert_eq!(resp.into_inner(), msg(2, "after"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_head_timeout_fails_the_call_and_cancels_it_upstream() {
    let mut origin = Origin::start().await;
    let tls = Tls::new();
    let proxy = proxy_with(
        origin.addr,
        &tls,
        Route::to("grpc").set("timeouts.upstream_response_head", "200ms"),
    );
    let mut c = h2c_client(&proxy).await;
    let status = within(call_unary(&mut c, Request::new(msg(0, "hang"))))
        .await
        .expect_err("504");
    // The proxy's own errors come as gRPC statuses (trailers-only).
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("504"), "{status:?}");
    assert_eq!(origin.event().await, "unary started");
    // The proxy gave up on the call: the server hears of it.
    assert_eq!(origin.event().await, "unary dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_errors_are_grpc_statuses() {
    // An upstream that refuses connections: the proxy answers 502, which a
    // gRPC client must read as UNAVAILABLE.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let tls = Tls::new();
    let proxy = proxy(dead, &tls);
    for mut c in [h2c_client(&proxy).await, tls_client(&proxy, &tls).await] {
        let status = within(call_unary(&mut c, Request::new(msg(1, "hello"))))
            .await
            .expect_err("no upstream");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(status.message(), "502 Bad Gateway", "{status:?}");
    }
}
