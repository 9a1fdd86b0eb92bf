//! The report an agent POSTs to its console ([`WireReport`]), made from its
//! status report; the console accepts unknown fields, so agent and console
//! versions may differ.

use serde::{Deserialize, Serialize};

use super::{BadReport, RestartsReport, StatusReport};

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
    use bank_layout::State;

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
