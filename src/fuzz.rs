//! Fuzz targets: the parsers Tidegate writes itself, each a function of
//! arbitrary bytes that must not panic and must keep its invariants
//! (asserted here, so that a fuzzer reports a broken one as a crash).
//!
//! Driven by `fuzz/` (cargo-afl, coverage-guided) and, briefly and without
//! coverage, by `tests/it/fuzz_targets.rs` on every `cargo test`. Not part of
//! the API.
#![doc(hidden)]
// A broken invariant must panic here: that is what a fuzzer reports.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::OnceLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;

use crate::config::Config;
use crate::message::admit::{self, Authority};
use crate::router::{Action, Router, Template};

/// A target: a function of arbitrary bytes.
pub type Target = fn(&[u8]);

/// The targets, by name (for the drivers).
pub const TARGETS: &[(&str, Target)] = &[
    ("authority", authority),
    ("connection", connection),
    ("forwarded", forwarded),
    ("client_ip", client_ip),
    ("route", route),
    ("duration", duration),
    ("config", config),
    ("nginx_conf", nginx_conf),
    ("htpasswd", htpasswd),
    ("accept_encoding", accept_encoding),
    ("cache_control", cache_control),
    ("http_date", http_date),
    ("proxy_protocol", proxy_protocol),
    ("client_hello", client_hello),
    ("static_path", static_path),
    ("byte_range", byte_range),
];

/// `Host`/`:authority` validation: a value accepted is plain visible
/// ASCII without `,`, `@` or `%`, its host a prefix that the router's port
/// stripping agrees with, and its normal form is a fixed point.
pub fn authority(data: &[u8]) {
    let Ok(a) = Authority::parse(data) else {
        return;
    };
    let s = a.as_str();
    assert!(
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()),
        "{s:?}"
    );
    assert!(!s.contains([',', '@', '%', '/']), "{s:?}");
    assert!(s.starts_with(a.host()), "{s:?}");
    assert_eq!(crate::router::strip_port(a.as_bytes()), a.host().as_bytes());
    let again = Authority::parse(s.as_bytes()).expect("the normal form parses");
    assert_eq!(again.as_str(), s);
    let shared = Authority::from_header(a.header()).expect("same as parse");
    assert_eq!(shared.as_str(), s);
}

/// Header fields from `name: value` lines; lines that are not a valid
/// field are skipped.
fn fields(data: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(line[..colon].trim_ascii()),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        h.append(name, value);
    }
    h
}

/// Hop-by-hop removal (`Connection` and the fields it names), transfer
/// codings, and the underscore rule: no `Connection` or fixed hop-by-hop
/// field is left, the fields `Connection` may not name are all kept, and
/// dropping underscores leaves none.
pub fn connection(data: &[u8]) {
    let mut h = fields(data);
    if h.contains_key(header::TRANSFER_ENCODING) {
        let _ = admit::transfer_codings(h.get_all(header::TRANSFER_ENCODING).iter());
    }
    let protected = [
        header::HOST,
        header::CONTENT_LENGTH,
        HeaderName::from_static("x-forwarded-for"),
        header::VIA,
    ];
    let before: Vec<usize> = protected
        .iter()
        .map(|n| h.get_all(n).iter().count())
        .collect();
    crate::message::headers::strip_hop_by_hop(&mut h);
    for n in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        assert!(!h.contains_key(&n), "{n} left");
    }
    for (n, count) in protected.iter().zip(before) {
        assert_eq!(h.get_all(n).iter().count(), count, "{n} removed");
    }
    let _ = admit::underscores(&mut h, admit::Underscores::Drop);
    assert!(h.keys().all(|n| !n.as_str().contains('_')));
}

/// The `X-Forwarded-For` sent upstream: a valid field value that ends with
/// the client's address, whatever came before.
pub fn forwarded(data: &[u8]) {
    let h = fields(data);
    let ip = HeaderValue::from_static("192.0.2.7");
    let v = crate::message::headers::forwarded_for(&h, &ip);
    assert!(v.as_bytes().ends_with(b"192.0.2.7"));
}

