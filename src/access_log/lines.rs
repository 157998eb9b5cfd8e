//! The line formats: `default`, nginx's `combined` (byte for byte),
//! `json`, and `$variable` templates; with the hand-written pieces they
//! share (addresses, the cached time texts, nginx's escaping).

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::time::SystemTime;

use http::{HeaderName, HeaderValue, Uri, Version};

use super::{End, Entry};
use crate::config::{Piece, Var};

/// Writes `n` in decimal at `out[at..]`; where it ended. (std's
/// formatting machinery costs more than the whole rest of a line for an
/// address.)
fn put_decimal(out: &mut [u8; 24], at: usize, n: u16) -> usize {
    let len = match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    // Backwards, in place: no copy of a digit buffer.
    let mut n = n;
    for i in (at..at + len).rev() {
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    at + len
}

/// `a.b.c.d` (and `:port`) into a stack buffer, written to `buf` at once.
fn write_v4(buf: &mut Vec<u8>, ip: std::net::Ipv4Addr, port: Option<u16>) {
    // 15 for the address, 6 for `:port`.
    let mut out = [0u8; 24];
    let mut at = 0;
    for (i, o) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out[at] = b'.';
            at += 1;
        }
        at = put_decimal(&mut out, at, u16::from(o));
    }
    if let Some(p) = port {
        out[at] = b':';
        at = put_decimal(&mut out, at + 1, p);
    }
    buf.extend_from_slice(&out[..at]);
}

/// `ip` (IPv4 by hand, IPv6 as std writes it).
fn write_ip(buf: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => write_v4(buf, v4, None),
        std::net::IpAddr::V6(_) => {
            let _ = write!(buf, "{ip}");
        }
    }
}

/// `ip:port` (`[ip]:port` for IPv6), as `SocketAddr`'s `Display` writes it.
pub(super) fn write_addr(buf: &mut Vec<u8>, a: &SocketAddr) {
    match a {
        SocketAddr::V4(v4) => write_v4(buf, *v4.ip(), Some(v4.port())),
        SocketAddr::V6(_) => {
            let _ = write!(buf, "{a}");
        }
    }
}

/// `us` microseconds as seconds with `places` (1 to 6) decimal places,
/// the rest cut off (`0.000123` with six, `0.0001` with four), by integer
/// arithmetic: a float's text (ryu's shortest, or `{:.4}`) cost more than
/// the rest of a line's numbers.
pub(super) fn write_secs(buf: &mut Vec<u8>, us: u128, places: u32) {
    let secs = u64::try_from(us / 1_000_000).unwrap_or(u64::MAX);
    buf.extend_from_slice(itoa::Buffer::new().format(secs).as_bytes());
    // `places` digits, leading zeros kept: 10^places + the fraction, its
    // "1" dropped.
    let unit = 10u32.pow(places);
    let frac = (us % 1_000_000) as u32 / (1_000_000 / unit);
    let mut digits = itoa::Buffer::new();
    buf.push(b'.');
    buf.extend_from_slice(&digits.format(unit + frac).as_bytes()[1..]);
}

/// The target in origin form (the authority has fields of its own).
fn origin_form(u: &Uri) -> &dyn std::fmt::Display {
    match u.path_and_query() {
        Some(pq) => pq,
        None => u,
    }
}

fn upstream<'a>(end: &'a End<'_>) -> &'a dyn std::fmt::Display {
    match &end.upstream {
        Some(a) => a,
        None => &"-",
    }
}

fn host(e: &Entry) -> &str {
    e.host
        .as_ref()
        .map_or("-", crate::message::admit::Authority::as_str)
}

pub(super) fn default_line(buf: &mut Vec<u8>, e: &Entry, end: &End<'_>) {
    write_iso_millis(buf);
    let us = end.elapsed.as_micros();
    buf.push(b' ');
    write_addr(buf, &e.client);
    let _ = write!(
        buf,
        " \"{} {} {:?}\" {} {} ",
        e.method,
        origin_form(&e.target),
        e.version,
        end.status,
        end.bytes,
    );
    match &end.upstream {
        Some(a) => write_addr(buf, a),
        None => buf.push(b'-'),
    }
    buf.push(b' ');
    write_secs(buf, us, 4);
    let _ = writeln!(buf, " {} {}", end.outcome, host(e));
}

