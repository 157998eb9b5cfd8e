//! `[rate_limits.NAME]`: named request-rate limits that routes refer to
//! (`rate_limit = "NAME"` or a list), as pure data. What enforces them
//! (the GCRA and its table of keys) is [`crate::ratelimit`].

use std::time::Duration;

use http::HeaderName;
use serde::Serialize;

use super::raw;
use super::source::Problems;

/// Slots of a limit's key table unless `max_keys` says otherwise (8 bytes
/// each: 512 KiB).
pub(crate) const DEFAULT_MAX_KEYS: usize = 1 << 16;

/// One named limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    pub name: String,
    /// What tells clients apart; several parts make one combined key.
    pub key: Vec<KeyPart>,
    /// Requests per `period`.
    pub rate: u32,
    #[serde(serialize_with = "super::dump::duration")]
    pub period: Duration,
    /// Requests a key may send ahead of the rate (nginx's `burst`; 0 by
    /// default, as there).
    pub burst: u32,
    pub mode: Mode,
    /// Slots of the key table, a power of two; keys that share a slot
    /// share their limit.
    pub max_keys: usize,
    /// Where the budget lives: this instance, or Redis.
    pub backend: Backend,
}

/// Where a limit's state lives.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case", tag = "backend")]
pub enum Backend {
    /// This instance's memory: each instance has its own budget.
    #[default]
    Local,
    /// Redis: one budget shared by every instance naming the same Redis
    /// and limit (`crate::ratelimit::global`).
    Redis(Redis),
}

/// A `backend = "redis"` limit's Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redis {
    /// `redis://` URLs: one server's, or Redis Cluster's seed nodes.
    pub nodes: Vec<String>,
    /// `redis` was a list: the nodes are a Redis Cluster's.
    pub cluster: bool,
    pub on_error: OnError,
    /// Redis slower than this counts as down.
    #[serde(serialize_with = "super::dump::duration")]
    pub timeout: Duration,
}

/// What a `backend = "redis"` limit does while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The same limit, kept by each instance alone.
    #[default]
    Allow,
    /// Every request the limit covers is refused (503).
    Deny,
}

/// Redis slower than this counts as down, unless `timeout` says otherwise.
pub(crate) const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);

/// A part of a limit's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    ClientIp,
    Header(#[serde(serialize_with = "super::dump::header_name")] HeaderName),
    Cookie(String),
    Route,
}

impl KeyPart {
    /// Its kind, for logs (never the value).
    pub fn kind(&self) -> &'static str {
        match self {
            KeyPart::ClientIp => "client_ip",
            KeyPart::Header(_) => "header",
            KeyPart::Cookie(_) => "cookie",
            KeyPart::Route => "route",
        }
    }
}

/// What becomes of a request ahead of the rate but within the burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// It goes at once (nginx's `nodelay`); beyond the burst, 429.
    #[default]
    Reject,
    /// It waits for its turn at the rate (nginx's default); beyond the
    /// burst, 429.
    Delay,
}

/// Every `[rate_limits.*]` table, in name order; problems go to `p`.
pub(super) fn rate_limits(
    raw: &std::collections::BTreeMap<String, raw::RateLimit>,
    p: &mut Problems,
) -> Vec<RateLimit> {
    raw.iter()
        .filter_map(|(name, r)| rate_limit(name, r, p))
        .collect()
}

fn rate_limit(name: &str, r: &raw::RateLimit, p: &mut Problems) -> Option<RateLimit> {
    let at = format!("rate_limits.{name}");
    let before = p.len();
    // The name is sent in `RateLimit-Policy`/`RateLimit` as a structured
    // field string (RFC 8941 §3.3.3): printable ASCII, no `"` or `\`.
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        p.add(
            at.clone(),
            "a limit's name is sent in the RateLimit fields: printable ASCII without `\"` or `\\`",
        );
    }
    let key = key(&at, r.key.as_ref(), p);
    let rate = parse_rate(&r.rate).map_err(|e| p.add(format!("{at}.rate"), e));
    let max_keys = max_keys(&at, r.max_keys, p);
    let mode = match r.mode.as_deref() {
        None | Some("reject") => Mode::Reject,
        Some("delay") => Mode::Delay,
        Some(m) => {
            p.add(
                format!("{at}.mode"),
                format!("`{m}` is neither \"reject\" nor \"delay\""),
            );
            Mode::Reject
        }
    };
    let backend = backend(&at, r, mode, p);
    let (rate, period) = rate.ok()?;
    (p.len() == before).then(|| RateLimit {
        name: name.to_string(),
        key,
        rate,
        period,
        burst: r.burst.unwrap_or(0),
        mode,
        max_keys,
        backend,
    })
}

