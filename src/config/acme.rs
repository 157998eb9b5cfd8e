//! `[acme]`: certificates obtained and renewed from an ACME CA (RFC 8555)
//! for the names TLS listeners list under `tls.acme`, as pure data
//! (the crate's `acme` module does the work).
//!
//! ```toml
//! [acme]
//! storage = "/var/lib/tidegate/acme"      # account, certificates, lock
//! contact = ["mailto:ops@example.com"]
//! # directory = "https://acme-v02.api.letsencrypt.org/directory" (default)
//! # challenge = "tls-alpn-01" (default) or "http-01"
//!
//! [[listeners]]
//! address = "0.0.0.0:443"
//! tls = { acme = ["example.com", "www.example.com"] }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::raw;
use super::source::Problems;

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

pub use super::raw::AcmeChallenge as Challenge;

/// The `[acme]` section, with every name the listeners list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Acme {
    /// The CA's directory URL (`https://`).
    pub directory: String,
    /// Contact URLs given to the CA (`mailto:`).
    pub contact: Vec<String>,
    /// The folder of the account, the certificates, the challenges being
    /// answered and the lock; instances that share it share them.
    pub storage: PathBuf,
    /// A PEM root certificate the CA's own HTTPS chains to, for a
    /// private CA; without it, the system's roots.
    pub ca: Option<PathBuf>,
    pub challenge: Challenge,
    /// An instance whose lock was not renewed for this long is taken to
    /// be gone, and another orders in its place; the holder renews it at
    /// a third of this (the heartbeat).
    #[serde(serialize_with = "super::dump::duration")]
    pub lock_timeout: Duration,
    /// The wait before the first retry of a failed order; each further
    /// failure doubles it, up to a day.
    #[serde(serialize_with = "super::dump::duration")]
    pub retry: Duration,
    /// Every name listed by a listener's `tls.acme`, lower case, sorted,
    /// each once: one certificate each.
    pub names: Vec<String>,
}

/// `listeners[i].tls.acme`: the names, checked (lower case); problems go
/// to `p` under `at`.
pub(super) fn names(list: &[String], at: &str, p: &mut Problems) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, n) in list.iter().enumerate() {
        let name = n.to_ascii_lowercase();
        match check_name(&name) {
            Ok(()) if out.contains(&name) => {
                p.add(format!("{at}[{i}]"), format!("`{n}` is listed twice"));
            }
            Ok(()) => out.push(name),
            Err(reason) => p.add(format!("{at}[{i}]"), format!("`{n}`: {reason}")),
        }
    }
    out
}

/// A name a CA issues for with HTTP-01 or TLS-ALPN-01: a DNS name of at
/// least two labels, letters, digits and hyphens, no wildcard.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.starts_with("*.") {
        return Err(
            "a wildcard needs the DNS-01 challenge, which Tidegate does not answer; list each name",
        );
    }
    if name.len() > 253 || !name.contains('.') {
        return Err("is not a DNS name with at least two labels");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !name.split('.').all(label_ok) {
        return Err("is not a DNS name (letters, digits, hyphens and dots)");
    }
    if name.parse::<std::net::IpAddr>().is_ok()
        || name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        return Err("is an IP address, not a name");
    }
    Ok(())
}

/// The `[acme]` section, if written; `names`: the listeners' names (each
/// listener's own were checked), `plain`: whether some HTTP listener has
/// no TLS (where HTTP-01 is answered).
pub(super) fn section(
    a: Option<&raw::Acme>,
    mut names: Vec<String>,
    plain: bool,
    base: &Path,
    p: &mut Problems,
) -> Option<Acme> {
    let Some(a) = a else {
        if !names.is_empty() {
            p.add(
                "acme",
                "listeners list names under tls.acme, but there is no [acme] section (it needs at least `storage`)",
            );
        }
        return None;
    };
    let directory = a.directory.clone().unwrap_or_else(|| LETS_ENCRYPT.into());
    match url::Url::parse(&directory) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
        _ => p.add(
            "acme.directory",
            format!("`{directory}` is not an https:// URL of an ACME directory"),
        ),
    }
    let contact = a.contact.clone().unwrap_or_default();
    for (i, c) in contact.iter().enumerate() {
        if !c.starts_with("mailto:") || c.len() == "mailto:".len() {
            p.add(
                format!("acme.contact[{i}]"),
                format!("`{c}` is not a mailto: URL"),
            );
        }
    }
    if a.storage.trim().is_empty() {
        p.add("acme.storage", "is empty");
    }
    let challenge = a.challenge.unwrap_or_default();
    if challenge == Challenge::Http01 && !plain {
        p.add(
            "acme.challenge",
            "http-01 is answered on a plain HTTP listener (port 80 for the CA), and none is configured",
        );
    }
    let lock_timeout = a.lock_timeout.unwrap_or(Duration::from_secs(60));
    if lock_timeout < Duration::from_secs(3) {
        p.add("acme.lock_timeout", "must be at least 3s");
    }
    let retry = a.retry.unwrap_or(Duration::from_secs(60));
    if retry < Duration::from_secs(1) {
        p.add("acme.retry", "must be at least 1s");
    }
    if names.is_empty() {
        p.add(
            "acme",
            "no listener lists a name under tls.acme, so there is nothing to order",
        );
    }
    names.sort();
    names.dedup();
    Some(Acme {
        directory,
        contact,
        storage: base.join(&a.storage),
        ca: a.ca.as_ref().map(|c| base.join(c)),
        challenge,
        lock_timeout,
        retry,
        names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_ca_can_issue_for() {
        assert!(check_name("example.com").is_ok());
        assert!(check_name("a-b.example.co.uk").is_ok());
        assert!(check_name("*.example.com").is_err());
        assert!(check_name("localhost").is_err());
        assert!(check_name("127.0.0.1").is_err());
        assert!(check_name("-a.example.com").is_err());
        assert!(check_name("a..example.com").is_err());
        assert!(check_name("a_b.example.com").is_err());
        assert!(check_name("a/b.example.com").is_err());
    }
}
