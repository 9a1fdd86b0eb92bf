//! Opening a root after a crash, a power loss or a hand in the folders: locking,
//! re-created banks, half-staged banks, a missing or corrupt `state.json`, fallback.

use std::fs;
use std::path::Path;

use bank_layout::{ArchiveFormat, BankId, LayoutError, Phase, RECORD_FILE, Recovery, Root};

use crate::support::{Artifact, app, fresh, running, snapshot, stage};

/// Reopens the root in `dir` (the previous handle must be dropped).
fn reopen(dir: &Path) -> (Root, Vec<Recovery>) {
    Root::open(dir).unwrap()
}

/// A root running 1.0.0 (seq 1) in Bank1 with 2.0.0 (seq 2) staged in Bank2, closed.
fn two_releases() -> tempfile::TempDir {
    let (dir, mut root) = running();
    let bank = stage(
        &mut root,
        &Artifact::new(app("2.0.0"), ArchiveFormat::Tar),
        "2.0.0",
        2,
    )
    .unwrap();
    assert_eq!(bank, BankId::Bank2);
    dir
}

#[test]
fn a_fresh_root_has_the_layout() {
    let (dir, root) = fresh();
    for name in ["Bank1", "Bank2", "state.json", "lock"] {
        assert!(dir.path().join(name).exists(), "{name}");
    }
    assert_eq!(root.active_bank(), BankId::Bank1);
    assert_eq!(root.state().phase, Phase::Committed);
    assert_eq!(root.state().version_of(BankId::Bank1), None);
    assert_eq!(Root::read_state(dir.path()).unwrap(), *root.state());
}

#[test]
fn a_second_open_is_locked_out() {
    let (dir, root) = fresh();
    let error = Root::open(dir.path()).unwrap_err();
    assert!(
        matches!(&error, LayoutError::Locked { root, .. } if root == dir.path()),
        "{error:?}"
    );
    // The holder wrote who it is into the lock file: the message names it.
    assert_eq!(
        error.to_string(),
        format!(
            "root {} is locked by another bankswap process (pid {}: {})",
            dir.path().display(),
            std::process::id(),
            holder_name()
        )
    );
    // status reads without the lock.
    assert_eq!(Root::read_state(dir.path()).unwrap(), *root.state());
    drop(root);
    reopen(dir.path());
}

#[test]
fn deleted_bank_folders_are_recreated() {
    let dir = two_releases();
    fs::remove_dir_all(dir.path().join("Bank2")).unwrap();
    let (root, notes) = reopen(dir.path());
    assert!(
        notes.contains(&Recovery::BankRecreated {
            bank: BankId::Bank2
        }),
        "{notes:?}"
    );
    assert!(root.bank_dir(BankId::Bank2).is_dir());
    assert_eq!(root.active_bank(), BankId::Bank1);
    assert_eq!(root.state().version_of(BankId::Bank2), None);
    assert!(notes.iter().all(|n| !n.to_string().contains('\n')));
}

#[test]
fn a_deleted_active_bank_falls_back_to_the_other() {
    let dir = two_releases();
    fs::remove_dir_all(dir.path().join("Bank1")).unwrap();
    let (root, notes) = reopen(dir.path());
    assert!(
        notes.contains(&Recovery::BankRecreated {
            bank: BankId::Bank1
        }),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| matches!(n,
        Recovery::FellBack { from: BankId::Bank1, to: BankId::Bank2, reason } if reason == "Bank1 was deleted")));
    assert_eq!(root.active_bank(), BankId::Bank2);
    assert_eq!(root.state().phase, Phase::Committed);
    assert_eq!(Root::read_state(dir.path()).unwrap(), *root.state());
}

#[test]
fn a_deleted_active_record_falls_back_even_during_a_trial() {
    let (dir, mut root) = running();
    let bank = stage(
        &mut root,
        &Artifact::new(app("2.0.0"), ArchiveFormat::Tar),
        "2.0.0",
        2,
    )
    .unwrap();
    assert_eq!(bank, BankId::Bank2);
    root.activate(BankId::Bank2, 5).unwrap();
    drop(root);
    fs::remove_file(dir.path().join("Bank2").join(RECORD_FILE)).unwrap();
    let (root, notes) = reopen(dir.path());
    assert!(
        notes.contains(&Recovery::HalfStagedWiped {
            bank: BankId::Bank2
        }),
        "{notes:?}"
    );
    let fell_back = notes
        .iter()
        .find(|n| matches!(n, Recovery::FellBack { .. }))
        .unwrap();
    assert_eq!(
        fell_back.to_string(),
        "fell back from Bank2 to Bank1: Bank2 held an incomplete release"
    );
    assert_eq!(
        (root.active_bank(), root.state().phase),
        (BankId::Bank1, Phase::Committed)
    );
    assert_eq!(root.state().trial_started, None);
    assert_eq!(
        fs::read_dir(root.bank_dir(BankId::Bank2)).unwrap().count(),
        0
    );
}

#[test]
fn an_active_bank_with_nothing_to_fall_back_to_is_said_so() {
    let (dir, root) = running();
    drop(root);
    fs::remove_dir_all(dir.path().join("Bank1")).unwrap();
    let (root, notes) = reopen(dir.path());
    let empty = notes
        .iter()
        .find(|n| matches!(n, Recovery::ActiveEmpty { .. }))
        .unwrap();
    assert!(
        empty
            .to_string()
            .starts_with("active Bank1 holds no release and Bank2 neither"),
        "{empty}"
    );
    assert_eq!(root.active_bank(), BankId::Bank1);
    assert_eq!(root.state().version_of(BankId::Bank1), None);
}

