//! The agent's identity (SPEC §10): its own key pair and the client
//! certificate the console's agent CA signed, in `ROOT/identity/`.
//!
//! - [`enroll`]: make a key (0600, never logged) and a CSR, send them with a
//!   one-time token to `POST /v1/enroll`, store the certificate.
//! - [`renewal_due`]: the pure rule: renew once two thirds of the lifetime passed.
//! - [`renew`]: a new key and CSR over mTLS to `POST /v1/renew`; the new
//!   certificate replaces the old one only after it was accepted by
//!   `GET /v1/identity` (the old one stays until then).
//! - [`client_identity`]: what `reqwest::ClientBuilder::identity` takes.
//!
//! **Crash safety** (SPEC §13): a new key and certificate (enrolled or renewed) are
//! each written whole (`write_secret`, `write_atomic`) as `key.new.pem` and
//! `cert.new.pem`, then installed by two renames — key first — and an fsync of the
//! folder. A cut between the renames leaves `key.pem` new and `cert.new.pem` the
//! matching certificate: [`load`] pairs them, and the next [`ensure`] or [`renew`]
//! finishes the install. A cut before the renames leaves the old pair (or, at a first
//! enrollment, only the new files, which are then the identity).
//!
//! - [`standing`]: the certificate's expiry as `status` and `doctor` show it,
//!   with what to do when it expired and the agent cannot fix it itself.
//!
//! **Wiring into `bankswap run`** (`agent/mod.rs`): at start-up, after the
//! agent id is known, [`ensure`] with the config's `enrollment_token_file`;
//! the agent's one HTTPS client (`agent/clients.rs`) presents
//! [`client_identity`]; when [`Stored::is_renewal_due`] holds, [`renew`], and
//! the client is rebuilt for every user (checker, reporter, staging, probes).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use serde::de::DeserializeOwned;

use crate::cli::{EnrollArgs, RenewArgs};
use crate::clock;
use crate::console::{EnrollRequest, Issued, RenewRequest, WhoAmI};
use crate::private_ca::write_secret;
use crate::report::CertificateReport;

/// The folder inside the root.
pub const IDENTITY_DIR: &str = "identity";

/// The private key (PKCS#8 PEM, mode 0600).
const KEY_FILE: &str = "key.pem";

/// The client certificate (PEM).
const CERT_FILE: &str = "cert.pem";

/// The agent CA certificate, as the console sent it (for mTLS static hosts).
const CA_FILE: &str = "agent-ca.pem";

/// A renewed key and certificate wait here until the console accepted them.
const NEW_KEY_FILE: &str = "key.new.pem";

/// The renewed certificate, until accepted.
const NEW_CERT_FILE: &str = "cert.new.pem";

/// The largest answer read from the console's identity endpoints.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The largest token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 4 * 1024;

/// How long one enrollment or renewal request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Renew once two thirds of the lifetime `[not_before, not_after]` passed:
/// a third of the lifetime is left to retry in (ten days of a 30-day
/// certificate), and an agent off for less than that never lapses.
pub fn renewal_due(not_before: u64, not_after: u64, now: u64) -> bool {
    let lifetime = not_after.saturating_sub(not_before);
    now >= not_before.saturating_add(lifetime / 3 * 2 + (lifetime % 3) * 2 / 3)
}

