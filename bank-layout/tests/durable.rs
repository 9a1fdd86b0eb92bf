//! Durability (SPEC §3, §13; issues 8 and 9): staging through a scratch folder keeps
//! both banks until the release is complete, every crash point of the swap is repaired
//! at open, the unpacked bounds and the space check hold before a byte is written,
//! modes are explicit whatever the umask, `inspect` reads without locking or writing,
//! and a rollback with its bad mark is one write.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bank_layout::{
    ArchiveFormat, BankId, LayoutError, RECORD_FILE, Recovery, Root, SCRATCH_DIR, SpacePlan,
    StageSpec,
};
use tar::EntryType;

use crate::support::{Artifact, Payload, app, compress, running, snapshot, stage};

/// A root running 1.0.0 (seq 1) in Bank1 with 2.0.0 (seq 2) staged in Bank2, open.
fn two_releases() -> (tempfile::TempDir, Root) {
    let (dir, mut root) = running();
    let bank = stage(
        &mut root,
        &Artifact::new(app("2.0.0"), ArchiveFormat::Tar),
        "2.0.0",
        2,
    )
    .unwrap();
    assert_eq!(bank, BankId::Bank2);
    (dir, root)
}

/// Names in the root folder, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Copies the bank folder `from` to `to` (files, folders and symlinks).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&src, &dst);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

#[test]
fn a_failed_staging_of_any_kind_leaves_both_banks_and_the_state() {
    let good = Artifact::new(app("3.0.0"), ArchiveFormat::TarZst);
    let mut wrong_digest = Artifact::new(app("3.0.0"), ArchiveFormat::TarZst);
    wrong_digest.sha256 = "00".repeat(32);
    let hostile = Artifact::new(
        app("3.0.0").raw(b"../escape", EntryType::Regular, 0o644, b"x", b""),
        ArchiveFormat::TarZst,
    );
    let no_program = Artifact::new(
        Payload::new().file("etc/app.conf", b"x", 0o644),
        ArchiveFormat::TarZst,
    );
    let cases: Vec<(&str, &[u8], &Artifact)> = vec![
        ("truncated", &good.bytes[..good.bytes.len() / 2], &good),
        ("digest", &wrong_digest.bytes, &wrong_digest),
        ("hostile", &hostile.bytes, &hostile),
        ("entrypoint", &no_program.bytes, &no_program),
    ];
    for (case, bytes, artifact) in cases {
        let (dir, mut root) = two_releases();
        let banks = [
            snapshot(&root.bank_dir(BankId::Bank1)),
            snapshot(&root.bank_dir(BankId::Bank2)),
        ];
        let state = fs::read(dir.path().join("state.json")).unwrap();
        let names_before = names(dir.path());
        let error = root
            .stage(bytes, artifact.spec("3.0.0", 3), &mut |_| {})
            .unwrap_err();
        assert_eq!(snapshot(&root.bank_dir(BankId::Bank1)), banks[0], "{case}");
        assert_eq!(snapshot(&root.bank_dir(BankId::Bank2)), banks[1], "{case}");
        assert_eq!(
            fs::read(dir.path().join("state.json")).unwrap(),
            state,
            "{case}"
        );
        assert_eq!(names(dir.path()), names_before, "{case}: {error}");
        // The rollback target is still there: rollback works.
        assert_eq!(root.rollback().unwrap(), BankId::Bank2, "{case}");
    }
}

