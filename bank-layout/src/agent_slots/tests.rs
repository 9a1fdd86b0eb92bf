//! Unit tests of the agent slots: staging, recovery at open, the trial marker and
//! the launch guard.

use super::*;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;

use sha2::{Digest, Sha256};

use crate::{ArchiveFormat, Root};

/// A root with its agent slots opened, in a temp folder.
fn open() -> (tempfile::TempDir, Root, AgentSlots) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, _) = Root::open(tmp.path()).expect("open root");
    let (slots, notes) = AgentSlots::open(&root, None).expect("open slots");
    assert!(notes.is_empty(), "{notes:?}");
    (tmp, root, slots)
}

/// A plain tar with the given (name, bytes, mode) entries.
fn tar_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes, mode) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder
            .append_data(&mut header, name, *bytes)
            .expect("append");
    }
    builder.into_inner().expect("tar")
}

fn build(version: &str, sequence: u64) -> AgentBuild {
    AgentBuild {
        version: version.into(),
        sequence,
        platform: "linux-x86_64".into(),
        channel: "bankswap".into(),
        staged_at: 1_000,
        manifest: "{}".into(),
        signature: "sig".into(),
        ..AgentBuild::default()
    }
}

fn stage(
    slots: &mut AgentSlots,
    archive: &[u8],
    version: &str,
    sequence: u64,
    running: Option<SlotId>,
) -> Result<SlotId, LayoutError> {
    let sha = hex::encode(Sha256::digest(archive));
    let spec = AgentStageSpec {
        format: ArchiveFormat::Tar,
        size: archive.len() as u64,
        sha256: &sha,
        build: build(version, sequence),
    };
    slots.stage(archive, spec, running, &mut |_| {})
}

fn good_archive(content: &[u8]) -> Vec<u8> {
    tar_of(&[(AGENT_BINARY, content, 0o700)])
}

fn attempt(slot: SlotId, version: &str, sequence: u64, nonce: &str) -> AgentAttempt {
    AgentAttempt {
        version: version.into(),
        sequence,
        slot,
        from: None,
        from_version: "0.1.0".into(),
        from_exe: "/usr/bin/bankswap".into(),
        nonce: nonce.into(),
        started_at: 2_000,
        ran: false,
        tries: 0,
    }
}

fn reopen(root: &Root) -> (AgentSlots, Vec<AgentRecovery>) {
    AgentSlots::open(root, None).expect("reopen")
}

