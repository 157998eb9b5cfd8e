//! nginx's `limit_conn` (with `limit_conn_zone`) as Tidegate's
//! concurrency limits (and `limit_req`, read by `rates.rs`), and `auth_request` (with `auth_request_set` and
//! the location it names) as a route's `forward_auth`.
//!
//! Both act in nginx's preaccess and access phases, after the rewrite
//! phase's `return` and redirects: only proxying routes get them, as
//! `allow`/`deny` (`access.rs`). An `auth_request` that cannot be
//! converted makes the route answer 500 (what nginx answers when its
//! subrequest fails), never an open route.
use super::parse::Directive;
use super::values;
use super::write::{ConcurrencyLimit, ForwardAuth, RateLimit};
use super::Skipped;

/// Lines not converted (the caller reports them; this file does not
/// import the converter, which holds its `Lines`).
#[derive(Default)]
pub(super) struct Report(pub Vec<Skipped>);

impl Report {
    fn skip_raw(&mut self, at: &str, directive: &str, why: &str) {
        self.0.push(Skipped {
            at: at.to_string(),
            directive: directive.to_string(),
            why: why.to_string(),
        });
    }
}

/// What names or makes the upstream group a `proxy_pass` URL's host
/// names: `(directive, scheme, host)` to the group's name.
pub(super) type Group<'a> =
    dyn FnMut(&Directive, &str, &str) -> Result<(String, bool), String> + 'a;

fn arg(d: &Directive, i: usize) -> &str {
    d.args.get(i).map(String::as_str).unwrap_or_default()
}

/// A line's arguments and where it was (`FILE:LINE`).
type Line = (Vec<String>, String);

/// The lines of one level.
#[derive(Clone, Default)]
pub(super) struct Lines {
    /// `limit_conn_zone` lines (http level, seen by every level below).
    zones: Vec<Line>,
    /// `limit_conn` lines: an array directive, a level with none of its
    /// own takes its parent's.
    limits: Option<Vec<Line>>,
    status: Option<Line>,
    auth: Option<Line>,
    /// `auth_request_set` lines (an array directive too).
    sets: Option<Vec<Line>>,
    /// `limit_req` and its zones (`rates.rs`).
    rates: super::rates::Lines,
}

/// A location an `auth_request` may name: its path, and whether it is
/// an exact (`=`) match.
pub(super) struct Target<'a> {
    pub path: String,
    pub exact: bool,
    pub directive: &'a Directive,
}

impl Lines {
    /// Records `d` if it is one of these directives.
    pub(super) fn read(&mut self, d: &Directive) -> bool {
        let line = (d.args.clone(), d.at());
        match d.name.as_str() {
            "limit_conn_zone" => self.zones.push(line),
            "limit_conn" => self.limits.get_or_insert_with(Vec::new).push(line),
            "limit_conn_status" => self.status = Some(line),
            "auth_request" => self.auth = Some(line),
            "auth_request_set" => self.sets.get_or_insert_with(Vec::new).push(line),
            name => return self.rates.read(name, line),
        }
        true
    }

    /// The lines in force below a level: its own, else its parent's.
    pub(super) fn settle(&mut self, own: Lines) {
        self.zones.extend(own.zones);
        if own.limits.is_some() {
            self.limits = own.limits;
        }
        if own.status.is_some() {
            self.status = own.status;
        }
        if own.auth.is_some() {
            self.auth = own.auth;
        }
        if own.sets.is_some() {
            self.sets = own.sets;
        }
        self.rates.settle(own.rates);
    }

    /// The route's rate limits from its `limit_req` lines (`rates.rs`).
    pub(super) fn rate_limits(&self, c: &mut Report) -> Vec<RateLimit> {
        self.rates.limits(&mut c.0)
    }

    /// True when `value` is a variable an `auth_request_set` line sets
    /// (a `proxy_set_header` of it is the forward_auth's business).
    pub(super) fn auth_variable(&self, value: &str) -> bool {
        self.auth_field(value).is_some()
    }

