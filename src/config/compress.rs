//! `compress = { algorithms, min_size, types, levels }` on a listener or a
//! route (the route's wins), as pure data. What compresses is
//! `crate::compress`.

use serde::Serialize;

use super::raw;

/// A content coding Tidegate can apply (RFC 9110 §8.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Coding {
    Zstd,
    Br,
    Gzip,
}

impl Coding {
    /// Its token, as in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }

    fn parse(s: &str) -> Option<Coding> {
        match s {
            "zstd" => Some(Coding::Zstd),
            "br" => Some(Coding::Br),
            "gzip" => Some(Coding::Gzip),
            _ => None,
        }
    }
}

/// Media types compressed unless `types` says otherwise: text formats
/// that compress well (server-sent events included: each event is
/// flushed as it comes).
pub const DEFAULT_TYPES: &[&str] = &[
    "text/html",
    "text/css",
    "text/plain",
    "text/xml",
    "text/javascript",
    "text/csv",
    "text/markdown",
    "text/event-stream",
    "application/javascript",
    "application/json",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/ld+json",
    "application/manifest+json",
    "application/wasm",
    "image/svg+xml",
];

/// Bodies smaller than this (when their length is known) are sent as
/// they are: the coding's framing would eat the gain.
pub const DEFAULT_MIN_SIZE: u64 = 1024;

/// One listener's or route's compression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compress {
    /// The codings offered, the server's preference first (it breaks ties
    /// of the client's q-values).
    pub algorithms: Vec<Coding>,
    pub min_size: u64,
    /// Media types (lower case, without parameters) compressed; an entry
    /// `type/*` takes every subtype.
    pub types: Vec<String>,
    /// gzip's level (1–9; 6 by default, as zlib's).
    pub gzip_level: u32,
    /// brotli's quality (0–11; 4 by default: on-the-fly compression).
    pub br_level: u32,
    /// zstd's level (1–19; 3 by default, as zstd's).
    pub zstd_level: i32,
}

impl Compress {
    /// Whether `media` (a `Content-Type` value) is one it compresses.
    pub fn takes(&self, media: &str) -> bool {
        let essence = media.split(';').next().unwrap_or("").trim();
        self.types.iter().any(|t| match t.strip_suffix('*') {
            Some(prefix) => {
                essence.len() >= prefix.len()
                    && essence.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            }
            None => essence.eq_ignore_ascii_case(t),
        })
    }
}

/// `compress` as written at `at` (`routes[2].compress`...), or its
/// problems as `(field, reason)`.
pub(super) fn compress(c: &raw::Compress, at: &str) -> Result<Compress, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut bad = |f: &str, r: String| errors.push((format!("{at}.{f}"), r));
    let algorithms = match &c.algorithms {
        None => vec![Coding::Zstd, Coding::Br, Coding::Gzip],
        Some(list) => {
            let mut out = Vec::new();
            for (i, a) in list.iter().enumerate() {
                match Coding::parse(a) {
                    Some(c) if out.contains(&c) => bad(
                        &format!("algorithms[{i}]"),
                        format!("`{a}` is listed twice"),
                    ),
                    Some(c) => out.push(c),
                    None => bad(
                        &format!("algorithms[{i}]"),
                        format!("`{a}` is none of \"zstd\", \"br\", \"gzip\""),
                    ),
                }
            }
            if list.is_empty() {
                bad("algorithms", "is empty".into());
            }
            out
        }
    };
    let types = match &c.types {
        None => DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
        Some(list) => {
            for (i, t) in list.iter().enumerate() {
                let essence = t.strip_suffix('*').unwrap_or(t);
                let ok = match essence.split_once('/') {
                    Some((ty, sub)) => {
                        !ty.is_empty()
                            && !t.contains(';')
                            && (t.ends_with('*') && sub.is_empty() || !sub.is_empty())
                            && t.bytes().all(|b| b.is_ascii_graphic())
                    }
                    None => false,
                };
                if !ok {
                    bad(
                        &format!("types[{i}]"),
                        format!("`{t}` is not a media type (`type/subtype` or `type/*`)"),
                    );
                }
            }
            list.iter().map(|t| t.to_ascii_lowercase()).collect()
        }
    };
    let level = |name: &str, v: Option<i64>, range: std::ops::RangeInclusive<i64>, default| match v
    {
        None => Ok(default),
        Some(n) if range.contains(&n) => Ok(n),
        Some(n) => Err((
            format!("{at}.{name}"),
            format!("{n} is outside {}..={}", range.start(), range.end()),
        )),
    };
    let gzip = level("gzip_level", c.gzip_level, 1..=9, 6);
    let br = level("br_level", c.br_level, 0..=11, 4);
    let zstd = level("zstd_level", c.zstd_level, 1..=19, 3);
    for r in [&gzip, &br, &zstd] {
        if let Err(e) = r {
            errors.push(e.clone());
        }
    }
    match (gzip, br, zstd) {
        (Ok(g), Ok(b), Ok(z)) if errors.is_empty() => Ok(Compress {
            algorithms,
            min_size: c.min_size.unwrap_or(DEFAULT_MIN_SIZE),
            types,
            gzip_level: g as u32,
            br_level: b as u32,
            zstd_level: z as i32,
        }),
        _ => Err(errors),
    }
}

/// The defaults, for other modules' tests.
#[cfg(test)]
pub(crate) fn tests_default() -> Compress {
    compress(&raw::Compress::default(), "t").unwrap_or_else(|e| panic!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Compress, Vec<(String, String)>> {
        compress(&toml::from_str(text).unwrap(), "c")
    }

    #[test]
    fn defaults_and_types() {
        let c = parse("").unwrap();
        assert_eq!(c.algorithms, [Coding::Zstd, Coding::Br, Coding::Gzip]);
        assert!(c.takes("text/html; charset=utf-8"));
        assert!(c.takes("Application/JSON"));
        assert!(!c.takes("image/png"));
        assert!(!c.takes("application/grpc"));
        let c = parse("types = [\"text/*\"]\nalgorithms = [\"gzip\"]").unwrap();
        assert!(c.takes("text/anything"));
        assert!(!c.takes("textual/x"));
        assert!(!c.takes("application/json"));
    }

    #[test]
    fn bad_fields_are_named() {
        let e = parse(
            "algorithms = [\"gzip\", \"lzma\", \"gzip\"]\ntypes = [\"html\"]\ngzip_level = 10",
        )
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "c.algorithms[1]",
                "c.algorithms[2]",
                "c.types[0]",
                "c.gzip_level"
            ]
        );
    }
}
