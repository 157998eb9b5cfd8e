//! TLS towards clients: certificates chosen by SNI, ALPN, client
//! certificates (mTLS).
//!
//! Everything here is built once when the config loads (so a reload re-reads
//! the certificate and key files) into an `Arc<rustls::ServerConfig>` that
//! the listener's connections share. A connection's handshake is the only
//! place that touches it; the request path only reads what the handshake
//! left in the connection's context (the SNI, which certificate answered,
//! the client's verified subject).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::acme::{Certs, ACME_TLS_ALPN};
use crate::config::{ClientAuth, ListenerTls};

/// ALPN protocol ids, most preferred first.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A listener's TLS, ready to accept with.
pub(crate) struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub certs: Arc<CertStore>,
    /// Set when client certificates are verified: the header that carries
    /// the verified subject upstream (a client-sent one is always removed).
    pub subject_header: Option<HeaderName>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("certificates", &self.certs.entries.len())
            .field("subject_header", &self.subject_header)
            .finish()
    }
}

/// Why a listener's TLS could not be built; the config layer adds the file
/// and field.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("`{path}`: cannot read: {reason}")]
    Read { path: String, reason: String },
    #[error("`{path}` holds no certificate")]
    NoCertificate { path: String },
    #[error("`{path}`: unusable key: {reason}")]
    Key { path: String, reason: String },
    #[error("`{path}`: certificate has no DNS names (subjectAltName)")]
    NoNames { path: String },
    #[error("{0}")]
    Rustls(String),
}

/// One certificate and the names it serves.
pub(crate) struct Entry {
    pub key: Arc<CertifiedKey>,
    /// Lower-case DNS names from its subjectAltName; `*.x` for wildcards.
    pub names: Vec<String>,
}

/// Certificates by name: an ACME certificate obtained for the name
/// first, then exact names, then wildcards (one label, as RFC 6125
/// allows), then the default (the first configured).
pub(crate) struct CertStore {
    pub entries: Vec<Entry>,
    exact: HashMap<String, usize>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, usize>,
    /// The listener's `acme` names and where their certificates are.
    acme: Option<(Vec<String>, Arc<Certs>)>,
}

/// What [`CertStore::select`] says when an ACME certificate answers: it
/// covers its one name, which is the SNI.
pub(crate) const ACME_ANSWERED: usize = usize::MAX;

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("exact", &self.exact)
            .field("wildcard", &self.wildcard)
            .finish()
    }
}

impl CertStore {
    /// The entry that answers a handshake for `sni` (default: the first;
    /// [`ACME_ANSWERED`] for an ACME certificate).
    pub(crate) fn select(&self, sni: Option<&str>) -> usize {
        match self.answer(sni) {
            Answer::Acme(_) => ACME_ANSWERED,
            Answer::Entry(i) => i,
        }
    }

    /// What answers a handshake for `sni`, its name lower-cased once.
    fn answer(&self, sni: Option<&str>) -> Answer {
        let Some(name) = sni else {
            return Answer::Entry(0);
        };
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(key) = self.acme_for(name).and_then(|c| c.issued(name)) {
            return Answer::Acme(key);
        }
        if let Some(&i) = self.exact.get(name) {
            return Answer::Entry(i);
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(&i) = self.wildcard.get(parent) {
                return Answer::Entry(i);
            }
        }
        Answer::Entry(0)
    }

    /// Whether entry `i`'s certificate is valid for `host` (a request's
    /// host without port), for the 421 check.
    pub(crate) fn covers(&self, i: usize, host: &str) -> bool {
        let Some(e) = self.entries.get(i) else {
            return false;
        };
        e.names.iter().any(|n| name_matches(n, host))
    }
}

/// `pattern` (`a.b` or `*.b`) matches `host`, case-insensitively.
fn name_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(parent)),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// What [`CertStore::answer`] found.
enum Answer {
    /// The ACME certificate obtained for the name.
    Acme(Arc<CertifiedKey>),
    /// A configured certificate, by its place.
    Entry(usize),
}

impl CertStore {
    /// Where the ACME certificates of `name` (lower case) are, if it is
    /// one of this listener's `acme` names.
    fn acme_for(&self, name: &str) -> Option<&Certs> {
        let (names, certs) = self.acme.as_ref()?;
        names.iter().any(|n| n == name).then_some(&**certs)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A CA validating TLS-ALPN-01 offers only `acme-tls/1`, and gets
        // the answer for the name or no handshake (RFC 8737 §3).
        if self.acme.is_some()
            && hello
                .alpn()
                .is_some_and(|mut a| a.any(|p| p == ACME_TLS_ALPN))
        {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.acme_for(&name)?.tls_alpn(&name);
        }
        match self.answer(hello.server_name()) {
            Answer::Acme(key) => Some(key),
            Answer::Entry(i) => self.entries.get(i).map(|e| e.key.clone()),
        }
    }
}

/// The crypto provider every TLS config uses (ring), chosen explicitly
/// rather than through a process-wide default.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM file of certificates (a chain, or a CA bundle); at least one.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: shown });
    }
    Ok(certs)
}

