//! What handshakes and requests read of ACME: the certificates obtained,
//! and the challenges being answered. Each set is swapped whole by the
//! manager ([`super::manager`]) and read with one atomic load (`ArcSwap`),
//! no lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

/// The ALPN protocol of a TLS-ALPN-01 validation (RFC 8737 §6.2).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The path prefix of HTTP-01 validations (RFC 8555 §8.3).
pub(crate) const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// One process's ACME state: shared by every thread and config generation.
#[derive(Default)]
pub(crate) struct Certs {
    /// Certificates obtained, by name.
    issued: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 answers, by name.
    tls_alpn: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 answers (key authorizations), by token.
    http01: ArcSwap<HashMap<String, Arc<str>>>,
    /// What `/metrics` shows, by name; not on the request path.
    stats: Mutex<Stats>,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs")
            .field("issued", &self.issued.load().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Counts and state for the metrics.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    /// Whether this instance holds the storage's lock (and so orders).
    pub lock_held: bool,
    pub names: std::collections::BTreeMap<String, NameStats>,
}

/// One name's certificate, for the metrics.
#[derive(Debug, Default, Clone)]
pub(crate) struct NameStats {
    /// The served certificate's notAfter (Unix seconds), if any.
    pub expires: Option<u64>,
    /// Orders that ended with a certificate.
    pub ok: u64,
    /// Orders that failed (the previous certificate, if any, stays).
    pub failed: u64,
}

impl Certs {
    /// The certificate obtained for `name` (lower case).
    pub(crate) fn issued(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.issued.load().get(name).cloned()
    }

    /// The TLS-ALPN-01 answer for `name` (lower case).
    pub(crate) fn tls_alpn(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn.load().get(name).cloned()
    }

    /// The HTTP-01 answer for `token`.
    pub(crate) fn http01(&self, token: &str) -> Option<Arc<str>> {
        self.http01.load().get(token).cloned()
    }

    /// Serves `loaded` (certificates read from the storage) from now on.
    pub(super) fn set_issued(&self, loaded: HashMap<String, super::disk::Loaded>) {
        let keys = loaded.into_iter().map(|(n, l)| (n, l.key)).collect();
        self.issued.store(Arc::new(keys));
    }

    fn set_challenges(
        &self,
        tls_alpn: HashMap<String, Arc<CertifiedKey>>,
        http01: HashMap<String, Arc<str>>,
    ) {
        self.tls_alpn.store(Arc::new(tls_alpn));
        self.http01.store(Arc::new(http01));
    }

    /// Reads the challenges being answered for `settings`' names (by
    /// any instance sharing the storage).
    pub(super) fn read_challenges(&self, settings: &crate::config::acme::Acme) {
        let (tls_alpn, http01) = super::disk::challenges(&settings.storage, &settings.names);
        self.set_challenges(tls_alpn, http01);
    }

    /// What `/metrics` and `/status` show (the manager updates it).
    pub(crate) fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}
