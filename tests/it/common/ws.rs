//! WebSocket origins' shared part: the echo loop and the end of the TCP
//! connection after it.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::HANG;

/// Answers each text or binary message with `prefix` + the message; on the
/// text `bye` closes (server-initiated). Returns when the WebSocket ends.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, prefix: &str) {
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match msg {
            Message::Text(t) if t.as_str() == "bye" => {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bye".into(),
                };
                let _ = ws.close(Some(frame)).await;
                continue;
            }
            Message::Text(t) => Message::text(format!("{prefix}{}", t.as_str())),
            Message::Binary(b) => {
                let mut v = prefix.as_bytes().to_vec();
                v.extend_from_slice(&b);
                Message::binary(v)
            }
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}

/// Reads until EOF; false on an error.
pub async fn read_to_eof<S: AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(HANG, s.read(&mut buf)).await {
            Err(_) => panic!("socket not closed in time"),
            Ok(Ok(0)) => return true,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return false,
        }
    }
}

/// Sends binary messages of 5 MiB, 3 MiB, 1 byte and 7 MiB from a task of
/// their own while reading them back from an echo origin (empty prefix),
/// each byte for byte; returns the WebSocket, whole again, for its close.
pub async fn large_messages_round_trip<S>(ws: WebSocketStream<S>) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, mut rx) = ws.split();
    let sizes = [5 << 20, 3 << 20, 1, 7 << 20];
    let sender = tokio::spawn(async move {
        for (i, n) in sizes.into_iter().enumerate() {
            let data = super::Stream::new(i as u64).chunk(n);
            tx.send(Message::binary(data)).await.expect("send");
        }
        tx
    });
    for (i, n) in sizes.into_iter().enumerate() {
        let got = match tokio::time::timeout(HANG, rx.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Binary(b))) => b,
            other => panic!("message {i}: {other:?}"),
        };
        let want: bytes::Bytes = super::Stream::new(i as u64).chunk(n);
        assert_eq!(got.len(), want.len(), "message {i}");
        assert!(got == want, "message {i} differs");
    }
    let tx = sender.await.unwrap();
    tx.reunite(rx).expect("same stream")
}
