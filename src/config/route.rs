//! Compiling `[[routes]]` entries into the router's validated types.

use http::HeaderValue;

use super::{raw, Limits, Route, Timeouts, UpstreamGroup, UpstreamHost};
use crate::router::{Action, HostMatch, PathMatch, Rewrite, Template};

/// `(field, reason)`, the field relative to the route.
pub(super) type FieldError = (String, String);

fn field(name: &str, reason: impl Into<String>) -> FieldError {
    (name.to_string(), reason.into())
}

/// The names of the limit tables routes refer to, each kind in the order
/// written.
pub(super) struct LimitNames<'a> {
    /// `[rate_limits.*]`.
    pub(super) rate: Vec<&'a str>,
    /// `[concurrency_limits.*]`.
    pub(super) concurrency: Vec<&'a str>,
    /// `[caches.*]`.
    pub(super) caches: Vec<&'a str>,
}

/// Compiles one `[[routes]]` entry: every part is checked, and every
/// problem comes back, each naming its field within the route.
pub(super) fn compile_route(
    index: usize,
    rt: &raw::Route,
    upstreams: &[UpstreamGroup],
    timeouts: &Timeouts,
    limits: &Limits,
    base: &std::path::Path,
    limit_names: &LimitNames<'_>,
) -> Result<Route, Vec<FieldError>> {
    let mut errors = Vec::new();
    let host = ok(&mut errors, host_match(rt));
    let path = ok(&mut errors, path_match(rt));
    let methods = ok(&mut errors, methods(rt));
    let headers = ok(&mut errors, header_pairs("headers", rt.headers.as_ref()));
    let action = ok(&mut errors, action(rt, upstreams, base));
    // A static route with `upstream` proxies what no file answers.
    let proxies = match &action {
        Some(Action::Proxy(_)) => true,
        Some(Action::Static(s)) => s.upstream.is_some(),
        _ => false,
    };
    for (name, given) in [
        ("strip_prefix", rt.strip_prefix.is_some()),
        ("rewrite", rt.rewrite.is_some()),
        ("request_headers", rt.request_headers.is_some()),
        ("upstream_host", rt.upstream_host.is_some()),
        ("timeouts", rt.timeouts.is_some()),
        ("max_body_bytes", rt.max_body_bytes.is_some()),
    ] {
        // The path's rewrite applies to a static route's files too.
        let static_path =
            matches!(action, Some(Action::Static(_))) && matches!(name, "strip_prefix" | "rewrite");
        // A route without a valid action has its own error already.
        if given && action.is_some() && !proxies && !static_path {
            errors.push(field(name, "only applies to routes with `upstream`"));
        }
    }
    let rewrite = ok(&mut errors, rewrite(rt));
    let upstream_host = ok(&mut errors, upstream_host(rt));
    let request_headers = ok(
        &mut errors,
        header_ops("request_headers", rt.request_headers.as_ref()),
    );
    let response_headers = ok(
        &mut errors,
        header_ops("response_headers", rt.response_headers.as_ref()),
    );
    let request_id = match &rt.request_id {
        None => Some(None),
        Some(r) => ok(
            &mut errors,
            super::listener::request_id(r)
                .map(Some)
                .map_err(|(f, reason)| field(f, reason)),
        ),
    };
    let access = match super::listener::access(rt.access.as_deref()) {
        Ok(a) => Some(a),
        Err(bad) => {
            errors.extend(
                bad.into_iter()
                    .map(|(j, r)| field(&format!("access[{j}]"), r)),
            );
            None
        }
    };
    let basic_auth = match &rt.basic_auth {
        None => Some(None),
        Some(a) => ok(&mut errors, super::auth::basic_auth(a, base).map(Some)),
    };
    let forward_auth = match &rt.forward_auth {
        None => Some(None),
        Some(a) => ok(
            &mut errors,
            super::forward_auth::forward_auth(a, upstreams).map(|a| Some(std::sync::Arc::new(a))),
        ),
    };
    let jwt = match &rt.jwt {
        None => Some(None),
        Some(_) if rt.basic_auth.is_some() => {
            errors.push(field(
                "jwt",
                "a route has `basic_auth` or `jwt`, not both (one `Authorization` field)",
            ));
            None
        }
        Some(j) => match super::jwt::jwt(j, base) {
            Ok(j) => Some(Some(j)),
            Err(bad) => {
                errors.extend(bad);
                None
            }
        },
    };
    let rate_limit = ok(
        &mut errors,
        super::rate_limit::route_limits(rt.rate_limit.as_ref(), &limit_names.rate),
    );
    let concurrency_limit = ok(
        &mut errors,
        super::concurrency_limit::route_limits(
            rt.concurrency_limit.as_ref(),
            &limit_names.concurrency,
        ),
    );
    let compress = match &rt.compress {
        None => Some(None),
        Some(_) if action.is_some() && !proxies => {
            errors.push(field("compress", "only applies to routes with `upstream`"));
            None
        }
        Some(c) => match super::compress::compress(c, "compress") {
            Ok(c) => Some(Some(std::sync::Arc::new(c))),
            Err(bad) => {
                errors.extend(bad);
                None
            }
        },
    };
    let cache = match &rt.cache {
        Some(_) if matches!(action, Some(Action::Static(_))) => {
            errors.push(field(
                "cache",
                "does not apply to routes with `static` (files are served from disk)",
            ));
            None
        }
        Some(_) if action.is_some() && !proxies => {
            errors.push(field("cache", "only applies to routes with `upstream`"));
            None
        }
        c => ok(
            &mut errors,
            super::cache::route_cache(c.as_ref(), &limit_names.caches),
        ),
    };
    let rt_timeouts = rt.timeouts.as_ref();
    let route = (|| {
        Some(Route {
            index,
            name: rt.name.clone(),
            host: host?,
            path: path?,
            methods: methods?,
            headers: headers?,
            action: action?,
            rewrite: rewrite?,
            request_headers: request_headers?,
            response_headers: response_headers?,
            upstream_host: upstream_host?,
            request_id: request_id?,
            access: access?,
            rate_limit: rate_limit?,
            concurrency_limit: concurrency_limit?,
            max_body_bytes: rt.max_body_bytes.or(limits.max_body_bytes),
            upstream_connect: rt_timeouts
                .and_then(|t| t.upstream_connect)
                .unwrap_or(timeouts.upstream_connect),
            upstream_response_head: rt_timeouts
                .and_then(|t| t.upstream_response_head)
                .unwrap_or(timeouts.upstream_response_head),
            basic_auth: basic_auth?,
            compress: compress?,
            forward_auth: forward_auth?,
            jwt: jwt?,
            cache: cache?,
        })
    })();
    match route {
        Some(r) if errors.is_empty() => Ok(r),
        _ => Err(errors),
    }
}

