//! The identity's files on disk, in `ROOT/identity/`: the [`Stored`] key and
//! certificate, read back ([`load`], pairing the files a cut install left),
//! and the crash-safe install of a new pair (see the parent module's crash
//! safety).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, anyhow};

use crate::clock;
use crate::identity::renewal_due;

/// The folder inside the root.
pub const IDENTITY_DIR: &str = "identity";

/// The private key (PKCS#8 PEM, mode 0600).
pub(super) const KEY_FILE: &str = "key.pem";

/// The client certificate (PEM).
pub(super) const CERT_FILE: &str = "cert.pem";

/// The agent CA certificate, as the console sent it (for mTLS static hosts).
pub(super) const CA_FILE: &str = "agent-ca.pem";

/// A renewed key and certificate wait here until the console accepted them.
pub(super) const NEW_KEY_FILE: &str = "key.new.pem";

/// The renewed certificate, until accepted.
pub(super) const NEW_CERT_FILE: &str = "cert.new.pem";

/// The agent's stored identity.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The private key, PEM.
    key_pem: String,
    /// The certificate, PEM.
    cert_pem: String,
    /// When the certificate starts (unix seconds).
    pub not_before: u64,
    /// When it expires (unix seconds).
    pub not_after: u64,
}

impl Stored {
    /// Whether the certificate should be renewed at `now`.
    pub fn is_renewal_due(&self, now: SystemTime) -> bool {
        renewal_due(self.not_before, self.not_after, clock::unix(now))
    }

    /// Whether the certificate expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        clock::unix(now) >= self.not_after
    }
}

/// `ROOT/identity/`.
pub fn dir(root: &Path) -> PathBuf {
    root.join(IDENTITY_DIR)
}

/// The stored identity, if the agent enrolled; an install a crash cut short is read
/// as finished (without writing: [`ensure`] and [`renew`] finish it on disk).
pub fn load(root: &Path) -> anyhow::Result<Option<Stored>> {
    let dir = dir(root);
    match interrupted_install(&dir) {
        Interrupted::None => load_from(&dir, KEY_FILE, CERT_FILE),
        Interrupted::CertOnly => load_from(&dir, KEY_FILE, NEW_CERT_FILE),
        Interrupted::Both => load_from(&dir, NEW_KEY_FILE, NEW_CERT_FILE),
    }
}

pub(super) fn load_from(dir: &Path, key: &str, cert: &str) -> anyhow::Result<Option<Stored>> {
    let key_path = dir.join(key);
    let cert_path = dir.join(cert);
    if !cert_path.exists() || !key_path.exists() {
        return Ok(None);
    }
    let key_pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;
    let cert_pem = std::fs::read_to_string(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    let (not_before, not_after) =
        validity(&cert_pem).with_context(|| format!("reading {}", cert_path.display()))?;
    Ok(Some(Stored {
        key_pem,
        cert_pem,
        not_before,
        not_after,
    }))
}

/// The validity of a PEM certificate (unix seconds).
fn validity(cert_pem: &str) -> anyhow::Result<(u64, u64)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| anyhow!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow!("not an X.509 certificate: {e}"))?;
    let seconds = |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
    Ok((
        seconds(cert.validity().not_before),
        seconds(cert.validity().not_after),
    ))
}

/// What `reqwest::ClientBuilder::identity` takes: the key and certificate.
pub fn client_identity(stored: &Stored) -> anyhow::Result<reqwest::Identity> {
    let pem = format!("{}\n{}", stored.key_pem, stored.cert_pem);
    reqwest::Identity::from_pem(pem.as_bytes()).context("using the agent's key and certificate")
}

/// Installs `key.new.pem` and `cert.new.pem` (both whole): the key renamed first, the
/// certificate second, the folder fsynced (see the module's crash safety).
pub(super) fn install_new(dir: &Path) -> anyhow::Result<()> {
    std::fs::rename(dir.join(NEW_KEY_FILE), dir.join(KEY_FILE))
        .with_context(|| format!("installing the new key in {}", dir.display()))?;
    std::fs::rename(dir.join(NEW_CERT_FILE), dir.join(CERT_FILE))
        .with_context(|| format!("installing the new certificate in {}", dir.display()))?;
    sync_dir(dir)
}

