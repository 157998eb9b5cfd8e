//! One nginx `server` block's locations as Tidegate routes: one route per
//! location and host name, `return` as redirect or fixed response,
//! `proxy_pass` as an upstream with the path replaced as nginx does, files
//! (`root`, `alias`, `try_files`) as a `static` table (`files.rs`).
use std::collections::BTreeMap;

use super::emit::{arg, Converter, Inherit, Server};
use super::files::{self, Serve};
use super::gates::{Report, Target};
use super::parse::Directive;
use super::values;
use super::write::{Action, Files, Path, Route};

/// A location's match.
enum Kind {
    Exact(String),
    Prefix(String),
    /// `^~`: a prefix that stops the regex search.
    Final(String),
    Regex(String),
}

/// Host names of a server as Tidegate writes them; `None`: every host.
fn hosts(c: &mut Converter, s: &Server) -> Vec<Option<String>> {
    if s.is_default {
        return vec![None];
    }
    let mut out = Vec::new();
    for n in &s.names {
        let n = n.to_ascii_lowercase();
        if n.is_empty() || n == "_" {
            continue;
        }
        if let Some(base) = n.strip_prefix('.') {
            out.push(Some(base.to_string()));
            out.push(Some(format!("*.{base}")));
        } else if n.starts_with('~') || n.matches('*').count() > usize::from(n.starts_with("*.")) {
            c.skip_at(
                s.directive,
                &format!("server_name `{n}`: only exact names and `*.name` are converted"),
            );
        } else {
            out.push(Some(n));
        }
    }
    out
}