/// The time texts of the current second, made once per second per thread
/// (as nginx caches its time strings): RFC 3339 up to the seconds, and
/// `$time_local`.
struct Clock {
    second: u64,
    iso: String,
    local: String,
}

thread_local! {
    static CLOCK: RefCell<Clock> = const {
        RefCell::new(Clock {
            second: u64::MAX,
            iso: String::new(),
            local: String::new(),
        })
    };
}

/// Runs `f` with now's cached texts and its milliseconds.
fn with_clock<R>(f: impl FnOnce(&Clock, u32) -> R) -> R {
    let now = SystemTime::now();
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    CLOCK.with(|c| {
        let mut c = c.borrow_mut();
        if c.second != since.as_secs() {
            c.second = since.as_secs();
            // `2026-12-02T15:30:00Z`: the `Z` is added with the millis.
            let mut iso = humantime::format_rfc3339_seconds(now).to_string();
            iso.pop();
            c.local = time_local_of(&iso);
            c.iso = iso;
        }
        f(&c, since.subsec_millis())
    })
}

/// `2026-12-02T15:30:00.123Z`.
pub(super) fn write_iso_millis(buf: &mut Vec<u8>) {
    with_clock(|c, ms| {
        buf.extend_from_slice(c.iso.as_bytes());
        let ms = ms.min(999);
        buf.extend_from_slice(&[
            b'.',
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
    });
}

#[cfg(test)]
fn time_local() -> String {
    with_clock(|c, _| c.local.clone())
}

/// nginx's `$time_local` in UTC, `02/Dec/2026:15:30:00 +0000`, from
/// `2026-12-02T15:30:00`.
fn time_local_of(t: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = t
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .unwrap_or(&"Jan");
    format!(
        "{}/{month}/{}:{} +0000",
        t.get(8..10).unwrap_or("01"),
        t.get(0..4).unwrap_or("1970"),
        t.get(11..19).unwrap_or("00:00:00")
    )
}

/// Writes `v` as nginx's default log escaping does: `"`, `\`, control
/// bytes and bytes above 0x7E as `\xHH`.
fn escaped(buf: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(buf, "\\x{b:02X}");
        } else {
            buf.push(b);
        }
    }
}

/// `$remote_user`: the user basic auth let in, or `-`.
fn remote_user(buf: &mut Vec<u8>, e: &Entry) {
    match &e.user {
        Some(u) => escaped(buf, u.as_bytes()),
        None => buf.push(b'-'),
    }
}

