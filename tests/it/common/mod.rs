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

pub mod binary;
pub mod config;
pub mod h2raw;
pub mod otlp;
pub mod pki;
pub mod tls_origin;
pub mod ws;

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
    /// Starts from TOML text; the reason it did not start (a listener's
    /// port taken meanwhile, for a test that had to choose it).
    pub fn try_start(toml: &str) -> Result<Proxy, String> {
        let config = tidegate::Config::from_toml(toml, "test.toml").expect("valid test config");
        let running = tidegate::start(config).map_err(|e| e.to_string())?;
        let addr = running.local_addrs()[0];
        Ok(Proxy {
            running: Some(running),
            addr,
        })
    }

    /// Starts from TOML text.
    pub fn start(toml: &str) -> Proxy {
        Proxy::try_start(toml).unwrap_or_else(|e| panic!("proxy starts: {e}"))
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
        "{}\n{extra}\n",
        config::TestConfig::proxying(upstream).toml()
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
    backend_on(bind_std(), f)
}

/// Like [`backend`], on a given address (a backend that comes back where
/// an earlier one was).
pub fn backend_at<F, Fut>(addr: SocketAddr, f: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let l = std::net::TcpListener::bind(addr).expect("bind backend again");
    l.set_nonblocking(true).expect("nonblocking");
    backend_on((l, addr), f)
}

pub fn backend_on<F, Fut>((listener, addr): (std::net::TcpListener, SocketAddr), f: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("backend runtime");
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
    Backend { addr, rt: Some(rt) }
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
    Backend { addr, rt: Some(rt) }
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
        (
            BodyChannel { tx },
            http_body_util::StreamBody::new(frames).boxed(),
        )
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

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 on the wire: for tests that must see exactly what was sent,
// with nothing added or hidden by a client library.

/// One response as it came over the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    /// Header fields in wire order, names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was chunked.
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
}

impl RawResponse {
    /// The first field named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// Every field named `name` (any case), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

/// Index just past the blank line that ends a head starting at `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4)
}

/// Parses one response at the start of `buf`. `no_body`: it answers a HEAD.
/// `eof`: the peer has closed, so a close-delimited body ends at the end of
/// `buf`. Returns the response and the bytes it took, or `None` when more
/// bytes are needed. Panics on anything that is not HTTP/1.x.
pub fn parse_response(buf: &[u8], no_body: bool, eof: bool) -> Option<(RawResponse, usize)> {
    let end = head_end(buf, 0)?;
    let head = std::str::from_utf8(&buf[..end - 4]).expect("response head is UTF-8");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_string();
    assert!(
        version.starts_with("HTTP/1."),
        "not an HTTP/1.x response: {status_line:?}"
    );
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {l:?}"));
            (n.to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let mut resp = RawResponse {
        version,
        status,
        headers,
        body: Vec::new(),
        chunked: false,
    };
    if no_body || (100..200).contains(&status) || status == 204 || status == 304 {
        return Some((resp, end));
    }
    let chunked = resp
        .all("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        resp.chunked = true;
        let mut at = end;
        loop {
            let line_end = find_crlf(buf, at)?;
            let line = std::str::from_utf8(&buf[at..line_end]).expect("chunk size line");
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            at = line_end + 2;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let l = find_crlf(buf, at)?;
                    let empty = l == at;
                    at = l + 2;
                    if empty {
                        return Some((resp, at));
                    }
                }
            }
            if buf.len() < at + size + 2 {
                return None;
            }
            resp.body.extend_from_slice(&buf[at..at + size]);
            assert_eq!(
                &buf[at + size..at + size + 2],
                b"\r\n",
                "chunk not CRLF-ended"
            );
            at += size + 2;
        }
    }
    if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().expect("content-length is a number");
        if buf.len() < end + len {
            return None;
        }
        resp.body = buf[end..end + len].to_vec();
        return Some((resp, end + len));
    }
    // Delimited by the connection's close.
    if !eof {
        return None;
    }
    resp.body = buf[end..].to_vec();
    Some((resp, buf.len()))
}

/// Parses what [`raw`] returned: one whole response.
pub fn parse_raw(text: &str) -> RawResponse {
    let (resp, used) = parse_response(text.as_bytes(), false, true)
        .unwrap_or_else(|| panic!("incomplete response: {text:?}"));
    assert_eq!(used, text.len(), "bytes after the response: {text:?}");
    resp
}

