//! The child's side of `--self-test`: the checks (config, root, agent slots,
//! the test switch), the one JSON line printed, and the exit status.

use std::process::ExitCode;

use bank_layout::{AgentSlots, Root};

use super::{Check, HANDOVER_SCHEMAS, SELF_TEST_SCHEMA, SelfTestReport, Target};
use crate::agent::self_update::fault;
use crate::config::AgentConfig;
use crate::platform::PLATFORM;

/// The child: runs the checks, prints the answer, exits 0 iff all passed (else 1,
/// with `error: self-test: <what>: <why>` on stderr).
pub fn child(target: &Target, expect_version: Option<&str>) -> ExitCode {
    let report = checks(target, expect_version);
    match serde_json::to_string(&report) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("error: self-test: answer: {e}");
            return ExitCode::FAILURE;
        }
    }
    if report.ok {
        return ExitCode::SUCCESS;
    }
    if let Some(failed) = report.checks.iter().find(|c| !c.ok) {
        eprintln!(
            "error: self-test: {}: {}",
            failed.name,
            failed.detail.as_deref().unwrap_or("failed")
        );
    }
    ExitCode::FAILURE
}

/// The checks of [`child`].
fn checks(target: &Target, expect_version: Option<&str>) -> SelfTestReport {
    let mut checks = Vec::new();
    let root = match target {
        Target::Config(path) => match AgentConfig::load(path) {
            Ok(config) => {
                checks.push(passed("config", path.display().to_string()));
                Some(config.root)
            }
            Err(e) => {
                checks.push(failed("config", e.to_string()));
                None
            }
        },
        Target::Root(dir) => Some(dir.clone()),
    };
    if let Some(root) = root {
        checks.push(match Root::inspect(&root) {
            Ok(view) => {
                let active = view.state.active;
                let version = view.state.version_of(active).unwrap_or("no release");
                passed(
                    "root",
                    format!(
                        "state.json schema {}, {active} {} {version}",
                        view.state.schema, view.state.phase
                    ),
                )
            }
            Err(e) => failed("root", e.to_string()),
        });
        checks.push(match AgentSlots::read_state(&root) {
            Ok(Some(state)) => passed(
                "agent_slots",
                format!("agent/state.json schema {}", state.schema),
            ),
            Ok(None) => passed("agent_slots", "no agent/state.json yet".to_owned()),
            Err(e) => failed("agent_slots", e.to_string()),
        });
    }
    if fault::armed("self-test-fail", expect_version) {
        checks.push(failed(
            "fault",
            format!("{} asks this build to fail", fault::AGENT_FAULT_VAR),
        ));
    }
    SelfTestReport {
        self_test: SELF_TEST_SCHEMA,
        ok: checks.iter().all(|c| c.ok),
        build_version: env!("CARGO_PKG_VERSION").to_owned(),
        release_version: expect_version.map(str::to_owned),
        platform: PLATFORM.to_owned(),
        handover_schemas: HANDOVER_SCHEMAS.to_vec(),
        checks,
    }
}

fn passed(name: &str, detail: String) -> Check {
    Check {
        name: name.to_owned(),
        ok: true,
        detail: Some(detail),
    }
}

pub(super) fn failed(name: &str, detail: String) -> Check {
    Check {
        name: name.to_owned(),
        ok: false,
        detail: Some(detail.replace('\n', " ")),
    }
}
