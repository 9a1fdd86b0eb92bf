//! Unit tests of the rollout engine: admission, waves, halt, pause, abort
//! over a data folder with two releases and a plan.

use std::path::Path;

use super::*;
use crate::channel::ChannelDir;
use crate::console::push::{MAX_MANIFEST_BYTES, read_release};
use crate::console::rollout::{PLAN_FILE, admission_hash};

/// A data folder with releases 1 (1.0.0) and 2 (2.0.0, current) and a plan for 2.
fn data_with_plan(waves: Vec<u8>) -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let dir = ChannelDir::new(data.path(), "stable");
    for (seq, version) in [(1u64, "1.0.0"), (2, "2.0.0")] {
        let manifest = format!("{{\"sequence\":{seq},\"version\":\"{version}\"}}");
        dir.write_release(seq, manifest.as_bytes(), format!("sig{seq}").as_bytes())
            .unwrap();
    }
    let plan = Plan {
        sequence: 2,
        version: "2.0.0".into(),
        previous_sequence: Some(1),
        waves,
        success: 0.95,
        halt_on: 0.05,
        soak_secs: 0,
        report_deadline_secs: 600,
    };
    std::fs::write(
        dir.dir().join(PLAN_FILE),
        serde_json::to_vec(&plan).unwrap(),
    )
    .unwrap();
    data
}

fn current(data: &Path) -> Release {
    read_release(
        &ChannelDir::new(data, "stable").manifest(),
        MAX_MANIFEST_BYTES,
    )
    .unwrap()
    .unwrap()
}

fn committed(engine: &Rollouts, agent: &str, version: &str, sequence: u64) {
    engine.note_report(&FleetEntry {
        agent_id: agent.into(),
        version: Some(version.into()),
        phase: Some("committed".into()),
        sequence: Some(sequence),
        ..FleetEntry::default()
    });
}

#[test]
fn only_admitted_agents_get_the_release_and_waves_open_on_success() {
    let data = data_with_plan(vec![10, 100]);
    let engine = Rollouts::new(data.path());
    let current = current(data.path());
    let agents: Vec<String> = (0..20).map(|i| format!("agent-{i}")).collect();
    for a in &agents {
        committed(&engine, a, "1.0.0", 1);
        engine.serve("stable", Some(a), &current);
    }
    engine.evaluate(now_ms());
    let admitted: Vec<&String> = agents
        .iter()
        .filter(|a| matches!(engine.serve("stable", Some(a), &current), Serve::Current))
        .collect();
    assert_eq!(admitted.len(), 2, "10 % of 20");
    assert!(matches!(
        engine.serve("stable", None, &current),
        Serve::Previous(_)
    ));
    for a in &admitted {
        committed(&engine, a, "2.0.0", 2);
    }
    assert!(engine.evaluate(now_ms()), "the 100 % wave opens");
    assert!(
        agents
            .iter()
            .all(|a| matches!(engine.serve("stable", Some(a), &current), Serve::Current))
    );
    let view = engine.view_of("stable").unwrap();
    assert_eq!(view.waves[0].state, "done");
    assert_eq!(view.waves[0].committed, 2);
    assert_eq!(view.waves[1].admitted, 18);
    assert_eq!(view.previous_version.as_deref(), Some("1.0.0"));
}

#[test]
fn a_failed_trial_halts_and_a_paused_or_halted_rollout_admits_nobody_new() {
    let data = data_with_plan(vec![10, 100]);
    let engine = Rollouts::new(data.path());
    let current = current(data.path());
    let agents: Vec<String> = (0..20).map(|i| format!("agent-{i}")).collect();
    for a in &agents {
        engine.serve("stable", Some(a), &current);
    }
    engine.evaluate(now_ms());
    let first = agents
        .iter()
        .find(|a| matches!(engine.serve("stable", Some(a), &current), Serve::Current))
        .unwrap();
    engine.act("stable", Action::Pause, "test").unwrap();
    assert!(engine.act("stable", Action::Pause, "test").is_err());
    engine.note_report(&FleetEntry {
        agent_id: first.clone(),
        version: Some("1.0.0".into()),
        sequence: Some(2),
        last_error_kind: Some("trial".into()),
        last_error: Some("2.0.0 rolled back: exited".into()),
        ..FleetEntry::default()
    });
    engine.evaluate(now_ms());
    let view = engine.view_of("stable").unwrap();
    assert_eq!(view.state, "halted");
    assert!(
        view.halt_reason
            .unwrap()
            .contains("2.0.0 rolled back: exited")
    );
    // A newcomer is not admitted while halted.
    engine.serve("stable", Some("newcomer"), &current);
    engine.evaluate(now_ms());
    assert_eq!(engine.view_of("stable").unwrap().waves[0].admitted, 2);
    engine.act("stable", Action::Abort, "test").unwrap();
    assert!(
        matches!(
            engine.serve("stable", Some(first), &current),
            Serve::Current
        ),
        "it took the release"
    );
    let others = agents.iter().filter(|a| *a != first);
    for a in others {
        assert!(matches!(
            engine.serve("stable", Some(a), &current),
            Serve::Previous(_)
        ));
    }
}

