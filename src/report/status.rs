//! The `status --json` object ([`StatusReport`]): its fields (a public
//! interface), how it is built from a root's state, and its text form.

use bank_layout::{Phase, State};
use serde::{Deserialize, Serialize};

use super::{
    BadReport, CertificateReport, LastStaging, PendingReport, ReloadReport, RestartsReport,
};
use crate::clock;

/// The `status --json` object. Field names are a public interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// This machine's stable identity (null before `init`).
    pub agent_id: Option<String>,
    /// The data root.
    pub root: String,
    /// The channel it follows (null where the status is read without the
    /// agent's config, e.g. from `state.json` alone).
    #[serde(default)]
    pub channel: Option<String>,
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
    /// What kind of work failed last (`check`, `release`, `staging`, `trial`,
    /// `payload`, `admin`), next to `last_error`.
    #[serde(default)]
    pub last_error_kind: Option<String>,
    /// Versions this agent refuses until a higher sequence re-publishes them.
    pub bad_versions: Vec<BadReport>,
    /// The payload's current streak of failures (null while it runs well).
    #[serde(default)]
    pub restarts: Option<RestartsReport>,
    /// Set when the clock is far behind the latest trustworthy time this root
    /// has seen (expiry is then checked against that time, not the clock).
    #[serde(default)]
    pub clock_warning: Option<String>,
    /// Set while a release is staged in place (the file system had room only
    /// for that, and `[update] allow_in_place` is true): the rollback target is
    /// given up first.
    #[serde(default)]
    pub space_notice: Option<String>,
    /// The agent's client certificate (SPEC §10), once it enrolled.
    #[serde(default)]
    pub certificate: Option<CertificateReport>,
    /// The last reload of the config (SIGHUP), while the agent runs.
    #[serde(default)]
    pub reload: Option<ReloadReport>,
    /// The release version of the agent build running (SPEC §9).
    #[serde(default)]
    pub agent_version: Option<String>,
    /// The agent build a rollback of the agent would run.
    #[serde(default)]
    pub agent_previous_version: Option<String>,
    /// `committed`, `staging`, `self-test`, `ready` (qualified, waiting to take
    /// over) or `trial`.
    #[serde(default)]
    pub agent_phase: Option<String>,
    /// The platform the agent runs on (`linux-x86_64`).
    #[serde(default)]
    pub agent_platform: Option<String>,
    /// An agent release being staged or scheduled.
    #[serde(default)]
    pub agent_pending: Option<PendingReport>,
    /// Agent versions refused until a higher sequence re-publishes them.
    #[serde(default)]
    pub agent_bad_versions: Vec<BadReport>,
    /// The last self-update error (another platform, a failed self-test, ...).
    #[serde(default)]
    pub agent_last_error: Option<String>,
    /// How the last release was staged (issue 14): by delta or in full, and
    /// the bytes that saved. Kept in the root, so it outlives a restart and
    /// an offline `apply` shows it too.
    #[serde(default)]
    pub last_staging: Option<LastStaging>,
}

impl StatusReport {
    /// Builds the report from a root's state.
    pub fn new(root: &str, agent_id: Option<String>, state: &State) -> StatusReport {
        StatusReport {
            agent_id,
            root: root.to_string(),
            channel: None,
            active_bank: state.active.to_string(),
            active_version: state.version_of(state.active).map(str::to_string),
            previous_version: state.version_of(state.active.other()).map(str::to_string),
            phase: match state.phase {
                Phase::Committed => "committed",
                Phase::Trial => "trial",
            }
            .to_string(),
            sequence: state.highest_sequence,
            pending: state.pending.as_ref().map(PendingReport::from),
            last_check: state
                .last_check
                .map(|t| clock::rfc3339(clock::from_unix(t))),
            last_error: state.last_error.clone(),
            last_error_kind: None,
            bad_versions: state.bad_versions.iter().map(BadReport::from).collect(),
            restarts: None,
            clock_warning: None,
            space_notice: None,
            certificate: None,
            reload: None,
            agent_version: None,
            agent_previous_version: None,
            agent_phase: None,
            agent_platform: None,
            agent_pending: None,
            agent_bad_versions: Vec::new(),
            agent_last_error: None,
            last_staging: None,
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
            if let Some(g) = &p.progress {
                println!("staging:    {}", crate::progress::describe(g));
            }
        }
        if let Some(l) = &self.last_staging {
            match &l.reason {
                None => println!(
                    "staged:     {} via {}: downloaded {} of {} bytes, saved {}",
                    l.version, l.path, l.downloaded_bytes, l.full_bytes, l.saved_bytes
                ),
                Some(why) => println!(
                    "staged:     {} via {}: downloaded {} of {} bytes ({why})",
                    l.version, l.path, l.downloaded_bytes, l.full_bytes
                ),
            }
        }
        if let Some(t) = &self.last_check {
            println!("last check: {t}");
        }
        if let Some(e) = &self.last_error {
            println!("last error: {e}");
        }
        if let Some(w) = &self.clock_warning {
            println!("clock:      {w}");
        }
        if let Some(n) = &self.space_notice {
            println!("space:      {n}");
        }
        if let Some(c) = &self.certificate {
            println!("cert:       {} until {}", c.state, c.not_after);
            if let Some(hint) = &c.hint {
                println!("            {hint}");
            }
        }
        if let Some(r) = &self.reload {
            match &r.error {
                Some(e) => println!("reload:     refused at {}: {e}", r.at),
                None => println!("reload:     applied at {}", r.at),
            }
            for (keys, when) in [
                (&r.next_swap, "at the next swap"),
                (&r.restart, "at the next restart of the agent"),
            ] {
                if !keys.is_empty() {
                    println!("            {} apply {when}", keys.join(", "));
                }
            }
        }
        if let Some(r) = &self.restarts {
            println!(
                "restarts:   {} since {} (last: {})",
                r.count, r.since, r.last_exit
            );
        }
        for b in &self.bad_versions {
            println!(
                "bad:        {} (sequence <= {}): {}",
                b.version, b.sequence, b.reason
            );
        }
        if let Some(version) = &self.agent_version {
            println!(
                "agent:      {version} ({}), previous {}, {}",
                self.agent_phase.as_deref().unwrap_or("committed"),
                self.agent_previous_version.as_deref().unwrap_or(none),
                self.agent_platform.as_deref().unwrap_or(none)
            );
        }
        if let Some(p) = &self.agent_pending {
            println!(
                "agent pending: {} (sequence {}) not before {}",
                p.version, p.sequence, p.not_before
            );
        }
        if let Some(e) = &self.agent_last_error {
            println!("agent error: {e}");
        }
        for b in &self.agent_bad_versions {
            println!(
                "agent bad:  {} (sequence <= {}): {}",
                b.version, b.sequence, b.reason
            );
        }
    }
}