/// The real client behind trusted proxies, from arbitrary
/// `X-Forwarded-For` and `Forwarded` fields: an untrusted peer is its own
/// client; a trusted one's answer is what walking the list from the
/// right gives (past trusted addresses; garbage: the peer; all trusted:
/// the leftmost), in both modes. Also `allow`/`deny` rules and blocks on
/// the same bytes: what parses prints as text that parses to the same.
pub fn client_ip(data: &[u8]) {
    use crate::message::cidr::{Cidr, Rule};
    use crate::message::client_ip::{self as cip, Node, RealIp, RealIpHeader};
    use std::net::SocketAddr;
    let h = fields(data);
    let trusted: Box<[Cidr]> = ["10.0.0.0/8", "127.0.0.1", "2001:db8::/32"]
        .iter()
        .map(|c| Cidr::parse(c).unwrap())
        .collect();
    let is_trusted = |ip| trusted.iter().any(|c| c.contains(ip));
    let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let stranger: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    for header in [RealIpHeader::XForwardedFor, RealIpHeader::Forwarded] {
        let r = RealIp {
            trusted_proxies: trusted.clone(),
            header,
        };
        assert_eq!(r.client(stranger, &h), stranger);
        let mut nodes = Vec::new();
        let name = match header {
            RealIpHeader::XForwardedFor => "x-forwarded-for",
            RealIpHeader::Forwarded => "forwarded",
        };
        for v in h.get_all(name) {
            match header {
                RealIpHeader::XForwardedFor => {
                    cip::x_forwarded_for(v.as_bytes(), &mut |n| nodes.push(n))
                }
                RealIpHeader::Forwarded => cip::forwarded(v.as_bytes(), &mut |n| nodes.push(n)),
            }
        }
        let expect = nodes
            .iter()
            .rev()
            .find(|n| !matches!(n, Node::Addr(ip) if is_trusted(*ip)))
            .map_or(nodes.first(), Some);
        let expect = match expect {
            Some(Node::Addr(ip)) if *ip != peer.ip() => SocketAddr::new(*ip, 0),
            _ => peer,
        };
        assert_eq!(r.client(peer, &h), expect, "{nodes:?}");
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(rule) = Rule::parse(&text) {
        assert_eq!(Rule::parse(&rule.to_string()), Ok(rule));
    }
    if let Ok(c) = Cidr::parse(&text) {
        assert_eq!(Cidr::parse(&c.to_string()), Ok(c));
    }
}

const ROUTES: &str = r#"
[[listeners]]
address = "127.0.0.1:1"
[upstreams.app]
servers = ["127.0.0.1:2"]
[[routes]]
host = "*.example.com"
path_prefix = "/api/"
strip_prefix = "/api"
upstream = "app"
[[routes]]
path_regex = "^/old/(?P<id>[0-9]+)/(.*)$"
rewrite = { regex = "^/old/(?P<id>[0-9]+)/(.*)$", replace = "/new/${id}/$2" }
upstream = "app"
[[routes]]
host = "www.example.com"
path = "/exact"
methods = ["GET", "HEAD"]
headers = { "x-canary" = "1" }
upstream = "app"
[[routes]]
path_prefix = "/go/"
redirect = { status = 302, location = "https://{host}/landing{path}{query}" }
[[routes]]
upstream = "app"
"#;

fn router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let c = Config::from_toml(ROUTES, "routes.toml").expect("fuzz routes are valid");
        Router::new(&c.routes)
    })
}

/// Route matching, rewrites and redirect templates on arbitrary host,
/// path, method and headers: every request finds a route (the file ends
/// with a catch-all), a rewritten path starts with `/`, and a redirect
/// expands; the template parser itself on arbitrary text.
pub fn route(data: &[u8]) {
    let mut parts = data.splitn(4, |&b| b == 0);
    let host = parts.next().unwrap_or_default();
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let method = Method::from_bytes(parts.next().unwrap_or(b"GET")).unwrap_or(Method::GET);
    let headers = fields(parts.next().unwrap_or_default());
    let host = Authority::parse(host).ok();
    let found = router().find(
        host.as_ref().map(Authority::as_bytes),
        &path,
        &method,
        &headers,
    );
    let Some(route) = found else {
        assert!(!path.starts_with('/'), "the catch-all takes any path");
        return;
    };
    if let Some(p) = route.rewrite_path(&path) {
        if matches!(route.rewrite, Some(crate::router::Rewrite::StripPrefix(_))) {
            assert!(p.starts_with('/'), "{p:?}");
        }
    }
    if let Action::Redirect { location, .. } = &route.action {
        let host = host.as_ref().map_or("", Authority::as_str);
        let _ = location.expand("https", host, &path, None);
    }
    if let Ok(t) = Template::parse(&String::from_utf8_lossy(data)) {
        let _ = t.expand("http", "h", &path, Some("q"));
    }
}