pub(super) fn server(c: &mut Converter, s: &Server, inherit: &Inherit) {
    let d = s.directive;
    let hosts: Vec<Option<String>> = hosts(c, s)
        .into_iter()
        .filter(|h| c.take_host(d, h))
        .collect();
    if hosts.is_empty() {
        c.skip_at(
            d,
            "no server_name Tidegate can route by (and not the default server): not converted",
        );
        return;
    }
    let first_name = s.names.iter().find(|n| !n.is_empty() && *n != "_").cloned();
    let mut inherit = inherit.clone();
    let mut own = Inherit::default();
    let mut locations = Vec::new();
    let mut named = Vec::new();
    let mut server_return = None;
    let mut server_rewrites = Vec::new();
    let mut server_try = None;
    for i in d.block.iter().flatten() {
        if c.level(i, &mut inherit, &mut own) {
            continue;
        }
        match i.name.as_str() {
            "listen" | "server_name" | "http2" => {}
            "location" if i.block.is_some() && arg(i, 0).starts_with('@') => named.push(i),
            "location" if i.block.is_some() => locations.push(i),
            "return" if server_return.is_none() => server_return = Some(i),
            "rewrite" => server_rewrites.push(i),
            "access_log" => c.access_log(i),
            "try_files" => server_try = Some(i),
            _ => c.skip_at(i, "not converted (outside the reverse-proxy subset)"),
        }
    }
    // A named location is converted where a `try_files` names it.
    let tries: Vec<&Directive> = locations
        .iter()
        .flat_map(|l| l.block.iter().flatten())
        .chain(server_try)
        .filter(|i| i.name == "try_files")
        .collect();
    for n in &named {
        if !tries.iter().any(|t| t.args.last() == n.args.first()) {
            c.skip_at(
                n,
                "named locations are converted only as a `try_files` fallback",
            );
        }
    }
    Converter::settle(&mut inherit, own);
    // The locations an `auth_request` may name (regexes are not looked at).
    let targets: Vec<Target> = locations
        .iter()
        .filter_map(|l| match kind(l) {
            Ok(Kind::Exact(p)) => Some((p, true, *l)),
            Ok(Kind::Prefix(p) | Kind::Final(p)) => Some((p, false, *l)),
            _ => None,
        })
        .map(|(path, exact, directive)| Target {
            path,
            exact,
            directive,
        })
        .collect();
    let base = Base {
        hosts: &hosts,
        server_name: first_name.as_deref(),
        targets: &targets,
        named: &named,
    };
    for r in &server_rewrites {
        rewrite_redirect(c, r, &base, &inherit);
    }
    if let Some(ret) = server_return {
        if let Some(action) = return_action(c, ret, &base) {
            base.emit(c, ret, Path::Prefix("/".into()), action, &inherit, None);
        }
        for l in locations {
            c.skip_at(
                l,
                "never reached: the server's `return` answers every request",
            );
        }
        return;
    }
    let kinds: Vec<(Kind, &Directive)> = locations
        .into_iter()
        .filter_map(|l| match kind(l) {
            Ok(k) => Some((k, l)),
            Err(why) => {
                c.skip_at(l, &why);
                None
            }
        })
        .collect();
    let has_regex = kinds.iter().any(|(k, _)| matches!(k, Kind::Regex(_)));
    // `^~` prefixes become regexes ahead of the others (longest first),
    // so that they win over the regexes as nginx has them do.
    let mut finals: Vec<&(Kind, &Directive)> = kinds
        .iter()
        .filter(|(k, _)| matches!(k, Kind::Final(_)) && has_regex)
        .collect();
    finals.sort_by_key(|(k, _)| match k {
        Kind::Final(p) => std::cmp::Reverse(p.len()),
        _ => std::cmp::Reverse(0),
    });
    let mut covers_root = false;
    for (k, l) in finals.iter().copied().chain(
        kinds
            .iter()
            .filter(|(k, _)| !(matches!(k, Kind::Final(_)) && has_regex)),
    ) {
        if let Kind::Prefix(p) = k {
            let shadowed = kinds.iter().any(|(o, _)| matches!(o, Kind::Final(f) if has_regex && p.starts_with(f.as_str()) && p.len() > f.len()));
            if shadowed {
                c.skip_at(l, "a longer prefix inside a `^~` one, with regex locations: Tidegate gives the `^~` location these requests (see README)");
            }
        }
        let (path, prefix) = match k {
            Kind::Exact(p) => (Path::Exact(p.clone()), Some(p.clone())),
            Kind::Prefix(p) => (Path::Prefix(p.clone()), Some(p.clone())),
            Kind::Final(p) if has_regex => (
                Path::Regex(format!("^{}", regex::escape(p))),
                Some(p.clone()),
            ),
            Kind::Final(p) => (Path::Prefix(p.clone()), Some(p.clone())),
            Kind::Regex(r) => (Path::Regex(r.clone()), None),
        };
        covers_root |= prefix.as_deref() == Some("/") && !matches!(k, Kind::Exact(_));
        // A prefix ending in `/` with no exact location for the path
        // without it: nginx redirects that path (proxy_pass locations).
        let auto_redirect = match k {
            Kind::Prefix(p) | Kind::Final(p) if p.len() > 1 && p.ends_with('/') => {
                let bare = p.trim_end_matches('/').to_string();
                let exact = kinds
                    .iter()
                    .any(|(o, _)| matches!(o, Kind::Exact(e) if *e == bare));
                (!exact).then_some(bare)
            }
            _ => None,
        };
        location(c, l, path, prefix, auto_redirect, &base, &inherit, None);
    }
    // nginx answers what no location takes from the server's files (its
    // `try_files` applies to these requests alone): 404 without a root.
    // Without a route here the request would reach another server's.
    let root = Path::Prefix("/".into());
    if covers_root {
        if let Some(t) = server_try {
            c.skip_at(t, "never used: `location /` takes every request");
        }
    } else if let Some(serve) = files::serve(c, &root, None, server_try, &inherit, base.named) {
        base.serve(c, d, root, serve, &inherit);
    } else {
        if let Some(t) = server_try {
            c.skip_at(t, "no absolute `root` for its files: not converted");
        }
        if !s.is_default {
            base.emit(c, d, root, Action::Respond(404, None), &inherit, None);
        }
    }
}

