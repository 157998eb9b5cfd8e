//! WebSocket over HTTP/2 from clients (RFC 8441): hyper's HTTP/2 client
//! sends an extended CONNECT over h2c and over TLS, then speaks WebSocket
//! (tokio-tungstenite, client role) on the stream; the origin is a plain
//! HTTP/1.1 WebSocket server (tokio-tungstenite). Echo of text and large
//! binary messages, close from either side, refusals, a bad accept, other
//! protocols, plain CONNECT, and many WebSockets on one connection.

use std::net::SocketAddr;

use crate::common::config::TestConfig;
use crate::common::pki::{self, Ca};
use crate::common::ws::read_to_eof;
use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// What a WebSocket origin tells the test.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// The handshake request it got: method, target, and its fields.
    Head(String, String, http::HeaderMap),
    /// Its WebSocket ended (close handshake done, or the stream ended).
    WsEnded,
    /// Its TCP connection read EOF after that: the proxy closed its side.
    TcpClosed,
}

/// A WebSocket echo origin (HTTP/1.1): picks `chat` from the offered
/// subprotocols, answers each message with `prefix` + the message, and on
/// the text `bye` closes (server-initiated). Reports the handshake, the
/// end of the WebSocket and the end of its TCP connection on `events`.
fn ws_origin(prefix: &'static str) -> (Backend, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let b = raw_backend(move |stream| {
        let tx = tx.clone();
        async move {
            let seen = tx.clone();
            // The library's callback type returns its (large) error response.
            #[allow(clippy::result_large_err)]
            let callback = move |req: &WsRequest, mut resp: WsResponse| {
                let _ = seen.send(Event::Head(
                    req.method().to_string(),
                    req.uri().to_string(),
                    req.headers().clone(),
                ));
                let offered = req
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if offered.split(',').any(|p| p.trim() == "chat") {
                    resp.headers_mut().insert(
                        "sec-websocket-protocol",
                        http::HeaderValue::from_static("chat"),
                    );
                }
                resp.headers_mut()
                    .insert("x-origin", http::HeaderValue::from_static("ws"));
                Ok(resp)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                return;
            };
            crate::common::ws::echo(&mut ws, prefix).await;
            let _ = tx.send(Event::WsEnded);
            let tcp = ws.get_mut();
            let _ = tcp.shutdown().await;
            if read_to_eof(tcp).await {
                let _ = tx.send(Event::TcpClosed);
            }
        }
    });
    (b, rx)
}

/// An HTTP/2 client connection over `io` (h2c prior knowledge or TLS
/// with ALPN h2).
async fn h2<IO>(io: IO) -> SendRequest<Body>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

async fn h2c(addr: SocketAddr) -> SendRequest<Body> {
    h2(TcpStream::connect(addr).await.expect("connect")).await
}

/// An extended CONNECT for `protocol` to `url` (scheme, authority, path).
fn connect_req(url: &str, protocol: &'static str) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(url)
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "superchat, chat")
        .header("origin", "http://example.test")
        .body(empty())
        .expect("request");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static(protocol));
    req
}

async fn send(
    sender: &mut SendRequest<Body>,
    req: Request<Body>,
) -> Response<hyper::body::Incoming> {
    tokio::time::timeout(HANG, sender.send_request(req))
        .await
        .expect("response in time")
        .expect("response")
}

/// Opens a WebSocket on a new stream of `sender`'s connection.
async fn ws_open(sender: &mut SendRequest<Body>, url: &str) -> (Ws, http::HeaderMap) {
    let resp = send(sender, connect_req(url, "websocket")).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    let headers = resp.headers().clone();
    let io = tokio::time::timeout(HANG, hyper::upgrade::on(resp))
        .await
        .expect("upgrade in time")
        .expect("upgraded stream");
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Client, None).await;
    (ws, headers)
}

async fn next(ws: &mut Ws) -> Option<Message> {
    match tokio::time::timeout(HANG, ws.next()).await {
        Err(_) => panic!("no message in time"),
        Ok(Some(Ok(m))) => Some(m),
        Ok(Some(Err(_))) | Ok(None) => None,
    }
}