/// Durations as the config writes them: accepted ones are more than zero.
pub fn duration(data: &[u8]) {
    if let Ok(d) = crate::config::raw::parse_duration(&String::from_utf8_lossy(data)) {
        assert!(!d.is_zero());
    }
}

/// The config loader (TOML, then every section's checks), with no name
/// looked up and no certificate read: it never panics, and every error
/// names the file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::from_toml(text, "fuzz.toml") {
        assert!(e.to_string().starts_with("fuzz.toml"), "{e}");
    }
}

/// `tidegate convert`'s nginx parser and converter on arbitrary text:
/// never a panic; a syntax error names the file; a conversion is TOML
/// that parses.
pub fn nginx_conf(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match crate::convert::convert_text(text, std::path::Path::new("fuzz.conf")) {
        Ok(c) => {
            if let Err(e) = c.toml.parse::<toml::Table>() {
                panic!("the conversion is not TOML: {e}\n{}", c.toml);
            }
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.conf:"), "{e}"),
    }
}

/// An htpasswd file (`user:hash` lines), then after a NUL byte an
/// `Authorization` value checked against it: parsing never panics, a
/// file accepted has only users with a name and no `:`, and a check never
/// lets anyone in before a password was verified (nothing is hashed
/// here: a hash from the input could ask for any bcrypt cost).
pub fn htpasswd(data: &[u8]) {
    use crate::auth::basic::{challenge, BasicAuth, Check, Htpasswd};
    let (file, header) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(text) = std::str::from_utf8(file) else {
        return;
    };
    let parsed = match Htpasswd::parse(text) {
        Ok(p) => p,
        Err(errors) => {
            let lines = text.lines().count();
            assert!(!errors.is_empty());
            assert!(errors.iter().all(|e| e.line >= 1 && e.line <= lines));
            return;
        }
    };
    assert!(text.lines().count() >= parsed.len());
    let auth = BasicAuth::new(
        "fuzz".into(),
        challenge("fuzz").expect("a plain realm"),
        "fuzz".into(),
        false,
        parsed,
    );
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(header) {
        h.insert(header::AUTHORIZATION, v);
    }
    match auth.check(&h) {
        Check::Pass(user) => panic!("{user} let in with no password verified"),
        Check::Deny(_) => {}
        Check::Verify(_) => assert!(h.contains_key(header::AUTHORIZATION)),
    }
}

/// `Accept-Encoding` values (one per line): negotiation never panics,
/// picks only an offered coding, the same each time, and none for a
/// single element whose last weight is 0 (`gzip;q=0`, `*;q=0`).
pub fn accept_encoding(data: &[u8]) {
    use crate::config::compress::Coding;
    let mut h = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            h.append(header::ACCEPT_ENCODING, v);
        }
    }
    let refused = !data.contains(&b',')
        && !data.contains(&b'\n')
        && data.to_ascii_lowercase().ends_with(b";q=0");
    for offered in [
        &[Coding::Zstd, Coding::Br, Coding::Gzip][..],
        &[Coding::Gzip],
        &[Coding::Br, Coding::Zstd],
    ] {
        let pick = crate::compress::negotiate(&h, offered);
        if let Some(c) = pick {
            assert!(offered.contains(&c), "{c:?} not offered");
            assert!(
                !refused,
                "{c:?} picked from {:?}",
                String::from_utf8_lossy(data)
            );
        }
        assert_eq!(pick, crate::compress::negotiate(&h, offered));
    }
}

