//! HTTP/1.1 upgrades through the proxy: WebSocket with a real client and
//! server library (tokio-tungstenite), another protocol on raw bytes,
//! refused upgrades, close from either side, the tunnel idle timeout,
//! reload and shutdown with tunnels open, and the access log's line.

use std::net::SocketAddr;

use crate::common::config::TestConfig;
use crate::common::ws::read_to_eof;
use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// What a WebSocket origin tells the test.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// Its WebSocket ended (close handshake done, or the stream ended).
    WsEnded,
    /// Its TCP connection read EOF after that: the proxy closed its side.
    TcpClosed,
}

/// A WebSocket echo origin: answers each text or binary message with
/// `prefix` + the message; on the text `bye` it closes (server-initiated).
/// After the WebSocket ends it half-closes and reads the socket to EOF,
/// reporting both steps on `events`.
fn ws_origin(prefix: &'static str) -> (Backend, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let b = raw_backend(move |stream| {
        let tx = tx.clone();
        async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
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

async fn ws_connect(addr: SocketAddr, path: &str) -> Ws {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (ws, resp) = tokio::time::timeout(
        HANG,
        tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["upgrade"], "websocket");
    assert!(resp.headers()["connection"]
        .to_str()
        .unwrap()
        .eq_ignore_ascii_case("upgrade"));
    assert_eq!(resp.headers()["via"], "1.1 tidegate");
    ws
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

/// Stops the proxy off the async threads (it waits for its workers).
async fn stop(proxy: Proxy) {
    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_and_client_close() {
    let (origin, mut events) = ws_origin("");
    let log = TempFile::new("ws-access.log");
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .log_level("error")
            .set("server.access_log", log.arg())
            .toml(),
    );
    let mut ws = ws_connect(proxy.addr, "/chat?room=1").await;
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

    // Client-initiated close: the handshake completes through the proxy.
    ws.close(None).await.expect("close");
    while let Some(m) = next(&mut ws).await {
        assert!(m.is_close(), "after close: {m:?}");
    }
    assert_eq!(event(&mut events).await, Event::WsEnded);
    // The client ends its TCP stream; the proxy passes the close on to the
    // origin, whose own close comes back: both connections end.
    let tcp = ws.get_mut();
    let _ = tcp.shutdown().await;
    assert!(read_to_eof(tcp).await, "client side closed cleanly");
    assert_eq!(event(&mut events).await, Event::TcpClosed);

    stop(proxy).await;
    let text = std::fs::read_to_string(&log.path).expect("log written");
    let line = text
        .lines()
        .find(|l| l.contains("\"GET /chat?room=1 HTTP/1.1\""))
        .unwrap_or_else(|| panic!("no line for the upgrade: {text}"));
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f[5], "101", "{line}");
    assert!(
        f[6].parse::<u64>().unwrap() > 0,
        "bytes through the tunnel: {line}"
    );
    assert_eq!(f[7], origin.addr.to_string(), "{line}");
    assert_eq!(f[9], "done", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_initiated_close() {
    let (origin, mut events) = ws_origin("");
    let proxy = Proxy::to(origin.addr, "");
    let mut ws = ws_connect(proxy.addr, "/").await;
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
    // The origin ended its TCP stream: the proxy passes that on.
    let tcp = ws.get_mut();
    assert!(read_to_eof(tcp).await, "proxy closed the client side");
    let _ = tcp.shutdown().await;
    assert_eq!(event(&mut events).await, Event::TcpClosed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_arrive_byte_for_byte() {
    let (origin, _events) = ws_origin("");
    let proxy = Proxy::to(origin.addr, "");
    let ws = ws_connect(proxy.addr, "/").await;
    let mut ws = crate::common::ws::large_messages_round_trip(ws).await;
    ws.close(None).await.expect("close");
    while next(&mut ws).await.is_some() {}
}

/// A raw origin for `Upgrade: foo`: checks the request, answers 101, then
/// echoes bytes until EOF and closes. Sends the request head it saw.
fn foo_origin() -> (Backend, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let b = raw_backend(move |mut stream| {
        let tx = tx.clone();
        async move {
            let mut buf = Vec::new();
            let Some(head) = read_request_head(&mut stream, &mut buf).await else {
                return;
            };
            let _ = tx.send(head);
            let resp = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                          Upgrade: foo\r\nX-Origin: yes\r\n\r\n";
            if stream.write_all(resp).await.is_err() {
                return;
            }
            // Bytes that came with the head first.
            if stream.write_all(&buf).await.is_err() {
                return;
            }
            let mut chunk = [0u8; 8192];
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = stream.shutdown().await;
        }
    });
    (b, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_protocol_upgrade_tunnels_raw_bytes() {
    let (origin, mut heads) = foo_origin();
    let proxy = Proxy::to(origin.addr, "");
    let mut conn = RawConn::connect(proxy.addr).await;
    // Bytes of the new protocol right behind the head, before the 101.
    conn.send(
        b"GET /foo HTTP/1.1\r\nHost: example\r\nConnection: keep-alive, Upgrade\r\n\
          Upgrade: foo\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n\r\nearly-bytes|",
    )
    .await;
    let resp = conn.response().await;
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("upgrade"), Some("foo"));
    assert_eq!(resp.header("connection"), Some("upgrade"));
    assert_eq!(resp.header("x-origin"), Some("yes"));
    assert!(!resp.has("content-length") && !resp.has("transfer-encoding"));
    let head = tokio::time::timeout(HANG, heads.recv())
        .await
        .unwrap()
        .unwrap()
        .to_ascii_lowercase();
    assert!(head.contains("\r\nupgrade: foo\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(!head.contains("keep-alive"), "hop-by-hop dropped: {head}");
    assert!(head.contains("\r\nx-hop: 1\r\n"), "{head}");

    conn.wait_for(b"early-bytes|").await;
    conn.send(b"hello through the tunnel").await;
    conn.wait_for(b"hello through the tunnel").await;
    let big = Stream::new(7).chunk(3 << 20);
    let (mut rd, mut wr) = conn.stream.into_split();
    let sent = big.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.expect("write");
        wr.shutdown().await.expect("half-close");
        wr
    });
    // The echo of `big`, then EOF: the client's half-close reached the
    // origin, which closed, and the proxy closed the client side.
    let mut got = Vec::new();
    tokio::time::timeout(HANG, rd.read_to_end(&mut got))
        .await
        .expect("closed in time")
        .expect("read to close");
    let _wr = writer.await.unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got[..] == big[..], "echo differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upgrade_is_an_ordinary_response() {
    let origin = backend(|req: http::Request<hyper::body::Incoming>| async move {
        let asked = req
            .headers()
            .get("upgrade")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        match req.uri().path() {
            "/bad" => text(400, &format!("no {asked} here")),
            _ => text(200, &format!("plain answer; asked for {asked:?}")),
        }
    });
    let proxy = Proxy::to(origin.addr, "");
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(
        b"GET /bad HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let resp = conn.response().await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.text(), "no websocket here");
    assert!(!resp.has("upgrade"));
    // The client connection goes on with HTTP.
    conn.send(b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n")
        .await;
    let resp = conn.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "plain answer; asked for \"foo\"");
    conn.send(b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let resp = conn.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "plain answer; asked for \"\"");

    // A real WebSocket client gets the refusal as an HTTP error.
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    match tokio_tungstenite::client_async(format!("ws://{}/bad", proxy.addr), tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400)
        }
        Err(e) => panic!("expected the 400, got {e}"),
        Ok(_) => panic!("expected the 400, got a WebSocket"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_without_connection_option_is_not_an_upgrade() {
    let origin = backend(|req: http::Request<hyper::body::Incoming>| async move {
        let seen = format!(
            "{:?} {:?}",
            req.headers().get("upgrade"),
            req.headers().get("connection")
        );
        text(200, &seen)
    });
    let proxy = Proxy::to(origin.addr, "");
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")
        .await;
    let resp = conn.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "None None");
    // Nor is h2c (its settings field is hop-by-hop; RFC 9113 dropped it).
    conn.send(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    let resp = conn.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "None None");
    // HTTP/1.0 has no upgrades.
    conn.send(b"GET / HTTP/1.0\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await;
    let resp = conn.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "None None");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_is_closed() {
    let (origin, mut events) = ws_origin("");
    let proxy = Proxy::to(origin.addr, "[timeouts]\ntunnel_idle = \"300ms\"\n");
    let mut ws = ws_connect(proxy.addr, "/").await;
    assert_eq!(echo(&mut ws, "one").await, "one");
    // Nothing more is sent: the proxy closes both sides.
    assert_eq!(next(&mut ws).await, None);
    assert_eq!(event(&mut events).await, Event::WsEnded);
    assert_eq!(event(&mut events).await, Event::TcpClosed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_survives_reload() {
    let (a, _a_events) = ws_origin("a:");
    let (b, _b_events) = ws_origin("b:");
    let mut proxy = Proxy::to(a.addr, "");
    let mut old = ws_connect(proxy.addr, "/").await;
    assert_eq!(echo(&mut old, "x").await, "a:x");
    proxy.reload(&config_to(b.addr, ""));
    // New upgrades go to the new config's origin...
    let mut new = ws_connect(proxy.addr, "/").await;
    assert_eq!(echo(&mut new, "y").await, "b:y");
    // ...while the tunnel opened before goes on, with its origin.
    for i in 0..5 {
        assert_eq!(echo(&mut old, &i.to_string()).await, format!("a:{i}"));
    }
    for ws in [&mut old, &mut new] {
        ws.close(None).await.expect("close");
        while next(ws).await.is_some() {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_open_tunnels_after_the_grace_period() {
    let (origin, mut events) = ws_origin("");
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .threads(1)
            .log_level("error")
            .set("server.shutdown_grace", "300ms")
            .toml(),
    );
    let mut ws = ws_connect(proxy.addr, "/").await;
    assert_eq!(echo(&mut ws, "still here").await, "still here");
    // Shutdown ends although the tunnel stays open.
    tokio::time::timeout(HANG, stop(proxy))
        .await
        .expect("shutdown ends");
    assert_eq!(next(&mut ws).await, None);
    assert_eq!(event(&mut events).await, Event::WsEnded);
    assert_eq!(event(&mut events).await, Event::TcpClosed);
}