async fn echo(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).await.expect("send");
    match next(ws).await {
        Some(Message::Text(t)) => t.as_str().to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

async fn event(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(HANG, rx.recv())
        .await
        .expect("origin event in time")
        .expect("origin alive")
}

async fn head(rx: &mut mpsc::UnboundedReceiver<Event>) -> (String, String, http::HeaderMap) {
    match event(rx).await {
        Event::Head(m, t, h) => (m, t, h),
        other => panic!("expected the handshake, got {other:?}"),
    }
}

/// Client-initiated close: the close handshake completes through the
/// proxy, and the origin's connection is closed after it.
async fn close_from_client(mut ws: Ws, events: &mut mpsc::UnboundedReceiver<Event>) {
    ws.close(None).await.expect("close");
    while let Some(m) = next(&mut ws).await {
        assert!(m.is_close(), "after close: {m:?}");
    }
    assert_eq!(event(events).await, Event::WsEnded);
    // The client ends its stream (END_STREAM); the proxy passes that on,
    // and the origin's own close comes back as the stream's end.
    let io = ws.get_mut();
    let _ = io.shutdown().await;
    assert!(read_to_eof(io).await, "the stream ended cleanly");
    assert_eq!(event(events).await, Event::TcpClosed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_websocket_echo_headers_and_client_close() {
    let (origin, mut events) = ws_origin("");
    let log = TempFile::new("ws-h2-access.log");
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .log_level("error")
            .set("server.access_log", log.arg())
            .toml(),
    );
    // The extended CONNECT is accepted: the server enabled it in its
    // SETTINGS (h2 refuses `:protocol` otherwise).
    let mut sender = h2c(proxy.addr).await;
    let (mut ws, resp) = ws_open(&mut sender, "http://ws.example:8080/chat?room=1").await;
    assert_eq!(resp["sec-websocket-protocol"], "chat");
    assert_eq!(resp["x-origin"], "ws");
    assert_eq!(resp["via"], "1.1 tidegate");
    assert!(!resp.contains_key("sec-websocket-accept"));
    assert!(!resp.contains_key("upgrade") && !resp.contains_key("connection"));

    // The origin saw the HTTP/1.1 handshake RFC 8441 §5 maps it to.
    let (method, target, h) = head(&mut events).await;
    assert_eq!(method, "GET");
    assert_eq!(target, "/chat?room=1");
    assert_eq!(h["host"], "ws.example:8080");
    assert_eq!(h["upgrade"], "websocket");
    assert!(h["connection"]
        .to_str()
        .unwrap()
        .eq_ignore_ascii_case("upgrade"));
    assert_eq!(h["sec-websocket-version"], "13");
    assert_eq!(h["sec-websocket-protocol"], "superchat, chat");
    assert_eq!(h["origin"], "http://example.test");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["via"], "2 tidegate");
    let key = h["sec-websocket-key"].to_str().unwrap();
    assert_eq!(key.len(), 24, "16 bytes in base64: {key}");

    for i in 0..20 {
        let text = format!("message {i}");
        assert_eq!(echo(&mut ws, &text).await, text);
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send");
    assert_eq!(
        next(&mut ws).await,
        Some(Message::binary(vec![0u8, 1, 2, 255]))
    );
    close_from_client(ws, &mut events).await;

    // The connection goes on with other streams.
    let (mut again, _) = ws_open(&mut sender, "http://ws.example/again").await;
    let (_, target, _) = head(&mut events).await;
    assert_eq!(target, "/again");
    assert_eq!(echo(&mut again, "again").await, "again");
    close_from_client(again, &mut events).await;
    drop(sender);

    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    let text = std::fs::read_to_string(&log.path).expect("log written");
    let line = text
        .lines()
        .find(|l| l.contains("\"CONNECT /chat?room=1 HTTP/2.0\""))
        .unwrap_or_else(|| panic!("no line for the WebSocket: {text}"));
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f[5], "200", "{line}");
    assert!(
        f[6].parse::<u64>().unwrap() > 0,
        "bytes through the tunnel: {line}"
    );
    assert_eq!(f[7], origin.addr.to_string(), "{line}");
    assert_eq!(f[9], "done", "{line}");
    assert_eq!(f[10], "ws.example:8080", "the authority: {line}");
}

fn tls_proxy(origin: SocketAddr, ca: &Ca) -> (Proxy, crate::common::pki::Leaf) {
    let a = ca.server(&["a.test"]);
    let proxy = Proxy::start(
        &TestConfig::proxying(origin)
            .listener_tls(&[(a.cert_file.arg(), a.key_file.arg())])
            .toml(),
    );
    (proxy, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_websocket_large_messages_byte_for_byte() {
    let (origin, mut events) = ws_origin("");
    let ca = Ca::new("Test CA");
    let (proxy, _leaf) = tls_proxy(origin.addr, &ca);
    let s = pki::Client::trusting(&ca)
        .connect(proxy.addr, "a.test")
        .await
        .expect("tls");
    assert!(pki::is_h2(&s));
    let mut sender = h2(s).await;
    let (ws, _) = ws_open(&mut sender, "https://a.test/big").await;
    let (_, _, h) = head(&mut events).await;
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["host"], "a.test");

    let ws = crate::common::ws::large_messages_round_trip(ws).await;
    close_from_client(ws, &mut events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_initiated_close_over_tls() {
    let (origin, mut events) = ws_origin("");
    let ca = Ca::new("Test CA");
    let (proxy, _leaf) = tls_proxy(origin.addr, &ca);
    let s = pki::Client::trusting(&ca)
        .connect(proxy.addr, "a.test")
        .await
        .expect("tls");
    let mut sender = h2(s).await;
    let (mut ws, _) = ws_open(&mut sender, "https://a.test/").await;
    head(&mut events).await;
    assert_eq!(echo(&mut ws, "hi").await, "hi");
    ws.send(Message::text("bye")).await.expect("send");
    match next(&mut ws).await {
        Some(Message::Close(Some(f))) => {
            assert_eq!(f.code, CloseCode::Normal);
            assert_eq!(f.reason.as_str(), "bye");
        }
        other => panic!("expected the origin's close, got {other:?}"),
    }
    // The library answers the close; then the stream ends.
    if let Some(m) = next(&mut ws).await {
        panic!("after close: {m:?}");
    }
    assert_eq!(event(&mut events).await, Event::WsEnded);
    // The origin ended its TCP stream: the proxy ends the h2 stream.
    let io = ws.get_mut();
    assert!(read_to_eof(io).await, "proxy ended the stream");
    let _ = io.shutdown().await;
    assert_eq!(event(&mut events).await, Event::TcpClosed);
    // The connection is still good for more.
    let (mut again, _) = ws_open(&mut sender, "https://a.test/").await;
    head(&mut events).await;
    assert_eq!(echo(&mut again, "again").await, "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_websockets_on_one_connection() {
    let (origin, _events) = ws_origin("");
    let proxy = Proxy::to(origin.addr, "");
    let sender = h2c(proxy.addr).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = ws_open(&mut sender, &format!("http://a.test/ws/{i}")).await;
            for j in 0..10 {
                let text = format!("stream {i} message {j}");
                assert_eq!(echo(&mut ws, &text).await, text);
            }
            let data = Stream::new(i).chunk(256 << 10);
            ws.send(Message::binary(data.clone())).await.expect("send");
            match next(&mut ws).await {
                Some(Message::Binary(b)) => assert!(b == data, "stream {i} differs"),
                other => panic!("stream {i}: {other:?}"),
            }
            ws.close(None).await.expect("close");
            while next(&mut ws).await.is_some() {}
        }));
    }
    for t in tasks {
        tokio::time::timeout(HANG, t)
            .await
            .expect("no hang")
            .expect("stream ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upgrade_is_an_error_response() {
    let origin = backend(|req: Request<hyper::body::Incoming>| async move {
        match req.uri().path() {
            "/bad" => text(400, "no websocket here"),
            "/moved" => {
                let mut r = text(302, "");
                r.headers_mut()
                    .insert("location", http::HeaderValue::from_static("/elsewhere"));
                r
            }
            // 200 without switching: the h2 client must not see a 2xx.
            _ => text(200, "plain page"),
        }
    });
    let proxy = Proxy::to(origin.addr, "");
    let mut sender = h2c(proxy.addr).await;
    use http_body_util::BodyExt;

    let resp = send(&mut sender, connect_req("http://a.test/bad", "websocket")).await;
    assert_eq!(resp.status(), 400);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, "no websocket here");

    let resp = send(&mut sender, connect_req("http://a.test/moved", "websocket")).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "/elsewhere");

    let resp = send(&mut sender, connect_req("http://a.test/page", "websocket")).await;
    assert_eq!(resp.status(), 502);

    // The connection goes on.
    let resp = send(
        &mut sender,
        Request::get("http://a.test/page").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_with_a_wrong_accept_is_a_502() {
    let (tx, mut heads) = mpsc::unbounded_channel();
    // Switches without a valid Sec-WebSocket-Accept (or with none).
    let origin = raw_backend(move |mut stream| {
        let tx = tx.clone();
        async move {
            let mut buf = Vec::new();
            let Some(head) = read_request_head(&mut stream, &mut buf).await else {
                return;
            };
            let accept = if head.contains("GET /none ") {
                ""
            } else {
                "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            };
            let _ = tx.send(head);
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\n{accept}\r\n"
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            // The proxy gives up on the connection: it closes.
            let _ = read_to_eof(&mut stream).await;
        }
    });
    let proxy = Proxy::to(origin.addr, "");
    let mut sender = h2c(proxy.addr).await;
    for path in ["/wrong", "/none"] {
        let resp = send(
            &mut sender,
            connect_req(&format!("http://a.test{path}"), "websocket"),
        )
        .await;
        assert_eq!(resp.status(), 502, "{path}");
        let head = heads.recv().await.expect("head");
        // The key is fresh, not RFC 6455's sample.
        assert!(!head.contains("dGhlIHNhbXBsZSBub25jZQ=="), "{head}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_protocols_and_plain_connect_are_refused() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let origin = backend(move |req: Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(format!("{} {}", req.method(), req.uri()));
            text(200, "reached")
        }
    });
    let proxy = Proxy::to(origin.addr, "");
    let mut sender = h2c(proxy.addr).await;
    let resp = send(&mut sender, connect_req("http://a.test/udp", "connect-udp")).await;
    assert_eq!(resp.status(), 501);
    // A plain CONNECT (no :protocol) is not proxied: it matches no route.
    let resp = send(
        &mut sender,
        Request::connect("a.test:443").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 404);
    // Nothing reached the origin; the connection still works.
    let resp = send(
        &mut sender,
        Request::get("http://a.test/ok").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(seen.recv().await.unwrap(), "GET /ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_ends_the_stream_and_the_upstream_connection() {
    let (origin, mut events) = ws_origin("");
    let proxy = Proxy::to(origin.addr, "[timeouts]\ntunnel_idle = \"300ms\"\n");
    let mut sender = h2c(proxy.addr).await;
    let (mut ws, _) = ws_open(&mut sender, "http://a.test/").await;
    head(&mut events).await;
    assert_eq!(echo(&mut ws, "one").await, "one");
    // Nothing more is sent: the proxy ends the stream and the upstream
    // connection.
    assert_eq!(next(&mut ws).await, None);
    assert_eq!(event(&mut events).await, Event::WsEnded);
    assert_eq!(event(&mut events).await, Event::TcpClosed);
    // The client connection itself goes on.
    let (mut again, _) = ws_open(&mut sender, "http://a.test/").await;
    head(&mut events).await;
    assert_eq!(echo(&mut again, "two").await, "two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_open_h2_tunnels_after_the_grace_period() {
    let (origin, mut events) = ws_origin("");
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .threads(1)
            .log_level("error")
            .set("server.shutdown_grace", "300ms")
            .toml(),
    );
    let mut sender = h2c(proxy.addr).await;
    let (mut ws, _) = ws_open(&mut sender, "http://a.test/").await;
    head(&mut events).await;
    assert_eq!(echo(&mut ws, "still here").await, "still here");
    // Shutdown ends although the tunnel stays open.
    tokio::time::timeout(HANG, tokio::task::spawn_blocking(move || proxy.stop()))
        .await
        .expect("shutdown ends")
        .unwrap();
    assert_eq!(next(&mut ws).await, None);
    assert_eq!(event(&mut events).await, Event::WsEnded);
    assert_eq!(event(&mut events).await, Event::TcpClosed);
}