fn field(e: &Entry, i: usize) -> Option<&HeaderValue> {
    e.headers.get(i).and_then(Option::as_ref)
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

pub(super) fn combined_line(buf: &mut Vec<u8>, e: &Entry, end: &End<'_>) {
    write_ip(buf, e.client.ip());
    buf.extend_from_slice(b" - ");
    remote_user(buf, e);
    buf.extend_from_slice(b" [");
    with_clock(|c, _| buf.extend_from_slice(c.local.as_bytes()));
    buf.extend_from_slice(b"] \"");
    escaped(
        buf,
        format!(
            "{} {} {}",
            e.method,
            origin_form(&e.target),
            protocol(e.version)
        )
        .as_bytes(),
    );
    let _ = write!(buf, "\" {} {} \"", end.status, end.bytes);
    // Referer, then User-Agent: the order `LogFormat::headers` gives.
    for i in 0..2 {
        match field(e, i) {
            Some(v) => escaped(buf, v.as_bytes()),
            None => buf.push(b'-'),
        }
        buf.extend_from_slice(if i == 0 { b"\" \"" } else { b"\"\n" });
    }
}

/// A `json` line: one object, its keys always in this order, written
/// directly (the fixed parts are constants; only text from the request
/// can need escaping, and goes through serde_json when it does).
pub(super) fn json_line(buf: &mut Vec<u8>, e: &Entry, end: &End<'_>) {
    buf.extend_from_slice(b"{\"time\":\"");
    write_iso_millis(buf);
    buf.extend_from_slice(b"\",\"client\":\"");
    write_addr(buf, &e.client);
    // A method is a token (RFC 9110 §9.1): nothing in it needs escaping.
    buf.extend_from_slice(b"\",\"method\":\"");
    buf.extend_from_slice(e.method.as_str().as_bytes());
    buf.push(b'"');
    buf.extend_from_slice(b",\"uri\":");
    match e.target.path_and_query() {
        Some(pq) => json_str(buf, pq.as_str()),
        None => json_str(buf, &e.target.to_string()),
    }
    buf.extend_from_slice(b",\"protocol\":\"");
    buf.extend_from_slice(protocol(e.version).as_bytes());
    buf.extend_from_slice(b"\",\"status\":");
    buf.extend_from_slice(itoa::Buffer::new().format(end.status).as_bytes());
    buf.extend_from_slice(b",\"bytes_sent\":");
    buf.extend_from_slice(itoa::Buffer::new().format(end.bytes).as_bytes());
    buf.extend_from_slice(b",\"upstream\":");
    match &end.upstream {
        Some(a) => {
            buf.push(b'"');
            write_addr(buf, a);
            buf.push(b'"');
        }
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"duration\":");
    write_secs(buf, end.elapsed.as_micros(), 6);
    // Outcomes are the proxy's own words.
    buf.extend_from_slice(b",\"outcome\":\"");
    buf.extend_from_slice(end.outcome.as_bytes());
    buf.push(b'"');
    let fields = [
        (
            &b",\"host\":"[..],
            e.host
                .as_ref()
                .map(crate::message::admit::Authority::as_str),
        ),
        (b",\"referer\":", field(e, 0).and_then(|v| v.to_str().ok())),
        (
            b",\"user_agent\":",
            field(e, 1).and_then(|v| v.to_str().ok()),
        ),
        (
            b",\"request_id\":",
            e.request_id.as_ref().and_then(|v| v.as_str()),
        ),
        (b",\"user\":", e.user.as_deref()),
    ];
    for (key, v) in fields {
        buf.extend_from_slice(key);
        match v {
            Some(v) => json_str(buf, v),
            None => buf.extend_from_slice(b"null"),
        }
    }
    buf.extend_from_slice(b"}\n");
}

/// `s` as a JSON string: as it is when nothing in it needs escaping (the
/// common case), else escaped by serde_json.
pub(super) fn json_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else if serde_json::to_writer(&mut *buf, s).is_err() {
        buf.extend_from_slice(b"null");
    }
}

