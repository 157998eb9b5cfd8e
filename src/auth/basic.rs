//! HTTP Basic authentication (RFC 7617) against an Apache htpasswd file.
//!
//! The file is `user:hash` lines, as Apache's `htpasswd` writes them;
//! blank lines and lines starting with `#` are skipped. Accepted hashes:
//! bcrypt (`$2y$`, `$2a$`, `$2b$`: `htpasswd -B`), SHA-256-crypt and
//! SHA-512-crypt (`$5$`, `$6$`: `htpasswd -2`, `-5`) and, for existing
//! files, APR1-MD5 (`$apr1$`: `htpasswd -m`, its default). Every other
//! line is refused when the file is read, naming its line: a plaintext
//! password (`htpasswd -p`), crypt(3) DES (`-d`, 8 characters at most),
//! unsalted SHA-1 (`{SHA}`, `-s`), glibc's MD5-crypt (`$1$`), or anything
//! else. A refused line refuses the file (and so the config): a user
//! silently dropped would only show up as a 401 later.
//!
//! Hashes are verified by their crates (`bcrypt`, `sha-crypt`,
//! `crypt3_rs`), each comparing in constant time. A password is hashed
//! once per thread: [`super::cache`] keeps what was verified.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde::Serialize;

use super::cache;

/// The hash functions of an htpasswd line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bcrypt,
    ShaCrypt,
    Apr1,
}

/// One user's stored hash.
#[derive(Debug)]
struct Entry {
    /// The name, shared with the access-log lines of its requests.
    user: Arc<str>,
    scheme: Scheme,
    hash: Arc<str>,
}

/// A parsed htpasswd file.
#[derive(Debug)]
pub(crate) struct Htpasswd {
    users: HashMap<String, Entry>,
    /// Unique per file read, the key of its thread caches.
    id: u64,
}