/// `Cache-Control` field lines (one per line), as a response's and a
/// request's: parsing never panics, every directive name is non-empty and
/// holds no `,` or `=`, a token argument no `,`, delta-seconds stay within
/// 2^31, and a further `no-store` line is always seen (an unterminated
/// quote does not run into the next line).
pub fn cache_control(data: &[u8]) {
    use crate::cache::policy::{self, RequestControl, ResponseControl, Rules};
    use std::time::{Duration, SystemTime};
    let max = Duration::from_secs(1 << 31);
    let mut h = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            h.append(header::CACHE_CONTROL, v.clone());
            h.append(header::AGE, v.clone());
            h.append(header::VARY, v);
        }
    }
    policy::directives(h.get_all(header::CACHE_CONTROL).iter(), |name, arg| {
        assert!(!name.is_empty() && !name.contains(&b',') && !name.contains(&b'='));
        if let Some(policy::Arg::Token(t)) = arg {
            assert!(!t.contains(&b','), "{t:?}");
        }
    });
    let rules = Rules::default();
    let resp = ResponseControl::parse(&h, &rules);
    for d in [resp.max_age, resp.s_maxage]
        .into_iter()
        .flatten()
        .flatten()
    {
        assert!(d <= max);
    }
    let req = RequestControl::parse(&h);
    if let Some(Some(d)) = req.max_stale {
        assert!(d <= max);
    }
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let lifetime = policy::freshness_lifetime(http::StatusCode::OK, &h, &resp, &rules, now);
    let times = policy::Times::new(now, now, &h, lifetime);
    assert!(times.corrected_initial_age <= max);
    let _ = policy::decide_reuse(&req, &resp, &times, now + Duration::from_secs(10));
    let _ = policy::vary_names(&h);
    let mut more = h.clone();
    more.append(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    assert!(ResponseControl::parse(&more, &rules).no_store);
}

/// HTTP dates as the cache reads them (leniently): reading never panics;
/// whatever the strict parser reads, this reads the same; a date read is
/// one the strict parser reads back from its preferred form, and that
/// form in lower case reads to the same time.
pub fn http_date(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(v) = HeaderValue::from_str(s) else {
        return;
    };
    let read = crate::cache::policy::parse_date(&v);
    // A header value is text only in visible ASCII; around it, only
    // spaces and tabs are optional whitespace (RFC 9110 §5.6.3).
    let text = v.to_str().ok().map(|t| t.trim_matches([' ', '\t']));
    if let Some(strict) = text.and_then(|t| httpdate::parse_http_date(t).ok()) {
        assert_eq!(read, Some(strict), "{s:?}");
    }
    if let Some(t) = read {
        let preferred = httpdate::fmt_http_date(t);
        assert_eq!(httpdate::parse_http_date(&preferred).ok(), Some(t));
        let lower = HeaderValue::from_str(&preferred.to_ascii_lowercase()).ok();
        assert_eq!(
            lower.and_then(|l| crate::cache::policy::parse_date(&l)),
            Some(t)
        );
    }
}

/// A connection's first bytes as a listener that takes PROXY protocol
/// headers examines them: a header found is the bytes before it and never
/// longer than the cap, and is found the same in its bytes alone; bytes
/// without a signature are a plain connection (nothing taken), and once
/// any are taken nothing is plain; a partial header may be taken only
/// when it is under the cap.
pub fn proxy_protocol(data: &[u8]) {
    use crate::config::proxy_protocol::MAX_HEADER;
    use crate::downstream::proxy_protocol::{examine, Step, V1, V2};
    let data = &data[..data.len().min(MAX_HEADER)];
    for taken in [0, data.len().min(7)] {
        match examine(data, taken) {
            Step::Done { len, addrs } => {
                assert!(len <= data.len() && len <= MAX_HEADER, "{len}");
                assert_eq!(examine(&data[..len], taken), Step::Done { len, addrs });
            }
            Step::Plain => {
                assert_eq!(taken, 0);
                assert!(!data.starts_with(V1) && !data.starts_with(V2));
            }
            Step::More { take } => {
                assert!(data.len() < MAX_HEADER, "{}", data.len());
                if !take {
                    assert!(data.len() < 12);
                }
            }
            Step::Refuse(why) => assert!(!why.is_empty()),
        }
    }
}