/// `r`'s value, or `None` with its error kept.
fn ok<T>(errors: &mut Vec<FieldError>, r: Result<T, FieldError>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

fn must_start_with_slash(name: &str, p: &str) -> Result<String, FieldError> {
    if p.starts_with('/') {
        Ok(p.to_string())
    } else {
        Err(field(name, format!("`{p}` must start with `/`")))
    }
}

fn host_match(rt: &raw::Route) -> Result<HostMatch, FieldError> {
    Ok(match rt.host.as_deref() {
        None => HostMatch::Any,
        Some(h) if h.is_empty() || h.contains(['/', ' ', ':']) => {
            return Err(field(
                "host",
                format!("`{h}` is not a host name (no port, scheme or path)"),
            ))
        }
        Some(h) => match h.strip_prefix('*') {
            Some(suffix)
                if suffix.starts_with('.') && suffix.len() > 1 && !suffix.contains('*') =>
            {
                HostMatch::Suffix(suffix.to_ascii_lowercase())
            }
            Some(_) => {
                return Err(field(
                    "host",
                    format!("`{h}`: a wildcard is written `*.example.com`"),
                ))
            }
            None if h.contains('*') => {
                return Err(field(
                    "host",
                    format!("`{h}`: `*` may only start a name, as in `*.example.com`"),
                ))
            }
            None => HostMatch::Exact(h.to_ascii_lowercase()),
        },
    })
}

fn path_match(rt: &raw::Route) -> Result<PathMatch, FieldError> {
    Ok(match (&rt.path, &rt.path_prefix, &rt.path_regex) {
        (None, None, None) => PathMatch::Prefix("/".into()),
        (Some(p), None, None) => PathMatch::Exact(must_start_with_slash("path", p)?),
        (None, Some(p), None) => PathMatch::Prefix(must_start_with_slash("path_prefix", p)?),
        (None, None, Some(r)) => PathMatch::Regex(
            regex::Regex::new(r).map_err(|e| field("path_regex", format!("`{r}`: {e}")))?,
        ),
        _ => {
            return Err(field(
                "path",
                "give at most one of `path`, `path_prefix` and `path_regex`",
            ))
        }
    })
}

fn methods(rt: &raw::Route) -> Result<Vec<http::Method>, FieldError> {
    let mut methods = Vec::new();
    for m in rt.methods.iter().flatten() {
        let upper = m.to_ascii_uppercase();
        methods.push(
            http::Method::from_bytes(upper.as_bytes())
                .map_err(|_| field("methods", format!("`{m}` is not an HTTP method")))?,
        );
    }
    Ok(methods)
}

fn action(
    rt: &raw::Route,
    upstreams: &[UpstreamGroup],
    base: &std::path::Path,
) -> Result<Action, FieldError> {
    let group = |name: &String| {
        upstreams
            .iter()
            .position(|g| &g.name == name)
            .ok_or_else(|| field("upstream", format!("no upstream group named `{name}`")))
    };
    if let Some(s) = &rt.static_files {
        if rt.redirect.is_some() || rt.respond.is_some() {
            return Err(field(
                "static",
                "give `static` alone, or with `upstream` (for what no file answers); \
                 not with `redirect` or `respond`",
            ));
        }
        let upstream = rt.upstream.as_ref().map(group).transpose()?;
        return Ok(Action::Static(std::sync::Arc::new(
            super::static_files::static_files(s, base, upstream)?,
        )));
    }
    Ok(match (&rt.upstream, &rt.redirect, &rt.respond) {
        (Some(name), None, None) => Action::Proxy(group(name)?),
        (None, Some(r), None) => {
            let status = r.status.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&status) {
                return Err(field(
                    "redirect.status",
                    format!("{status} is not a redirect status (301, 302, 303, 307, 308)"),
                ));
            }
            Action::Redirect {
                status: http::StatusCode::from_u16(status)
                    .map_err(|e| field("redirect.status", e.to_string()))?,
                location: Template::parse(&r.location)
                    .map_err(|e| field("redirect.location", e))?,
            }
        }
        (None, None, Some(r)) => {
            let code = r.status.unwrap_or(200);
            let status = http::StatusCode::from_u16(code)
                .ok()
                .filter(|s| s.as_u16() >= 200)
                .ok_or_else(|| field("respond.status", format!("{code} is not a final status")))?;
            let mut map = http::HeaderMap::new();
            for (n, v) in header_pairs("respond.headers", r.headers.as_ref())? {
                map.append(n, v);
            }
            Action::Respond {
                status,
                headers: map,
                body: bytes::Bytes::from(r.body.clone().unwrap_or_default()),
            }
        }
        (None, None, None) => {
            return Err(field(
                "upstream",
                "a route needs one action: `upstream`, `redirect`, `respond` or `static`",
            ))
        }
        _ => {
            return Err(field(
                "upstream",
                "give only one of `upstream`, `redirect` and `respond`",
            ))
        }
    })
}

