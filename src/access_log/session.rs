//! The line of a `[[streams]]` connection (an L4 session), written when
//! it closes: who, where to, how it ended, the bytes each way and how
//! long it lasted, as nginx's `stream` log has them (its status codes
//! too: 200 done, 400 the ClientHello unreadable, 403 refused by
//! `access`, 502 no upstream reached). JSON with `access_log_format =
//! "json"`; a line of text in the default format's shape otherwise
//! (request templates have no place for a session's fields).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use super::lines::{json_str, write_addr, write_iso_millis, write_secs};

/// A stream connection as it ended.
pub(crate) struct Session<'a> {
    pub client: SocketAddr,
    /// The stream's configured address.
    pub listener: SocketAddr,
    pub status: u16,
    /// Bytes read from the client, and written to it.
    pub received: u64,
    pub sent: u64,
    /// The server connected to, if any.
    pub upstream: Option<SocketAddr>,
    /// The server name the client asked for (TLS), if known.
    pub sni: Option<&'a str>,
    pub duration: Duration,
    /// How it ended, in the proxy's words (`closed`, `idle_timeout`...).
    pub outcome: &'a str,
}

/// `2026-12-04T19:04:37.123Z 10.0.0.1:51234 "TCP 0.0.0.0:5432" 200 812
/// 20411 10.0.1.5:5432 12.0402 closed db.example.com`.
pub(super) fn text_line(buf: &mut Vec<u8>, s: &Session<'_>) {
    write_iso_millis(buf);
    buf.push(b' ');
    write_addr(buf, &s.client);
    buf.extend_from_slice(b" \"TCP ");
    write_addr(buf, &s.listener);
    let _ = write!(buf, "\" {} {} {} ", s.status, s.received, s.sent);
    match &s.upstream {
        Some(a) => write_addr(buf, a),
        None => buf.push(b'-'),
    }
    buf.push(b' ');
    write_secs(buf, s.duration.as_micros(), 4);
    let _ = writeln!(buf, " {} {}", s.outcome, s.sni.unwrap_or("-"));
}

pub(super) fn json_line(buf: &mut Vec<u8>, s: &Session<'_>) {
    buf.extend_from_slice(b"{\"time\":\"");
    write_iso_millis(buf);
    buf.extend_from_slice(b"\",\"client\":\"");
    write_addr(buf, &s.client);
    buf.extend_from_slice(b"\",\"listener\":\"");
    write_addr(buf, &s.listener);
    let _ = write!(
        buf,
        "\",\"protocol\":\"TCP\",\"status\":{},\"bytes_received\":{},\"bytes_sent\":{},\"upstream\":",
        s.status, s.received, s.sent
    );
    match &s.upstream {
        Some(a) => {
            buf.push(b'"');
            write_addr(buf, a);
            buf.push(b'"');
        }
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"sni\":");
    match s.sni {
        Some(n) => json_str(buf, n),
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"duration\":");
    write_secs(buf, s.duration.as_micros(), 6);
    buf.extend_from_slice(b",\"outcome\":\"");
    buf.extend_from_slice(s.outcome.as_bytes());
    buf.extend_from_slice(b"\"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json() {
        let s = Session {
            client: "10.0.0.1:51234".parse().unwrap(),
            listener: "0.0.0.0:5432".parse().unwrap(),
            status: 200,
            received: 812,
            sent: 20411,
            upstream: Some("10.0.1.5:5432".parse().unwrap()),
            sni: Some("db.example.com"),
            duration: Duration::from_micros(12_040_250),
            outcome: "closed",
        };
        let mut buf = Vec::new();
        text_line(&mut buf, &s);
        let line = String::from_utf8(buf).unwrap();
        let (_, rest) = line.split_once(' ').unwrap();
        assert_eq!(
            rest,
            "10.0.0.1:51234 \"TCP 0.0.0.0:5432\" 200 812 20411 10.0.1.5:5432 12.0402 closed db.example.com\n"
        );
        let mut buf = Vec::new();
        json_line(
            &mut buf,
            &Session {
                upstream: None,
                sni: None,
                ..s
            },
        );
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["client"], "10.0.0.1:51234");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes_received"], 812);
        assert_eq!(v["bytes_sent"], 20411);
        assert_eq!(v["upstream"], serde_json::Value::Null);
        assert_eq!(v["sni"], serde_json::Value::Null);
        assert_eq!(v["duration"], 12.04025);
        assert_eq!(v["outcome"], "closed");
    }
}