/// The `key` of the limit at `at` (the client's address when not given);
/// problems go to `p`. Shared by every kind of limit.
pub(super) fn key(at: &str, key: Option<&raw::OneOrMany>, p: &mut Problems) -> Vec<KeyPart> {
    match key {
        None => vec![KeyPart::ClientIp],
        Some(k) if k.items().is_empty() => {
            p.add(format!("{at}.key"), "is empty");
            Vec::new()
        }
        Some(k) => k
            .items()
            .iter()
            .filter_map(|k| key_part(k).map_err(|e| p.add(format!("{at}.key"), e)).ok())
            .collect(),
    }
}

/// The `max_keys` of the limit at `at`: a power of two in 1024..=2^24.
pub(super) fn max_keys(at: &str, max_keys: Option<usize>, p: &mut Problems) -> usize {
    match max_keys {
        None => DEFAULT_MAX_KEYS,
        Some(n) if (1024..=1 << 24).contains(&n) => n.next_power_of_two(),
        Some(n) => {
            p.add(
                format!("{at}.max_keys"),
                format!("{n} is outside 1024..=16777216"),
            );
            DEFAULT_MAX_KEYS
        }
    }
}

/// `backend`, and with `redis` its `redis`, `on_error` and `timeout`.
fn backend(at: &str, r: &raw::RateLimit, mode: Mode, p: &mut Problems) -> Backend {
    let redis_only = [
        ("redis", r.redis.is_some()),
        ("on_error", r.on_error.is_some()),
        ("timeout", r.timeout.is_some()),
    ];
    match r.backend.as_deref() {
        None | Some("local") => {
            for (field, _) in redis_only.iter().filter(|(_, set)| *set) {
                p.add(
                    format!("{at}.{field}"),
                    "applies only with backend = \"redis\"",
                );
            }
            return Backend::Local;
        }
        Some("redis") => {}
        Some(b) => {
            p.add(
                format!("{at}.backend"),
                format!("`{b}` is neither \"local\" nor \"redis\""),
            );
            return Backend::Local;
        }
    }
    if mode == Mode::Delay {
        p.add(
            format!("{at}.mode"),
            "\"delay\" is not supported with backend = \"redis\" (use \"reject\")",
        );
    }
    let nodes: Vec<String> = match &r.redis {
        None => {
            p.add(
                format!("{at}.backend"),
                "\"redis\" needs `redis`, the server's URL (or a list of Redis Cluster nodes)",
            );
            Vec::new()
        }
        Some(urls) if urls.items().is_empty() => {
            p.add(format!("{at}.redis"), "is empty");
            Vec::new()
        }
        Some(urls) => urls
            .items()
            .iter()
            .filter(|u| match redis_url(u) {
                Ok(()) => true,
                Err(e) => {
                    p.add(format!("{at}.redis"), e);
                    false
                }
            })
            .cloned()
            .collect(),
    };
    let on_error = match r.on_error.as_deref() {
        None | Some("allow") => OnError::Allow,
        Some("deny") => OnError::Deny,
        Some(e) => {
            p.add(
                format!("{at}.on_error"),
                format!("`{e}` is neither \"allow\" nor \"deny\""),
            );
            OnError::Allow
        }
    };
    let timeout = match r.timeout.as_deref().map(raw::parse_duration) {
        None => DEFAULT_REDIS_TIMEOUT,
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            p.add(format!("{at}.timeout"), e);
            DEFAULT_REDIS_TIMEOUT
        }
    };
    Backend::Redis(Redis {
        nodes,
        cluster: matches!(r.redis, Some(raw::OneOrMany::Many(_))),
        on_error,
        timeout,
    })
}