/// A client connection that speaks bytes: send anything, read responses one
/// at a time (so several can share the connection).
pub struct RawConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = tokio::time::timeout(HANG, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        RawConn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more; false at EOF (or a reset, which reads the same here).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        let n = tokio::time::timeout(HANG, self.stream.read(&mut chunk))
            .await
            .expect("server answers in time")
            .unwrap_or(0);
        if n == 0 {
            self.eof = true;
            return false;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        true
    }

    /// The next response (its body framed as the headers say).
    pub async fn response(&mut self) -> RawResponse {
        self.read_response(false).await
    }

    /// The next response, read as the answer to a HEAD request (no body).
    pub async fn head_response(&mut self) -> RawResponse {
        self.read_response(true).await
    }

    async fn read_response(&mut self, no_body: bool) -> RawResponse {
        loop {
            if let Some((resp, used)) = parse_response(&self.buf, no_body, self.eof) {
                self.buf.drain(..used);
                return resp;
            }
            if self.eof {
                panic!(
                    "connection closed mid-response: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
            self.fill().await;
        }
    }

    /// Reads until the server closes; returns what came that was not yet
    /// parsed.
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }

    /// Bytes received but not yet taken by a response.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// The next response, or `None` when the server closed before one.
    pub async fn read_to_close_or_response(&mut self) -> Option<RawResponse> {
        loop {
            if let Some((resp, used)) = parse_response(&self.buf, false, self.eof) {
                self.buf.drain(..used);
                return Some(resp);
            }
            if self.eof {
                return None;
            }
            self.fill().await;
        }
    }
}

impl From<TcpStream> for RawConn {
    fn from(stream: TcpStream) -> RawConn {
        RawConn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }
}

/// Backend side: reads one request head from `stream` (bytes past it stay
/// in `buf`); `None` when the peer closed first.
pub async fn read_request_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = head_end(buf, 0) {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            return Some(head);
        }
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A raw origin answering every request (heads only, no request bodies)
/// with exactly `response`, on kept-alive connections.
pub fn fixed_backend(response: &'static [u8]) -> Backend {
    raw_backend(move |mut stream| async move {
        let mut buf = Vec::new();
        while read_request_head(&mut stream, &mut buf).await.is_some() {
            if stream.write_all(response).await.is_err() {
                return;
            }
        }
    })
}

// ---------------------------------------------------------------------------
// Files and processes, for the tests that run real programs.

/// A folder of its own, removed with what is in it.
pub struct Dir(pub std::path::PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        let d = TempFile::new(tag).path.clone();
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A path under the temp dir, unique to this process and call; the file is
/// removed on drop.
pub struct TempFile {
    pub path: std::path::PathBuf,
}

impl TempFile {
    pub fn new(tag: &str) -> TempFile {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tidegate-test-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempFile { path }
    }

    /// A new file holding `contents`.
    pub fn with(tag: &str, contents: &[u8]) -> TempFile {
        let f = TempFile::new(tag);
        std::fs::write(&f.path, contents).expect("write temp file");
        f
    }

    pub fn arg(&self) -> &str {
        self.path.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Polls `cond` until true, bounded by [`HANG`] (`what` names it then).
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(HANG, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// Whether `pid` runs (a zombie, exited but not yet reaped, does not).
pub fn alive(pid: i32) -> bool {
    use rustix::process::{test_kill_process, Pid};
    let running = Pid::from_raw(pid).is_some_and(|p| test_kill_process(p).is_ok());
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(") ").next().map(|r| r.starts_with('Z')))
        .unwrap_or(false);
    running && !zombie
}

/// `tidegate check --config FILE`: its exit code and stderr.
pub async fn check_config(file: &TempFile) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"));
    cmd.args(["check", "--config", file.arg()]);
    let out = run_command(cmd).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tidegate check` refuses `toml` (exit 2) with each line of `expect`
/// in its stderr (`{f}` in one stands for the file's path); returns the
/// stderr.
pub async fn check_refuses(toml: &str, expect: &[&str]) -> String {
    let file = TempFile::with("check.toml", toml.as_bytes());
    let (code, err) = check_config(&file).await;
    assert_eq!(code, Some(2), "stderr: {err}");
    for e in expect {
        let e = e.replace("{f}", file.arg());
        assert!(err.contains(&e), "want {e}\nstderr: {err}");
    }
    err
}

/// Runs `cmd` to completion off the async threads; panics if it cannot
/// start or runs past [`HANG`].
pub async fn run_command(mut cmd: std::process::Command) -> std::process::Output {
    let what = format!("{cmd:?}");
    let job = tokio::task::spawn_blocking(move || cmd.output());
    tokio::time::timeout(HANG, job)
        .await
        .unwrap_or_else(|_| panic!("{what} ran past {HANG:?}"))
        .expect("join")
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
}

impl RawConn {
    /// Reads until `needle` has arrived (it stays unparsed in the buffer),
    /// for watching a response that is still streaming.
    pub async fn wait_for(&mut self, needle: &[u8]) {
        while !self.buf.windows(needle.len()).any(|w| w == needle) {
            assert!(
                self.fill().await,
                "closed before {:?} arrived",
                String::from_utf8_lossy(needle)
            );
        }
    }
}

impl Proxy {
    /// Swaps in a new config from TOML text, as SIGHUP does; panics if it is
    /// refused. `addr` follows the first listener.
    pub fn reload(&mut self, toml: &str) {
        let config = tidegate::Config::from_toml(toml, "reload.toml").expect("valid config");
        let running = self.running.as_mut().expect("running");
        running.reload(config).expect("reload accepted");
        self.addr = running.local_addrs()[0];
    }
}

/// One request on a new connection: status, headers, and the body as text.
pub async fn exchange(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> (u16, http::HeaderMap, String) {
    let (status, h, body) = fetch(addr, method, host, path, headers, body).await;
    (status, h, String::from_utf8_lossy(&body).into_owned())
}

/// One request on a new connection: status, headers, and the body's
/// bytes as they came.
pub async fn fetch(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> (u16, http::HeaderMap, Bytes) {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let resp = tokio::time::timeout(HANG, send(addr, b.body(body).expect("request")))
        .await
        .expect("no hang")
        .expect("response");
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, h, body)
}

/// `"addr", "addr"` for a TOML `servers` array.
pub fn quoted(backends: &[&Backend]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    list.join(", ")
}

/// One thread, one listener on port 0, every path to group `app` of
/// `servers` (TOML array items); `extra` follows inside `[upstreams.app]`
/// (its keys first, then any tables).
/// Every `name` field of `h`, joined by commas (empty for none).
pub fn all_values(h: &http::HeaderMap, name: &str) -> String {
    let all: Vec<&str> = h
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    all.join(",")
}

pub fn group_config(servers: &str, extra: &str) -> String {
    format!(
        "[server]\nthreads = 1\nlog_level = \"error\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [[routes]]\nupstream = \"app\"\n[upstreams.app]\nservers = [{servers}]\n{extra}\n"
    )
}

/// A client tool's output when it succeeded (its stdout); its status,
/// stdout and stderr in the panic when it did not.
pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An address where connections are refused, kept so while the returned
/// socket lives: bound, never listening. (A port bound and let go at
/// once, as `closed_port` does for a listener to take, may be given to
/// another test's server meanwhile, which would then answer.)
pub fn dead_port() -> (SocketAddr, socket2::Socket) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let addr = s
        .local_addr()
        .expect("local address")
        .as_socket()
        .expect("an IP address");
    (addr, s)
}

/// An address where connections hang: a listener whose one-place accept
/// queue is taken (by the returned connection) and never accepted from,
/// so the kernel drops further SYNs. Kept so while the returned sockets
/// live.
pub fn hung_port() -> (SocketAddr, (socket2::Socket, std::net::TcpStream)) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    s.listen(0).expect("listen");
    let addr = s
        .local_addr()
        .expect("local address")
        .as_socket()
        .expect("an IP address");
    let queued = std::net::TcpStream::connect(addr).expect("the queue's one place");
    (addr, (s, queued))
}

/// A PROXY protocol v2 header (PROXY, TCP) naming `src` and `dst`.
pub fn pp_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    ppp::v2::Builder::with_addresses(0x21, ppp::v2::Protocol::Stream, (src, dst))
        .build()
        .expect("a v2 header")
}

/// What a PROXY protocol v2 header said.
#[derive(Debug)]
pub struct PpV2 {
    /// `source destination`, or the family's name when it carries none.
    pub addresses: String,
    /// Its TLVs: type and value.
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

impl PpV2 {
    /// The value of its TLV of type `kind` as text; "-" when it has none.
    pub fn tlv(&self, kind: u8) -> String {
        self.tlvs
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or("-".to_string(), |(_, v)| {
                String::from_utf8_lossy(v).into_owned()
            })
    }
}

/// Reads a v2 header off `s` (exactly its bytes); `None` if the
/// connection ended first or the header is not one.
pub async fn read_pp_v2(s: &mut TcpStream) -> Option<PpV2> {
    let mut h = vec![0u8; 16];
    s.read_exact(&mut h).await.ok()?;
    let len = usize::from(u16::from_be_bytes([h[14], h[15]]));
    h.resize(16 + len, 0);
    s.read_exact(&mut h[16..]).await.ok()?;
    let header = ppp::v2::Header::try_from(&h[..]).ok()?;
    let addresses = match header.addresses {
        ppp::v2::Addresses::IPv4(a) => format!(
            "{}:{} {}:{}",
            a.source_address, a.source_port, a.destination_address, a.destination_port
        ),
        ppp::v2::Addresses::IPv6(a) => format!(
            "[{}]:{} [{}]:{}",
            a.source_address, a.source_port, a.destination_address, a.destination_port
        ),
        other => format!("{:?}", other.address_family()),
    };
    let tlvs = header
        .tlvs()
        .filter_map(Result::ok)
        .map(|t| (t.kind, t.value.to_vec()))
        .collect();
    Some(PpV2 { addresses, tlvs })
}
