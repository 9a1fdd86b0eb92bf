//! The launcher (design §10): at a cold `run`, before the runtime exists, the
//! installed binary execs the committed agent build from `ROOT/agent/SlotN`
//! when that build is newer than itself; an installed binary at least as new
//! (a package upgrade) wins and the root goes back to it. Builds live in the
//! root, so a hardened unit (`ProtectSystem=strict`) and the package manager's
//! `/usr/bin/bankswap` never get in each other's way.
//!
//! Guards: the launched build gets [`LAUNCHED_VAR`] and never launches again
//! (no exec loop); every launch is counted in `agent/state.json` and cleared
//! once the launched build serves ([`launched_build_serves`]), so a committed
//! build that keeps dying at start is marked bad after
//! [`MAX_LAUNCH_FAILURES`](bank_layout::MAX_LAUNCH_FAILURES) launches and the
//! previous build (or the installed one) runs instead (`AgentSlots::open`).

use std::os::unix::process::CommandExt;
use std::time::Duration;

use bank_layout::{AgentBuild, AgentSlots, AgentState, Root, SlotId};
use tracing::{info, warn};

use crate::agent::self_update::{BUILD_VERSION, Identity};
use crate::config::AgentConfig;
use crate::logging;
use crate::release::open_root_waiting;

/// Set in the environment of a build the launcher exec'd: it runs itself, whatever
/// the slots say (the loop guard).
pub const LAUNCHED_VAR: &str = "BANKSWAP_LAUNCHED";

/// What the launcher does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    /// Run this build.
    RunSelf,
    /// Run this build, and make the root say so (`active = None`): `why`.
    UseInstalled(String),
    /// Exec the committed build in this slot.
    Exec(SlotId),
}

/// The launcher's decision from the agent state, the slot records and the
/// build running.
fn choose(state: &AgentState, records: [Option<&AgentBuild>; 2], me: &Identity) -> Choice {
    let Some(slot) = state.active else {
        return Choice::RunSelf;
    };
    let index = usize::from(slot == SlotId::Slot2);
    let Some(build) = records[index] else {
        return Choice::RunSelf;
    };
    if me.slot == Some(slot) || state.is_bad(&build.version, build.sequence).is_some() {
        return Choice::RunSelf;
    }
    let newer = match (
        semver::Version::parse(&build.version),
        semver::Version::parse(BUILD_VERSION),
    ) {
        (Ok(committed), Ok(installed)) => committed.cmp_precedence(&installed).is_gt(),
        _ => false,
    };
    if newer {
        Choice::Exec(slot)
    } else {
        Choice::UseInstalled(format!(
            "the installed agent {BUILD_VERSION} is not older than the committed {} in agent/{slot}; running the installed one",
            build.version
        ))
    }
}

/// At a cold start: execs the committed build if it should run instead of this
/// one (does not return then); otherwise returns and this build runs. Never
/// fatal: any failure here is logged and this build runs.
pub fn launch(config: &AgentConfig, lock_wait: Duration) {
    if std::env::var_os(LAUNCHED_VAR).is_some() {
        return;
    }
    // A root that never had an agent build: nothing to look at (nothing created either).
    if !matches!(AgentSlots::read_state(&config.root), Ok(Some(_))) {
        return;
    }
    if let Err(e) = try_launch(config, lock_wait) {
        warn!(error = %format!("{e:#}"), "could not run the committed agent build; running this one");
    }
}

fn try_launch(config: &AgentConfig, lock_wait: Duration) -> anyhow::Result<()> {
    let root: Root = open_root_waiting(&config.root, lock_wait)?;
    let (mut slots, notes) = AgentSlots::open(&root, None)?;
    for note in notes {
        warn!(root = %root.dir().display(), "recovered: {note}");
    }
    let me = Identity::of_self(root.dir());
    let records = [slots.record(SlotId::Slot1), slots.record(SlotId::Slot2)];
    let slot = match choose(slots.state(), records, &me) {
        Choice::RunSelf => return Ok(()),
        Choice::UseInstalled(why) => {
            info!("{why}");
            slots.use_installed(&why)?;
            return Ok(());
        }
        Choice::Exec(slot) => slot,
    };
    let version = slots
        .record(slot)
        .map(|b| b.version.clone())
        .unwrap_or_default();
    let count = slots.note_launch(slot)?;
    let binary = slots.binary(slot);
    // The lock is taken again by the launched build (it waits for it briefly).
    drop(slots);
    drop(root);
    info!(version, slot = %slot, launch = count, "running the committed agent build");
    logging::flush();
    let mut args = std::env::args_os();
    let argv0 = args
        .next()
        .unwrap_or_else(|| binary.clone().into_os_string());
    let error = std::process::Command::new(&binary)
        .arg0(argv0)
        .args(args)
        .env(LAUNCHED_VAR, "1")
        .exec();
    Err(anyhow::anyhow!("exec {}: {error}", binary.display()))
}

/// Once a launched slot build serves (control socket bound, payload started): its
/// launch count is cleared. Nothing for the installed binary.
pub fn launched_build_serves(slots: &mut AgentSlots, me: &Identity) {
    if me.slot.is_none() || slots.state().launch.is_none() {
        return;
    }
    if let Err(e) = slots.launch_ok() {
        warn!(error = %e, "could not clear the agent's launch count");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(version: &str, sequence: u64) -> AgentBuild {
        AgentBuild {
            version: version.into(),
            sequence,
            ..AgentBuild::default()
        }
    }

    fn installed() -> Identity {
        Identity {
            version: BUILD_VERSION.into(),
            slot: None,
        }
    }

    #[test]
    fn a_newer_committed_build_is_launched_and_an_older_one_gives_way() {
        let newer = build("99.0.0", 3);
        let older = build("0.0.1", 2);
        let mut state = AgentState {
            active: Some(SlotId::Slot2),
            ..AgentState::default()
        };
        assert_eq!(
            choose(&state, [Some(&older), Some(&newer)], &installed()),
            Choice::Exec(SlotId::Slot2)
        );
        // Already running it (launched, or exec'd in place): run.
        let me = Identity {
            version: "99.0.0".into(),
            slot: Some(SlotId::Slot2),
        };
        assert_eq!(
            choose(&state, [Some(&older), Some(&newer)], &me),
            Choice::RunSelf
        );
        // A package upgrade installed something at least as new: it wins.
        state.active = Some(SlotId::Slot1);
        assert!(matches!(
            choose(&state, [Some(&older), Some(&newer)], &installed()),
            Choice::UseInstalled(_)
        ));
        // Nothing committed, or the committed build is bad or gone: run.
        state.active = None;
        assert_eq!(
            choose(&state, [None, Some(&newer)], &installed()),
            Choice::RunSelf
        );
        state.active = Some(SlotId::Slot2);
        assert_eq!(choose(&state, [None, None], &installed()), Choice::RunSelf);
        state.bad_versions.push(bank_layout::BadVersion {
            version: "99.0.0".into(),
            sequence: 3,
            reason: "x".into(),
        });
        assert_eq!(
            choose(&state, [None, Some(&newer)], &installed()),
            Choice::RunSelf
        );
    }
}
