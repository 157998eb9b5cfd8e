//! A request path made a relative path under a static root, refusing
//! whatever could leave the root or name something else than it seems.
//!
//! Each `/`-separated segment is percent-decoded on its own, so `%2f`
//! can never make a separator. Refused as malformed (400): a segment that
//! is `.` or `..` (written or encoded: nothing is resolved, as a client
//! that sends one is not a browser), one that decodes to a `/`, a `\`
//! (Windows' separator) or a NUL, a bad `%` escape, a path not starting
//! with `/`. Refused as hidden (404), unless the route allows dotfiles:
//! a segment starting with `.`
//! (`.git`, `.env`, `.htpasswd`), except `.well-known` (RFC 8615).
//! Empty segments (`//`) are skipped. Symbolic links are the caller's to
//! check: only the file system knows them.

/// Why a path has no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Malformed, or an attempt to leave the root: 400.
    Bad,
    /// A hidden file or folder: 404.
    Hidden,
}

/// A path under the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relative {
    /// Decoded segments joined by `/`, without a leading one; empty for
    /// the root itself.
    pub(crate) path: Vec<u8>,
    /// The request path ended in `/` (a folder is asked for).
    pub(crate) slash: bool,
}

/// The hidden segment that may be served (RFC 8615's well-known URIs).
const WELL_KNOWN: &[u8] = b".well-known";

/// `path` (a URI's path, still percent-encoded) as a path under the root;
/// `dotfiles`: hidden segments are allowed.
pub(crate) fn normalise(path: &str, dotfiles: bool) -> Result<Relative, Refused> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Refused::Bad);
    };
    let mut out = Vec::with_capacity(rest.len());
    let mut hidden = false;
    for segment in rest.split('/') {
        if segment.is_empty() {
            continue;
        }
        let start = out.len();
        if !out.is_empty() {
            out.push(b'/');
        }
        let from = out.len();
        decode(segment.as_bytes(), &mut out)?;
        let decoded = &out[from..];
        if decoded.is_empty() {
            // (An encoded segment never decodes to nothing.)
            out.truncate(start);
            continue;
        }
        if decoded == b"."
            || decoded == b".."
            || decoded.iter().any(|b| matches!(b, b'/' | b'\\' | 0))
        {
            return Err(Refused::Bad);
        }
        if decoded[0] == b'.' && decoded != WELL_KNOWN {
            // Kept going: a later segment may still be malformed (400
            // wins over 404).
            hidden = true;
        }
    }
    if hidden && !dotfiles {
        return Err(Refused::Hidden);
    }
    Ok(Relative {
        path: out,
        slash: path.ends_with('/'),
    })
}

/// `s` percent-decoded onto `out`.
fn decode(s: &[u8], out: &mut Vec<u8>) -> Result<(), Refused> {
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            let hi = s.get(i + 1).and_then(|&h| hex(h));
            let lo = s.get(i + 2).and_then(|&l| hex(l));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(Refused::Bad);
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> (String, bool) {
        let r = normalise(p, false).unwrap_or_else(|e| panic!("{p}: {e:?}"));
        (String::from_utf8(r.path).expect("utf-8"), r.slash)
    }

    #[test]
    fn plain_paths() {
        assert_eq!(ok("/"), (String::new(), true));
        assert_eq!(ok("/a/b.txt"), ("a/b.txt".into(), false));
        assert_eq!(ok("/a//b/"), ("a/b".into(), true));
        assert_eq!(ok("/a%20b/c%C3%A9"), ("a b/cé".into(), false));
        assert_eq!(ok("/.well-known/x"), (".well-known/x".into(), false));
        assert_eq!(ok("/a..b/c."), ("a..b/c.".into(), false));
    }

    #[test]
    fn escapes_are_refused() {
        for p in [
            "/../secret",
            "/a/../../secret",
            "/a/./b",
            "/%2e%2e/secret",
            "/%2E%2e/secret",
            "/.%2e/secret",
            "/a%2f..%2f..%2fsecret",
            "/a%2F..",
            "/..%5csecret",
            "/a\\..\\b",
            "/a%00.txt",
            "/a%zz",
            "/a%2",
            "a/b",
            "",
        ] {
            assert_eq!(normalise(p, false), Err(Refused::Bad), "{p}");
            assert_eq!(normalise(p, true), Err(Refused::Bad), "{p}");
        }
    }

    #[test]
    fn hidden_files_are_not_found() {
        for p in ["/.env", "/a/.git/config", "/%2egit/HEAD", "/.well-known/.x"] {
            assert_eq!(normalise(p, false), Err(Refused::Hidden), "{p}");
            assert!(normalise(p, true).is_ok(), "{p}");
        }
        // Malformed wins.
        assert_eq!(normalise("/.git/../x", false), Err(Refused::Bad));
    }
}
