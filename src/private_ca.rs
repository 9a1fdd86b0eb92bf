//! A private CA and a server certificate it signed, for a console on a
//! machine without a public certificate (`bankswap console cert`, the demo).
//! The CA lives 10 years and its key is kept (0600) beside it; the server
//! certificate lives 1 year and is renewed by running the command again,
//! which signs a new one with the kept CA key, so agents keep trusting it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// How long the CA is valid: the trust agents are configured with, rarely rotated.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a server certificate is valid: renewed yearly with the kept CA key.
const SERVER_VALIDITY: Duration = Duration::days(365);
/// Certificates start a little in the past, for clocks slightly behind this one.
const BACKDATE: Duration = Duration::hours(1);
/// The CA's subject; a renewal signs with the same name and key, which is all
/// that a client's trust anchor (ca.pem) checks.
const CA_NAME: &str = "bankswap private CA";

/// The PEM files written.
#[derive(Debug, Clone)]
pub struct CaFiles {
    /// The CA certificate: what agents trust (`[tls] ca_certs`).
    pub ca_pem: PathBuf,
    /// The CA's private key (mode 0600), kept to renew the server certificate.
    pub ca_key: PathBuf,
    /// The server certificate (`console serve --tls-cert`).
    pub cert_pem: PathBuf,
    /// Its private key (`console serve --tls-key`, mode 0600).
    pub key_pem: PathBuf,
    /// Whether an existing CA was reused (a renewal).
    pub renewed: bool,
}

/// Writes `ca.pem`, `ca.key`, `server.pem` and `server.key` into `dir` for the DNS
/// names or IP addresses in `names`. With `ca.key` and `ca.pem` already there, only
/// the server certificate and key are made anew, signed by that CA.
pub fn make_ca(dir: &Path, names: &[String]) -> anyhow::Result<CaFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = CaFiles {
        ca_pem: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        cert_pem: dir.join("server.pem"),
        key_pem: dir.join("server.key"),
        renewed: false,
    };
    let now = OffsetDateTime::now_utc();
    files.renewed = files.ca_key.exists() && files.ca_pem.exists();
    let ca_key = if files.renewed {
        let pem = std::fs::read_to_string(&files.ca_key)
            .with_context(|| format!("reading {}", files.ca_key.display()))?;
        KeyPair::from_pem(&pem)
            .with_context(|| format!("{}: not a PEM private key", files.ca_key.display()))?
    } else {
        KeyPair::generate().context("generating the CA key")?
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = common_name(CA_NAME);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now - BACKDATE;
    ca_params.not_after = now + CA_VALIDITY;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;

    let server_key = KeyPair::generate().context("generating the server key")?;
    let mut params = CertificateParams::new(names.to_vec()).context("server certificate names")?;
    params.distinguished_name = common_name(names.first().map_or("localhost", String::as_str));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - BACKDATE;
    params.not_after = now + SERVER_VALIDITY;
    let server_cert = params
        .signed_by(&server_key, &ca_cert, &ca_key)
        .context("signing the server certificate")?;

    if !files.renewed {
        write_secret(&files.ca_key, ca_key.serialize_pem().as_bytes())?;
        write_public(&files.ca_pem, &ca_cert.pem())?;
    }
    write_public(&files.cert_pem, &server_cert.pem())?;
    write_secret(&files.key_pem, server_key.serialize_pem().as_bytes())?;
    Ok(files)
}

/// Writes a certificate, world-readable (0644) whatever the umask.
fn write_public(path: &Path, pem: &str) -> anyhow::Result<()> {
    bank_layout::write_atomic(path, pem.as_bytes())
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)))
        .with_context(|| format!("writing {}", path.display()))
}

/// Mode of every private key: owner-only.
const SECRET_MODE: u32 = 0o600;

/// Writes a private key crash-safely, owner-only from its creation on (never
/// readable by others, whatever the umask): `bank_layout`'s one crash-safe write
/// with mode 0600. A missing folder is created durably first (a first enrollment
/// makes `ROOT/identity/`), so a power cut cannot keep the key and lose its folder.
pub fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    bank_layout::create_dir_durable(dir).with_context(|| format!("creating {}", dir.display()))?;
    bank_layout::write_atomic_mode(path, bytes, SECRET_MODE)
        .with_context(|| format!("writing {}", path.display()))
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// The agent CA's certificate inside the console data folder: what signs
/// agents' client certificates, and what nginx's `ssl_client_certificate`
/// (or any other mTLS host) trusts.
pub const AGENT_CA_CERT: &str = "agent-ca/ca.pem";

/// The agent CA's private key (mode 0600).
pub const AGENT_CA_KEY: &str = "agent-ca/ca.key";

/// Issued certificates start this long before they were signed, so a client
/// whose clock is slightly behind the console's accepts them at once.
const ISSUED_BACKDATE: std::time::Duration = std::time::Duration::from_secs(60);

