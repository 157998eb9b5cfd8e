//! `[caches.NAME]`: named HTTP caches (RFC 9111, shared) that routes opt
//! into with `cache = "NAME"`, as pure data. What stores and serves is
//! `crate::cache`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use serde::Serialize;

use super::raw;
use super::source::Problems;

/// Memory a cache may hold unless `memory` says otherwise.
pub const DEFAULT_MEMORY: u64 = 64 << 20;
/// The largest response stored unless `max_object` says otherwise.
pub const DEFAULT_MAX_OBJECT: u64 = 8 << 20;

pub use super::raw::SetCookie;

/// A part of the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    Scheme,
    Host,
    Path,
    Query,
    /// A request field's value (`header:NAME`).
    Header(#[serde(serialize_with = "super::dump::header_name")] HeaderName),
    /// A cookie's value (`cookie:NAME`).
    Cookie(String),
}

/// One named cache.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cache {
    pub name: String,
    /// Bytes of responses (heads and bodies) kept in memory at most.
    pub memory: u64,
    /// The largest response (head and body) stored.
    pub max_object: u64,
    /// What tells responses apart (before `Vary`).
    pub key: Vec<KeyPart>,
    pub set_cookie: SetCookie,
    /// A targeted cache-control field (RFC 9213) that replaces
    /// `Cache-Control` for this cache when present; `None`: none.
    #[serde(serialize_with = "opt_name")]
    pub targeted: Option<HeaderName>,
    /// The most heuristic freshness (a tenth of the time since
    /// `Last-Modified`) may give.
    #[serde(serialize_with = "super::dump::duration")]
    pub heuristic_max: Duration,
    /// How long concurrent misses for one key wait for the first one's
    /// response before fetching their own (nginx's
    /// `proxy_cache_lock_timeout`).
    #[serde(serialize_with = "super::dump::duration")]
    pub lock_timeout: Duration,
    /// A second tier on disk (`disk = { path, size }`), below memory:
    /// every response stored is also written there, a memory miss is
    /// looked up there, and it survives restarts.
    pub disk: Option<Disk>,
}

/// A cache's disk tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// Its folder (relative paths: to the config file's folder), made
    /// when missing; one file per key, under two levels of folders.
    pub path: PathBuf,
    /// Bytes of files kept at most (the least recently used go first).
    pub size: u64,
}

fn opt_name<S: serde::Serializer>(n: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(n.as_ref().map_or("", HeaderName::as_str))
}

/// Every `[caches.*]` table, in name order; problems go to `p`.
pub(super) fn caches(
    raw: &std::collections::BTreeMap<String, raw::Cache>,
    base: &Path,
    p: &mut Problems,
) -> Vec<Cache> {
    let caches: Vec<Cache> = raw
        .iter()
        .filter_map(|(name, c)| cache(name, c, base, p))
        .collect();
    // One folder, one cache: two would evict each other's files.
    for (i, c) in caches.iter().enumerate() {
        let Some(d) = &c.disk else { continue };
        if let Some(other) = caches[..i]
            .iter()
            .find(|o| o.disk.as_ref().is_some_and(|o| o.path == d.path))
        {
            p.add(
                format!("caches.{}.disk.path", c.name),
                format!(
                    "`{}` is [caches.{}]'s folder too",
                    d.path.display(),
                    other.name
                ),
            );
        }
    }
    caches
}