fn kind(l: &Directive) -> Result<Kind, String> {
    let ci = arg(l, 0) == "~*";
    match (arg(l, 0), l.args.len()) {
        ("=", 2) => Ok(Kind::Exact(arg(l, 1).to_string())),
        ("^~", 2) => Ok(Kind::Final(arg(l, 1).to_string())),
        ("~" | "~*", 2) => values::regex(arg(l, 1), ci).map(Kind::Regex),
        (p, 1) if p.starts_with('/') => Ok(Kind::Prefix(p.to_string())),
        _ => Err("not a location Tidegate can match".into()),
    }
}

/// Lines not converted, found by `access.rs`.
fn report(c: &mut Converter, skipped: Vec<super::Skipped>) {
    for s in skipped {
        c.skip_raw(&s.at, &s.directive, &s.why);
    }
}

/// What every route of a server shares.
struct Base<'a> {
    hosts: &'a [Option<String>],
    server_name: Option<&'a str>,
    targets: &'a [Target<'a>],
    /// Its named locations (`location @name`), for `try_files`.
    named: &'a [&'a Directive],
}

impl Base<'_> {
    /// A route serving files at `path`; with `try_files ... @name`, the
    /// named location's upstream takes what they do not answer.
    fn serve(&self, c: &mut Converter, d: &Directive, path: Path, serve: Serve, inherit: &Inherit) {
        let Serve {
            files,
            strip_prefix,
            named,
        } = serve;
        match named {
            Some(n) => location(c, n, path, None, None, self, inherit, Some(files)),
            None => {
                let own = Proxy {
                    files: Some(files),
                    strip_prefix,
                    ..Proxy::default()
                };
                self.emit(c, d, path, Action::Files, inherit, Some(own));
            }
        }
    }

    /// One route per host; response headers from `add_header`.
    fn emit(
        &self,
        c: &mut Converter,
        d: &Directive,
        path: Path,
        action: Action,
        inherit: &Inherit,
        proxy: Option<Proxy>,
    ) {
        let status = match &action {
            Action::Respond(s, _) | Action::Redirect(s, _) => *s,
            Action::Upstream(_) | Action::Files => 200,
        };
        let mut response_add = BTreeMap::new();
        for (name, value, at) in inherit.add_headers.iter().flatten() {
            if value.contains('$') {
                c.skip_raw(
                    at,
                    "add_header",
                    &format!("`{value}`: variables are not converted"),
                );
            } else if (200..400).contains(&status) || !matches!(action, Action::Respond(..)) {
                response_add.insert(name.to_ascii_lowercase(), value.clone());
            }
        }
        // nginx checks credentials after `return` (rewrite phase): only
        // proxying and file routes get them.
        let basic_auth = match (&action, inherit.auth_basic.as_deref()) {
            (Action::Upstream(_) | Action::Files, Some(realm)) if realm != "off" => inherit
                .auth_basic_user_file
                .clone()
                .map(|f| (realm.to_string(), f)),
            _ => None,
        };
        let proxy = proxy.unwrap_or_default();
        let mut bad = Vec::new();
        // nginx's access phase comes after `return` and redirects.
        let access = match action {
            Action::Upstream(_) | Action::Files => inherit.access.rules(&mut bad),
            _ => Vec::new(),
        };
        report(c, bad);
        let mut gates = Report::default();
        let (rate_limits, concurrency_limits, forward_auth) = match action {
            Action::Upstream(_) | Action::Files => (
                inherit.gates.rate_limits(&mut gates),
                inherit.gates.limits(&mut gates),
                inherit.gates.forward_auth(
                    &mut gates,
                    &mut |d, scheme, host| c.group(d, scheme, host),
                    self.targets,
                    inherit.proxy_headers.as_ref(),
                ),
            ),
            _ => (Vec::new(), Vec::new(), Ok(None)),
        };
        report(c, gates.0);
        // An auth_request that cannot be converted refuses (fails closed).
        let (action, forward_auth, proxy) = match forward_auth {
            Ok(fa) => (action, fa, proxy),
            Err(()) => (Action::Respond(500, None), None, Proxy::default()),
        };
        for h in self.hosts {
            c.push(Route {
                from: d.at(),
                host: h.clone(),
                path: path.clone(),
                action: action.clone(),
                rewrite: proxy.rewrite.clone(),
                strip_prefix: proxy.strip_prefix.clone(),
                files: proxy.files.clone(),
                request_set: proxy.set.clone(),
                request_remove: proxy.remove.clone(),
                response_add: response_add.clone(),
                max_body_bytes: proxy.max_body_bytes,
                upstream_host: proxy.upstream_host.clone(),
                connect_timeout: proxy.connect.clone(),
                read_timeout: proxy.read.clone(),
                access: access.clone(),
                basic_auth: basic_auth.clone(),
                rate_limits: rate_limits.clone(),
                concurrency_limits: concurrency_limits.clone(),
                forward_auth: forward_auth.clone(),
            });
        }
    }
}