/// A stream's first bytes read for their ClientHello: a name found is a
/// lower-case host name (no empty label), protocols are 1 to 255 bytes;
/// the answer is the same with bytes after it, and every prefix of bytes
/// that make a ClientHello asks for more (never refuses, never finds
/// another).
pub fn client_hello(data: &[u8]) {
    use crate::stream::hello::{parse, Hello};
    let data = &data[..data.len().min(crate::config::stream::MAX_PREREAD)];
    let parsed = parse(data);
    if let Hello::Done { sni, alpn } = &parsed {
        if let Some(n) = sni {
            assert!(!n.is_empty() && n.len() <= 253, "{n:?}");
            assert!(!n.bytes().any(|b| b.is_ascii_uppercase()), "{n:?}");
            assert!(!n.starts_with('.') && !n.ends_with('.'), "{n:?}");
        }
        assert!(alpn.iter().all(|p| !p.is_empty() && p.len() <= 255));
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\x16\x03\x01 after");
        assert_eq!(parse(&longer), parsed);
        for k in [0, 1, 4, 5, data.len() / 2] {
            match parse(&data[..k.min(data.len())]) {
                Hello::More => {}
                p => assert_eq!(p, parsed, "prefix {k}"),
            }
        }
    }
}

/// A static route's request path made a path under its root: what is
/// accepted has no empty, `.` or `..` segment, no NUL or backslash, no
/// leading `/`, no hidden segment but `.well-known` (unless dotfiles are
/// allowed, which changes nothing else); joined to a root it stays under
/// it, lexically (no parent or root component).
pub fn static_path(data: &[u8]) {
    use crate::files::path::{normalise, Refused};
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let strict = normalise(path, false);
    let dotfiles = normalise(path, true);
    // Allowing dotfiles changes only what was refused as hidden.
    match &strict {
        Err(Refused::Hidden) => assert!(dotfiles.is_ok(), "{path:?}"),
        other => assert_eq!(other, &dotfiles, "{path:?}"),
    }
    let Ok(rel) = dotfiles else {
        return;
    };
    assert!(rel.path.len() <= path.len(), "{path:?}");
    assert!(!rel.path.starts_with(b"/"), "{path:?}");
    assert!(
        !rel.path.contains(&0) && !rel.path.contains(&b'\\'),
        "{path:?}"
    );
    if !rel.path.is_empty() {
        for segment in rel.path.split(|&b| b == b'/') {
            assert!(!segment.is_empty(), "{path:?}");
            assert!(segment != b"." && segment != b"..", "{path:?}");
            if strict.is_ok() {
                assert!(
                    !segment.starts_with(b".") || segment == b".well-known",
                    "{path:?}"
                );
            }
        }
    }
    let root = std::path::Path::new("/srv/www");
    let joined = root.join(std::ffi::OsStr::from_bytes(&rel.path));
    assert!(joined.starts_with(root), "{path:?}");
    assert!(
        joined
            .components()
            .skip(1)
            .all(|c| matches!(c, std::path::Component::Normal(_))),
        "{path:?}"
    );
    assert_eq!(rel.slash, path.ends_with('/'));
}

/// `Range` against a length (the first line of the input, in decimal):
/// the parts given are within the representation, in order of the
/// request, at most `MAX_RANGES`, and none overlaps another; parsing is
/// the same twice.
pub fn byte_range(data: &[u8]) {
    use crate::files::range::{parse, Ranges, MAX_RANGES};
    let (len, value) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"100"[..], data),
    };
    let len = std::str::from_utf8(len)
        .ok()
        .and_then(|l| l.trim().parse::<u64>().ok())
        .unwrap_or(100);
    let got = parse(value, len);
    if let Ranges::Parts(parts) = &got {
        assert!(!parts.is_empty() && parts.len() <= MAX_RANGES);
        for &(first, last) in parts {
            assert!(first <= last && last < len, "{first}-{last}/{len}");
        }
        let mut sorted = parts.clone();
        sorted.sort_unstable();
        assert!(sorted.windows(2).all(|w| w[0].1 < w[1].0), "{parts:?}");
    }
    if len == 0 {
        assert!(!matches!(got, Ranges::Parts(_)));
    }
    assert_eq!(got, parse(value, len));
}
