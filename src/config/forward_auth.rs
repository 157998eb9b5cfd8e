//! A route's `forward_auth` (nginx's `auth_request`, Traefik's
//! ForwardAuth, Envoy's HTTP `ext_authz`) as pure data: the upstream
//! group that decides, by index, the subrequest's path, the fields it
//! copies each way as `HeaderName`s, its timeout and the status of a
//! failed decision. What sends the subrequest is
//! `proxy/forward_auth.rs`.

use std::time::Duration;

use http::{HeaderName, StatusCode};
use serde::Serialize;

use super::upstream::UpstreamGroup;
use super::{dump, raw};

/// The whole subrequest's limit when `timeout` is not given.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A route's `forward_auth`.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardAuth {
    /// The deciding group's index in `Config::upstreams`.
    #[serde(skip)]
    pub group: usize,
    /// Its name, as written.
    pub upstream: String,
    /// The subrequest's target; `None`: the client's path and query.
    #[serde(serialize_with = "opt_display")]
    pub path: Option<http::uri::PathAndQuery>,
    /// Copied from the client's request onto the subrequest.
    #[serde(serialize_with = "dump::header_names")]
    pub request_headers: Vec<HeaderName>,
    /// Copied from a 2xx decision onto the upstream request, after the
    /// client's own fields of these names are removed (so a client
    /// cannot pass for someone else).
    #[serde(serialize_with = "dump::header_names")]
    pub response_headers: Vec<HeaderName>,
    /// The field of a 2xx decision that names the user, for the access
    /// log's `$remote_user`.
    #[serde(serialize_with = "opt_name")]
    pub user_header: Option<HeaderName>,
    /// The whole subrequest: connection, head and body.
    #[serde(serialize_with = "dump::duration")]
    pub timeout: Duration,
    /// The status when no decision came (timeout, no server, a transport
    /// failure).
    #[serde(serialize_with = "dump::status")]
    pub on_error: StatusCode,
}

fn opt_display<S: serde::Serializer>(
    v: &Option<http::uri::PathAndQuery>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

fn opt_name<S: serde::Serializer>(v: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(n) => dump::header_name(n, s),
        None => s.serialize_none(),
    }
}

/// Fields the proxy sets itself on either message.
const RESERVED: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
];

/// `(field, reason)`, the field relative to the route.
type FieldError = (String, String);

fn field(name: &str, reason: String) -> FieldError {
    (format!("forward_auth.{name}"), reason)
}

/// The route's `forward_auth`, or its first problem.
pub(super) fn forward_auth(
    a: &raw::ForwardAuth,
    upstreams: &[UpstreamGroup],
) -> Result<ForwardAuth, FieldError> {
    let group = upstreams
        .iter()
        .position(|g| g.name == a.upstream)
        .ok_or_else(|| {
            field(
                "upstream",
                format!("no upstream group named `{}`", a.upstream),
            )
        })?;
    let path = match &a.path {
        None => None,
        Some(p) if !p.starts_with('/') => {
            return Err(field("path", format!("`{p}` must start with `/`")))
        }
        Some(p) => Some(
            http::uri::PathAndQuery::try_from(p.as_str())
                .map_err(|e| field("path", format!("`{p}`: {e}")))?,
        ),
    };
    let names = |name: &str, list: Option<&Vec<String>>| {
        list.into_iter()
            .flatten()
            .map(|n| {
                let h = HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| field(name, format!("`{n}` is not a header name")))?;
                match RESERVED.contains(&h.as_str()) {
                    true => Err(field(
                        name,
                        format!("`{n}` frames or routes the message: the proxy sets it"),
                    )),
                    false => Ok(h),
                }
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let request_headers = names("request_headers", a.request_headers.as_ref())?;
    let response_headers = names("response_headers", a.response_headers.as_ref())?;
    let user_header = match &a.user_header {
        None => None,
        Some(n) => Some(
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| field("user_header", format!("`{n}` is not a header name")))?,
        ),
    };
    let code = a.on_error.unwrap_or(503);
    let on_error = StatusCode::from_u16(code)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .ok_or_else(|| {
            field(
                "on_error",
                format!("{code} is not an error status (400 to 599)"),
            )
        })?;
    Ok(ForwardAuth {
        group,
        upstream: a.upstream.clone(),
        path,
        request_headers,
        response_headers,
        user_header,
        timeout: a.timeout.unwrap_or(DEFAULT_TIMEOUT),
        on_error,
    })
}
