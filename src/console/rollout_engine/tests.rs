//! Unit tests of the rollout engine: admission, waves, halt, pause, abort
//! over a data folder with two releases and a plan.

use std::path::Path;

use super::*;
use crate::channel::ChannelDir;
use crate::console::push::{MAX_MANIFEST_BYTES, read_release};
use crate::console::rollout::PLAN_FILE;

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
