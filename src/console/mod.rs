//! The console (SPEC §4 "The console adds"): serves a data folder written by
//! `bankswap publish --to` over HTTPS, accepts releases uploaded by
//! `bankswap publish --console`, holds agents' requests until a release is
//! published (push), records their reports in SQLite, and shows the fleet.
//!
//! - `server.rs`: accept loop, TLS handshakes, HTTP/1.1, graceful shutdown.
//! - `tls.rs`: certificate and key from PEM files (rustls, ring).
//! - `routes.rs`: the router and the channel endpoints (ETag, 304, `?wait=`, history).
//! - `admin.rs`: uploads: the admin token, trusted keys, JSON errors, the history listing;
//!   `upload.rs` (artifacts, streamed and hashed) and `accept.rs` (releases, re-verified).
//! - `push.rs`: the one task that watches manifests and wakes held requests.
//! - `artifacts.rs`: archives streamed from disk, with Range.
//! - `reports.rs`, `store.rs`: agent reports into `DATA/fleet.sqlite`.
//! - `page.rs`: the HTML page at `/`; `fleet.rs`: `bankswap console fleet`.
//! - `identity.rs`: agent enrollment, renewal and the client-certificate checks (SPEC §10);
//!   `registry.rs`: enrollment tokens, agents and admin tokens in the database.
//! - `auth.rs`: admin tokens, the login form, sessions, CSRF, failed-login limits.
//! - `manage.rs`: `console token|agents|admin-token` on a data folder.
//! - `rollout.rs`: rollouts in waves, the pure part (plan, report reading, admission hash,
//!   the gate); `rollout_engine/`: who gets which manifest, the gate task, persistence;
//!   `rollout_http.rs`: `/v1/rollouts` and the plan/rollback uploads; `rollout_view.rs`: its JSON; `rollout_cli.rs`:
//!   `console rollout status|pause|resume|abort`.
//!
//! **Architecture Invariant:** the console never holds a signing key. It
//! changes a channel only by writing a release signed elsewhere, after
//! checking it with the agents' own rules against its `--trust` keys; it
//! serves what `publish` signed, byte for byte.

mod accept;
mod admin;
pub(crate) mod admin_client;
mod artifacts;
mod auth;
mod fleet;
mod identity;
mod manage;
mod page;
mod push;
mod registry;
mod reports;
mod rollout;
mod rollout_cli;
mod rollout_engine;
mod rollout_http;
mod rollout_view;
mod routes;
mod server;
mod store;
mod tls;
mod upload;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};

pub use accept::{Published, ReleaseUpload};
pub use admin::{ErrorBody, History, HistoryEntry, read_token_file};
pub use identity::{EnrollRequest, Issued, RenewRequest, WhoAmI};
pub use manage::manage;
pub use rollout::{PLAN_FILE, Plan, ROLLBACK_FILE, parse_ratio, parse_waves};

use crate::cli::{FleetArgs, ServeArgs};
use crate::error::UsageError;
use crate::private_ca::AgentCa;

/// After the server returns, background work (file reads, the watcher) gets
/// this long to finish before the process exits anyway.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

/// The shortest `--cert-lifetime`: an agent renews after two thirds of it,
/// and must get there between two checks.
const MIN_CERT_LIFETIME: Duration = Duration::from_secs(60);

/// `bankswap console serve`: runs until SIGTERM or SIGINT, then exits 0.
pub fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let cert_lifetime = humantime::parse_duration(&args.cert_lifetime)
        .map_err(|e| UsageError::new(format!("--cert-lifetime {}: {e}", args.cert_lifetime)))?;
    if cert_lifetime < MIN_CERT_LIFETIME {
        return Err(UsageError::new(format!(
            "--cert-lifetime {}: shorter than {MIN_CERT_LIFETIME:?}",
            args.cert_lifetime
        ))
        .into());
    }
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating the console data folder {}", args.data.display()))?;
    let ca = AgentCa::load_or_create(&args.data)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key, &ca.cert_pem)?),
        (None, None) if args.insecure_http => None,
        _ => {
            return Err(UsageError::new(
                "console serve needs --tls-cert and --tls-key: agents only trust HTTPS \
                 (pass --insecure-http to serve plain HTTP, for local tests only)",
            )
            .into());
        }
    };
    if tls.is_none() {
        warn!("serving plain HTTP (--insecure-http): for local tests only");
    }
    let stale_after = match &args.stale_after {
        Some(text) => {
            crate::config::parse_duration("--stale-after", text).map_err(UsageError::new)?
        }
        None => page::DEFAULT_STALE_AFTER,
    };
    let max_wait = match &args.max_wait {
        Some(text) => crate::config::parse_duration("--max-wait", text).map_err(UsageError::new)?,
        None => push::DEFAULT_MAX_WAIT,
    };
    let admin = if args.trust.is_empty() {
        None
    } else {
        Some(Arc::new(admin::Admin::load(&args.trust)?))
    };
    if let Some(admin) = &admin {
        info!(trusted_keys = admin.trusted_keys.len(), "uploads enabled");
    }
    let file_token = match &args.admin_token_file {
        Some(file) => Some(read_token_file(file, "--admin-token-file")?),
        None => None,
    };
    let db = args.data.join(store::FLEET_DB);
    let auth = Arc::new(auth::AdminAuth::new(
        file_token.as_deref(),
        registry::open(&db)?,
    ));
    let identity = Arc::new(identity::Identity::new(
        registry::open(&db)?,
        ca,
        cert_lifetime,
        args.require_client_cert,
        args.allow_anonymous_reports,
    ));
    raise_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let config = server::ServerConfig {
        listen: args.listen.clone(),
        data: args.data.clone(),
        tls,
        admin,
        max_wait,
        auth,
        identity,
        stale_after,
    };
    let result = runtime.block_on(server::run(config, shutdown_signal()));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
}

/// `bankswap console fleet`: prints the latest report of every agent.
pub fn fleet(args: &FleetArgs) -> anyhow::Result<()> {
    fleet::run(args)
}

/// Completes on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
                _ = int.recv() => info!(signal = "SIGINT", "shutting down"),
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the console");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every held agent is
/// one open socket, and the usual soft limit (1024) is far below a fleet.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let wanted = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0
    };
    if raised {
        info!(open_files = limit.rlim_max, "raised the open-file limit");
    }
}