/// Why a line of a file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineError {
    /// 1-based.
    pub(crate) line: usize,
    pub(crate) reason: String,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Htpasswd {
    /// Parses a file's text; every refused line is reported.
    pub(crate) fn parse(text: &str) -> Result<Htpasswd, Vec<LineError>> {
        let mut users: HashMap<String, Entry> = HashMap::new();
        let mut first: HashMap<String, usize> = HashMap::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let mut err = |reason: String| {
                errors.push(LineError {
                    line: line_no,
                    reason,
                })
            };
            let Some((user, hash)) = line.split_once(':') else {
                err("not a `user:hash` line".into());
                continue;
            };
            if user.is_empty() {
                err("the user name is empty".into());
                continue;
            }
            let scheme = match scheme(hash) {
                Ok(s) => s,
                Err(reason) => {
                    err(format!("user `{user}`: {reason}"));
                    continue;
                }
            };
            if let Some(at) = first.get(user) {
                err(format!("user `{user}` again (first on line {at})"));
                continue;
            }
            first.insert(user.to_string(), line_no);
            users.insert(
                user.to_string(),
                Entry {
                    user: user.into(),
                    scheme,
                    hash: hash.into(),
                },
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Htpasswd {
            users,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// How many users it has.
    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The kind of `hash`, or why it is refused. The shape is checked here,
/// so that a line that could never verify is refused at load.
fn scheme(hash: &str) -> Result<Scheme, String> {
    const CRYPT64: &str = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let crypt64 = |s: &str| !s.is_empty() && s.chars().all(|c| CRYPT64.contains(c));
    if ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
        // `$2y$NN$` and 53 characters of salt and hash.
        let cost = hash.get(4..6).and_then(|c| c.parse::<u32>().ok());
        return match (cost, hash.get(6..7), hash.get(7..)) {
            (Some(4..=31), Some("$"), Some(rest)) if rest.len() == 53 && crypt64(rest) => {
                Ok(Scheme::Bcrypt)
            }
            _ => Err("not a valid bcrypt hash".into()),
        };
    }
    if hash.starts_with("$5$") || hash.starts_with("$6$") {
        return match sha_crypt::PasswordHashRef::new(hash) {
            Ok(_) => Ok(Scheme::ShaCrypt),
            Err(_) => Err("not a valid SHA-crypt hash".into()),
        };
    }
    if let Some(rest) = hash.strip_prefix("$apr1$") {
        return match rest.split_once('$') {
            Some((salt, sum))
                if salt.len() <= 8 && crypt64(salt) && sum.len() == 22 && crypt64(sum) =>
            {
                Ok(Scheme::Apr1)
            }
            _ => Err("not a valid APR1-MD5 hash".into()),
        };
    }
    let redo = "create it again with `htpasswd -B` (bcrypt)";
    Err(if hash.starts_with("{SHA}") {
        format!("unsalted SHA-1 (`{{SHA}}`, htpasswd -s) is refused: {redo}")
    } else if hash.starts_with("$1$") {
        format!("MD5-crypt (`$1$`) is not supported: {redo}")
    } else if hash.len() == 13 && crypt64(hash) {
        format!("crypt(3) DES (htpasswd -d, 8 characters at most) is refused: {redo}")
    } else if hash.starts_with('$') {
        format!("unknown hash type: {redo}")
    } else {
        format!("a plaintext password (htpasswd -p) is refused: {redo}")
    })
}

/// A route's `basic_auth`: the file, read when the config loads.
#[derive(Debug, Serialize)]
pub struct BasicAuth {
    pub realm: String,
    /// Where the users came from (relative paths resolved).
    pub htpasswd: PathBuf,
    /// Send the client's `Authorization` upstream (default: removed).
    pub forward_authorization: bool,
    /// How many users the file had.
    pub users: usize,
    /// `Basic realm="...", charset="UTF-8"`.
    #[serde(skip)]
    pub(crate) challenge: HeaderValue,
    #[serde(skip)]
    file: Htpasswd,
}

/// A route's `basic_auth` as `GET /config` shows it (no hashes).
pub(crate) fn dump<S: serde::Serializer>(
    auth: &Option<Arc<BasicAuth>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    auth.as_deref().serialize(s)
}

/// `realm` as a quoted-string (RFC 9110 §5.6.4), in the challenge of a
/// 401; `None` if it cannot be a field value.
pub(crate) fn challenge(realm: &str) -> Option<HeaderValue> {
    let mut v = String::with_capacity(realm.len() + 32);
    v.push_str("Basic realm=\"");
    for c in realm.chars() {
        if c == '"' || c == '\\' {
            v.push('\\');
        }
        v.push(c);
    }
    v.push_str("\", charset=\"UTF-8\"");
    if realm.chars().any(char::is_control) {
        return None;
    }
    HeaderValue::from_str(&v).ok()
}

/// What the check of a request's credentials found.
#[derive(Debug)]
pub(crate) enum Check {
    /// Valid: this user.
    Pass(Arc<str>),
    /// No credentials, malformed ones, or an unknown user.
    Deny(&'static str),
    /// A user of the file whose password this thread has not verified:
    /// [`Verify::run`] it (slow) off the worker thread.
    Verify(Verify),
}

/// A password to verify against a stored hash, owned, for a blocking
/// thread.
#[derive(Debug)]
pub(crate) struct Verify {
    scheme: Scheme,
    hash: Arc<str>,
    password: Vec<u8>,
    key: cache::Key,
}

impl BasicAuth {
    pub(crate) fn new(
        realm: String,
        challenge: HeaderValue,
        htpasswd: PathBuf,
        forward_authorization: bool,
        file: Htpasswd,
    ) -> BasicAuth {
        BasicAuth {
            realm,
            htpasswd,
            forward_authorization,
            users: file.len(),
            challenge,
            file,
        }
    }

    /// Checks the request's `Authorization` (the first one, scheme
    /// `Basic`, any case): a verified password is answered from this
    /// thread's cache; a new one needs a [`Verify`].
    pub(crate) fn check(&self, headers: &HeaderMap) -> Check {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Check::Deny("no credentials");
        };
        let Some(credentials) = decode(value.as_bytes()) else {
            return Check::Deny("malformed Basic credentials");
        };
        let Some(colon) = credentials.iter().position(|&b| b == b':') else {
            return Check::Deny("malformed Basic credentials");
        };
        let Some(entry) = std::str::from_utf8(&credentials[..colon])
            .ok()
            .and_then(|u| self.file.users.get(u))
        else {
            return Check::Deny("unknown user");
        };
        let key = cache::key(self.file.id, &credentials);
        if cache::contains(&key) {
            return Check::Pass(entry.user.clone());
        }
        Check::Verify(Verify {
            scheme: entry.scheme,
            hash: entry.hash.clone(),
            password: credentials[colon + 1..].to_vec(),
            key,
        })
    }
}

/// The decoded token of `Basic <base64>`.
fn decode(value: &[u8]) -> Option<Vec<u8>> {
    let space = value.iter().position(|&b| b == b' ')?;
    if !value[..space].eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let token = value[space..].trim_ascii();
    data_encoding::BASE64.decode(token).ok()
}

impl Verify {
    /// Hashes the password (slow: run it where blocking is allowed).
    pub(crate) fn run(&self) -> bool {
        match self.scheme {
            Scheme::Bcrypt => bcrypt::verify(&self.password, &self.hash).unwrap_or(false),
            Scheme::ShaCrypt => {
                use sha_crypt::PasswordVerifier;
                sha_crypt::ShaCrypt::default()
                    .verify_password(&self.password, &*self.hash)
                    .is_ok()
            }
            Scheme::Apr1 => crypt3_rs::crypt::apr1::verify(&self.password, &self.hash),
        }
    }

    /// Records a password [`Verify::run`] found right, on this thread:
    /// the same check passes from now on.
    pub(crate) fn remember(self) {
        cache::insert(self.key);
    }
}

/// Verifies off the worker thread (tokio's blocking pool), and records a
/// success on this one; `false` if wrong (or the pool is gone).
pub(crate) async fn verify(job: Verify) -> bool {
    let (job, ok) = match tokio::task::spawn_blocking(move || {
        let ok = job.run();
        (job, ok)
    })
    .await
    {
        Ok(r) => r,
        Err(_) => return false,
    };
    if ok {
        job.remember();
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_parsed_and_refused_by_kind() {
        let ok = "# comment\n\nalice:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00\r\n";
        assert_eq!(Htpasswd::parse(ok).unwrap().len(), 1);
        let cases = [
            ("bob:secret", "plaintext"),
            ("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "unsalted SHA-1"),
            ("bob:abJnggxhB/yWI", "crypt(3) DES"),
            ("bob:$1$5pZSV9va$azfrPr6af3Fc7dLblQXVa0", "MD5-crypt"),
            ("bob:$2y$05$short", "bcrypt"),
            ("bob", "user:hash"),
            (":$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00", "empty"),
        ];
        for (line, want) in cases {
            let e = Htpasswd::parse(&format!(
                "x:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00\n{line}\n"
            ))
            .unwrap_err();
            assert_eq!(e.len(), 1, "{line}");
            assert_eq!(e[0].line, 2, "{line}");
            assert!(e[0].reason.contains(want), "{line}: {}", e[0].reason);
        }
        let twice =
            "a:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00\na:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00\n";
        assert!(Htpasswd::parse(twice).unwrap_err()[0]
            .reason
            .contains("first on line 1"));
    }

    #[test]
    fn challenge_quotes_the_realm() {
        assert_eq!(
            challenge("a \"b\" \\").unwrap(),
            "Basic realm=\"a \\\"b\\\" \\\\\", charset=\"UTF-8\""
        );
        assert!(challenge("a\nb").is_none());
    }

    #[test]
    fn credentials_are_checked_and_remembered() {
        let file = Htpasswd::parse("user:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00\n").unwrap();
        let auth = BasicAuth::new("r".into(), challenge("r").unwrap(), "f".into(), false, file);
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            auth.check(&h)
        };
        let b64 = |s: &str| data_encoding::BASE64.encode(s.as_bytes());
        assert!(matches!(auth.check(&HeaderMap::new()), Check::Deny(_)));
        for bad in [
            "Basic",
            "Basic !!!",
            "Bearer x",
            &format!("Basic {}", b64("user")),
        ] {
            assert!(matches!(with(bad), Check::Deny(_)), "{bad}");
        }
        assert!(matches!(
            with(&format!("Basic {}", b64("nobody:password"))),
            Check::Deny(_)
        ));
        let Check::Verify(wrong) = with(&format!("Basic {}", b64("user:wrong"))) else {
            panic!()
        };
        assert!(!wrong.run());
        let Check::Verify(right) = with(&format!("basic  {}", b64("user:password"))) else {
            panic!()
        };
        assert!(right.run());
        right.remember();
        let Check::Pass(user) = with(&format!("Basic {}", b64("user:password"))) else {
            panic!()
        };
        assert_eq!(&*user, "user");
    }
}
