//! Test helpers: the proxy in-process on 127.0.0.1:0, backends on threads of
//! their own, small clients, and a deterministic byte stream to check that
//! bodies arrive exactly as sent.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, Error>;

/// Generous bound that only catches hangs.
pub const HANG: Duration = Duration::from_secs(60);

/// Tidegate running in this process; stopped (gracefully) on drop.
pub struct Proxy {
    running: Option<tidegate::Running>,
    pub addr: SocketAddr,
}

impl Proxy {
    /// Starts from TOML text.
    pub fn start(toml: &str) -> Proxy {
        let config = tidegate::Config::from_toml(toml, "test.toml").expect("valid test config");
        let running = tidegate::start(config).expect("proxy starts");
        let addr = running.local_addrs()[0];
        Proxy {
            running: Some(running),
            addr,
        }
    }

    /// One route `/` to `upstream`, plus `extra` TOML (tables such as
    /// `[timeouts]` or `[limits]`).
    pub fn to(upstream: SocketAddr, extra: &str) -> Proxy {
        Proxy::start(&config_to(upstream, extra))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn running(&self) -> &tidegate::Running {
        self.running.as_ref().expect("running")
    }

    /// Stops now and waits; for tests about shutdown.
    pub fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

pub fn config_to(upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
threads = 2
shutdown_grace = "10s"
log_level = "warn"

[[listeners]]
address = "127.0.0.1:0"

[[routes]]
upstream = "app"

[upstreams.app]
servers = ["{upstream}"]

{extra}
"#
    )
}

/// An in-process origin server on a runtime of its own; stopped on drop.
pub struct Backend {
    pub addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Serves `f` for every request, HTTP/1.1 with keep-alive.
pub fn backend<F, Fut>(f: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("backend runtime");
    let (listener, addr) = bind_std();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let f = f.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let f = f.clone();
                    async move { Ok::<_, Infallible>(f(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend {
        addr,
        rt: Some(rt),
    }
}

/// A raw TCP origin: `f` gets each accepted socket.
pub fn raw_backend<F, Fut>(f: F) -> Backend
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("backend runtime");
    let (listener, addr) = bind_std();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(f(stream));
        }
    });
    Backend {
        addr,
        rt: Some(rt),
    }
}

fn bind_std() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind backend");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("backend addr");
    (l, addr)
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

pub fn text(status: u16, s: &str) -> Response<Body> {
    let mut r = Response::new(full(s.to_string()));
    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
    r
}

/// Sends one request on a new connection; returns the response with its
/// body still streaming.
pub async fn send(addr: SocketAddr, req: Request<Body>) -> Result<Response<Incoming>, Error> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(req).await?)
}

/// GET `path`; returns status, headers and the whole body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, http::HeaderMap, Bytes) {
    let req = Request::get(path)
        .header("host", "test.local")
        .body(empty())
        .expect("request");
    let resp = tokio::time::timeout(HANG, send(addr, req))
        .await
        .expect("no hang")
        .expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, body)
}

/// Writes `bytes` on a new connection and reads until the server closes.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(HANG, s.read_to_end(&mut out))
        .await
        .expect("server closes")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// A deterministic, non-repeating byte stream (xorshift64*), so a body can
/// be checked byte for byte without holding it.
#[derive(Clone)]
pub struct Stream {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Stream {
    pub fn new(seed: u64) -> Stream {
        Stream {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            word: [0; 8],
            used: 8,
        }
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.used == 8 {
                let mut x = self.state;
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                self.state = x;
                self.word = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }

    pub fn chunk(&mut self, n: usize) -> Bytes {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v.into()
    }
}

/// Checks received bytes against a [`Stream`], and checksums them.
pub struct Verifier {
    expect: Stream,
    scratch: Vec<u8>,
    pub len: u64,
    pub crc: crc32fast::Hasher,
}

impl Verifier {
    pub fn new(seed: u64) -> Verifier {
        Verifier {
            expect: Stream::new(seed),
            scratch: Vec::new(),
            len: 0,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Panics at the first byte that differs.
    pub fn feed(&mut self, got: &[u8]) {
        self.scratch.resize(got.len(), 0);
        self.expect.fill(&mut self.scratch);
        if self.scratch != got {
            let i = self
                .scratch
                .iter()
                .zip(got)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!("byte {} differs from what was sent", self.len + i as u64);
        }
        self.len += got.len() as u64;
        self.crc.update(got);
    }
}

/// `total` bytes of [`Stream`] `seed`, as a streaming body of `chunk`-sized
/// frames, generated as it is read.
pub fn stream_body(seed: u64, total: u64, chunk: usize) -> Body {
    let mut gen = Stream::new(seed);
    let mut left = total;
    let frames = std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(chunk as u64) as usize;
        left -= n as u64;
        Some(Ok::<_, Error>(hyper::body::Frame::data(gen.chunk(n))))
    });
    http_body_util::StreamBody::new(IterStream(frames)).boxed()
}

/// crc32 of the first `total` bytes of [`Stream`] `seed`.
pub fn stream_crc(seed: u64, total: u64) -> u32 {
    let mut gen = Stream::new(seed);
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0; 1 << 16];
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        gen.fill(&mut buf[..n]);
        crc.update(&buf[..n]);
        left -= n as u64;
    }
    crc.finalize()
}

struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// A body fed from a channel, for origins that send on their own schedule.
pub struct BodyChannel {
    tx: tokio::sync::mpsc::Sender<Bytes>,
}

impl BodyChannel {
    pub fn new() -> (BodyChannel, Body) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let frames = futures_stream(move |cx| {
            rx.poll_recv(cx)
                .map(|o| o.map(|b| Ok::<_, Error>(hyper::body::Frame::data(b))))
        });
        (BodyChannel { tx }, http_body_util::StreamBody::new(frames).boxed())
    }

    /// Sends a chunk; false if the receiver (the proxy) went away.
    pub async fn send(&mut self, b: Bytes) -> bool {
        self.tx.send(b).await.is_ok()
    }
}

fn futures_stream<T, F>(f: F) -> PollStream<F>
where
    F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Unpin,
{
    PollStream(f)
}

struct PollStream<F>(F);

impl<T, F> futures_core::Stream for PollStream<F>
where
    F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Unpin,
{
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        (self.0)(cx)
    }
}
