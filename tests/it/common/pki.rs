//! Test certificates (made at test time with rcgen; no key is committed)
//! and TLS clients for them.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::TempFile;

/// A test certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub der: CertificateDer<'static>,
    /// Its certificate, in a PEM file (for `ca_file`, `client_ca`).
    pub file: TempFile,
}

/// A certificate and its key, as PEM text and as files for a config.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    pub cert_file: TempFile,
    pub key_file: TempFile,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        Ca {
            file: TempFile::with("ca.pem", cert.pem().as_bytes()),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names, `*.x` wildcards, IP
    /// addresses).
    pub fn server(&self, names: &[&str]) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<String>>())
                .expect("params");
        self.sign(params)
    }

    /// A client certificate with common name `cn`.
    pub fn client(&self, cn: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Tidegate Tests");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Leaf::new(cert.pem(), cert.der().clone(), key.serialize_pem())
    }
}

impl Leaf {
    fn new(cert_pem: String, der: CertificateDer<'static>, key_pem: String) -> Leaf {
        Leaf {
            cert_file: TempFile::with("cert.pem", cert_pem.as_bytes()),
            key_file: TempFile::with("key.pem", key_pem.as_bytes()),
            der,
            cert_pem,
            key_pem,
        }
    }

    /// A self-signed certificate for `names`.
    pub fn self_signed(names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = CertificateParams::new(names).expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        Leaf::new(cert.pem(), cert.der().clone(), key.serialize_pem())
    }

    /// The certificate chain, for a rustls config.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.der.clone()]
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key pem")
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How a test client talks TLS.
pub struct Client {
    pub alpn: Vec<&'static [u8]>,
    /// Trust this CA; `None`: accept any certificate (to see which one
    /// the server picked for a name it has no certificate for).
    pub ca: Option<CertificateDer<'static>>,
    pub cert: Option<(CertificateDer<'static>, String)>,
    /// Offer only TLS 1.2.
    pub tls12_only: bool,
}

impl Client {
    pub fn trusting(ca: &Ca) -> Client {
        Client {
            alpn: vec![b"h2", b"http/1.1"],
            ca: Some(ca.der.clone()),
            cert: None,
            tls12_only: false,
        }
    }

    pub fn any_cert() -> Client {
        Client {
            alpn: vec![b"h2", b"http/1.1"],
            ca: None,
            cert: None,
            tls12_only: false,
        }
    }

    pub fn alpn(mut self, alpn: &[&'static [u8]]) -> Client {
        self.alpn = alpn.to_vec();
        self
    }

    pub fn tls12(mut self) -> Client {
        self.tls12_only = true;
        self
    }

    pub fn with_cert(mut self, leaf: &Leaf) -> Client {
        self.cert = Some((leaf.der.clone(), leaf.key_pem.clone()));
        self
    }

    pub fn config(&self) -> rustls::ClientConfig {
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .expect("versions");
        let b = match &self.ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.clone()).expect("root");
                b.with_root_certificates(roots)
            }
            None => b
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider()))),
        };
        let mut c = match &self.cert {
            None => b.with_no_client_auth(),
            Some((der, key)) => {
                use rustls::pki_types::pem::PemObject;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
                b.with_client_auth_cert(vec![der.clone()], key)
                    .expect("client cert")
            }
        };
        c.alpn_protocols = self.alpn.iter().map(|p| p.to_vec()).collect();
        c
    }

    /// Connects and handshakes, sending `sni`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        sni: &str,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.config()));
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(sni.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        connector.connect(name, tcp).await
    }
}

/// The certificate a TLS stream's server presented.
pub fn peer_cert(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .clone()
}

/// The TLS version the handshake settled on.
pub fn version(s: &TlsStream<TcpStream>) -> Option<rustls::ProtocolVersion> {
    s.get_ref().1.protocol_version()
}

/// Whether ALPN settled on h2.
pub fn is_h2(s: &TlsStream<TcpStream>) -> bool {
    s.get_ref().1.alpn_protocol() == Some(b"h2")
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One request over an established stream, HTTP/2 or HTTP/1.1 by what
/// ALPN settled; returns status, headers, body.
pub async fn request<IO>(
    io: IO,
    h2: bool,
    req: http::Request<super::Body>,
) -> Result<(u16, http::HeaderMap, bytes::Bytes), super::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let io = hyper_util::rt::TokioIo::new(io);
    let resp = if h2 {
        let (mut s, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        s.send_request(req).await?
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        s.send_request(req).await?
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, headers, body))
}