#[test]
fn a_staged_build_is_whole_or_absent() {
    let (tmp, root, mut slots) = open();
    let agent = tmp.path().join(AGENT_DIR);
    let slot = stage(&mut slots, &good_archive(b"#!/bin/sh\n"), "0.2.0", 5, None).expect("stage");
    assert_eq!(slot, SlotId::Slot1);
    let binary = slots.binary(slot);
    let mode = fs::metadata(&binary).expect("binary").permissions().mode();
    assert_eq!(mode & 0o777, SLOT_MODE);
    assert_eq!(slots.state().slot1_version.as_deref(), Some("0.2.0"));
    assert_eq!(slots.record(slot).map(|b| b.size), Some(10));

    // A staging that fails its digest leaves the idle slot (Slot2) as it was, and
    // Slot1 untouched.
    let archive = good_archive(b"other");
    let spec = AgentStageSpec {
        format: ArchiveFormat::Tar,
        size: archive.len() as u64,
        sha256: "00",
        build: build("0.3.0", 6),
    };
    let error = slots
        .stage(&archive[..], spec, Some(SlotId::Slot1), &mut |_| {})
        .expect_err("digest");
    assert!(matches!(error, LayoutError::HashMismatch { .. }), "{error}");
    assert!(!agent.join(".staging-Slot2").exists());
    assert!(slots.record(SlotId::Slot2).is_none());
    drop(slots);

    // Crash states left by each step, repaired at open.
    // 1. scratch half-written: removed.
    fs::create_dir(agent.join(".staging-Slot2")).expect("mkdir");
    fs::write(agent.join(".staging-Slot2").join(AGENT_BINARY), b"half").expect("w");
    // 2. a slot whose record is missing (renamed in before... never: but a hand).
    fs::write(agent.join("Slot2").join(AGENT_BINARY), b"junk").expect("w");
    let (slots, notes) = reopen(&root);
    assert!(!agent.join(".staging-Slot2").exists());
    assert!(slots.record(SlotId::Slot2).is_none());
    assert!(!agent.join("Slot2").join(AGENT_BINARY).exists());
    assert!(
        notes.iter().any(|n| matches!(
            n,
            AgentRecovery::SlotWiped {
                slot: SlotId::Slot2,
                ..
            }
        )),
        "{notes:?}"
    );
    assert_eq!(
        slots.record(SlotId::Slot1).map(|b| b.version.as_str()),
        Some("0.2.0")
    );
    drop(slots);

    // 3. killed between "old slot renamed aside" and "scratch renamed in": the old
    //    content comes back.
    fs::rename(agent.join("Slot1"), agent.join(".retired-Slot1")).expect("mv");
    let (slots, notes) = reopen(&root);
    assert!(notes.contains(&AgentRecovery::SlotRestored {
        slot: SlotId::Slot1
    }));
    assert_eq!(
        slots.record(SlotId::Slot1).map(|b| b.version.as_str()),
        Some("0.2.0")
    );
    drop(slots);

    // 4. a build whose size is not the recorded one (a torn copy): wiped, and the
    //    state stops listing it.
    fs::write(agent.join("Slot1").join(AGENT_BINARY), b"short").expect("w");
    let (slots, notes) = reopen(&root);
    assert!(slots.record(SlotId::Slot1).is_none());
    assert_eq!(slots.state().slot1_version, None);
    assert!(
        notes
            .iter()
            .any(|n| matches!(n, AgentRecovery::VersionCorrected { .. })),
        "{notes:?}"
    );
}

#[test]
fn an_archive_with_anything_but_one_binary_is_refused() {
    let (_tmp, _root, mut slots) = open();
    let cases: Vec<Vec<u8>> = vec![
        tar_of(&[("other", b"x", 0o755)]),
        tar_of(&[(AGENT_BINARY, b"x", 0o755), ("extra", b"y", 0o644)]),
        tar_of(&[]),
    ];
    for archive in cases {
        let error = stage(&mut slots, &archive, "0.2.0", 1, None).expect_err("refused");
        assert!(!error.to_string().contains('\n'), "{error}");
        assert!(slots.record(SlotId::Slot1).is_none());
        assert!(slots.record(SlotId::Slot2).is_none());
    }
}

#[test]
fn the_running_slot_is_never_the_idle_one() {
    let (_tmp, _root, mut slots) = open();
    let a = stage(&mut slots, &good_archive(b"a"), "0.2.0", 1, None).expect("a");
    slots.activate_committed(a).expect("activate");
    // Active Slot1: the idle one is Slot2, whoever runs.
    assert_eq!(slots.idle_slot(None).ok(), Some(SlotId::Slot2));
    assert_eq!(
        slots.idle_slot(Some(SlotId::Slot1)).ok(),
        Some(SlotId::Slot2)
    );
    // Active Slot1 but running Slot2 (a trial that went on): no idle slot.
    assert!(matches!(
        slots.idle_slot(Some(SlotId::Slot2)),
        Err(LayoutError::NoIdleAgentSlot)
    ));
    slots
        .use_installed("installed is newer")
        .expect("installed");
    assert_eq!(
        slots.idle_slot(Some(SlotId::Slot1)).ok(),
        Some(SlotId::Slot2)
    );
    let b = stage(
        &mut slots,
        &good_archive(b"b"),
        "0.3.0",
        2,
        Some(SlotId::Slot1),
    )
    .expect("b");
    assert_eq!(b, SlotId::Slot2);
    // Installed runs, both hold builds: the older sequence is replaced.
    assert_eq!(slots.idle_slot(None).ok(), Some(SlotId::Slot1));
}

