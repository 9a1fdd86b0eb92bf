//! `bankswap status`: what runs where, in text or as one JSON object (SPEC §6).

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, anyhow};
use bank_layout::Root;

use crate::agent_id;
use crate::cli::RootArgs;
use crate::control::{self, Request};
use crate::report::StatusReport;
use crate::setup;

/// Runs `status`.
pub fn run(args: &RootArgs, json: bool) -> anyhow::Result<()> {
    let root = setup::root_only(args)?;
    if let Some(response) = control::request(&root, Request::Status)? {
        let report = response
            .status
            .ok_or_else(|| anyhow::anyhow!("agent on {}: {}", root.display(), response.message))?;
        return print(&with_certificate(report, &root), json);
    }
    require_initialised(&root)?;
    // Read-only: no lock, no write; without state.json the view comes from the records.
    let state = Root::inspect(&root)
        .with_context(|| format!("root {}", root.display()))?
        .state;
    let id = agent_id::read(&root).with_context(|| format!("root {}: agent id", root.display()))?;
    let mut report = StatusReport::new(&root.display().to_string(), id, &state);
    report.clock_warning = crate::release::clock_warning(&state, SystemTime::now());
    crate::agent::self_update::fill_offline_status(&mut report, &root);
    report.last_staging = crate::agent::delta_fetch::last_staging(&root);
    print(&with_certificate(report, &root), json)
}

/// The agent certificate's expiry (SPEC §10), read from the root: the same
/// for a running agent and a stopped one, which is when it matters most.
fn with_certificate(mut report: StatusReport, root: &Path) -> StatusReport {
    match crate::identity::load(root) {
        Ok(Some(stored)) => {
            report.certificate = Some(crate::identity::standing(&stored, SystemTime::now(), None));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot read the agent certificate"),
    }
    report
}

/// Fails with a hint when `root` does not exist (SPEC §12: a machine never set
/// up or a `--root` typo is named, not "entity not found"). An existing empty
/// folder (what the package ships as `/var/lib/bankswap`) is an empty root.
/// Used by every command that reads a root without creating it.
pub fn require_initialised(root: &Path) -> anyhow::Result<()> {
    if root.is_dir() {
        return Ok(());
    }
    Err(anyhow!(
        "no bankswap root at {}: run 'bankswap init --root {}' (or 'bankswap apply') first, or check --root",
        root.display(),
        root.display()
    ))
}

fn print(report: &StatusReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        report.print_text();
    }
    Ok(())
}
