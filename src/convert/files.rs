//! nginx's file serving as a route's `static` table: `root` (inherited,
//! `emit.rs`), `alias`, `index`, `gzip_static` and `try_files`.
//!
//! - `root DIR`: the request's whole path under DIR, as Tidegate's `root`;
//! - `location /p/ { alias /dir/; }`: `strip_prefix = "/p/"`, root `/dir`
//!   (other `alias` forms are reported);
//! - `try_files $uri [$uri/] LAST`: `LAST` is `=404` (what a static route
//!   does anyway), `@name` (the named location's upstream takes what no
//!   file answers) or a URI the same location takes (`fallback`, a file
//!   of the same root: single-page applications); Tidegate looks for the
//!   path and, for a folder, its `index` files, which is what `$uri` and
//!   `$uri/` ask for.
use super::emit::{arg, Converter, Inherit};
use super::parse::Directive;
use super::write::{Files, Path};

/// What a location (or a server, for the paths no location takes) serves
/// from files.
pub(super) struct Serve<'a> {
    pub(super) files: Files,
    /// `alias`: the location's prefix.
    pub(super) strip_prefix: Option<String>,
    /// `try_files ... @name`: the named location whose upstream takes
    /// what no file answers.
    pub(super) named: Option<&'a Directive>,
}

impl Serve<'_> {
    /// `files` alone: no prefix taken off, nothing behind them.
    pub(super) fn only(files: Files) -> Serve<'static> {
        Serve {
            files,
            strip_prefix: None,
            named: None,
        }
    }
}

/// nginx directives that make a location answer by other means than
/// files (its files are then never served there).
pub(super) fn answers_otherwise(d: &Directive) -> bool {
    (d.name.ends_with("_pass") && d.name != "proxy_pass")
        || matches!(
            d.name.as_str(),
            "empty_gif"
                | "stub_status"
                | "js_content"
                | "perl"
                | "mp4"
                | "flv"
                | "hls"
                | "dav_methods"
        )
}

/// The files served where `path` matches: `None` when there is no root
/// (nginx's compiled-in `html` folder is not guessed) or `alias` is not
/// one Tidegate can follow.
pub(super) fn serve<'a>(
    c: &mut Converter,
    path: &Path,
    alias: Option<&Directive>,
    try_files: Option<&Directive>,
    inherit: &Inherit,
    named: &[&'a Directive],
) -> Option<Serve<'a>> {
    let (root, strip_prefix) = match alias {
        Some(a) => match (path, arg(a, 0)) {
            (Path::Prefix(p), dir)
                if p.ends_with('/') && dir.starts_with('/') && dir.ends_with('/') =>
            {
                (dir.trim_end_matches('/').to_string(), Some(p.clone()))
            }
            _ => {
                c.skip_at(
                    a,
                    "only `alias /dir/;` in a prefix location ending in `/` is converted",
                );
                return None;
            }
        },
        None => (inherit.root.clone()?, None),
    };
    let mut serve = Serve {
        files: Files {
            root: if root.is_empty() { "/".into() } else { root },
            index: inherit.index.clone(),
            fallback: None,
            precompressed: inherit.gzip_static,
        },
        strip_prefix,
        named: None,
    };
    if let Some(t) = try_files {
        match last(t, path, serve.strip_prefix.as_deref(), named) {
            Ok(Last::NotFound) => {}
            Ok(Last::Named(n)) => serve.named = Some(n),
            Ok(Last::File(f)) => serve.files.fallback = Some(f),
            Err(why) => c.skip_at(t, &why),
        }
    }
    Some(serve)
}

/// What `try_files`'s last parameter becomes.
enum Last<'a> {
    NotFound,
    Named(&'a Directive),
    File(String),
}

fn last<'a>(
    t: &Directive,
    path: &Path,
    strip_prefix: Option<&str>,
    named: &[&'a Directive],
) -> Result<Last<'a>, String> {
    let Some((last, before)) = t.args.split_last() else {
        return Err("no parameters".into());
    };
    if before.is_empty()
        || before.iter().any(|a| a != "$uri" && a != "$uri/")
        || before[0] != "$uri"
    {
        return Err(
            "only `$uri`, then `$uri/`, before the last parameter are converted: files served without it"
                .into(),
        );
    }
    if last == "=404" {
        return Ok(Last::NotFound);
    }
    if last.starts_with('=') {
        return Err(format!(
            "`{last}`: only =404 is converted: files served without it"
        ));
    }
    if last.starts_with('@') {
        if strip_prefix.is_some() {
            return Err("with `alias`, the named location would get the path without the prefix: files served without it".into());
        }
        return named
            .iter()
            .find(|n| arg(n, 0) == last)
            .map(|n| Last::Named(n))
            .ok_or_else(|| format!("no location `{last}` in this server"));
    }
    // A URI this same location takes: a file of its own root.
    let taken = !last.contains(['$', '?'])
        && !last.ends_with('/')
        && match path {
            Path::Exact(p) => last == p,
            Path::Prefix(p) => last.starts_with(p.as_str()),
            Path::Regex(r) => regex::Regex::new(r).is_ok_and(|r| r.is_match(last)),
        };
    if !taken {
        return Err(format!(
            "`{last}`: only a fixed file URI that this location itself takes is converted (a file of its root)"
        ));
    }
    Ok(Last::File(match strip_prefix {
        Some(p) => format!("/{}", &last[p.len()..]),
        None => last.clone(),
    }))
}