/// A report of `agent` on `channel`, running 1.0.0 (sequence 1).
fn reported(engine: &Rollouts, agent: &str, channel: &str) {
    engine.note_report(&FleetEntry {
        agent_id: agent.into(),
        version: Some("1.0.0".into()),
        phase: Some("committed".into()),
        sequence: Some(1),
        channel: Some(channel.into()),
        ..FleetEntry::default()
    });
}

/// The admission threshold of a wave of `percent` over `fleet` for release
/// 2, computed here from the rule itself: above the `ceil(percent × fleet)`
/// lowest admission hashes, and above the lowest `percent` of the hash space.
fn expected_threshold(fleet: &[String], percent: u64) -> u64 {
    let mut hashes: Vec<u64> = fleet.iter().map(|a| admission_hash(a, 2)).collect();
    hashes.sort_unstable();
    let needed = (fleet.len() as u64 * percent).div_ceil(100) as usize;
    let by_rank = hashes[needed - 1] + 1;
    let by_share = (u128::from(u64::MAX) * u128::from(percent) / 100) as u64;
    by_rank.max(by_share)
}

/// The agents of `fleet` hashing below `threshold`, sorted.
fn below(fleet: &[String], threshold: u64) -> Vec<String> {
    let mut wave: Vec<String> = fleet
        .iter()
        .filter(|a| admission_hash(a, 2) < threshold)
        .cloned()
        .collect();
    wave.sort();
    wave
}

/// Regression (issue 12, "first wave drift"): the known fleet used to be only
/// the agents that had asked for the manifest, so a wave opened while the
/// fleet was still being met admitted a share of the first few askers, and
/// every later agent hashing below them too. Time is the `now` handed to
/// `evaluate` (the engine reads no clock of its own there).
#[test]
fn a_wave_admits_its_share_of_the_reporting_fleet_whoever_asked_first() {
    let data = data_with_plan(vec![1, 100]);
    let engine = Rollouts::new(data.path());
    let current = current(data.path());
    let fleet: Vec<String> = (0..40).map(|i| format!("agent-{i:05}")).collect();
    for a in &fleet {
        reported(&engine, a, "stable");
    }
    let first = expected_threshold(&fleet, 1);
    let expected = below(&fleet, first);
    let admitted = |engine: &Rollouts, agents: &[String]| {
        let mut wave: Vec<String> = agents
            .iter()
            .filter(|a| matches!(engine.serve("stable", Some(a), &current), Serve::Current))
            .cloned()
            .collect();
        wave.sort();
        wave
    };
    // Three agents ask first (the plan loads with the first), the gate runs,
    // then the others ask.
    let start = now_ms();
    for a in &fleet[..3] {
        engine.serve("stable", Some(a), &current);
    }
    assert!(!engine.evaluate(start), "the wave's share is already right");
    assert_eq!(admitted(&engine, &fleet), expected);
    assert!(!engine.evaluate(start + 1_000));
    assert_eq!(
        admitted(&engine, &fleet),
        expected,
        "asking did not widen it"
    );
    let view = engine.view_of("stable").unwrap();
    assert_eq!(view.agents, 40);
    assert_eq!(view.waves[0].admitted as usize, expected.len());
    // An agent whose report names another channel left this one's fleet.
    let leaving = fleet.iter().find(|a| !expected.contains(a)).unwrap();
    reported(&engine, leaving, "beta");
    assert_eq!(engine.view_of("stable").unwrap().agents, 39);
    // Agents met later get their share of the grown fleet.
    let mut known: Vec<String> = fleet.iter().filter(|a| *a != leaving).cloned().collect();
    known.extend((40..161).map(|i| format!("agent-{i:05}")));
    for a in &known[39..] {
        reported(&engine, a, "stable");
    }
    engine.evaluate(start + 2_000);
    // A threshold never shrinks: the grown fleet's, or the first one.
    let grown = below(&known, expected_threshold(&known, 1).max(first));
    assert!(expected.iter().all(|a| grown.contains(a)));
    assert_eq!(admitted(&engine, &known), grown);
    assert_eq!(engine.view_of("stable").unwrap().agents, 160);
}

#[test]
fn an_agent_first_reported_while_paused_waits_for_resume() {
    let data = data_with_plan(vec![50, 100]);
    let engine = Rollouts::new(data.path());
    let current = current(data.path());
    engine.serve("stable", Some("agent-first"), &current);
    engine.act("stable", Action::Pause, "test").unwrap();
    let late: Vec<String> = (0..10).map(|i| format!("late-{i}")).collect();
    for a in &late {
        reported(&engine, a, "stable");
    }
    engine.evaluate(now_ms());
    assert!(
        late.iter()
            .all(|a| !matches!(engine.serve("stable", Some(a), &current), Serve::Current))
    );
    engine.act("stable", Action::Resume, "test").unwrap();
    engine.evaluate(now_ms());
    assert!(
        late.iter()
            .any(|a| matches!(engine.serve("stable", Some(a), &current), Serve::Current)),
        "half of the fleet is admitted once resumed"
    );
}