/// A proxying (or file-serving) route's own fields.
#[derive(Default)]
struct Proxy {
    rewrite: Option<(String, String)>,
    strip_prefix: Option<String>,
    files: Option<Files>,
    set: BTreeMap<String, String>,
    remove: Vec<String>,
    max_body_bytes: Option<u64>,
    upstream_host: Option<String>,
    connect: Option<String>,
    read: Option<String>,
}

/// `return CODE [TEXT|URL]` or `return URL`.
fn return_action(c: &mut Converter, d: &Directive, base: &Base) -> Option<Action> {
    let (code, rest) = match arg(d, 0).parse::<u16>() {
        Ok(code) => (code, d.args.get(1)),
        Err(_) => (302, d.args.first()),
    };
    match code {
        301 | 302 | 303 | 307 | 308 => {
            let target = rest.map(String::as_str).unwrap_or_default();
            match values::template(target, base.server_name) {
                Ok(t) => Some(Action::Redirect(code, absolute(t))),
                Err(why) => {
                    c.skip_at(d, &why);
                    None
                }
            }
        }
        200..=599 if code != 444 => match rest {
            Some(text) if text.contains('$') => {
                c.skip_at(d, "a body with variables is not converted");
                None
            }
            text => Some(Action::Respond(code, text.cloned())),
        },
        _ => {
            c.skip_at(d, &format!("status {code} is not converted"));
            None
        }
    }
}

/// nginx makes a relative redirect absolute (`absolute_redirect on`).
fn absolute(template: String) -> String {
    if template.starts_with('/') {
        format!("{{scheme}}://{{host}}{template}")
    } else {
        template
    }
}

/// `rewrite REGEX URL redirect|permanent` (or to an absolute URL) as a
/// redirect route on the regex; other rewrites are reported.
fn rewrite_redirect(c: &mut Converter, d: &Directive, base: &Base, inherit: &Inherit) -> bool {
    let replacement = arg(d, 1);
    let flag = arg(d, 2);
    let external = replacement.starts_with("http://") || replacement.starts_with("https://");
    if !(matches!(flag, "redirect" | "permanent") || external) {
        return false;
    }
    let status = if flag == "permanent" { 301 } else { 302 };
    let converted = values::regex(arg(d, 0), false).and_then(|re| {
        if replacement.contains(['?']) {
            return Err("a replacement with `?` (arguments) is not converted".into());
        }
        values::template(replacement, base.server_name).map(|t| (re, t))
    });
    match converted {
        Ok((re, t)) if !re.contains('(') || !replacement.contains("$") => {
            base.emit(
                c,
                d,
                Path::Regex(re),
                Action::Redirect(status, absolute(t)),
                inherit,
                None,
            );
        }
        Ok(_) => c.skip_at(d, "a redirect using captures is not converted"),
        Err(why) => c.skip_at(d, &why),
    }
    true
}