/// Finishes an install a crash cut short: the certificate of a key already renamed
/// into place (`cert.new.pem` without `key.new.pem`), or, at a first enrollment, both
/// new files when no pair is installed.
pub(super) fn finish_install(dir: &Path) -> anyhow::Result<()> {
    match interrupted_install(dir) {
        Interrupted::None => Ok(()),
        Interrupted::CertOnly => {
            std::fs::rename(dir.join(NEW_CERT_FILE), dir.join(CERT_FILE)).with_context(|| {
                format!("finishing the certificate's install in {}", dir.display())
            })?;
            sync_dir(dir)
        }
        Interrupted::Both => install_new(dir),
    }
}

/// What a cut left between the writes of a new identity and its install.
enum Interrupted {
    /// Nothing to finish.
    None,
    /// The key is installed, its certificate is still `cert.new.pem`.
    CertOnly,
    /// No pair is installed; a whole new one waits (a first enrollment).
    Both,
}

fn interrupted_install(dir: &Path) -> Interrupted {
    let has = |name: &str| dir.join(name).exists();
    match (has(NEW_KEY_FILE), has(NEW_CERT_FILE)) {
        (false, true) => Interrupted::CertOnly,
        (true, true) if !has(KEY_FILE) && !has(CERT_FILE) => Interrupted::Both,
        _ => Interrupted::None,
    }
}

/// Makes the entries of `dir` durable.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

pub(super) fn write_public(path: &Path, text: &str) -> anyhow::Result<()> {
    bank_layout::write_atomic(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    /// A key and a self-signed certificate of it, PEM.
    fn pair() -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::default()
            .self_signed(&key)
            .expect("certificate");
        (key.serialize_pem(), cert.pem())
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("test step");
    }

    #[test]
    fn an_install_cut_between_its_renames_is_read_and_finished_as_whole() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = dir(root.path());
        std::fs::create_dir_all(&dir).expect("test step");
        let (old_key, old_cert) = pair();
        let (new_key, new_cert) = pair();
        write(&dir, KEY_FILE, &old_key);
        write(&dir, CERT_FILE, &old_cert);
        // Renewed, not yet installed: the old pair is the identity.
        write(&dir, NEW_KEY_FILE, &new_key);
        write(&dir, NEW_CERT_FILE, &new_cert);
        let stored = load(root.path()).expect("load").expect("identity");
        assert_eq!((stored.key_pem, stored.cert_pem), (old_key, old_cert));
        // Cut after the key's rename: the new key goes with the new certificate.
        std::fs::rename(dir.join(NEW_KEY_FILE), dir.join(KEY_FILE)).expect("test step");
        let stored = load(root.path()).expect("load").expect("identity");
        assert_eq!(
            (&stored.key_pem, &stored.cert_pem),
            (&new_key, &new_cert),
            "a new key is never paired with the old certificate"
        );
        finish_install(&dir).expect("finish");
        assert!(!dir.join(NEW_CERT_FILE).exists());
        assert_eq!(
            std::fs::read_to_string(dir.join(CERT_FILE)).expect("cert"),
            new_cert
        );
    }

    #[test]
    fn a_first_enrollment_cut_before_its_install_keeps_the_issued_pair() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = dir(root.path());
        std::fs::create_dir_all(&dir).expect("test step");
        let (key, cert) = pair();
        write(&dir, NEW_KEY_FILE, &key);
        write(&dir, NEW_CERT_FILE, &cert);
        let stored = load(root.path()).expect("load").expect("identity");
        assert_eq!(stored.cert_pem, cert);
        finish_install(&dir).expect("finish");
        assert_eq!(
            std::fs::read_to_string(dir.join(KEY_FILE)).expect("key"),
            key
        );
        assert!(!dir.join(NEW_KEY_FILE).exists() && !dir.join(NEW_CERT_FILE).exists());
    }
}
