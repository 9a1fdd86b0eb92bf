//! push_load's TLS client set-up: the CA to trust and connectors without a
//! client certificate (session resumption off: full handshakes only).

use std::io::BufReader;
use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::TlsConnector;

/// The certificates of the CA file `ca_pem`, to trust.
pub fn roots(ca_pem: &str) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let file = std::fs::File::open(ca_pem).with_context(|| format!("opening {ca_pem}"))?;
    for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
        roots.add(cert?)?;
    }
    Ok(roots)
}

/// A client config with ring and the default protocol versions, before its roots.
pub fn client_config()
-> anyhow::Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?)
}

/// A connector without a client certificate.
pub fn connector(roots: rustls::RootCertStore) -> anyhow::Result<TlsConnector> {
    let mut config = client_config()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Full handshakes only, in both modes: what a fleet of (re)starting agents costs.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}
