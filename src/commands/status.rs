//! `bankswap status`: what runs where, in text or as one JSON object (SPEC §6).

use anyhow::Context;
use bank_layout::Root;
use std::time::SystemTime;

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
        return print(&report, json);
    }
    // Read-only: no lock, no write; without state.json the view comes from the records.
    let state = Root::inspect(&root)
        .with_context(|| format!("root {}", root.display()))?
        .state;
    let id = agent_id::read(&root).with_context(|| format!("root {}: agent id", root.display()))?;
    let mut report = StatusReport::new(&root.display().to_string(), id, &state);
    report.clock_warning = crate::release::clock_warning(&state, SystemTime::now());
    crate::agent::self_update::fill_offline_status(&mut report, &root);
    print(&report, json)
}

fn print(report: &StatusReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        report.print_text();
    }
    Ok(())
}