#[test]
fn a_half_staged_bank_is_wiped() {
    let (dir, root) = running();
    drop(root);
    let idle = dir.path().join("Bank2");
    fs::create_dir_all(idle.join("bin")).unwrap();
    fs::write(idle.join("bin/app"), b"half").unwrap();
    fs::write(idle.join(".bankswap-record.json.bankswap-tmp.1.0"), b"{").unwrap();
    let (root, notes) = reopen(dir.path());
    assert_eq!(
        notes,
        vec![Recovery::HalfStagedWiped {
            bank: BankId::Bank2
        }]
    );
    assert_eq!(notes[0].to_string(), "wiped half-staged Bank2");
    assert_eq!(fs::read_dir(&idle).unwrap().count(), 0);
    assert_eq!(root.active_bank(), BankId::Bank1);
}

#[test]
fn an_unreadable_record_counts_as_half_staged() {
    let dir = two_releases();
    fs::write(dir.path().join("Bank2").join(RECORD_FILE), b"{\"version\":").unwrap();
    let (root, notes) = reopen(dir.path());
    assert!(
        notes.contains(&Recovery::HalfStagedWiped {
            bank: BankId::Bank2
        }),
        "{notes:?}"
    );
    assert!(root.bank_record(BankId::Bank2).is_none());
}

#[test]
fn a_missing_state_is_rebuilt_from_the_records() {
    let dir = two_releases();
    fs::remove_file(dir.path().join("state.json")).unwrap();
    let (root, notes) = reopen(dir.path());
    // Bank2 holds sequence 2, the highest: it becomes active, committed.
    assert_eq!(
        notes,
        vec![Recovery::StateRebuilt {
            active: BankId::Bank2
        }]
    );
    let state = root.state();
    assert_eq!(
        (state.active, state.phase),
        (BankId::Bank2, Phase::Committed)
    );
    assert_eq!(state.version_of(BankId::Bank2), Some("2.0.0"));
    assert_eq!(state.version_of(BankId::Bank1), Some("1.0.0"));
    assert_eq!(state.highest_sequence, 2);
    assert_eq!(state.product.as_deref(), Some("acme-connector"));
    assert_eq!(Root::read_state(dir.path()).unwrap(), *state);
}

#[test]
fn a_corrupt_state_is_refused_and_nothing_is_touched() {
    let dir = two_releases();
    let idle = dir.path().join("Bank2");
    fs::remove_file(idle.join(RECORD_FILE)).unwrap(); // would be wiped by recovery
    let temp = dir.path().join(".state.json.bankswap-tmp.1.0");
    fs::write(&temp, b"half").unwrap(); // would be removed by recovery
    for garbage in [
        &b"{\"schema\": 1, \"active\": \"Ba"[..],
        b"",
        b"[]",
        b"\xff\xfe",
    ] {
        fs::write(dir.path().join("state.json"), garbage).unwrap();
        let before = snapshot(dir.path());
        let error = Root::open(dir.path()).unwrap_err();
        assert!(
            matches!(error, LayoutError::CorruptState { .. }),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(
            text.contains("state.json") && text.contains("remove it"),
            "{text}"
        );
        assert_eq!(snapshot(dir.path()), before, "nothing on disk changed");
        assert!(matches!(
            Root::read_state(dir.path()),
            Err(LayoutError::CorruptState { .. })
        ));
    }
    // The user removes it: it is rebuilt from the records.
    fs::remove_file(dir.path().join("state.json")).unwrap();
    let (root, notes) = reopen(dir.path());
    assert!(
        notes.contains(&Recovery::StateRebuilt {
            active: BankId::Bank1
        }),
        "{notes:?}"
    );
    assert!(
        notes.contains(&Recovery::TempFilesRemoved { count: 1 }),
        "{notes:?}"
    );
    assert!(!temp.exists());
    // Only Bank1 holds a release: it is active; the half-staged Bank2 is wiped.
    assert!(
        notes.contains(&Recovery::HalfStagedWiped {
            bank: BankId::Bank2
        }),
        "{notes:?}"
    );
    assert_eq!(root.active_bank(), BankId::Bank1);
    assert_eq!(root.state().version_of(BankId::Bank1), Some("1.0.0"));
    assert_eq!(root.state().version_of(BankId::Bank2), None);
}

#[test]
fn a_crashed_state_write_leaves_the_old_state() {
    let (dir, root) = running();
    let state = root.state().clone();
    drop(root);
    // A temp file as write_atomic leaves it when killed before the rename.
    fs::write(
        dir.path().join(".state.json.bankswap-tmp.4242.7"),
        b"{\"new\":",
    )
    .unwrap();
    let (root, notes) = reopen(dir.path());
    assert_eq!(notes, vec![Recovery::TempFilesRemoved { count: 1 }]);
    assert_eq!(*root.state(), state);
    assert!(!dir.path().join(".state.json.bankswap-tmp.4242.7").exists());
}

#[test]
fn a_bank_that_is_not_a_folder_is_an_error() {
    let (dir, root) = fresh();
    drop(root);
    fs::remove_dir(dir.path().join("Bank2")).unwrap();
    fs::write(dir.path().join("Bank2"), b"oops").unwrap();
    let error = Root::open(dir.path()).unwrap_err();
    assert!(
        matches!(error, LayoutError::Io { ref path, .. } if path.ends_with("Bank2")),
        "{error:?}"
    );
}

/// How this test process names itself in the lock file: `main-HASH` and its first argument.
fn holder_name() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .unwrap();
    format!("{program} {}", args.next().unwrap_or_default())
        .trim_end()
        .to_owned()
}
