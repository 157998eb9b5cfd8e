//! `tidegate convert nginx.conf`: the common reverse-proxy, file-serving
//! and `stream` subset of an nginx configuration written as Tidegate TOML,
//! with every directive that was not converted listed (`FILE:LINE:
//! DIRECTIVE: why`).
//!
//! - `parse.rs`: nginx's syntax to a tree of directives with file and line;
//! - this file: reading files and following `include` (globs, relative to
//!   the main file's folder as nginx's conf prefix, else the including
//!   file's; with a depth limit and cycle detection);
//! - `emit.rs`: the tree mapped to Tidegate's listeners, routes, streams
//!   and upstream groups (`emit/groups.rs`; `emit/listen.rs`: `listen`
//!   lines), written as TOML by `write.rs`;
//! - above it: `routes.rs` (a server's locations), `files.rs` (`root`,
//!   `alias`, `try_files`), `streams.rs` (the `stream` block);
//! - `values.rs`: nginx's sizes, times, regexes and `$variables` in
//!   Tidegate's terms.
//!
//! A tool beside the proxy: nothing on a request's path imports it.
use std::path::{Path, PathBuf};

mod access;
mod emit;
mod files;
mod gates;
pub mod parse;
mod rates;
mod routes;
mod streams;
mod values;
mod write;

pub use parse::{Directive, SyntaxError};

/// `include` nested deeper than this is refused (nginx has no limit; a
/// real configuration nests two or three).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Why a configuration cannot be converted at all.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    #[error("{at}: include: {reason}")]
    Include { at: String, reason: String },
}

/// A directive left out of the conversion, and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Skipped {
    /// `FILE:LINE`.
    pub at: String,
    pub directive: String,
    pub why: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.at, self.directive, self.why)
    }
}

/// A conversion: the TOML text and what it left out.
#[derive(Debug)]
pub struct Conversion {
    pub toml: String,
    pub skipped: Vec<Skipped>,
}

/// `tidegate convert FILE [-o OUT]`: the TOML on stdout (or in `output`),
/// one line per directive not converted on stderr; exit 0 once converted,
/// 1 when the input cannot be read or parsed (or the output written).
pub fn run(file: &Path, output: Option<&Path>) -> std::process::ExitCode {
    use std::io::Write as _;
    let conversion = match convert_file(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tidegate: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    for s in &conversion.skipped {
        eprintln!("{s}");
    }
    let written = match output {
        Some(out) => std::fs::write(out, &conversion.toml)
            .map_err(|e| format!("cannot write {}: {e}", out.display())),
        None => std::io::stdout()
            .write_all(conversion.toml.as_bytes())
            .map_err(|e| format!("cannot write the output: {e}")),
    };
    match written {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidegate: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The converter's upper layers, for `emit.rs`.
fn parts() -> emit::Parts {
    emit::Parts {
        server_routes: routes::server,
        streams: streams::block,
    }
}

/// Reads `path` (following its `include`s) and converts it.
pub fn convert_file(path: &Path) -> Result<Conversion, ConvertError> {
    let tree = load(path)?;
    Ok(emit::convert(&tree, parts()))
}

/// Converts configuration text (no `include` is followed: each is
/// reported as not converted). For the fuzz target.
pub fn convert_text(text: &str, file: &Path) -> Result<Conversion, ConvertError> {
    let tree = parse::parse(text, file)?;
    Ok(emit::convert(&tree, parts()))
}

/// `path` parsed, every `include` replaced by what it names.
pub fn load(path: &Path) -> Result<Vec<Directive>, ConvertError> {
    let mut stack = Vec::new();
    let prefix = path.parent().unwrap_or(Path::new("."));
    load_into(path, prefix, &mut stack)
}

fn read(path: &Path) -> Result<Vec<Directive>, ConvertError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse::parse(&text, path)?)
}

/// `stack`: the files being read, outermost first (for cycles);
/// `prefix`: the first file's folder (nginx's conf prefix).
fn load_into(
    path: &Path,
    prefix: &Path,
    stack: &mut Vec<PathBuf>,
) -> Result<Vec<Directive>, ConvertError> {
    let canonical = std::fs::canonicalize(path).map_err(|source| ConvertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    stack.push(canonical);
    let tree = read(path)?;
    let out = expand(tree, path, prefix, stack)?;
    stack.pop();
    Ok(out)
}

fn expand(
    tree: Vec<Directive>,
    file: &Path,
    prefix: &Path,
    stack: &mut Vec<PathBuf>,
) -> Result<Vec<Directive>, ConvertError> {
    let mut out = Vec::with_capacity(tree.len());
    for mut d in tree {
        if d.name == "include" && d.block.is_none() {
            let [pattern] = d.args.as_slice() else {
                return Err(ConvertError::Include {
                    at: d.at(),
                    reason: "takes one file name or glob".into(),
                });
            };
            // nginx takes a relative name from its conf prefix (the main
            // file's folder); failing that, the including file's folder
            // (a tree copied elsewhere, or included from beside it).
            let here = file.parent().unwrap_or(Path::new("."));
            let mut files = glob(&prefix.join(pattern));
            if !matches!(&files, Ok(f) if f.iter().any(|f| f.exists())) && here != prefix {
                files = glob(&here.join(pattern)).or(files);
            }
            for included in files.map_err(|reason| ConvertError::Include { at: d.at(), reason })? {
                let canonical = std::fs::canonicalize(&included).unwrap_or(included.clone());
                if stack.contains(&canonical) {
                    return Err(ConvertError::Include {
                        at: d.at(),
                        reason: format!("{} includes itself (a cycle)", included.display()),
                    });
                }
                if stack.len() >= MAX_INCLUDE_DEPTH {
                    return Err(ConvertError::Include {
                        at: d.at(),
                        reason: format!("nested more than {MAX_INCLUDE_DEPTH} deep"),
                    });
                }
                out.extend(load_into(&included, prefix, stack)?);
            }
            continue;
        }
        if let Some(block) = d.block.take() {
            d.block = Some(expand(block, file, prefix, stack)?);
        }
        out.push(d);
    }
    Ok(out)
}

/// The files `pattern` names: itself when its last part has no `*`, `?`
/// or `[`; else the matching files of its folder, sorted (as nginx's
/// glob). Wildcards in folder names are not supported.
fn glob(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = pattern.parent().unwrap_or(Path::new("."));
    if dir.to_string_lossy().contains(['*', '?', '[']) {
        return Err(format!(
            "{}: wildcards in folder names are not supported",
            pattern.display()
        ));
    }
    if !name.contains(['*', '?', '[']) {
        return Ok(vec![pattern.to_path_buf()]);
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter(|e| wildcard(name.as_bytes(), e.file_name().to_string_lossy().as_bytes()))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// `*` and `?` matching (a `[` is taken literally); hidden files only by
/// a pattern that starts with `.`, as glob(3).
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pattern.first() != Some(&b'.') {
        return false;
    }
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards() {
        assert!(wildcard(b"*.conf", b"a.conf"));
        assert!(wildcard(b"site-?.conf", b"site-1.conf"));
        assert!(!wildcard(b"*.conf", b"a.conf.bak"));
        assert!(!wildcard(b"*.conf", b".hidden.conf"));
        assert!(wildcard(b"*", b"x"));
    }
}
