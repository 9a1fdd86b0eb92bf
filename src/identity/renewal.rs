//! Renewal: a new key and CSR over mTLS to `POST /v1/renew`; the new pair
//! replaces the old one only once `GET /v1/identity` accepted it.

use std::path::Path;

use anyhow::{Context, anyhow};

use crate::console::{Issued, RenewRequest, WhoAmI};
use crate::identity::enrollment::key_and_csr;
use crate::identity::requests::{get_json, post_json};
use crate::identity::store::{
    NEW_CERT_FILE, NEW_KEY_FILE, Stored, client_identity, dir, finish_install, install_new,
    load_from, write_public,
};
use crate::private_ca::write_secret;

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
