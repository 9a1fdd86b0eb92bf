//! A private CA and a server certificate it signed, for a console on a
//! machine without a public certificate (`bankswap console cert`, the demo).

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The PEM files written.
#[derive(Debug, Clone)]
pub struct CaFiles {
    /// The CA certificate: what agents trust (`[tls] ca_certs`).
    pub ca_pem: PathBuf,
    /// The server certificate (`console serve --tls-cert`).
    pub cert_pem: PathBuf,
    /// Its private key (`console serve --tls-key`, mode 0600).
    pub key_pem: PathBuf,
}

/// Writes `ca.pem`, `server.pem` and `server.key` into `dir` for the DNS names or IP
/// addresses in `names`.
pub fn make_ca(dir: &Path, names: &[String]) -> anyhow::Result<CaFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = common_name("bankswap private CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;

    let server_key = KeyPair::generate().context("generating the server key")?;
    let mut params = CertificateParams::new(names.to_vec()).context("server certificate names")?;
    params.distinguished_name = common_name(names.first().map_or("localhost", String::as_str));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params
        .signed_by(&server_key, &ca_cert, &ca_key)
        .context("signing the server certificate")?;

    let files = CaFiles {
        ca_pem: dir.join("ca.pem"),
        cert_pem: dir.join("server.pem"),
        key_pem: dir.join("server.key"),
    };
    bank_layout::write_atomic(&files.ca_pem, ca_cert.pem().as_bytes())
        .with_context(|| format!("writing {}", files.ca_pem.display()))?;
    bank_layout::write_atomic(&files.cert_pem, server_cert.pem().as_bytes())
        .with_context(|| format!("writing {}", files.cert_pem.display()))?;
    bank_layout::write_atomic(&files.key_pem, server_key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", files.key_pem.display()))?;
    std::fs::set_permissions(
        &files.key_pem,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .with_context(|| format!("chmod {}", files.key_pem.display()))?;
    Ok(files)
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}
