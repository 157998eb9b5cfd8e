//! TLS and protocol choice for upstream connections.
//!
//! A group whose servers are written `https://` gets one rustls
//! [`ClientConfig`] built at config load (trust roots, client certificate,
//! ALPN), shared by every thread through an `Arc`; a reload builds a new
//! one, so certificate files are read again. Each server keeps its own
//! [`ServerName`] for SNI and verification.
//!
//! The ring provider is passed explicitly, so nothing depends on a
//! process-wide default provider.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;

use crate::config::{Protocol, UpstreamTls};

/// The ALPN protocols to offer for `protocol`.
fn alpn(protocol: Protocol) -> Vec<Vec<u8>> {
    match protocol {
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
        Protocol::H2 => vec![b"h2".to_vec()],
        Protocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    }
}

/// What one server needs to open TLS connections.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<ClientConfig>,
    /// The same, offering only `http/1.1` in ALPN: for upgrades, which are
    /// HTTP/1.1 whatever the group speaks. Built once at load.
    pub http1_config: Arc<ClientConfig>,
    /// The same, offering no ALPN: for `[[streams]]`, whose bytes are
    /// not HTTP (and for their TCP checks).
    pub bare_config: Arc<ClientConfig>,
    /// Sent as SNI (host names only) and checked against the certificate.
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// These settings with only `http/1.1` offered.
    pub fn http1_only(&self) -> ServerTls {
        ServerTls {
            config: self.http1_config.clone(),
            http1_config: self.http1_config.clone(),
            bare_config: self.bare_config.clone(),
            name: self.name.clone(),
        }
    }

    /// These settings with no ALPN offered.
    pub fn without_alpn(&self) -> ServerTls {
        ServerTls {
            config: self.bare_config.clone(),
            http1_config: self.http1_config.clone(),
            bare_config: self.bare_config.clone(),
            name: self.name.clone(),
        }
    }

    /// The TLS handshake over a connected socket. The error carries
    /// rustls' reason (e.g. `invalid peer certificate: UnknownIssuer`).
    pub async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.name.clone(), tcp)
            .await
    }
}

/// Whether a finished handshake settled on HTTP/2.
pub(crate) fn negotiated_h2(s: &tokio_rustls::client::TlsStream<TcpStream>) -> bool {
    s.get_ref().1.alpn_protocol() == Some(b"h2")
}

/// `(field, reason)`: the field is relative to the group's `tls` table.
pub(crate) type FieldError = (&'static str, String);

/// Builds a group's client config: trust roots (the CA file, or the
/// system's), the client certificate if any, ALPN for `protocol`.
pub(crate) fn client_config(
    opts: &UpstreamTls,
    protocol: Protocol,
) -> Result<Arc<ClientConfig>, FieldError> {
    let provider = crate::downstream::tls::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("", format!("TLS setup: {e}")))?;
    let builder = if opts.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        builder.with_root_certificates(roots(opts.ca_file.as_deref())?)
    };
    let mut config = match (&opts.client_cert, &opts.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert).map_err(|e| ("client_cert", e))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                let key = key.display();
                ("client_key", format!("`{key}`: no private key read: {e}"))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ("client_key", format!("does not fit client_cert: {e}")))?
        }
        (Some(_), None) => return Err(("client_key", "client_cert needs client_key".into())),
        (None, Some(_)) => return Err(("client_cert", "client_key needs client_cert".into())),
    };
    config.alpn_protocols = alpn(protocol);
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    crate::downstream::tls::read_certs(path).map_err(|e| e.to_string())
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, FieldError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path).map_err(|e| ("ca_file", e))? {
                store.add(cert).map_err(|e| {
                    let path = path.display();
                    ("ca_file", format!("`{path}`: unusable CA certificate: {e}"))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("reading the system's trusted certificates: {e}");
            }
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err((
                    "ca_file",
                    "no system trust roots found; give a ca_file".into(),
                ));
            }
        }
    }
    Ok(store)
}

/// Accepts any server certificate (`insecure_skip_verify_for_testing_only`).
/// Handshake signatures are still checked, so the peer must hold the key of
/// the certificate it sent.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