/// One location's route. `files`: what a `try_files` naming this (named)
/// location serves before it.
#[allow(clippy::too_many_arguments)]
fn location(
    c: &mut Converter,
    l: &Directive,
    path: Path,
    prefix: Option<String>,
    auto_redirect: Option<String>,
    base: &Base,
    inherit: &Inherit,
    files: Option<Files>,
) {
    // An `internal` location (an auth_request's, read in `gates.rs`):
    // nginx answers 404 to a client asking for it.
    if l.block.iter().flatten().any(|i| i.name == "internal") {
        base.emit(c, l, path, Action::Respond(404, None), inherit, None);
        return;
    }
    let mut inherit = inherit.clone();
    let mut own = Inherit::default();
    let (mut pass, mut ret, mut rewrites) = (None, None, Vec::new());
    let (mut alias, mut try_files, mut otherwise) = (None, None, false);
    for i in l.block.iter().flatten() {
        if c.level(i, &mut inherit, &mut own) {
            continue;
        }
        otherwise |= files::answers_otherwise(i);
        match i.name.as_str() {
            "proxy_pass" => pass = Some(i),
            "return" if ret.is_none() => ret = Some(i),
            "rewrite" => rewrites.push(i),
            "access_log" => c.access_log(i),
            "location" => c.skip_at(i, "nested locations are not converted"),
            "alias" => alias = Some(i),
            "try_files" => try_files = Some(i),
            _ => c.skip_at(i, "not converted (outside the reverse-proxy subset)"),
        }
    }
    let answered = files.is_some() || pass.is_some() || ret.is_some();
    for i in [alias, try_files]
        .into_iter()
        .flatten()
        .filter(|_| answered)
    {
        c.skip_at(
            i,
            "never used: the location answers by `proxy_pass` or `return`",
        );
    }
    let mut bad = Vec::new();
    own.access.location(&mut bad);
    report(c, bad);
    Converter::settle(&mut inherit, own);
    let mut path_rewrite = None;
    for r in rewrites {
        if rewrite_redirect(c, r, base, &inherit) {
            continue;
        }
        let converted = values::regex(arg(r, 0), false)
            .and_then(|re| values::replacement(arg(r, 1)).map(|t| (re, t)));
        match (arg(r, 2), converted) {
            ("break", Ok(pair)) if pass.is_some() && ret.is_none() && path_rewrite.is_none() && !arg(r, 1).contains('?') => {
                path_rewrite = Some(pair)
            }
            (_, Err(why)) => c.skip_at(r, &why),
            _ => c.skip_at(r, "only `rewrite ... break` before a proxy_pass, or a redirect, is converted (`last` searches the locations again)"),
        }
    }
    if let Some(r) = ret {
        if let Some(files) = files {
            // (`return 404` is what files alone answer anyway.)
            if arg(r, 0) != "404" {
                c.skip_at(r, "a `try_files` fallback that answers with `return` is not converted: files only");
            }
            base.serve(c, l, path, Serve::only(files), &inherit);
        } else if let Some(a) = return_action(c, r, base) {
            base.emit(c, l, path, a, &inherit, None);
        }
        return;
    }
    let Some(pass) = pass else {
        let serve = match (otherwise, files) {
            // A named location with neither: the files that named it.
            (_, Some(files)) => Some(Serve::only(files)),
            (false, None) => files::serve(c, &path, alias, try_files, &inherit, base.named),
            (true, None) => None,
        };
        match serve {
            Some(serve) => base.serve(c, l, path, serve, &inherit),
            None => {
                let why = match otherwise {
                    true => "answered by a module Tidegate does not have: Tidegate answers 404",
                    false => "no proxy_pass, return or files Tidegate can serve (an absolute root): Tidegate answers 404",
                };
                c.skip_at(l, why);
                base.emit(c, l, path, Action::Respond(404, None), &inherit, None);
            }
        }
        return;
    };
    let url = arg(pass, 0);
    let (scheme, rest) = match url.split_once("://") {
        Some((s @ ("http" | "https"), rest)) if !url.contains('$') => (s, rest),
        _ => {
            c.skip_at(
                pass,
                "only http:// and https:// URLs without variables are converted",
            );
            return;
        }
    };
    let (host, uri) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let (group, named) = match c.group(pass, scheme, host) {
        Ok(g) => g,
        Err(why) => {
            c.skip_at(pass, &why);
            return;
        }
    };
    let mut proxy = Proxy {
        rewrite: path_rewrite,
        files,
        max_body_bytes: match inherit.body_limit {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(super::emit::NGINX_BODY_LIMIT),
        },
        upstream_host: Some(if named {
            group.clone()
        } else {
            "server".into()
        }),
        connect: inherit.connect_timeout.clone(),
        read: inherit.read_timeout.clone(),
        ..Proxy::default()
    };
    if let Some(uri) = uri {
        // proxy_pass with a URI part: the part of the path the location
        // matched is replaced by it.
        match (&prefix, &proxy.rewrite) {
            (Some(p), None) => {
                proxy.rewrite = Some((
                    format!("^{}(.*)$", regex::escape(p)),
                    format!("{}${{1}}", uri.replace('$', "$$")),
                ))
            }
            (None, _) => c.skip_at(
                pass,
                "a URI part in a regex location is an nginx error; left out",
            ),
            (Some(_), Some(_)) => c.skip_at(
                pass,
                "URI part after a rewrite: the rewritten path is sent as is",
            ),
        }
    }
    headers(c, &inherit, &mut proxy);
    base.emit(c, l, path, Action::Upstream(group), &inherit, Some(proxy));
    // nginx answers the prefix without its final slash with a 301 to it.
    if let Some(bare) = auto_redirect {
        let to = format!("{{scheme}}://{{host}}{}/{{query}}", bare);
        base.emit(
            c,
            l,
            Path::Exact(bare),
            Action::Redirect(301, to),
            &inherit,
            None,
        );
    }
}

