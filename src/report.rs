//! What an agent says about itself: the `status --json` object ([`StatusReport`])
//! and the report it POSTs to its console ([`WireReport`]), one type each, shared
//! by `status`, the agent, the control socket and the console.

use bank_layout::{Phase, State};
use serde::{Deserialize, Serialize};

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

/// How a release was staged: `status`'s `last_staging`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastStaging {
    /// The version staged.
    pub version: String,
    /// `delta` (the changed files' objects) or `full` (the whole artifact).
    pub path: String,
    /// Bytes downloaded for it: the index, the objects and, in full, the
    /// artifact (offline: read from the bundle).
    pub downloaded_bytes: u64,
    /// The full artifact's size.
    pub full_bytes: u64,
    /// `full_bytes - downloaded_bytes`, or 0 when that is negative.
    pub saved_bytes: u64,
    /// Why the full artifact was taken (null for a delta).
    pub reason: Option<String>,
}

/// The agent's client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateReport {
    /// When it expires (RFC 3339).
    pub not_after: String,
    /// `valid`, `renewal due` (the agent renews it by itself) or `expired`.
    pub state: String,
    /// What to do, when the agent cannot fix it by itself.
    pub hint: Option<String>,
}

/// The last reload of the config, and when each change applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// When (RFC 3339).
    pub at: String,
    /// `applied` or `refused` (the running config stays).
    pub outcome: String,
    /// Why it was refused.
    pub error: Option<String>,
    /// Keys applied at once.
    pub applied: Vec<String>,
    /// Keys that judge the next trial.
    pub next_trial: Vec<String>,
    /// Keys used when the payload next starts (the next swap).
    pub next_swap: Vec<String>,
    /// Keys that wait for a restart of the agent.
    pub restart: Vec<String>,
}

/// A payload's streak of failures: exits, watchdog expiries, failed starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartsReport {
    /// Failures in the streak.
    pub count: u32,
    /// The last one, e.g. `1.0.0 exited (exit status: 3)`.
    pub last_exit: String,
    /// When the streak began (RFC 3339).
    pub since: String,
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
    /// The download, while it is staged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<crate::progress::ProgressReport>,
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
            pending: state.pending.as_ref().map(|p| PendingReport {
                version: p.version.clone(),
                sequence: p.sequence,
                not_before: clock::rfc3339(clock::from_unix(p.not_before)),
                progress: None,
            }),
            last_check: state
                .last_check
                .map(|t| clock::rfc3339(clock::from_unix(t))),
            last_error: state.last_error.clone(),
            last_error_kind: None,
            bad_versions: state
                .bad_versions
                .iter()
                .map(|b| BadReport {
                    version: b.version.clone(),
                    sequence: b.sequence,
                    reason: b.reason.clone(),
                })
                .collect(),
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

/// What an agent POSTs to `{console}/v1/agents/{id}/report`. Unknown fields are
/// accepted (and dropped) by the console, so newer agents can report more to an
/// older console; every field may be absent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WireReport {
    /// The version it runs.
    #[serde(default)]
    pub version: Option<String>,
    /// The bank it runs from.
    #[serde(default)]
    pub bank: Option<String>,
    /// `committed` or `trial`.
    #[serde(default)]
    pub phase: Option<String>,
    /// A release being staged or scheduled, in any shape.
    #[serde(default)]
    pub pending: Option<serde_json::Value>,
    /// The agent's last error.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The kind of the last error.
    #[serde(default)]
    pub last_error_kind: Option<String>,
    /// The version kept for rollback.
    #[serde(default)]
    pub previous_version: Option<String>,
    /// The highest sequence accepted.
    #[serde(default)]
    pub sequence: Option<u64>,
    /// The payload's current streak of failures.
    #[serde(default)]
    pub restarts: Option<RestartsReport>,
    /// The channel it follows.
    #[serde(default)]
    pub channel: Option<String>,
    /// Versions it refuses, with why.
    #[serde(default)]
    pub bad_versions: Vec<BadReport>,
    /// The release version of the agent build running.
    #[serde(default)]
    pub agent_version: Option<String>,
    /// `committed`, `staging`, `self-test`, `ready` or `trial`.
    #[serde(default)]
    pub agent_phase: Option<String>,
    /// The last self-update error.
    #[serde(default)]
    pub agent_last_error: Option<String>,
}

impl From<&StatusReport> for WireReport {
    fn from(status: &StatusReport) -> WireReport {
        WireReport {
            version: status.active_version.clone(),
            bank: Some(status.active_bank.clone()),
            phase: Some(status.phase.clone()),
            pending: status
                .pending
                .as_ref()
                .and_then(|p| serde_json::to_value(p).ok()),
            last_error: status.last_error.clone(),
            last_error_kind: status.last_error_kind.clone(),
            previous_version: status.previous_version.clone(),
            sequence: Some(status.sequence),
            restarts: status.restarts.clone(),
            channel: status.channel.clone(),
            bad_versions: status.bad_versions.clone(),
            agent_version: status.agent_version.clone(),
            agent_phase: status.agent_phase.clone(),
            agent_last_error: status.agent_last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_report_carries_previous_version_and_sequence() {
        let state = State {
            highest_sequence: 7,
            last_error: Some("x".into()),
            bad_versions: vec![bank_layout::BadVersion {
                version: "1.1.0".into(),
                sequence: 6,
                reason: "trial failed".into(),
            }],
            ..State::default()
        };
        let mut status = StatusReport::new("/r", None, &state);
        status.channel = Some("beta".into());
        let wire = WireReport::from(&status);
        let json = serde_json::to_value(&wire).unwrap();
        assert_eq!(json["sequence"], 7);
        assert_eq!(json["channel"], "beta");
        assert_eq!(json["bad_versions"][0]["reason"], "trial failed");
        assert_eq!(json["bank"], "Bank1");
        assert!(json.get("previous_version").is_some());
        let back: WireReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, wire);
    }

    #[test]
    fn wire_reports_accept_unknown_fields_and_nulls() {
        let r: WireReport =
            serde_json::from_str(r#"{"version":"1.0.0","bank":null,"extra":{"x":1}}"#).unwrap();
        assert_eq!(r.version.as_deref(), Some("1.0.0"));
        assert!(r.bank.is_none() && r.phase.is_none() && r.pending.is_none());
    }
}