#[test]
fn a_missing_entrypoint_is_refused_before_the_bank_is_valid() {
    let (_dir, mut root) = running();
    for (payload, reason) in [
        (
            Payload::new().file("etc/app.conf", b"x", 0o644),
            "does not exist",
        ),
        (
            Payload::new().file("bin/app", b"x", 0o644),
            "is not executable",
        ),
        (
            Payload::new()
                .file("etc/app.conf", b"x", 0o644)
                .symlink("bin/app", "../etc/app.conf"),
            "is not executable",
        ),
        (
            Payload::new().dir("bin/app/", 0o755),
            "is not a regular file",
        ),
    ] {
        let artifact = Artifact::new(payload, ArchiveFormat::Tar);
        let error = stage(&mut root, &artifact, "2.0.0", 2).unwrap_err();
        match &error {
            LayoutError::BadEntrypoint { command, reason: r } => {
                assert_eq!(command, "bin/app");
                assert!(r.contains(reason), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert!(root.bank_record(BankId::Bank2).is_none());
    }
    // A symlink to the program inside the bank is fine.
    let linked = Payload::new()
        .file("libexec/app-1", b"#!/bin/sh\n", 0o755)
        .symlink("bin/app", "../libexec/app-1");
    let artifact = Artifact::new(linked, ArchiveFormat::Tar);
    assert_eq!(
        stage(&mut root, &artifact, "2.0.0", 2).unwrap(),
        BankId::Bank2
    );
}

/// A tar whose one file claims `claimed` bytes, followed by `zeros` bytes of zeros
/// compressed one MiB per zstd frame (about 40 bytes each): a bomb.
fn zstd_bomb(claimed: u64, zeros: u64) -> Artifact {
    let header = Payload::new()
        .file("bin/app", b"#!/bin/sh\n", 0o755)
        .claim(b"zeros", EntryType::Regular, claimed)
        .tar();
    // Without the two end blocks: the zeros are the claimed file's data.
    let mut bytes = compress(&header[..header.len() - 1024], ArchiveFormat::TarZst);
    let frame = compress(&vec![0; 1 << 20], ArchiveFormat::TarZst);
    for _ in 0..zeros >> 20 {
        bytes.extend_from_slice(&frame);
    }
    Artifact::signed(ArchiveFormat::TarZst, bytes)
}

#[test]
fn a_bomb_stops_at_the_announced_unpacked_size() {
    let (dir, mut root) = two_releases();
    let state = fs::read(dir.path().join("state.json")).unwrap();
    let bomb = zstd_bomb(64 << 20, 64 << 20);
    let spec = StageSpec {
        unpacked_size: Some(1 << 20),
        ..bomb.spec("3.0.0", 3)
    };
    let error = root
        .stage(bomb.bytes.as_slice(), spec, &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(
            error,
            LayoutError::UnpackedTooLarge {
                limit: 1_048_576,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(fs::read(dir.path().join("state.json")).unwrap(), state);
    assert!(!dir.path().join(SCRATCH_DIR).exists());
    // Within the bound, the same bytes unpack.
    let honest = Artifact::new(
        app("3.0.0").file("data", &[7; 5000], 0o644),
        ArchiveFormat::TarZst,
    );
    let spec = StageSpec {
        unpacked_size: Some(5000 + 100),
        entries: Some(4),
        ..honest.spec("3.0.0", 3)
    };
    assert_eq!(
        root.stage(honest.bytes.as_slice(), spec, &mut |_| {})
            .unwrap(),
        BankId::Bank2
    );
}

#[test]
fn eight_gib_of_zeros_stop_at_the_fallback_bound_before_a_byte_is_written() {
    // No unpacked_size announced (an older manifest): the fallback bound applies. The
    // claimed 8 GiB exceed it, so the entry is refused at its header.
    let (dir, mut root) = two_releases();
    let bomb = zstd_bomb(8 << 30, 8 << 20);
    assert!((bomb.bytes.len() as u64) * bank_layout::FALLBACK_EXPANSION < 8 << 30);
    let error = root
        .stage(bomb.bytes.as_slice(), bomb.spec("3.0.0", 3), &mut |_| {})
        .unwrap_err();
    match &error {
        LayoutError::UnpackedTooLarge { limit, basis } => {
            assert_eq!(*limit, bank_layout::FALLBACK_MIN_UNPACKED);
            assert!(basis.contains("no unpacked_size"), "{basis}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!dir.path().join(SCRATCH_DIR).exists());
}

#[test]
fn more_entries_than_announced_are_refused() {
    let (_dir, mut root) = running();
    let artifact = Artifact::new(app("2.0.0"), ArchiveFormat::Tar);
    let spec = StageSpec {
        entries: Some(2),
        ..artifact.spec("2.0.0", 2)
    };
    let error = root
        .stage(artifact.bytes.as_slice(), spec, &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(error, LayoutError::TooManyEntries { limit: 2, .. }),
        "{error:?}"
    );
}

#[test]
fn no_room_is_refused_before_anything_is_written() {
    let (dir, mut root) = two_releases();
    let names_before = names(dir.path());
    let artifact = Artifact::new(app("3.0.0"), ArchiveFormat::Tar);
    let spec = StageSpec {
        unpacked_size: Some(1 << 60),
        ..artifact.spec("3.0.0", 3)
    };
    assert!(matches!(
        root.space_plan(&spec).unwrap(),
        SpacePlan::NoRoom { .. }
    ));
    let error = root
        .stage(artifact.bytes.as_slice(), spec, &mut |_| {})
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, LayoutError::NoRoom { .. }), "{error:?}");
    assert!(text.contains("needs 1099511627777 MiB"), "{text}");
    assert_eq!(names(dir.path()), names_before);
    assert_eq!(root.bank_record(BankId::Bank2).unwrap().version, "2.0.0");
    let spec = artifact.spec("3.0.0", 3);
    assert!(matches!(
        root.space_plan(&spec).unwrap(),
        SpacePlan::Scratch { .. }
    ));
}

#[test]
fn a_crash_during_extraction_leaves_a_scratch_folder_that_open_removes() {
    let (dir, root) = two_releases();
    let banks = [
        snapshot(&root.bank_dir(BankId::Bank1)),
        snapshot(&root.bank_dir(BankId::Bank2)),
    ];
    drop(root);
    fs::create_dir_all(dir.path().join(SCRATCH_DIR).join("bin")).unwrap();
    fs::write(dir.path().join(SCRATCH_DIR).join("bin/half"), b"hal").unwrap();
    fs::write(dir.path().join(".staging-links.999"), b"").unwrap();
    let (root, notes) = Root::open(dir.path()).unwrap();
    assert_eq!(notes, vec![Recovery::ScratchRemoved]);
    assert!(!dir.path().join(SCRATCH_DIR).exists());
    assert!(!dir.path().join(".staging-links.999").exists());
    assert_eq!(snapshot(&root.bank_dir(BankId::Bank1)), banks[0]);
    assert_eq!(snapshot(&root.bank_dir(BankId::Bank2)), banks[1]);
    assert_eq!(root.state().version_of(BankId::Bank2), Some("2.0.0"));
}

/// A root with 2.0.0 in Bank2 and a complete staged 3.0.0 in the scratch folder, as
/// after step 1 of a staging; closed. Returns the scratch and the old Bank2 snapshots.
fn staged_but_not_swapped() -> (tempfile::TempDir, PathBuf) {
    let (dir, root) = two_releases();
    // Stage 3.0.0 in another root to get a complete bank to play the scratch folder.
    let (other, mut other_root) = running();
    stage(
        &mut other_root,
        &Artifact::new(app("3.0.0"), ArchiveFormat::Tar),
        "3.0.0",
        3,
    )
    .unwrap();
    copy_tree(
        &other_root.bank_dir(BankId::Bank2),
        &dir.path().join(SCRATCH_DIR),
    );
    drop((root, other_root, other));
    let scratch = dir.path().join(SCRATCH_DIR);
    (dir, scratch)
}

#[test]
fn a_crash_between_the_two_renames_puts_the_old_bank_back() {
    let (dir, _scratch) = staged_but_not_swapped();
    let old = snapshot(&dir.path().join("Bank2"));
    // Step 2 done (Bank2 renamed aside), step 3 not.
    fs::rename(dir.path().join("Bank2"), dir.path().join(".retired-Bank2")).unwrap();
    // Status in between shows the version that will be back, without touching anything.
    let names_before = names(dir.path());
    let view = Root::inspect(dir.path()).unwrap();
    assert_eq!(view.state.version_of(BankId::Bank2), Some("2.0.0"));
    assert_eq!(names(dir.path()), names_before);
    let (root, notes) = Root::open(dir.path()).unwrap();
    assert_eq!(
        notes,
        vec![
            Recovery::BankRestored {
                bank: BankId::Bank2
            },
            Recovery::ScratchRemoved
        ]
    );
    assert_eq!(snapshot(&dir.path().join("Bank2")), old);
    assert_eq!(root.state().version_of(BankId::Bank2), Some("2.0.0"));
    assert_eq!(names(dir.path()), ["Bank1", "Bank2", "lock", "state.json"]);
}

#[test]
fn a_crash_after_the_second_rename_keeps_the_new_release() {
    let (dir, scratch) = staged_but_not_swapped();
    let new = snapshot(&scratch);
    fs::rename(dir.path().join("Bank2"), dir.path().join(".retired-Bank2")).unwrap();
    fs::rename(&scratch, dir.path().join("Bank2")).unwrap();
    let (root, notes) = Root::open(dir.path()).unwrap();
    assert_eq!(
        notes,
        vec![
            Recovery::RetiredRemoved {
                bank: BankId::Bank2
            },
            Recovery::VersionCorrected {
                bank: BankId::Bank2,
                listed: Some("2.0.0".into()),
                actual: Some("3.0.0".into())
            }
        ]
    );
    assert_eq!(snapshot(&dir.path().join("Bank2")), new);
    assert!(new.contains_key(Path::new(RECORD_FILE)));
    assert_eq!(root.state().version_of(BankId::Bank2), Some("3.0.0"));
    assert_eq!(names(dir.path()), ["Bank1", "Bank2", "lock", "state.json"]);
}

#[test]
fn modes_are_explicit_under_umask_000() {
    // SAFETY: umask only changes this process's file creation mask; every mode checked
    // below is set explicitly by the layout, so the other tests do not depend on it.
    let old = unsafe { libc::umask(0) };
    let (dir, mut root) = running();
    let artifact = Artifact::new(
        app("2.0.0")
            .file("lib/deep/implied.so", b"x", 0o666)
            .dir("share/", 0o777),
        ArchiveFormat::Tar,
    );
    let bank = stage(&mut root, &artifact, "2.0.0", 2).unwrap();
    unsafe { libc::umask(old) };
    let b = root.bank_dir(bank);
    for (path, want) in [
        (dir.path().join("lock"), 0o600),
        (dir.path().join("state.json"), 0o600),
        (b.join(RECORD_FILE), 0o600),
        (dir.path().join("Bank1"), 0o755),
        (b.clone(), 0o755),
        (b.join("bin/app"), 0o755),
        (b.join("lib"), 0o755),
        (b.join("lib/deep"), 0o755),
        (b.join("lib/deep/implied.so"), 0o644),
        (b.join("share"), 0o755),
    ] {
        assert_eq!(mode(&path), want, "{}", path.display());
    }
}

#[test]
fn inspect_takes_no_lock_writes_nothing_and_shows_only_what_is_on_disk() {
    let (dir, root) = two_releases();
    // While the root is held (a running agent), inspect still reads it.
    let view = Root::inspect(dir.path()).unwrap();
    assert_eq!(view.state, *root.state());
    assert!(view.has_state_file);
    drop(root);
    // Without state.json: derived from the records, nothing created.
    fs::remove_file(dir.path().join("state.json")).unwrap();
    fs::remove_dir_all(dir.path().join("Bank2")).unwrap();
    let before = names(dir.path());
    let view = Root::inspect(dir.path()).unwrap();
    assert!(!view.has_state_file);
    assert_eq!(view.state.active, BankId::Bank1);
    assert_eq!(view.state.version_of(BankId::Bank1), Some("1.0.0"));
    assert_eq!(
        view.state.version_of(BankId::Bank2),
        None,
        "never what is not on disk"
    );
    assert_eq!(names(dir.path()), before);
    // An empty folder is an uninitialised root; a missing one is an error.
    let empty = tempfile::tempdir().unwrap();
    let view = Root::inspect(empty.path()).unwrap();
    assert_eq!(view.state.version_of(BankId::Bank1), None);
    assert_eq!(names(empty.path()), Vec::<String>::new());
    assert!(Root::inspect(&empty.path().join("missing")).is_err());
    assert!(!empty.path().join("missing").exists());
}

#[test]
fn open_waiting_waits_for_a_short_holder_and_names_a_long_one() {
    let (dir, root) = running();
    let error = Root::open_waiting(dir.path(), Duration::from_millis(100)).unwrap_err();
    match &error {
        LayoutError::Locked { holder, .. } => {
            let holder = holder.as_deref().unwrap_or_default();
            assert!(
                holder.starts_with(&format!("pid {}", std::process::id())),
                "{holder}"
            );
        }
        other => panic!("{other:?}"),
    }
    let path = dir.path().to_path_buf();
    let waiter =
        std::thread::spawn(move || Root::open_waiting(&path, Duration::from_secs(60)).map(|_| ()));
    drop(root); // the short-lived holder lets go, whenever the waiter started
    assert!(waiter.join().unwrap().is_ok());
}

#[test]
fn a_rollback_and_its_bad_mark_are_one_write() {
    let (dir, mut root) = two_releases();
    root.activate(BankId::Bank2, 100).unwrap();
    let done = root.rollback_marking_bad("health check failed").unwrap();
    assert_eq!(
        (done.to, done.from, done.left.as_deref()),
        (BankId::Bank1, BankId::Bank2, Some("2.0.0"))
    );
    // What is on disk is both changes at once.
    let on_disk = Root::read_state(dir.path()).unwrap();
    assert_eq!(on_disk.active, BankId::Bank1);
    assert_eq!(on_disk.bad_versions.len(), 1);
    assert_eq!(on_disk.bad_versions[0].version, "2.0.0");
    assert_eq!(on_disk.bad_versions[0].reason, "health check failed");
    // The same rule refuses rolling back into it.
    assert!(matches!(
        root.rollback_marking_bad("again"),
        Err(LayoutError::PreviousMarkedBad { .. })
    ));
}

#[test]
fn an_in_place_plan_is_reported_for_the_caller_to_show() {
    // The decision itself is unit-tested in `space`; here the plan of a real root.
    let (_dir, root) = two_releases();
    let artifact = Artifact::new(app("3.0.0"), ArchiveFormat::Tar);
    let plan = root.space_plan(&artifact.spec("3.0.0", 3)).unwrap();
    assert!(matches!(plan, SpacePlan::Scratch { needed, free } if free >= needed));
}

/// Writes a line to stderr so the memory test's child shows what it measured.
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

#[test]
fn staging_300000_entries_stays_within_32_mib() {
    crate::memory::run_child_and_check(note);
}