/// The certificate at `now`, for `status` and `doctor`. `token_file` is the
/// config's `enrollment_token_file`, when known: it decides the fix for an
/// expired certificate (SPEC §10: re-enroll only with a valid token).
pub fn standing(stored: &Stored, now: SystemTime, token_file: Option<&Path>) -> CertificateReport {
    let not_after = clock::rfc3339(clock::from_unix(stored.not_after));
    let (state, hint) = if stored.is_expired(now) {
        let hint = match token_file {
            Some(file) => format!(
                "the agent was off past its renewal: restart the agent \
                 (systemctl restart bankswap) to enroll again with the token in {}; if the console \
                 refuses that token (used or expired), make a new one on the console \
                 (`bankswap console token create`) and write it into that file first",
                file.display()
            ),
            None => "the agent was off past its renewal and cannot renew an expired \
                     certificate; it enrolls again only with a valid enrollment token: on the \
                     console run `bankswap console token create`, write the token into the file \
                     enrollment_token_file names in the agent config (set it if missing), and \
                     restart the agent (systemctl restart bankswap)"
                .to_string(),
        };
        ("expired", Some(hint))
    } else if stored.is_renewal_due(now) {
        ("renewal due", None)
    } else {
        ("valid", None)
    };
    CertificateReport {
        not_after,
        state: state.to_string(),
        hint,
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

fn load_from(dir: &Path, key: &str, cert: &str) -> anyhow::Result<Option<Stored>> {
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

/// A key pair and a CSR naming `agent_id`.
fn key_and_csr(agent_id: &str) -> anyhow::Result<(KeyPair, String)> {
    let key = KeyPair::generate().context("generating the agent key")?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, agent_id);
    params.distinguished_name = name;
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .context("making the certificate signing request")?;
    Ok((key, csr))
}

/// Enrolls if the agent has no identity and `token_file` is set; the stored
/// identity either way (`None`: no identity, no token).
pub async fn ensure(
    client: &reqwest::Client,
    console: &str,
    root: &Path,
    agent_id: &str,
    token_file: Option<&Path>,
) -> anyhow::Result<Option<Stored>> {
    finish_install(&dir(root))?;
    if let Some(stored) = load(root)? {
        let now = clock::now_seconds();
        if !stored.is_expired(now) {
            return Ok(Some(stored));
        }
        let Some(token_file) = token_file else {
            return Err(anyhow!(
                "the agent certificate {} expired at {}; make a new enrollment token \
                 (`bankswap console token create`) and set enrollment_token_file",
                dir(root).join(CERT_FILE).display(),
                clock::rfc3339(clock::from_unix(stored.not_after))
            ));
        };
        return enroll(client, console, root, agent_id, &read_token(token_file)?)
            .await
            .map(Some);
    }
    match token_file {
        Some(file) => enroll(client, console, root, agent_id, &read_token(file)?)
            .await
            .map(Some),
        None => Ok(None),
    }
}

/// Reads an enrollment token file (its first line).
fn read_token(path: &Path) -> anyhow::Result<String> {
    let bytes = crate::channel::read_capped(path, MAX_TOKEN_FILE_BYTES)
        .with_context(|| format!("reading the enrollment token {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(anyhow!(
            "the enrollment token file {} is empty",
            path.display()
        ));
    }
    Ok(token)
}

/// Makes a key and a CSR, enrolls with `token`, stores key and certificate.
pub async fn enroll(
    client: &reqwest::Client,
    console: &str,
    root: &Path,
    agent_id: &str,
    token: &str,
) -> anyhow::Result<Stored> {
    let (key, csr) = key_and_csr(agent_id)?;
    let request = EnrollRequest {
        token: token.to_string(),
        agent_id: agent_id.to_string(),
        csr,
        hostname: hostname(),
    };
    let url = format!("{}/v1/enroll", console.trim_end_matches('/'));
    let issued: Issued = post_json(client, &url, &request)
        .await
        .with_context(|| format!("enrolling with {url}"))?;
    let dir = dir(root);
    // (write_secret makes the folder at a first enrollment)
    write_secret(&dir.join(NEW_KEY_FILE), key.serialize_pem().as_bytes())?;
    write_public(&dir.join(CA_FILE), &issued.ca)?;
    write_public(&dir.join(NEW_CERT_FILE), &issued.certificate)?;
    install_new(&dir)?;
    load(root)?.ok_or_else(|| anyhow!("the identity just stored is missing"))
}

/// Renews over mTLS with `current`; the new key and certificate replace the
/// old ones only once the console accepted them. `builder` makes the
/// client (trust roots, proxy, timeouts) the identity is added to.
pub async fn renew(
    builder: impl Fn() -> reqwest::ClientBuilder,
    console: &str,
    root: &Path,
    current: &Stored,
) -> anyhow::Result<Stored> {
    let console = console.trim_end_matches('/');
    finish_install(&dir(root))?;
    let agent_id =
        crate::agent_id::read(root)?.ok_or_else(|| anyhow!("no agent id in {}", root.display()))?;
    let client = builder()
        .identity(client_identity(current)?)
        .build()
        .context("setting up the HTTPS client")?;
    let (key, csr) = key_and_csr(&agent_id)?;
    let url = format!("{console}/v1/renew");
    let issued: Issued = post_json(&client, &url, &RenewRequest { csr })
        .await
        .with_context(|| format!("renewing with {url}"))?;
    let dir = dir(root);
    write_secret(&dir.join(NEW_KEY_FILE), key.serialize_pem().as_bytes())?;
    write_public(&dir.join(NEW_CERT_FILE), &issued.certificate)?;
    let fresh = load_from(&dir, NEW_KEY_FILE, NEW_CERT_FILE)?
        .ok_or_else(|| anyhow!("the renewed certificate just stored is missing"))?;
    // Keep the old certificate until the new one works.
    let check = builder()
        .identity(client_identity(&fresh)?)
        .build()
        .context("setting up the HTTPS client")?;
    let url = format!("{console}/v1/identity");
    let _: WhoAmI = get_json(&check, &url)
        .await
        .with_context(|| format!("checking the renewed certificate with {url}"))?;
    install_new(&dir)?;
    Ok(fresh)
}

/// Installs `key.new.pem` and `cert.new.pem` (both whole): the key renamed first, the
/// certificate second, the folder fsynced (see the module's crash safety).
fn install_new(dir: &Path) -> anyhow::Result<()> {
    std::fs::rename(dir.join(NEW_KEY_FILE), dir.join(KEY_FILE))
        .with_context(|| format!("installing the new key in {}", dir.display()))?;
    std::fs::rename(dir.join(NEW_CERT_FILE), dir.join(CERT_FILE))
        .with_context(|| format!("installing the new certificate in {}", dir.display()))?;
    sync_dir(dir)
}

/// Finishes an install a crash cut short: the certificate of a key already renamed
/// into place (`cert.new.pem` without `key.new.pem`), or, at a first enrollment, both
/// new files when no pair is installed.
fn finish_install(dir: &Path) -> anyhow::Result<()> {
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

/// The host name, for `console agents` (best effort).
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_string()).filter(|n| !n.is_empty())
}