    /// The field (lower case) of the auth service's answer `value`
    /// carries, when it is one.
    pub(super) fn auth_field_name(&self, value: &str) -> Option<String> {
        self.auth_field(value)?
            .0
            .ok()
            .map(|f| f.to_ascii_lowercase())
    }

    /// The auth service's field `value` (`$var`) carries, when an
    /// `auth_request_set $var $upstream_http_NAME` sets it: `Ok(NAME)`,
    /// or `Err` (with where) for another value.
    fn auth_field(&self, value: &str) -> Option<(Result<String, String>, String)> {
        value.strip_prefix('$')?;
        let (args, at) = self
            .sets
            .iter()
            .flatten()
            .rev()
            .find(|(args, _)| args.first().map(String::as_str) == Some(value))?;
        let source = args.get(1).map(String::as_str).unwrap_or_default();
        let field = source
            .strip_prefix("$upstream_http_")
            .filter(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .map(|f| f.replace('_', "-"))
            .ok_or_else(|| format!("`{source}`: only `$upstream_http_NAME` (a field of the auth service's answer) is converted"));
        Some((field, at.clone()))
    }

    /// The route's concurrency limits from its `limit_conn` lines; lines
    /// Tidegate cannot express are reported and left out.
    pub(super) fn limits(&self, c: &mut Report) -> Vec<ConcurrencyLimit> {
        let mut out = Vec::new();
        for (args, at) in self.limits.iter().flatten() {
            let zone = args.first().cloned().unwrap_or_default();
            let Some((zone_args, zone_at)) = self.zones.iter().find(|(z, _)| {
                z.get(1)
                    .and_then(|p| p.strip_prefix("zone="))
                    .and_then(|p| p.split(':').next())
                    == Some(zone.as_str())
            }) else {
                c.skip_raw(
                    at,
                    "limit_conn",
                    &format!("no limit_conn_zone named `{zone}`"),
                );
                continue;
            };
            let key = match values::limit_key(
                zone_args.first().map(String::as_str).unwrap_or_default(),
            ) {
                Ok((key, None)) => key,
                Ok((key, Some(note))) => {
                    c.skip_raw(zone_at, "limit_conn_zone", note);
                    key
                }
                Err(why) => {
                    c.skip_raw(zone_at, "limit_conn_zone", &why);
                    continue;
                }
            };
            let max = match args.get(1).map(|n| n.parse::<u32>()) {
                Some(Ok(n)) if n > 0 => n,
                _ => {
                    c.skip_raw(at, "limit_conn", "the number must be at least 1");
                    continue;
                }
            };
            let status = self.status.as_ref();
            let code = status
                .and_then(|(a, _)| a.first())
                .map_or("503", String::as_str);
            if code != "429" {
                let at = status.map_or(at, |(_, at)| at);
                c.skip_raw(
                    at,
                    "limit_conn_status",
                    &format!("nginx answers {code}; Tidegate answers 429 with Retry-After (not configurable)"),
                );
            }
            out.push(ConcurrencyLimit {
                zone,
                key,
                max,
                from: zone_at.clone(),
            });
        }
        out
    }

    /// The route's `forward_auth`: `Ok(None)` without `auth_request` (or
    /// with `auth_request off`), `Err(())` when it cannot be converted
    /// (reported; the route must refuse every request).
    pub(super) fn forward_auth(
        &self,
        c: &mut Report,
        group: &mut Group,
        targets: &[Target],
        proxy_headers: Option<&Vec<(String, String, String)>>,
    ) -> Result<Option<ForwardAuth>, ()> {
        let Some((args, at)) = &self.auth else {
            return Ok(None);
        };
        let uri = args.first().map(String::as_str).unwrap_or_default();
        if uri == "off" {
            return Ok(None);
        }
        let fail = |c: &mut Report, why: &str| {
            c.skip_raw(
                at,
                "auth_request",
                &format!("{why}: the route answers 500 (as nginx does when its subrequest fails)"),
            );
            Err(())
        };
        if uri.contains('$') || !uri.starts_with('/') {
            return fail(
                c,
                &format!("`{uri}`: only a path without variables is converted"),
            );
        }
        let path_only = uri.split('?').next().unwrap_or_default();
        let target = targets
            .iter()
            .find(|t| t.exact && t.path == path_only)
            .or_else(|| {
                targets
                    .iter()
                    .filter(|t| !t.exact && path_only.starts_with(&t.path))
                    .max_by_key(|t| t.path.len())
            });
        let Some(target) = target else {
            return fail(c, &format!("no location of this server matches `{uri}`"));
        };
        let Some(pass) = target
            .directive
            .block
            .iter()
            .flatten()
            .find(|d| d.name == "proxy_pass")
        else {
            return fail(c, &format!("the location for `{uri}` has no proxy_pass"));
        };
        let url = arg(pass, 0);
        let Some((scheme @ ("http" | "https"), rest)) =
            url.split_once("://").filter(|_| !url.contains('$'))
        else {
            return fail(
                c,
                &format!("`{url}`: only http:// and https:// URLs without variables are converted"),
            );
        };
        let (host, uri_part) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let upstream = match group(pass, scheme, host) {
            Ok((group, _)) => group,
            Err(why) => return fail(c, &why),
        };
        // nginx replaces the part of the subrequest's URI the location
        // matched by proxy_pass's URI part.
        let path = match uri_part {
            Some(part) => format!("{part}{}", &uri[target.path.len().min(uri.len())..]),
            None => uri.to_string(),
        };
        let mut request_headers = vec!["authorization".to_string(), "cookie".to_string()];
        let block = target.directive.block.iter().flatten();
        let internal = block.clone().any(|d| d.name == "internal");
        // A location clients reach too is converted as theirs (its
        // other lines are reported there).
        for d in block.filter(|_| internal) {
            match (d.name.as_str(), arg(d, 0), arg(d, 1)) {
                ("internal" | "proxy_pass", _, _) | ("proxy_pass_request_body", "off", _) => {}
                ("proxy_pass_request_headers", "off", _) => request_headers.clear(),
                ("proxy_set_header", name, "") if name.eq_ignore_ascii_case("content-length") => {}
                ("proxy_set_header", name, value) if value.starts_with('$') => c.skip_raw(
                    &d.at(),
                    "proxy_set_header",
                    &format!("{name} `{value}` to the auth service: Tidegate sends X-Forwarded-Method, -Uri, -Host, -Proto, -For and X-Real-IP instead"),
                ),
                _ => c.skip_raw(
                    &d.at(),
                    &d.name,
                    "in the auth_request location: not converted (the subrequest has no body; its timeout is forward_auth's `timeout`)",
                ),
            }
        }
        if !request_headers.is_empty() {
            c.skip_raw(
                at,
                "auth_request",
                "nginx passes every field of the client's request to the auth service; Tidegate passes X-Forwarded-* and forward_auth's request_headers (written: Authorization, Cookie): add any other the service reads",
            );
        }
        let mut response_headers = Vec::new();
        for (name, value, header_at) in proxy_headers.into_iter().flatten() {
            match self.auth_field(value) {
                None => {}
                Some((Err(why), set_at)) => c.skip_raw(&set_at, "auth_request_set", &why),
                Some((Ok(field), _)) => {
                    if !field.eq_ignore_ascii_case(name) {
                        c.skip_raw(
                            header_at,
                            "proxy_set_header",
                            &format!("{name} from the auth service's {field}: Tidegate copies a field under its own name, so {field} is sent (and the client's {name} removed)"),
                        );
                    }
                    response_headers.push(field.to_ascii_lowercase());
                }
            }
        }
        Ok(Some(ForwardAuth {
            upstream,
            path,
            request_headers,
            response_headers,
        }))
    }
}