/// The console's agent CA (SPEC §10): signs the client certificates agents
/// enroll and renew with.
pub struct AgentCa {
    /// The CA certificate as PEM (what verifiers trust).
    pub cert_pem: String,
    /// The CA certificate, re-built from its PEM with the same key, to sign with.
    cert: rcgen::Certificate,
    /// The CA key.
    key: KeyPair,
}

/// A client certificate the agent CA signed.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub pem: String,
    /// Its serial number, hex: how the console tells an agent's certificates apart.
    pub serial: String,
    /// When it expires (unix seconds).
    pub not_after: u64,
}

impl AgentCa {
    /// Loads the agent CA of a console data folder, creating it on first use.
    pub fn load_or_create(data: &Path) -> anyhow::Result<AgentCa> {
        let cert_path = data.join(AGENT_CA_CERT);
        let key_path = data.join(AGENT_CA_KEY);
        if !cert_path.exists() {
            create_agent_ca(&cert_path, &key_path)?;
        }
        let cert_pem = std::fs::read_to_string(&cert_path)
            .with_context(|| format!("reading {}", cert_path.display()))?;
        let key_pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("reading the key {}", key_path.display()))?;
        let cert = CertificateParams::from_ca_cert_pem(&cert_pem)
            .with_context(|| format!("reading {}", cert_path.display()))?
            .self_signed(&key)
            .with_context(|| {
                format!(
                    "{} does not fit {}",
                    key_path.display(),
                    cert_path.display()
                )
            })?;
        Ok(AgentCa {
            cert_pem,
            cert,
            key,
        })
    }

    /// Signs a client certificate for `agent_id` with the public key of
    /// `csr_pem` (whose own signature is checked). Only the key is taken from
    /// the request: names, usages and validity are the console's.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        agent_id: &str,
        lifetime: std::time::Duration,
        now: std::time::SystemTime,
    ) -> Result<IssuedCert, rcgen::Error> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(agent_id);
        params.subject_alt_names = vec![rcgen::SanType::URI(rcgen::Ia5String::try_from(
            agent_uri(agent_id),
        )?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let serial: [u8; 16] = rand::random();
        // A positive serial whose DER encoding is these 16 bytes: the top bit
        // clear, the first byte not zero.
        let mut serial = serial.to_vec();
        serial[0] = (serial[0] & 0x7f) | 0x01;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        params.not_before = OffsetDateTime::from(now - ISSUED_BACKDATE);
        let not_after = now + lifetime;
        params.not_after = OffsetDateTime::from(not_after);
        csr.params = params;
        let cert = csr.signed_by(&self.cert, &self.key)?;
        // The serial as a verifier reads it back (DER may re-encode the bytes given).
        let serial = x509_parser::parse_x509_certificate(cert.der())
            .map(|(_, parsed)| hex::encode(parsed.raw_serial()))
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        Ok(IssuedCert {
            pem: cert.pem(),
            serial,
            not_after: crate::clock::unix(not_after),
        })
    }
}

/// The URI naming an agent in its certificate's subject alternative names.
pub fn agent_uri(agent_id: &str) -> String {
    format!("urn:bankswap:agent:{agent_id}")
}

/// Writes a new agent CA (key first, 0600, so no CA exists without its key).
fn create_agent_ca(cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key = KeyPair::generate().context("generating the agent CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = common_name("bankswap agent CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // The CA outlives every certificate it signs; agents' certificates rotate.
    params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
    let cert = params
        .self_signed(&key)
        .context("signing the agent CA certificate")?;
    write_secret(key_path, key.serialize_pem().as_bytes())?;
    bank_layout::write_atomic(cert_path, cert.pem().as_bytes())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_serials_read_back_as_recorded_and_names_are_the_consoles() {
        let dir = tempfile::tempdir().unwrap();
        let ca = AgentCa::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(AGENT_CA_KEY))
            .unwrap()
            .permissions();
        assert_eq!(PermissionsExt::mode(&mode) & 0o777, 0o600);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name("asks-for-another-name");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let now = std::time::SystemTime::now();
        // Enough serials that a leading zero byte would have shown up (1 in 128).
        for _ in 0..300 {
            let issued = ca
                .sign_csr(&csr, "agent-7", std::time::Duration::from_secs(120), now)
                .unwrap();
            let (_, pem) = x509_parser::pem::parse_x509_pem(issued.pem.as_bytes()).unwrap();
            let cert = pem.parse_x509().unwrap();
            assert_eq!(hex::encode(cert.raw_serial()), issued.serial);
            let cn = cert.subject().iter_common_name().next().unwrap();
            assert_eq!(cn.as_str().unwrap(), "agent-7");
        }
        // Loaded again, the same CA.
        assert_eq!(
            AgentCa::load_or_create(dir.path()).unwrap().cert_pem,
            ca.cert_pem
        );
        assert!(
            ca.sign_csr("not a CSR", "a", std::time::Duration::from_secs(60), now)
                .is_err()
        );
    }
}