#[test]
fn a_marker_without_ran_is_retried_then_marked_bad() {
    let (_tmp, root, mut slots) = open();
    let slot = stage(&mut slots, &good_archive(b"a"), "0.2.0", 7, None).expect("stage");
    let mut slots_now = slots;
    for round in 1..=MAX_ATTEMPT_TRIES {
        slots_now
            .begin_attempt(attempt(slot, "0.2.0", 7, "n"))
            .expect("begin");
        assert_eq!(slots_now.state().phase, AgentPhase::Trial);
        assert_eq!(
            slots_now.state().attempt.as_ref().map(|a| a.tries),
            Some(round)
        );
        drop(slots_now);
        let (reopened, notes) = reopen(&root);
        let bad = round >= MAX_ATTEMPT_TRIES;
        assert!(
            notes.iter().any(|n| matches!(n,
                AgentRecovery::AttemptResolved { marked_bad, .. } if *marked_bad == bad)),
            "{notes:?}"
        );
        assert_eq!(reopened.state().phase, AgentPhase::Committed);
        assert!(reopened.state().attempt.is_none());
        assert_eq!(reopened.state().is_bad("0.2.0", 7).is_some(), bad);
        slots_now = reopened;
    }
}

#[test]
fn a_marker_with_ran_is_marked_bad_in_one_write() {
    let (tmp, root, mut slots) = open();
    let slot = stage(&mut slots, &good_archive(b"a"), "0.2.0", 7, None).expect("stage");
    slots
        .schedule(Pending {
            version: "0.2.0".into(),
            sequence: 7,
            not_before: 0,
            manifest: "{}".into(),
            signature: "s".into(),
        })
        .expect("schedule");
    slots
        .begin_attempt(attempt(slot, "0.2.0", 7, "abc"))
        .expect("begin");
    slots.note_ran("abc").expect("ran");
    drop(slots);
    let state_path = tmp.path().join(AGENT_DIR).join(AGENT_STATE_FILE);
    let before = fs::metadata(&state_path).expect("state").ino();
    let (slots, _) = reopen(&root);
    // One write_atomic = one rename = one new inode, holding all of it.
    assert_ne!(fs::metadata(&state_path).expect("state").ino(), before);
    let on_disk = AgentSlots::read_state(tmp.path())
        .expect("read")
        .expect("some");
    assert_eq!(&on_disk, slots.state());
    assert!(on_disk.attempt.is_none());
    assert!(on_disk.pending.is_none());
    assert_eq!(on_disk.phase, AgentPhase::Committed);
    let bad = on_disk.is_bad("0.2.0", 7).expect("bad");
    assert!(
        bad.reason.contains("ended during its trial"),
        "{}",
        bad.reason
    );
    assert_eq!(on_disk.active, None);
}

#[test]
fn commit_needs_the_matching_nonce() {
    let (_tmp, _root, mut slots) = open();
    let slot = stage(&mut slots, &good_archive(b"a"), "0.2.0", 9, None).expect("stage");
    assert!(matches!(
        slots.commit("nope"),
        Err(LayoutError::AgentAttemptMismatch { .. })
    ));
    slots
        .begin_attempt(attempt(slot, "0.2.0", 9, "right"))
        .expect("begin");
    assert!(matches!(
        slots.begin_attempt(attempt(slot, "0.2.0", 9, "second")),
        Err(LayoutError::AgentTrialInProgress)
    ));
    assert!(matches!(
        slots.commit("wrong"),
        Err(LayoutError::AgentAttemptMismatch { .. })
    ));
    assert!(matches!(
        slots.note_ran("wrong"),
        Err(LayoutError::AgentAttemptMismatch { .. })
    ));
    slots.commit("right").expect("commit");
    assert_eq!(slots.state().active, Some(slot));
    assert_eq!(slots.state().phase, AgentPhase::Committed);
    assert_eq!(slots.state().highest_sequence, 9);
    assert!(slots.state().attempt.is_none());
}