/// A `redis://HOST[:PORT][/DB]` URL, as the Redis client reads it.
fn redis_url(u: &str) -> Result<(), String> {
    use redis::IntoConnectionInfo;
    if !u.starts_with("redis://") {
        return Err(format!("`{u}` is not a redis://HOST:PORT URL"));
    }
    u.into_connection_info()
        .map(drop)
        .map_err(|e| format!("`{u}` is not a Redis URL ({e})"))
}

/// `client_ip`, `route`, `header:NAME` or `cookie:NAME`.
fn key_part(k: &str) -> Result<KeyPart, String> {
    Ok(match k {
        "client_ip" => KeyPart::ClientIp,
        "route" => KeyPart::Route,
        _ => {
            if let Some(h) = k.strip_prefix("header:") {
                KeyPart::Header(
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("`{h}` is not a header name"))?,
                )
            } else if let Some(c) = k.strip_prefix("cookie:").filter(|c| !c.is_empty()) {
                KeyPart::Cookie(c.to_string())
            } else {
                return Err(format!(
                    "`{k}`: use client_ip, route, header:NAME or cookie:NAME"
                ));
            }
        }
    })
}

/// `"10/s"`, `"600/m"`, `"1000/h"`: a count of at least 1 per unit.
fn parse_rate(s: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("`{s}` is not a rate like `10/s`, `600/m` or `1000/h`");
    let (n, unit) = s.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let period = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!("`{s}`: the count must be at least 1"));
    }
    Ok((n, period))
}

/// A route's `rate_limit`: the limits' indexes in `limits` (every
/// `[rate_limits.*]` name written, in order).
pub(super) fn route_limits(
    names: Option<&raw::OneOrMany>,
    limits: &[&str],
) -> Result<Vec<usize>, (String, String)> {
    refer("rate_limit", "rate_limits", names, limits)
}

