//! A private CA and a server certificate it signed, for a console on a
//! machine without a public certificate (`bankswap console cert`, the demo).
//! The CA lives 10 years and its key is kept (0600) beside it; the server
//! certificate lives 1 year and is renewed by running the command again,
//! which signs a new one with the kept CA key, so agents keep trusting it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
        write_secret(&files.ca_key, &ca_key.serialize_pem())?;
        write_public(&files.ca_pem, &ca_cert.pem())?;
    }
    write_public(&files.cert_pem, &server_cert.pem())?;
    write_secret(&files.key_pem, &server_key.serialize_pem())?;
    Ok(files)
}

/// Writes a certificate, world-readable (0644) whatever the umask.
fn write_public(path: &Path, pem: &str) -> anyhow::Result<()> {
    bank_layout::write_atomic(path, pem.as_bytes())
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)))
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes a private key crash-safely, owner-only from its creation on (never
/// readable by others, whatever the umask): temp file 0600, fsync, rename, fsync the folder.
fn write_secret(path: &Path, pem: &str) -> anyhow::Result<()> {
    let context = || format!("writing {}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map_or_else(Default::default, |n| n.to_string_lossy()),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .with_context(context)?;
    let written = file
        .write_all(pem.as_bytes())
        .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(0o600)))
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temp, path))
        .and_then(|()| std::fs::File::open(dir)?.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.with_context(context)
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}