fn cache(name: &str, c: &raw::Cache, base: &Path, p: &mut Problems) -> Option<Cache> {
    let at = format!("caches.{name}");
    let before = p.len();
    // The name is a Cache-Status member's parameter value and a metrics
    // label: a token.
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        p.add(
            at.clone(),
            "a cache's name is letters, digits, `-`, `_`, `.`",
        );
    }
    let mut size = |field: &str, v: &Option<raw::Size>, default: u64, min: u64| match v {
        None => default,
        Some(s) => match s.bytes() {
            Ok(n) if n >= min => n,
            Ok(n) => {
                p.add(
                    format!("{at}.{field}"),
                    format!("{n} bytes is less than {min}"),
                );
                default
            }
            Err(e) => {
                p.add(format!("{at}.{field}"), e);
                default
            }
        },
    };
    let memory = size("memory", &c.memory, DEFAULT_MEMORY, 1 << 20);
    let max_object = size("max_object", &c.max_object, DEFAULT_MAX_OBJECT, 1024);
    let disk_size = c
        .disk
        .as_ref()
        .map(|d| size("disk.size", &Some(d.size.clone()), 0, 1 << 20));
    if max_object > memory {
        p.add(
            format!("{at}.max_object"),
            format!("{max_object} bytes is more than `memory` ({memory})"),
        );
    }
    let disk = c.disk.as_ref().map(|d| {
        let size = disk_size.unwrap_or_default();
        // (0: its own problem was reported.)
        if size > 0 && size < max_object {
            p.add(
                format!("{at}.disk.size"),
                format!("{size} bytes is less than `max_object` ({max_object})"),
            );
        }
        if d.path.is_empty() {
            p.add(format!("{at}.disk.path"), "a folder is required");
        }
        Disk {
            path: base.join(&d.path),
            size,
        }
    });
    let key = match &c.key {
        None => vec![
            KeyPart::Scheme,
            KeyPart::Host,
            KeyPart::Path,
            KeyPart::Query,
        ],
        Some(parts) => {
            let mut out = Vec::new();
            for (i, k) in parts.iter().enumerate() {
                match key_part(k) {
                    Ok(part) if !out.contains(&part) => out.push(part),
                    Ok(_) => p.add(format!("{at}.key[{i}]"), format!("`{k}` is listed twice")),
                    Err(e) => p.add(format!("{at}.key[{i}]"), e),
                }
            }
            if !out.contains(&KeyPart::Path) {
                p.add(
                    format!("{at}.key"),
                    "must include \"path\" (else every path would share one response)",
                );
            }
            out
        }
    };
    let targeted = match c.targeted.as_deref() {
        None => Some(HeaderName::from_static("cdn-cache-control")),
        Some("") => None,
        Some(t) => match HeaderName::try_from(t) {
            Ok(h) if h != http::header::CACHE_CONTROL => Some(h),
            _ => {
                p.add(
                    format!("{at}.targeted"),
                    format!("`{t}` is not a field name other than Cache-Control (\"\" for none)"),
                );
                None
            }
        },
    };
    (p.len() == before).then(|| Cache {
        name: name.to_string(),
        memory,
        max_object,
        key,
        set_cookie: c.set_cookie.unwrap_or_default(),
        targeted,
        heuristic_max: c.heuristic_max.unwrap_or(Duration::from_secs(86_400)),
        lock_timeout: c.lock_timeout.unwrap_or(Duration::from_secs(5)),
        disk,
    })
}