/// `proxy_set_header` lines as Tidegate's request-header edits.
fn headers(c: &mut Converter, inherit: &Inherit, proxy: &mut Proxy) {
    for (name, value, at) in inherit.proxy_headers.iter().flatten() {
        let lower = name.to_ascii_lowercase();
        match (lower.as_str(), value.as_str()) {
            ("host", "$host" | "$http_host") => proxy.upstream_host = Some("client".into()),
            ("host", "$proxy_host") => {}
            // Tidegate sends these itself, with the same values.
            ("x-forwarded-for", "$proxy_add_x_forwarded_for")
            | ("x-forwarded-proto", "$scheme")
            | ("x-forwarded-host", "$host" | "$http_host")
            | ("upgrade", "$http_upgrade")
            | ("connection", "upgrade" | "Upgrade" | "$connection_upgrade") => {}
            (_, "") => proxy.remove.push(lower),
            // Copied from the auth service's answer by forward_auth
            // (`gates.rs`); under another name, the client's own field
            // of this name must not pass.
            (_, v) if inherit.gates.auth_variable(v) => {
                if inherit.gates.auth_field_name(v).as_deref() != Some(lower.as_str()) {
                    proxy.remove.push(lower)
                }
            }
            (_, v) if v.contains('$') => c.skip_raw(
                at,
                "proxy_set_header",
                &format!("{name} `{v}`: variables are not converted"),
            ),
            ("host", v) => proxy.upstream_host = Some(v.to_string()),
            (_, v) => {
                proxy.set.insert(lower, v.to_string());
            }
        }
    }
}