/// A route's `field` naming `[TABLES.NAME]` limits: their indexes in
/// `limits` (every name written, in order), without repeats.
pub(super) fn refer(
    field: &str,
    tables: &str,
    names: Option<&raw::OneOrMany>,
    limits: &[&str],
) -> Result<Vec<usize>, (String, String)> {
    let mut out = Vec::new();
    for name in names.map(raw::OneOrMany::items).unwrap_or_default() {
        let i = limits
            .iter()
            .position(|l| l == name)
            .ok_or_else(|| (field.to_string(), format!("no [{tables}.{name}] table")))?;
        if !out.contains(&i) {
            out.push(i);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::Config;

    use crate::config::TEST_BASE as BASE;

    #[test]
    fn limits_and_routes_compile() {
        let text = format!(
            "{BASE}[rate_limits.per_key]\nkey = [\"header:X-Api-Key\", \"client_ip\"]\nrate = \"600/m\"\n\
             burst = 5\nmode = \"delay\"\nmax_keys = 3000\n[rate_limits.all]\nrate = \"1/s\"\n\
             [[routes]]\nupstream = \"app\"\nrate_limit = [\"per_key\", \"all\"]\n"
        );
        let c = Config::from_toml(&text, "t.toml").unwrap();
        let names: Vec<_> = c.rate_limits.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["all", "per_key"]);
        assert_eq!(c.routes[0].rate_limit, [1, 0]);
        let l = &c.rate_limits[1];
        assert_eq!(l.key.len(), 2);
        assert_eq!(
            (l.rate, l.period, l.burst),
            (600, Duration::from_secs(60), 5)
        );
        assert_eq!((l.mode, l.max_keys), (Mode::Delay, 4096));
        let all = &c.rate_limits[0];
        assert_eq!(
            (all.key.clone(), all.burst, all.mode),
            (vec![KeyPart::ClientIp], 0, Mode::Reject)
        );
    }

    #[test]
    fn problems_name_line_and_field() {
        let text = format!(
            "{BASE}[rate_limits.a]\nkey = \"ip\"\nrate = \"10/d\"\nmax_keys = 5\nmode = \"later\"\n\
             [[routes]]\nupstream = \"app\"\nrate_limit = \"nope\"\n"
        );
        let e = Config::from_toml(&text, "t.toml").unwrap_err().to_string();
        for want in [
            "t.toml:6: rate_limits.a.key: `ip`",
            "t.toml:7: rate_limits.a.rate: `10/d`",
            "t.toml:8: rate_limits.a.max_keys: 5",
            "t.toml:9: rate_limits.a.mode: `later`",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
        assert!(
            e.contains("t.toml:12: routes[0].rate_limit: no [rate_limits.nope] table"),
            "{e}"
        );
        let text = format!("{BASE}[[routes]]\nupstream = \"app\"\nrate_limit = \"nope\"\n");
        let e = Config::from_toml(&text, "t.toml").unwrap_err().to_string();
        assert!(
            e.contains("t.toml:7: routes[0].rate_limit: no [rate_limits.nope] table"),
            "{e}"
        );
        let text = format!(
            "{BASE}[rate_limits.a]\nrate = \"1/s\"\nburst = -1\n[[routes]]\nupstream = \"app\"\n"
        );
        assert!(Config::from_toml(&text, "t.toml").is_err());
    }

    #[test]
    fn a_name_the_ratelimit_fields_cannot_carry_is_refused() {
        // In TOML basic strings: `a\"b` is a"b, `caf\u00e9` is café.
        for (name, ok) in [
            ("per-client_1.v2", true),
            ("a\\\"b", false),
            ("caf\\u00e9", false),
        ] {
            let text = format!(
                "{BASE}[rate_limits.\"{name}\"]\nrate = \"1/s\"\n[[routes]]\nupstream = \"app\"\n"
            );
            let r = Config::from_toml(&text, "t.toml");
            assert_eq!(
                r.is_ok(),
                ok,
                "{name}: {:?}",
                r.err().map(|e| e.to_string())
            );
        }
    }

    #[test]
    fn redis_backends_compile() {
        let text = format!(
            "{BASE}[rate_limits.one]\nrate = \"10/s\"\nbackend = \"redis\"\nredis = \"redis://127.0.0.1:6379\"\n\
             [rate_limits.cluster]\nrate = \"10/s\"\nbackend = \"redis\"\n\
             redis = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]\non_error = \"deny\"\ntimeout = \"20ms\"\n\
             [[routes]]\nupstream = \"app\"\n"
        );
        let c = Config::from_toml(&text, "t.toml").unwrap();
        let Backend::Redis(cluster) = &c.rate_limits[0].backend else {
            panic!("{:?}", c.rate_limits[0]);
        };
        assert!(cluster.cluster);
        assert_eq!(cluster.nodes.len(), 2);
        assert_eq!(
            (cluster.on_error, cluster.timeout),
            (OnError::Deny, Duration::from_millis(20))
        );
        let Backend::Redis(one) = &c.rate_limits[1].backend else {
            panic!("{:?}", c.rate_limits[1]);
        };
        assert_eq!(one.nodes, ["redis://127.0.0.1:6379"]);
        assert!(!one.cluster);
        assert_eq!(
            (one.on_error, one.timeout),
            (OnError::Allow, DEFAULT_REDIS_TIMEOUT)
        );
        let text = format!(
            "{BASE}[rate_limits.d]\nrate = \"10/s\"\nmode = \"delay\"\nbackend = \"redis\"\n\
             redis = [\"redis://\", \"redis://h:1\"]\n[[routes]]\nupstream = \"app\"\n"
        );
        let e = Config::from_toml(&text, "t.toml").unwrap_err().to_string();
        assert!(
            e.contains("t.toml:7: rate_limits.d.mode: \"delay\" is not supported"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:9: rate_limits.d.redis: `redis://`"),
            "{e}"
        );
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("10/s"), Ok((10, Duration::from_secs(1))));
        assert_eq!(parse_rate("600/m"), Ok((600, Duration::from_secs(60))));
        assert_eq!(parse_rate("5/h"), Ok((5, Duration::from_secs(3600))));
        for bad in ["10", "0/s", "x/s", "10/d", "-1/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_parts_parse() {
        assert_eq!(key_part("client_ip"), Ok(KeyPart::ClientIp));
        assert_eq!(key_part("route"), Ok(KeyPart::Route));
        assert_eq!(
            key_part("header:X-Api-Key"),
            Ok(KeyPart::Header(HeaderName::from_static("x-api-key")))
        );
        assert_eq!(key_part("cookie:s"), Ok(KeyPart::Cookie("s".into())));
        for bad in ["ip", "header:a b", "cookie:"] {
            assert!(key_part(bad).is_err(), "{bad}");
        }
    }
}