fn key_part(k: &str) -> Result<KeyPart, String> {
    let bad = || {
        format!(
            "`{k}` is none of \"scheme\", \"host\", \"path\", \"query\", \"header:NAME\", \"cookie:NAME\""
        )
    };
    Ok(match k {
        "scheme" => KeyPart::Scheme,
        "host" => KeyPart::Host,
        "path" => KeyPart::Path,
        "query" => KeyPart::Query,
        _ => match k.split_once(':') {
            Some(("header", n)) => KeyPart::Header(HeaderName::try_from(n).map_err(|_| bad())?),
            Some(("cookie", n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()) => {
                KeyPart::Cookie(n.to_string())
            }
            _ => return Err(bad()),
        },
    })
}

/// A route's `cache`: the cache's index among every `[caches.*]` name
/// written (`names`, in order).
pub(super) fn route_cache(
    name: Option<&String>,
    names: &[&str],
) -> Result<Option<usize>, (String, String)> {
    let Some(name) = name else { return Ok(None) };
    names
        .iter()
        .position(|n| n == name)
        .map(Some)
        .ok_or_else(|| ("cache".to_string(), format!("no [caches.{name}] table")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::parse_size;
    use crate::config::{Config, TEST_BASE};

    #[test]
    fn sizes_take_bytes_and_binary_units() {
        for (text, n) in [
            ("1024", 1024),
            ("256MiB", 256 << 20),
            ("10GiB", 10 << 30),
            ("64m", 64 << 20),
            ("512k", 512 << 10),
            ("2 MB", 2 << 20),
        ] {
            assert_eq!(parse_size(text), Ok(n), "{text}");
        }
        for bad in ["", "MiB", "-1", "1.5MiB", "12 parsecs", "99999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cache_and_a_route_that_uses_it() {
        let c = Config::from_toml(
            &format!(
                "{TEST_BASE}[caches.pages]\nmemory = \"256MiB\"\nmax_object = 1048576\n\
                 key = [\"host\", \"path\", \"query\", \"header:Accept-Language\"]\nset_cookie = \"strip\"\n\
                 [caches.other]\ntargeted = \"\"\n\
                 [[routes]]\nupstream = \"app\"\ncache = \"pages\"\n"
            ),
            "t.toml",
        )
        .unwrap();
        let other = &c.caches[0];
        assert_eq!(
            (other.name.as_str(), other.memory),
            ("other", DEFAULT_MEMORY)
        );
        assert_eq!(other.targeted, None);
        let pages = &c.caches[1];
        assert_eq!(pages.memory, 256 << 20);
        assert_eq!(pages.max_object, 1 << 20);
        assert_eq!(pages.set_cookie, SetCookie::Strip);
        assert_eq!(
            pages.key[3],
            KeyPart::Header(HeaderName::from_static("accept-language"))
        );
        assert_eq!(
            pages.targeted,
            Some(HeaderName::from_static("cdn-cache-control"))
        );
        assert_eq!(c.routes[0].cache, Some(1));
    }

    #[test]
    fn bad_caches_are_refused_with_their_fields() {
        let text = format!(
            "{TEST_BASE}[caches.a]\nmemory = \"1k\"\nmax_object = \"lots\"\nkey = [\"host\", \"method\"]\n\
             set_cookie = \"eat\"\n"
        );
        let e = Config::from_toml(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("set_cookie"), "{e}");
        let text = format!(
            "{TEST_BASE}[caches.a]\nmemory = \"1k\"\nmax_object = \"lots\"\nkey = [\"host\", \"method\"]\n\
             targeted = \"cache-control\"\n[[routes]]\nupstream = \"app\"\ncache = \"b\"\n"
        );
        let e = Config::from_toml(&text, "t.toml").unwrap_err().to_string();
        for want in [
            "t.toml:6: caches.a.memory: 1024 bytes is less than 1048576",
            "t.toml:7: caches.a.max_object: `lots` is not a size",
            "t.toml:8: caches.a.key[1]: `method` is none of",
            "caches.a.key: must include \"path\"",
            "t.toml:9: caches.a.targeted: `cache-control` is not a field name other than Cache-Control",
            "routes[0].cache: no [caches.b] table",
        ] {
            assert!(e.contains(want), "{want} not in {e}");
        }
    }

    #[test]
    fn a_disk_tier_is_a_folder_and_a_size() {
        let c = Config::from_toml(
            &format!(
                "{TEST_BASE}[caches.pages]\ndisk = {{ path = \"cache/pages\", size = \"10GiB\" }}\n\
                 [[routes]]\nupstream = \"app\"\n"
            ),
            "/etc/tidegate/t.toml",
        )
        .unwrap();
        assert_eq!(
            c.caches[0].disk,
            Some(Disk {
                path: PathBuf::from("/etc/tidegate/cache/pages"),
                size: 10 << 30
            })
        );
        assert_eq!(
            c.caches[0].disk.as_ref().map(|d| d.path.is_absolute()),
            Some(true)
        );
        let text = format!(
            "{TEST_BASE}[caches.a]\nmax_object = \"4MiB\"\ndisk = {{ path = \"/w\", size = \"2MiB\" }}\n\
             [caches.b]\ndisk = {{ path = \"/x\", size = \"1GiB\" }}\n\
             [caches.e]\ndisk = {{ path = \"/x/\", size = \"1GiB\" }}\n\
             [caches.c]\ndisk = {{ path = \"/y\", size = \"lots\" }}\n"
        );
        let e = Config::from_toml(&text, "t.toml").unwrap_err().to_string();
        for want in [
            "caches.a.disk.size: 2097152 bytes is less than `max_object` (4194304)",
            "caches.e.disk.path: `/x/` is [caches.b]'s folder too",
            "caches.c.disk.size: `lots` is not a size",
        ] {
            assert!(e.contains(want), "{want} not in {e}");
        }
        let text = format!("{TEST_BASE}[caches.d]\ndisk = {{ path = \"/z\" }}\n");
        let e = Config::from_toml(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("size"), "{e}");
    }
}
