//! The client side of the commands that talk to a console (`console fleet
//! --console`, `console rollout`, `console channel`, `publish --console`,
//! `simulate`, `console enroll`/`renew`): the `--console` URL check, an HTTPS
//! client trusting the system roots plus `--ca-cert`, and the runtime it runs on.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::error::UsageError;

/// `--console URL` must be an https:// (or, for a test console, http://) URL.
pub(crate) fn check_console_url(url: &str) -> Result<(), UsageError> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(UsageError::new(format!(
            "--console `{url}` must be an https:// (or http://) URL"
        )));
    }
    Ok(())
}

/// An HTTPS client trusting the system roots plus every certificate of the PEM
/// file `ca_cert`; a request that takes longer than `timeout` fails.
pub(super) fn https_client(
    ca_cert: Option<&Path>,
    timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    https_client_builder(ca_cert)?
        .timeout(timeout)
        .build()
        .context("setting up the HTTPS client")
}

/// A client builder with rustls, the system roots and every certificate of the
/// PEM file `ca_cert` (a `--ca-cert` that cannot be read or parsed is a usage error).
pub(crate) fn https_client_builder(
    ca_cert: Option<&Path>,
) -> Result<reqwest::ClientBuilder, UsageError> {
    let mut client = reqwest::Client::builder().use_rustls_tls();
    if let Some(path) = ca_cert {
        let unusable = |e: &dyn std::fmt::Display| {
            UsageError::new(format!("--ca-cert {}: {e}", path.display()))
        };
        let pem = std::fs::read(path).map_err(|e| unusable(&e))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| unusable(&e))? {
            client = client.add_root_certificate(cert);
        }
    }
    Ok(client)
}

/// The runtime a command's few requests run on (one thread: it only waits).
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
