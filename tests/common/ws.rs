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