#[test]
fn a_crash_looping_committed_build_falls_back() {
    let (_tmp, root, mut slots) = open();
    let a = stage(&mut slots, &good_archive(b"a"), "0.2.0", 1, None).expect("a");
    slots.activate_committed(a).expect("a active");
    let b = stage(&mut slots, &good_archive(b"bb"), "0.3.0", 2, Some(a)).expect("b");
    slots.activate_committed(b).expect("b active");
    for n in 1..=MAX_LAUNCH_FAILURES {
        assert_eq!(slots.note_launch(b).expect("launch"), n);
    }
    drop(slots);
    let (slots, notes) = reopen(&root);
    assert!(
        notes.contains(&AgentRecovery::CrashLoop {
            version: "0.3.0".into(),
            now_active: Some(a)
        }),
        "{notes:?}"
    );
    assert_eq!(slots.state().active, Some(a));
    assert!(slots.state().is_bad("0.3.0", 2).is_some());
    assert!(slots.state().launch.is_none());
    // A launch that reports serving clears the count.
    let mut slots = slots;
    slots.note_launch(a).expect("launch");
    slots.launch_ok().expect("ok");
    assert!(slots.state().launch.is_none());
}

#[test]
fn state_with_unknown_schema_is_corrupt() {
    let (tmp, root, slots) = open();
    drop(slots);
    let path = tmp.path().join(AGENT_DIR).join(AGENT_STATE_FILE);
    let text = r#"{"schema": 2, "active": null, "phase": "committed", "highest_sequence": 0}"#;
    fs::write(&path, text).expect("write");
    let error = AgentSlots::open(&root, None).expect_err("corrupt");
    assert!(
        matches!(error, LayoutError::CorruptAgentState { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("unsupported schema 2"),
        "{error}"
    );
    // Nothing was touched.
    assert_eq!(fs::read_to_string(&path).expect("read"), text);
    assert!(AgentSlots::read_state(tmp.path()).is_err());
}

#[test]
fn a_failed_self_test_marks_bad_and_clears_pending() {
    let (_tmp, _root, mut slots) = open();
    slots
        .schedule(Pending {
            version: "0.2.0".into(),
            sequence: 3,
            not_before: 0,
            manifest: "{}".into(),
            signature: "s".into(),
        })
        .expect("schedule");
    slots
        .mark_bad("0.2.0", 3, "self-test: exited with status 3")
        .expect("bad");
    assert!(slots.state().pending.is_none());
    assert!(slots.state().is_bad("0.2.0", 3).is_some());
    assert!(slots.state().is_bad("0.2.0", 4).is_none());
    assert_eq!(
        slots.state().last_error.as_deref(),
        Some("self-test: exited with status 3")
    );
}

#[test]
fn leftover_handover_files_go_except_the_one_being_received() {
    let (tmp, root, slots) = open();
    drop(slots);
    let agent = tmp.path().join(AGENT_DIR);
    fs::write(agent.join("handover-aaaa.json"), b"{}").expect("w");
    fs::write(agent.join("handover-bbbb.json"), b"{}").expect("w");
    let (_slots, notes) = AgentSlots::open(&root, Some("bbbb")).expect("open");
    assert!(!agent.join("handover-aaaa.json").exists());
    assert!(agent.join("handover-bbbb.json").exists());
    assert_eq!(notes.len(), 1, "{notes:?}");
    for note in notes {
        assert!(!note.to_string().contains('\n'));
    }
}

#[test]
fn an_inherited_lock_is_adopted_only_if_it_is_ours() {
    use std::os::fd::OwnedFd;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, _) = Root::open(tmp.path()).expect("open");
    let ours: OwnedFd = root.lock_fd().try_clone_to_owned().expect("dup");
    drop(root);
    // The dup still holds the flock (same open file): adopting it works, and a
    // fresh open is still refused.
    let (adopted, _) = Root::adopt(tmp.path(), ours).expect("adopt");
    assert!(matches!(
        Root::open(tmp.path()),
        Err(LayoutError::Locked { .. })
    ));
    // Another file is refused.
    let other = tmp.path().join("other");
    fs::write(&other, b"").expect("w");
    let fd: OwnedFd = File::open(&other).expect("open").into();
    assert!(matches!(
        Root::adopt(tmp.path(), fd),
        Err(LayoutError::LockNotOurs { .. })
    ));
    // The lock file opened afresh (not the holder's open file) is refused too.
    let fresh: OwnedFd = File::open(tmp.path().join(crate::LOCK_FILE))
        .expect("open")
        .into();
    assert!(matches!(
        Root::adopt(tmp.path(), fresh),
        Err(LayoutError::LockNotOurs { .. })
    ));
    drop(adopted);
}
