//! The console's TLS settings: a certificate chain and key read from PEM files,
//! with rustls on the ring provider (the build carries no aws-lc), and client
//! certificates checked against the agent CA (SPEC §10).
//!
//! Client certificates are optional at the TLS layer: an agent that has not
//! enrolled yet, a static-host client or an admin's browser has none. Which
//! routes need one is decided per request (routes.rs, reports.rs), so the
//! refusal can say why (401/403 with a reason) instead of a TLS alert.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};

use crate::error::UsageError;

/// The only protocol offered over ALPN: the server speaks HTTP/1.1, which keeps
/// a held agent connection small (no HTTP/2 stream and window buffers).
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Builds the server's TLS configuration from `--tls-cert` and `--tls-key`.
///
/// Unreadable or unusable files are configuration errors (exit code 2), each
/// naming the file.
/// `agent_ca` is the agent CA certificate (PEM): client certificates it
/// signed are verified and offered to the routes; others fail the handshake.
pub fn server_config(cert: &Path, key: &Path, agent_ca: &str) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut agent_ca.as_bytes()) {
        let ca = ca.map_err(|e| UsageError::new(format!("the agent CA: {e}")))?;
        roots
            .add(ca)
            .map_err(|e| UsageError::new(format!("the agent CA: {e}")))?;
    }
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| UsageError::new(format!("the agent CA: {e}")))?;
    let verifier = Arc::new(ExpiryAtTheRoutes(webpki));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UsageError::new(format!("TLS set-up: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            UsageError::new(format!(
                "--tls-key {} does not fit --tls-cert {}: {e}",
                key.display(),
                cert.display()
            ))
        })?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// The agent CA's verifier, except that an expired certificate passes the
/// handshake: the routes then refuse it with 403 and "expired at …" (an agent
/// back from a long power-off learns what to do) instead of a TLS alert. The
/// chain and the handshake signature are still checked in full: an expired
/// certificate passes only if it verifies at the last second of its validity.
#[derive(Debug)]
struct ExpiryAtTheRoutes(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ExpiryAtTheRoutes {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.0.verify_client_cert(end_entity, intermediates, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => {
                let last_second = x509_parser::parse_x509_certificate(end_entity)
                    .ok()
                    .and_then(|(_, cert)| u64::try_from(cert.validity().not_after.timestamp()).ok())
                    .ok_or(rustls::Error::InvalidCertificate(
                        CertificateError::BadEncoding,
                    ))?;
                self.0.verify_client_cert(
                    end_entity,
                    intermediates,
                    UnixTime::since_unix_epoch(std::time::Duration::from_secs(last_second)),
                )
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Reads every certificate of a PEM file, leaf first.
fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let unreadable = |e: std::io::Error| {
        UsageError::new(format!("--tls-cert {}: cannot read: {e}", path.display()))
    };
    let file = File::open(path).map_err(unreadable)?;
    let chain = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    if chain.is_empty() {
        return Err(UsageError::new(format!(
            "--tls-cert {}: no PEM certificate in the file",
            path.display()
        ))
        .into());
    }
    Ok(chain)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let unreadable = |e: std::io::Error| {
        UsageError::new(format!("--tls-key {}: cannot read: {e}", path.display()))
    };
    let file = File::open(path).map_err(unreadable)?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(unreadable)?
        .ok_or_else(|| {
            UsageError::new(format!(
                "--tls-key {}: no PEM private key in the file",
                path.display()
            ))
            .into()
        })
}