fn load_entry(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Entry, TlsError> {
    let chain = read_certs(cert)?;
    let key_shown = key.display().to_string();
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key_shown.clone(),
        reason: e.to_string(),
    })?;
    let certified = CertifiedKey::from_der(chain, der, provider).map_err(|e| TlsError::Key {
        path: key_shown.clone(),
        reason: e.to_string(),
    })?;
    let names = dns_names(&certified.cert[0]).ok_or_else(|| TlsError::NoNames {
        path: cert.display().to_string(),
    })?;
    Ok(Entry {
        key: Arc::new(certified),
        names,
    })
}

/// The subjectAltName DNS names of a certificate, lower-cased.
fn dns_names(cert: &CertificateDer<'_>) -> Option<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    (!names.is_empty()).then_some(names)
}

/// The subject of a client's certificate as an RFC 4514-style string
/// (`CN=alice, O=Example`), ready to send upstream.
pub(crate) fn subject(cert: &CertificateDer<'_>) -> Option<HeaderValue> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    HeaderValue::from_str(&parsed.subject().to_string()).ok()
}

/// The ALPN protocols an HTTP listener offers (`http2`: h2 first).
pub(crate) fn http_alpn(http2: bool) -> Vec<Vec<u8>> {
    if http2 {
        vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
    } else {
        vec![ALPN_HTTP11.to_vec()]
    }
}

impl ServerTls {
    /// Reads the certificate files `s` names; `alpn`: the protocols
    /// offered ([`http_alpn`] on HTTP listeners); `acme`: where the
    /// certificates of `s`'s `acme` names are.
    pub(crate) fn build(
        s: &ListenerTls,
        mut alpn: Vec<Vec<u8>>,
        acme: &Arc<Certs>,
    ) -> Result<ServerTls, TlsError> {
        let provider = provider();
        let mut entries = Vec::new();
        for (cert, key) in &s.certificates {
            entries.push(load_entry(cert, key, &provider)?);
        }
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            for n in &e.names {
                // The first certificate to name a host keeps it.
                match n.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert(i),
                    None => exact.entry(n.clone()).or_insert(i),
                };
            }
        }
        let acme = (!s.acme.is_empty()).then(|| {
            // The CA's validation must be able to settle on it. (A
            // listener offering no ALPN gets none: clients that offer
            // theirs would be refused. Config refuses TLS-ALPN-01 there.)
            if !alpn.is_empty() {
                alpn.push(ACME_TLS_ALPN.to_vec());
            }
            (s.acme.clone(), acme.clone())
        });
        let certs = Arc::new(CertStore {
            entries,
            exact,
            wildcard,
            acme,
        });

        let versions: &[&rustls::SupportedProtocolVersion] = if s.min_tls13 {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let (builder, subject_header) = match s.client_ca.as_deref() {
            None => (builder.with_no_client_auth(), None),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in read_certs(ca)? {
                    roots.add(c).map_err(|e| TlsError::Read {
                        path: ca.display().to_string(),
                        reason: e.to_string(),
                    })?;
                }
                let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                if s.client_auth == ClientAuth::Optional {
                    v = v.allow_unauthenticated();
                }
                let verifier = v.build().map_err(|e| TlsError::Rustls(e.to_string()))?;
                (
                    builder.with_client_cert_verifier(verifier),
                    Some(s.subject_header.clone()),
                )
            }
        };
        let mut config = builder.with_cert_resolver(certs.clone());
        config.alpn_protocols = alpn;
        config.ignore_client_order = false;
        Ok(ServerTls {
            config: Arc::new(config),
            certs,
            subject_header,
        })
    }
}

/// Whether a handshake settled on `acme-tls/1`: a CA's TLS-ALPN-01
/// validation, which is closed once done (RFC 8737 §3), never served.
pub(crate) fn is_acme_validation(conn: &rustls::ServerConnection) -> bool {
    conn.alpn_protocol() == Some(ACME_TLS_ALPN)
}

/// Gives a server connection the bytes read off its socket before its
/// TLS was set up (a stream's SNI route read the ClientHello): rustls
/// takes them as if read from the socket, and the handshake goes on from
/// there. A ClientHello it refuses leaves the connection in error, which
/// the handshake then reports.
pub(crate) fn feed(conn: &mut rustls::ServerConnection, early: &[u8]) {
    let mut rest = early;
    while !rest.is_empty() {
        match conn.read_tls(&mut rest) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if conn.process_new_packets().is_err() {
                    return;
                }
            }
        }
    }
}

/// Why a TLS handshake failed, as an index of
/// [`crate::metrics::TLS_FAILURES`].
pub(crate) fn failure(e: &std::io::Error) -> usize {
    use rustls::Error as E;
    match e.get_ref().and_then(|e| e.downcast_ref::<E>()) {
        Some(E::PeerIncompatible(_)) => 3,
        Some(E::NoApplicationProtocol) => 4,
        Some(E::InvalidCertificate(_) | E::NoCertificatesPresented) => 5,
        Some(E::AlertReceived(_)) => 6,
        Some(E::InvalidMessage(_) | E::InappropriateMessage { .. }) => 7,
        Some(_) => 8,
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => 1,
        None => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(name_matches("*.example.com", "A.Example.COM"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", ".example.com"));
        assert!(name_matches("example.com", "EXAMPLE.com"));
        assert!(!name_matches("example.com", "www.example.com"));
    }
}