fn write_public(path: &Path, text: &str) -> anyhow::Result<()> {
    bank_layout::write_atomic(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

async fn post_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    body: &impl serde::Serialize,
) -> anyhow::Result<T> {
    let response = client
        .post(url)
        .timeout(REQUEST_TIMEOUT)
        .json(body)
        .send()
        .await?;
    answer(response).await
}

async fn get_json<T: DeserializeOwned>(client: &reqwest::Client, url: &str) -> anyhow::Result<T> {
    let response = client.get(url).timeout(REQUEST_TIMEOUT).send().await?;
    answer(response).await
}

/// The JSON of a 2xx answer; otherwise the console's `{"error"}` reason.
async fn answer<T: DeserializeOwned>(mut response: reqwest::Response) -> anyhow::Result<T> {
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(anyhow!(
                "the answer is larger than {MAX_ANSWER_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let reason = serde_json::from_slice::<crate::console::ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
        return Err(anyhow!("{status}: {reason}"));
    }
    serde_json::from_slice(&body).context("reading the console's answer")
}

/// The certificates of `--ca-cert` (none without it).
fn ca_roots(ca_cert: Option<&Path>) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let Some(path) = ca_cert else {
        return Ok(Vec::new());
    };
    let pem = std::fs::read(path).with_context(|| format!("--ca-cert {}", path.display()))?;
    reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("--ca-cert {}", path.display()))
}

/// A client builder trusting the system roots plus `roots`.
fn builder_with(roots: &[reqwest::Certificate]) -> reqwest::ClientBuilder {
    roots
        .iter()
        .fold(reqwest::Client::builder().use_rustls_tls(), |b, cert| {
            b.add_root_certificate(cert.clone())
        })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `bankswap console enroll` (hidden): enrolls the agent of `--root`.
pub fn enroll_command(args: &EnrollArgs) -> anyhow::Result<()> {
    let agent_id = crate::agent_id::ensure(&args.root)
        .with_context(|| format!("reading the agent id in {}", args.root.display()))?;
    let token = read_token(&args.token_file)?;
    let client = builder_with(&ca_roots(args.ca_cert.as_deref())?)
        .build()
        .context("setting up the HTTPS client")?;
    let stored = runtime()?.block_on(enroll(
        &client,
        &args.console,
        &args.root,
        &agent_id,
        &token,
    ))?;
    println!(
        "enrolled {agent_id}; certificate expires {}",
        clock::rfc3339(clock::from_unix(stored.not_after))
    );
    Ok(())
}

/// `bankswap console renew` (hidden): renews if due (or `--force`).
pub fn renew_command(args: &RenewArgs) -> anyhow::Result<()> {
    let Some(current) = load(&args.root)? else {
        return Err(anyhow!(
            "{} holds no identity: enroll first",
            dir(&args.root).display()
        ));
    };
    if !args.force && !current.is_renewal_due(clock::now_seconds()) {
        println!(
            "not due: certificate expires {}",
            clock::rfc3339(clock::from_unix(current.not_after))
        );
        return Ok(());
    }
    let roots = ca_roots(args.ca_cert.as_deref())?;
    let builder = || builder_with(&roots);
    let fresh = runtime()?.block_on(renew(builder, &args.console, &args.root, &current))?;
    println!(
        "renewed; certificate expires {}",
        clock::rfc3339(clock::from_unix(fresh.not_after))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn renewal_is_due_after_two_thirds_of_the_lifetime() {
        assert!(!renewal_due(1000, 1300, 1000));
        assert!(!renewal_due(1000, 1300, 1199));
        assert!(renewal_due(1000, 1300, 1200));
        assert!(renewal_due(1000, 1300, 5000));
        // 30 days: due after 20.
        let day = 86_400;
        assert!(!renewal_due(0, 30 * day, 20 * day - 1));
        assert!(renewal_due(0, 30 * day, 20 * day));
        // A degenerate certificate is always due.
        assert!(renewal_due(1000, 1000, 1000));
    }
}
