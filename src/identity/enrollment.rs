//! Enrollment: a new key (0600, never logged) and a CSR, sent with a one-time
//! token to `POST /v1/enroll`, and the issued certificate stored; [`ensure`]
//! enrolls when the agent has no identity (or an expired one) and a token.

use std::path::Path;

use anyhow::{Context, anyhow};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use crate::clock;
use crate::console::{EnrollRequest, Issued};
use crate::identity::requests::post_json;
use crate::identity::store::{
    CA_FILE, CERT_FILE, NEW_CERT_FILE, NEW_KEY_FILE, Stored, dir, finish_install, install_new,
    load, write_public,
};
use crate::private_ca::write_secret;

/// The largest token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 4 * 1024;

/// A key pair and a CSR naming `agent_id`.
pub(super) fn key_and_csr(agent_id: &str) -> anyhow::Result<(KeyPair, String)> {
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
pub(super) fn read_token(path: &Path) -> anyhow::Result<String> {
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
    // (write_secret makes the folder, durably, at a first enrollment)
    write_secret(&dir.join(NEW_KEY_FILE), key.serialize_pem().as_bytes())?;
    write_public(&dir.join(CA_FILE), &issued.ca)?;
    write_public(&dir.join(NEW_CERT_FILE), &issued.certificate)?;
    install_new(&dir)?;
    load(root)?.ok_or_else(|| anyhow!("the identity just stored is missing"))
}

/// The host name, for `console agents` (best effort).
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_string()).filter(|n| !n.is_empty())
}