fn rewrite(rt: &raw::Route) -> Result<Option<Rewrite>, FieldError> {
    Ok(match (&rt.strip_prefix, &rt.rewrite) {
        (None, None) => None,
        (Some(p), None) => Some(Rewrite::StripPrefix(must_start_with_slash(
            "strip_prefix",
            p,
        )?)),
        (None, Some(r)) => {
            if !r.replace.starts_with('/') && !r.replace.starts_with('$') {
                return Err(field(
                    "rewrite.replace",
                    format!("`{}` must start with `/`", r.replace),
                ));
            }
            Some(Rewrite::Regex {
                regex: regex::Regex::new(&r.regex)
                    .map_err(|e| field("rewrite.regex", format!("`{}`: {e}", r.regex)))?,
                replace: r.replace.clone(),
            })
        }
        (Some(_), Some(_)) => {
            return Err(field(
                "rewrite",
                "give either `strip_prefix` or `rewrite`, not both",
            ))
        }
    })
}

fn upstream_host(rt: &raw::Route) -> Result<UpstreamHost, FieldError> {
    Ok(match rt.upstream_host.as_deref() {
        None | Some("client") => UpstreamHost::Client,
        Some("server") => UpstreamHost::Server,
        Some(v) => UpstreamHost::Fixed(HeaderValue::from_str(v).map_err(|_| {
            field(
                "upstream_host",
                format!("`{v}` is not a valid header value"),
            )
        })?),
    })
}

fn header_pairs(
    name: &str,
    map: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<Vec<(http::HeaderName, HeaderValue)>, FieldError> {
    let mut out = Vec::new();
    for (k, v) in map.into_iter().flatten() {
        let n = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| field(name, format!("`{k}` is not a header name")))?;
        let v = HeaderValue::from_str(v)
            .map_err(|_| field(name, format!("`{k}`: `{v}` is not a header value")))?;
        out.push((n, v));
    }
    Ok(out)
}

fn header_ops(
    name: &str,
    raw: Option<&raw::HeaderOps>,
) -> Result<crate::router::HeaderOps, FieldError> {
    let Some(raw) = raw else {
        return Ok(Default::default());
    };
    let mut remove = Vec::new();
    for k in raw.remove.iter().flatten() {
        remove.push(http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            field(
                &format!("{name}.remove"),
                format!("`{k}` is not a header name"),
            )
        })?);
    }
    Ok(crate::router::HeaderOps {
        remove,
        set: header_pairs(&format!("{name}.set"), raw.set.as_ref())?,
        add: header_pairs(&format!("{name}.add"), raw.add.as_ref())?,
    })
}
