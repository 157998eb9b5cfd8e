//! The storage folder, which instances may share:
//!
//! ```text
//! account-HASH.json            the account's key and URL, per directory URL
//! certificates/NAME.pem        private key, then the chain
//! challenges/http-01/TOKEN     the key authorization being answered
//! challenges/tls-alpn-01/NAME.pem  the validation certificate and its key
//! lock                         who orders (lock.rs)
//! ```
//!
//! Every file is written whole to a temporary name and renamed into
//! place, so a reader sees the old file or the new one, never half of one;
//! secrets are written mode 0600 in folders of mode 0700.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub(super) const HTTP01: &str = "challenges/http-01";
pub(super) const TLS_ALPN01: &str = "challenges/tls-alpn-01";
const CERTIFICATES: &str = "certificates";

/// Makes the storage folders (mode 0700) and checks that files can be
/// written there; the reason if not.
pub(crate) fn prepare(storage: &Path) -> Result<(), String> {
    for sub in [CERTIFICATES, HTTP01, TLS_ALPN01] {
        let dir = storage.join(sub);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    }
    let probe = storage.join(format!(".probe-{}", std::process::id()));
    write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("cannot write in {}: {e}", storage.display()))
}

/// Writes `bytes` to `path` whole (a temporary file renamed over it),
/// mode 0600.
pub(super) fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{:x}",
        std::process::id(),
        crate::random::next_u64()
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The account file for `directory`: one per CA, so a changed directory
/// makes a new account and keeps the old one.
pub(super) fn account(storage: &Path, directory: &str) -> PathBuf {
    let digest = ring::digest::digest(&ring::digest::SHA256, directory.as_bytes());
    let hex = data_encoding::HEXLOWER.encode(&digest.as_ref()[..8]);
    storage.join(format!("account-{hex}.json"))
}

pub(super) fn certificate(storage: &Path, name: &str) -> PathBuf {
    storage.join(CERTIFICATES).join(format!("{name}.pem"))
}

/// Where the TLS-ALPN-01 answer for `name` is kept while its order runs.
pub(super) fn tls_alpn_answer(storage: &Path, name: &str) -> PathBuf {
    storage.join(TLS_ALPN01).join(format!("{name}.pem"))
}

/// A certificate file read: the key to serve, and its validity.
pub(super) struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Reads a file of a private key and a chain (as [`certificate`] holds
/// and a TLS-ALPN-01 answer is written); `checked`: whether the key must
/// be seen to match the certificate.
pub(super) fn read_pem(path: &Path, checked: bool) -> Result<Loaded, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    parse_pem(&bytes, checked)
}

pub(super) fn parse_pem(bytes: &[u8], checked: bool) -> Result<Loaded, String> {
    let key = PrivateKeyDer::from_pem_slice(bytes).map_err(|e| format!("no private key: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err("no certificate".into());
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("bad certificate: {e}"))?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
    let not_before = at(parsed.validity().not_before.timestamp());
    let not_after = at(parsed.validity().not_after.timestamp());
    let provider = rustls::crypto::ring::default_provider();
    let key = if checked {
        CertifiedKey::from_der(chain, key, &provider)
    } else {
        // webpki refuses the TLS-ALPN-01 answer's critical
        // acmeIdentifier extension; the key is ours, made with it.
        provider
            .key_provider
            .load_private_key(key)
            .map(|k| CertifiedKey::new(chain, k))
    }
    .map_err(|e| e.to_string())?;
    Ok(Loaded {
        key: Arc::new(key),
        not_before,
        not_after,
    })
}

/// When a folder last changed (a file renamed in or out), to read it
/// again only then.
pub(super) fn stamp(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir).and_then(|m| m.modified()).ok()
}

/// The certificates of `names` found in the storage; a file that cannot
/// be read is reported and left out.
pub(super) fn certificates(storage: &Path, names: &[String]) -> HashMap<String, Loaded> {
    names
        .iter()
        .filter_map(|name| {
            Some((
                name.clone(),
                found(&certificate(storage, name), name, true)?,
            ))
        })
        .collect()
}

/// The file at `path` (for `name`) read, if it is there; one that is
/// there but unusable is reported.
fn found(path: &Path, name: &str, checked: bool) -> Option<Loaded> {
    match read_pem(path, checked) {
        Ok(l) => Some(l),
        Err(e) => {
            if path.exists() {
                tracing::warn!(name, "ACME: {} unusable: {e}", path.display());
            }
            None
        }
    }
}

/// A token as the CA sends them (base64url), safe as a file name.
pub(crate) fn token_ok(token: &str) -> bool {
    (1..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The challenges being answered for `names` (any instance's).
pub(super) fn challenges(
    storage: &Path,
    names: &[String],
) -> (
    HashMap<String, Arc<CertifiedKey>>,
    HashMap<String, Arc<str>>,
) {
    let tls_alpn = names
        .iter()
        .filter_map(|name| {
            let path = tls_alpn_answer(storage, name);
            Some((name.clone(), found(&path, name, false)?.key))
        })
        .collect();
    let mut http01 = HashMap::new();
    if let Ok(dir) = std::fs::read_dir(storage.join(HTTP01)) {
        for e in dir.flatten().take(1024) {
            let Some(token) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !token_ok(&token) {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(e.path()) {
                http01.insert(token, Arc::from(text.trim()));
            }
        }
    }
    (tls_alpn, http01)
}
