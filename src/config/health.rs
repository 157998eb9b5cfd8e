//! A group's active health checks (`[upstreams.NAME.health]`), as pure
//! data: an HTTP request and the statuses that pass, or a TCP connect.

use std::time::Duration;

use http::{Method, StatusCode};
use serde::Serialize;

use super::raw;
use super::source::Problems;

/// Active check settings of a group.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What a check does: an HTTP request, or a TCP connect.
    pub kind: CheckKind,
    #[serde(serialize_with = "super::dump::display")]
    pub method: Method,
    #[serde(serialize_with = "super::dump::display")]
    pub path: http::uri::PathAndQuery,
    #[serde(serialize_with = "super::dump::duration")]
    pub interval: Duration,
    #[serde(serialize_with = "super::dump::duration")]
    pub timeout: Duration,
    /// Statuses that count as healthy.
    #[serde(serialize_with = "super::dump::statuses")]
    pub expect: Vec<StatusCode>,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// A health check's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// `method path`, and a status in `expect` (the default for groups
    /// that routes use).
    Http,
    /// The connection opens (with TLS for `https://` servers): what an
    /// L4 proxy can know of a server (the default for groups that only
    /// `[[streams]]` use; HAProxy's `check` in `mode tcp`).
    Tcp,
}

/// A group's `health` table, checked; problems go to `p` under `at`.
pub(super) fn check(
    h: &raw::Health,
    at: &str,
    streams_only: bool,
    p: &mut Problems,
) -> Option<Check> {
    let at = format!("{at}.health");
    let before = p.len();
    let kind = match h.kind {
        Some(raw::CheckType::Http) => CheckKind::Http,
        Some(raw::CheckType::Tcp) => CheckKind::Tcp,
        None if streams_only => CheckKind::Tcp,
        None => CheckKind::Http,
    };
    if kind == CheckKind::Tcp {
        for (field, given) in [
            ("method", h.method.is_some()),
            ("path", h.path.is_some()),
            ("expect", h.expect.is_some()),
        ] {
            if given {
                p.add(
                    format!("{at}.{field}"),
                    "only applies to `type = \"http\"` checks",
                );
            }
        }
    }
    let path = h.path.clone().unwrap_or_else(|| "/".into());
    let path = if path.starts_with('/') {
        http::uri::PathAndQuery::from_maybe_shared(path.clone())
            .map_err(|_| {
                p.add(
                    format!("{at}.path"),
                    format!("`{path}` is not a valid path"),
                )
            })
            .ok()
    } else {
        p.add(
            format!("{at}.path"),
            format!("`{path}` must start with `/`"),
        );
        None
    };
    let mut expect = Vec::new();
    for code in h.expect.clone().unwrap_or_else(|| vec![200]) {
        match StatusCode::from_u16(code) {
            Ok(s) => expect.push(s),
            Err(_) => p.add(format!("{at}.expect"), format!("{code} is not a status")),
        }
    }
    let mut threshold = |name: &str, v: Option<u32>, default: u32| match v.unwrap_or(default) {
        0 => {
            p.add(format!("{at}.{name}"), "must be at least 1");
            default
        }
        n => n,
    };
    let healthy_threshold = threshold("healthy_threshold", h.healthy_threshold, 2);
    let unhealthy_threshold = threshold("unhealthy_threshold", h.unhealthy_threshold, 3);
    let method = Method::from_bytes(h.method.as_deref().unwrap_or("GET").as_bytes())
        .map_err(|_| p.add(format!("{at}.method"), "not an HTTP method"))
        .ok();
    if p.len() != before {
        return None;
    }
    Some(Check {
        kind,
        method: method?,
        path: path?,
        interval: h.interval.unwrap_or(Duration::from_secs(5)),
        timeout: h.timeout.unwrap_or(Duration::from_secs(2)),
        expect,
        healthy_threshold,
        unhealthy_threshold,
    })
}
