//! `bankswap console enroll` and `bankswap console renew` (hidden): the
//! enrollment and renewal of the agent of `--root`, by hand.

use std::path::Path;

use anyhow::{Context, anyhow};

use crate::cli::{EnrollArgs, RenewArgs};
use crate::clock;
use crate::console::admin_client::runtime;
use crate::identity::enrollment::{enroll, read_token};
use crate::identity::renewal::renew;
use crate::identity::store::{dir, load};

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