pub(super) fn template_line(
    buf: &mut Vec<u8>,
    pieces: &[Piece],
    headers: &[HeaderName],
    e: &Entry,
    end: &End<'_>,
) {
    for p in pieces {
        let v = match p {
            Piece::Text(t) => {
                buf.extend_from_slice(t.as_bytes());
                continue;
            }
            Piece::Var(v) => v,
        };
        let _ = match v {
            Var::RemoteAddr => write!(buf, "{}", e.client.ip()),
            Var::RemotePort => write!(buf, "{}", e.client.port()),
            Var::TimeLocal => {
                with_clock(|c, _| buf.extend_from_slice(c.local.as_bytes()));
                Ok(())
            }
            Var::TimeIso8601 => {
                with_clock(|c, _| {
                    buf.extend_from_slice(c.iso.as_bytes());
                    buf.extend_from_slice(b"+00:00");
                });
                Ok(())
            }
            Var::Request => {
                let line = format!(
                    "{} {} {}",
                    e.method,
                    origin_form(&e.target),
                    protocol(e.version)
                );
                escaped(buf, line.as_bytes());
                Ok(())
            }
            Var::RequestMethod => write!(buf, "{}", e.method),
            Var::RequestUri => {
                escaped(buf, origin_form(&e.target).to_string().as_bytes());
                Ok(())
            }
            Var::ServerProtocol => write!(buf, "{}", protocol(e.version)),
            Var::Status => write!(buf, "{}", end.status),
            Var::BodyBytesSent => write!(buf, "{}", end.bytes),
            Var::RequestTime => {
                write_secs(buf, end.elapsed.as_micros(), 3);
                Ok(())
            }
            Var::UpstreamAddr => write!(buf, "{}", upstream(end)),
            Var::Host => write!(buf, "{}", host(e)),
            Var::Outcome => write!(buf, "{}", end.outcome),
            Var::RequestId => {
                match &e.request_id {
                    Some(v) => escaped(buf, v.as_bytes()),
                    None => buf.push(b'-'),
                }
                Ok(())
            }
            Var::RemoteUser => {
                remote_user(buf, e);
                Ok(())
            }
            Var::Header(name) => {
                match headers
                    .iter()
                    .position(|h| h == name)
                    .and_then(|i| field(e, i))
                {
                    Some(v) => escaped(buf, v.as_bytes()),
                    None => buf.push(b'-'),
                }
                Ok(())
            }
        };
    }
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use tokio::time::Instant;

    #[test]
    fn durations_are_seconds_cut_to_their_places() {
        for (us, places, text) in [
            (0, 6, "0.000000"),
            (123, 6, "0.000123"),
            (1_234_567, 6, "1.234567"),
            (61_000_001, 6, "61.000001"),
            (1_234_567, 4, "1.2345"),
            (99, 4, "0.0000"),
            (1_999_999, 3, "1.999"),
            (5_000, 3, "0.005"),
        ] {
            let mut buf = Vec::new();
            write_secs(&mut buf, us, places);
            assert_eq!(String::from_utf8(buf).unwrap(), text);
        }
    }

    #[test]
    fn json_lines_read_back_with_escapes() {
        let e = Entry {
            start: Instant::now(),
            client: "[::1]:4000".parse().unwrap(),
            method: Method::from_bytes(b"PATCH").unwrap(),
            target: "/a%22b?q=1&x=\\"
                .parse()
                .unwrap_or_else(|_| "/a?q=1".parse().unwrap()),
            version: Version::HTTP_2,
            host: None,
            headers: vec![
                None,
                Some(HeaderValue::from_static("curl \"quoted\" \\ back\tslash")),
            ],
            request_id: Some(crate::message::id::Id::Kept(HeaderValue::from_static(
                "abc",
            ))),
            user: Some("b\u{e9}e \"x\"".into()),
        };
        let end = End {
            status: 503,
            bytes: 12_345,
            upstream: Some("10.0.0.1:8080".parse().unwrap()),
            outcome: "error",
            elapsed: std::time::Duration::from_micros(1_500),
        };
        let mut buf = Vec::new();
        json_line(&mut buf, &e, &end);
        assert_eq!(buf.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
        assert_eq!(v["client"], "[::1]:4000");
        assert_eq!(v["method"], "PATCH");
        assert_eq!(v["uri"], e.target.path_and_query().unwrap().as_str());
        assert_eq!(v["protocol"], "HTTP/2.0");
        assert_eq!(v["status"], 503);
        assert_eq!(v["bytes_sent"], 12_345);
        assert_eq!(v["upstream"], "10.0.0.1:8080");
        assert!(v["duration"].as_f64().is_some_and(|d| d >= 0.0));
        assert_eq!(v["outcome"], "error");
        assert_eq!(v["host"], serde_json::Value::Null);
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["user_agent"], "curl \"quoted\" \\ back\tslash");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["user"], "b\u{e9}e \"x\"");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 15, "{keys:?}");
        let time = v["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    }

    #[test]
    fn time_local_is_nginx_shaped() {
        let t = time_local();
        // `02/Dec/2026:15:30:00 +0000`
        assert_eq!(t.len(), 26, "{t}");
        assert_eq!(&t[2..3], "/");
        assert_eq!(&t[6..7], "/");
        assert_eq!(&t[11..12], ":");
        assert!(t.ends_with(" +0000"), "{t}");
    }

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        for a in [
            "0.0.0.0:0",
            "127.0.0.1:8080",
            "255.255.255.255:65535",
            "10.20.3.40:9",
            "[::1]:443",
            "[2001:db8::7]:80",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut b = Vec::new();
            write_addr(&mut b, &a);
            assert_eq!(String::from_utf8(b).unwrap(), a.to_string());
            let mut b = Vec::new();
            write_ip(&mut b, a.ip());
            assert_eq!(String::from_utf8(b).unwrap(), a.ip().to_string());
        }
    }

    #[test]
    fn escaping_is_nginx_default() {
        let mut b = Vec::new();
        escaped(&mut b, b"a\"b\\c\x01\xff d");
        assert_eq!(b, b"a\\x22b\\x5Cc\\x01\\xFF d");
    }
}
