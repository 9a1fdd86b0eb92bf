//! `bankswap status`: what runs where, in text or as one JSON object (SPEC §6).

use anyhow::Context;
use bank_layout::{Phase, Root, State};
use serde::{Deserialize, Serialize};

use crate::agent::control::{self, Request};
use crate::agent_id;
use crate::cli::RootArgs;
use crate::clock;
use crate::setup;

/// The `status --json` object. Field names are a public interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// This machine's stable identity (null before `init`).
    pub agent_id: Option<String>,
    /// The data root.
    pub root: String,
    /// `"Bank1"` or `"Bank2"`.
    pub active_bank: String,
    /// The version in the active bank (null on an empty root).
    pub active_version: Option<String>,
    /// The version kept in the other bank for rollback.
    pub previous_version: Option<String>,
    /// `"committed"` or `"trial"`.
    pub phase: String,
    /// The highest release sequence this root has accepted.
    pub sequence: u64,
    /// A release being staged or scheduled.
    pub pending: Option<PendingReport>,
    /// When the console was last asked (RFC 3339).
    pub last_check: Option<String>,
    /// The last error, kept until a later success.
    pub last_error: Option<String>,
    /// Versions this agent refuses until a higher sequence re-publishes them.
    pub bad_versions: Vec<BadReport>,
}

/// A pending release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingReport {
    /// Its version.
    pub version: String,
    /// Its sequence.
    pub sequence: u64,
    /// When the swap may start (RFC 3339).
    pub not_before: String,
}

/// A version marked bad.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadReport {
    /// The version.
    pub version: String,
    /// Bad at or below this sequence.
    pub sequence: u64,
    /// Why.
    pub reason: String,
}

impl StatusReport {
    /// Builds the report from a root's state.
    pub fn new(root: &str, agent_id: Option<String>, state: &State) -> StatusReport {
        StatusReport {
            agent_id,
            root: root.to_string(),
            active_bank: state.active.to_string(),
            active_version: state.version_of(state.active).map(str::to_string),
            previous_version: state.version_of(state.active.other()).map(str::to_string),
            phase: match state.phase {
                Phase::Committed => "committed",
                Phase::Trial => "trial",
            }
            .to_string(),
            sequence: state.highest_sequence,
            pending: state.pending.as_ref().map(|p| PendingReport {
                version: p.version.clone(),
                sequence: p.sequence,
                not_before: clock::rfc3339(clock::from_unix(p.not_before)),
            }),
            last_check: state
                .last_check
                .map(|t| clock::rfc3339(clock::from_unix(t))),
            last_error: state.last_error.clone(),
            bad_versions: state
                .bad_versions
                .iter()
                .map(|b| BadReport {
                    version: b.version.clone(),
                    sequence: b.sequence,
                    reason: b.reason.clone(),
                })
                .collect(),
        }
    }

    /// Human-readable lines.
    pub fn print_text(&self) {
        let none = "none";
        println!("root:       {}", self.root);
        println!("agent-id:   {}", self.agent_id.as_deref().unwrap_or(none));
        println!(
            "running:    {} in {} ({})",
            self.active_version.as_deref().unwrap_or(none),
            self.active_bank,
            self.phase
        );
        println!(
            "previous:   {}",
            self.previous_version.as_deref().unwrap_or(none)
        );
        println!("sequence:   {}", self.sequence);
        if let Some(p) = &self.pending {
            println!(
                "pending:    {} (sequence {}) not before {}",
                p.version, p.sequence, p.not_before
            );
        }
        if let Some(t) = &self.last_check {
            println!("last check: {t}");
        }
        if let Some(e) = &self.last_error {
            println!("last error: {e}");
        }
        for b in &self.bad_versions {
            println!(
                "bad:        {} (sequence <= {}): {}",
                b.version, b.sequence, b.reason
            );
        }
    }
}

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
    let report = StatusReport::new(&root.display().to_string(), id, &state);
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
