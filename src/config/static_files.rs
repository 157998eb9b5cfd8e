//! A route's `static` table: files served from a folder, validated once
//! (the folder must exist at check, start and reload) into
//! [`StaticFiles`], pure data that `proxy/static_files.rs` serves from.
//!
//! The request path maps onto `root` as nginx's `root` does: the whole
//! path is appended (`/assets/app.js` under `root = "/srv/www"` is
//! `/srv/www/assets/app.js`). A route's `strip_prefix` or `rewrite`
//! applies first, which gives nginx's `alias` (`path_prefix = "/assets/"`
//! with `strip_prefix = "/assets"` serves `/srv/www/app.js`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::raw;

/// `(field, reason)`, the field relative to the route (as `route.rs`'s).
type FieldError = (String, String);

/// Which symbolic links may be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Symlinks {
    /// Only those whose target stays inside the root (the default).
    Inside,
    /// Any, wherever it leads (nginx's default `disable_symlinks off`).
    Any,
}

/// Where a request's file-system calls run: finding the file, reading an
/// answer of up to 64 KiB at once, and a larger one's 256 KiB chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Io {
    /// On tokio's blocking pool: a slow disk delays only the requests
    /// that wait for it, at the price of a hand-off between threads per
    /// request (2.4x the CPU of `Inline` per 1 KiB file).
    Pool,
    /// On the worker thread itself (the default), as nginx (`aio off`,
    /// its default): no hand-off between threads; a slow disk (a cold
    /// cache, a network file system) stalls every connection of that
    /// thread meanwhile.
    Inline,
}

/// A route's static files, validated.
#[derive(Debug, Clone, Serialize)]
pub struct StaticFiles {
    /// The folder served, absolute (a relative `root` is taken from the
    /// config file's folder). Kept as written, not canonicalised: a root
    /// that is a symbolic link swapped on deploy is followed per request.
    pub root: PathBuf,
    /// `root`'s real path when the config was read: what a file's real
    /// path is compared with first (`root` is canonicalised again when it
    /// is not under it, in case the root link was swapped).
    #[serde(skip)]
    pub real_root: PathBuf,
    /// The files tried, in order, for a path ending in `/`.
    pub index: Vec<String>,
    /// A path under the root served (200) when no file matches: a
    /// single-page application's `/index.html`.
    pub fallback: Option<String>,
    pub symlinks: Symlinks,
    /// Serve `x.br`, `x.zst` or `x.gz` for `x` when the request accepts
    /// that coding.
    pub precompressed: bool,
    pub io: Io,
    /// A file's bytes go to a plain HTTP/1.1 client with `sendfile(2)`,
    /// from the page cache to the socket without a copy through the
    /// proxy (nginx's `sendfile on`). On by default with `io = "inline"`;
    /// never with `io = "pool"` (a `sendfile` of a file not in the page
    /// cache waits for the disk on the worker thread, which `pool` is
    /// there to avoid), nor over TLS or HTTP/2, which need the bytes.
    pub sendfile: bool,
    /// Serve files and folders whose name starts with `.` (not by
    /// default: `.git/`, `.env`, `.htpasswd` are 404; `.well-known` is
    /// always served).
    pub dotfiles: bool,
    /// The upstream group (the route's `upstream`) that takes what no file
    /// answers: a path with no file, a method other than GET and HEAD.
    #[serde(rename = "upstream_index")]
    pub upstream: Option<usize>,
}

fn field(name: &str, reason: impl Into<String>) -> FieldError {
    (format!("static.{name}"), reason.into())
}

/// `s` validated; `upstream` is the route's group, if it has one.
pub(super) fn static_files(
    s: &raw::StaticFiles,
    base: &Path,
    upstream: Option<usize>,
) -> Result<StaticFiles, FieldError> {
    let root = base.join(&s.root);
    match std::fs::metadata(&root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(field(
                "root",
                format!("`{}` is not a folder", root.display()),
            ))
        }
        Err(e) => return Err(field("root", format!("`{}`: {e}", root.display()))),
    }
    let real_root = root
        .canonicalize()
        .map_err(|e| field("root", format!("`{}`: {e}", root.display())))?;
    let index = s
        .index
        .clone()
        .unwrap_or_else(|| vec!["index.html".to_string()]);
    for i in &index {
        if i.is_empty() || i.contains(['/', '\\', '\0']) || i == "." || i == ".." {
            return Err(field(
                "index",
                format!("`{i}` is not a file name (no `/`, not `.` or `..`)"),
            ));
        }
    }
    if let Some(f) = &s.fallback {
        if upstream.is_some() {
            return Err(field(
                "fallback",
                "a route with `upstream` falls back to its upstream: give one or the other",
            ));
        }
        match crate::files::path::normalise(f, s.dotfiles.unwrap_or(false)) {
            Ok(p) if !p.slash && !p.path.is_empty() => {}
            _ => {
                return Err(field(
                    "fallback",
                    format!(
                        "`{f}` is not a file's path under the root (as `/index.html`); \
                         to fall back to an upstream group, give the route `upstream`"
                    ),
                ))
            }
        }
    }
    let symlinks = match s.symlinks.as_deref() {
        None | Some("inside") => Symlinks::Inside,
        Some("any") => Symlinks::Any,
        Some(v) => {
            return Err(field(
                "symlinks",
                format!("`{v}`: expected `inside` or `any`"),
            ))
        }
    };
    let io = match s.io.as_deref() {
        Some("pool") => Io::Pool,
        None | Some("inline") => Io::Inline,
        Some(v) => return Err(field("io", format!("`{v}`: expected `pool` or `inline`"))),
    };
    let sendfile = match (s.sendfile, io) {
        (Some(true), Io::Pool) => {
            return Err(field(
                "sendfile",
                "`sendfile` reads the file on the worker thread, which `io = \"pool\"` keeps \
                 from the disk: set one or the other",
            ))
        }
        (Some(on), _) => on,
        (None, io) => io == Io::Inline,
    };
    Ok(StaticFiles {
        root,
        real_root,
        index,
        fallback: s.fallback.clone(),
        symlinks,
        precompressed: s.precompressed.unwrap_or(true),
        io,
        sendfile,
        dotfiles: s.dotfiles.unwrap_or(false),
        upstream,
    })
}
