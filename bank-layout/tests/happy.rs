//! The ordinary story: stage, activate, commit, roll back, mark bad — in every format.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use bank_layout::{ArchiveFormat, BankId, LayoutError, Phase, RECORD_FILE, Root};

use crate::support::{Artifact, FORMATS, Node, Payload, app, fresh, running, snapshot, stage};

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn stage_then_activate_then_commit_in_every_format() {
    for format in FORMATS {
        let (_dir, mut root) = fresh();
        let payload = app("1.0.0")
            .file("empty", b"", 0o600)
            .dir("var/", 0o750)
            .file("var/lib/data.bin", &[7u8; 3000], 0o640)
            .dir("lib/v1/", 0o755)
            .file("lib/v1/libx.so", b"ELF", 0o755)
            .symlink("lib/current", "v1")
            .symlink("lib/current-lib", "current/libx.so")
            .hard_link("bin/app-alias", "bin/app");
        let artifact = Artifact::new(payload, format);
        let bank = stage(&mut root, &artifact, "1.0.0", 7).unwrap();
        assert_eq!(bank, BankId::Bank1, "{format}: an empty root fills Bank1");
        // Staging does not activate: no trial starts and no product is pinned.
        let state = root.state();
        assert_eq!(
            (state.active, state.phase, state.trial_started),
            (BankId::Bank1, Phase::Committed, None),
            "staging does not activate"
        );
        assert_eq!(state.product, None, "staging does not activate");
        assert!(root.bank_record(BankId::Bank2).is_none());
        assert_eq!(
            fs::read_dir(root.bank_dir(BankId::Bank2)).unwrap().count(),
            0,
            "{format}: the other bank is not written"
        );

        let b = root.bank_dir(bank);
        assert_eq!(
            fs::read(b.join("bin/app")).unwrap(),
            b"#!/bin/sh\necho 1.0.0\n"
        );
        assert_eq!(mode(&b.join("bin/app")), 0o755);
        assert_eq!(mode(&b.join("empty")), 0o600);
        assert_eq!(mode(&b.join("var")), 0o750);
        assert_eq!(mode(&b.join("var/lib/data.bin")), 0o640);
        assert_eq!(fs::read(b.join("lib/current-lib")).unwrap(), b"ELF");
        assert_eq!(
            fs::read_link(b.join("lib/current")).unwrap(),
            Path::new("v1")
        );
        let app_ino = fs::metadata(b.join("bin/app")).unwrap().ino();
        assert_eq!(
            fs::metadata(b.join("bin/app-alias")).unwrap().ino(),
            app_ino
        );

        let record = root.bank_record(bank).unwrap();
        assert_eq!(record.version, "1.0.0");
        assert_eq!(record.sha256, artifact.sha256);
        assert!(b.join(RECORD_FILE).is_file());
        assert_eq!(root.state().version_of(BankId::Bank1), Some("1.0.0"));
        assert_eq!(Root::read_state(root.dir()).unwrap(), *root.state());

        root.activate(bank, 1234).unwrap();
        let state = root.state();
        assert_eq!((state.active, state.phase), (BankId::Bank1, Phase::Trial));
        assert_eq!(state.trial_started, Some(1234));
        assert_eq!(state.highest_sequence, 7);
        assert_eq!(state.product.as_deref(), Some("acme-connector"));
        root.commit().unwrap();
        assert_eq!(root.state().phase, Phase::Committed);
        assert_eq!(root.state().trial_started, None);
        assert_eq!(Root::read_state(root.dir()).unwrap(), *root.state());
    }
}

#[test]
fn the_first_release_on_an_empty_root_lands_in_bank1_the_second_in_bank2() {
    let (_dir, mut root) = fresh();
    assert_eq!(root.idle_bank(), BankId::Bank1, "an empty root fills Bank1");
    let v1 = Artifact::new(app("1.0.0"), ArchiveFormat::TarGz);
    assert_eq!(stage(&mut root, &v1, "1.0.0", 1).unwrap(), BankId::Bank1);
    assert!(root.bank_record(BankId::Bank2).is_none());
    assert_eq!(
        fs::read_dir(root.bank_dir(BankId::Bank2)).unwrap().count(),
        0
    );
    root.activate(BankId::Bank1, 10).unwrap();
    root.commit().unwrap();
    let bank1 = snapshot(&root.bank_dir(BankId::Bank1));

    // Bank1 holds a release now: the next one goes to the other bank.
    assert_eq!(root.idle_bank(), BankId::Bank2);
    let v2 = Artifact::new(app("2.0.0"), ArchiveFormat::TarGz);
    assert_eq!(stage(&mut root, &v2, "2.0.0", 2).unwrap(), BankId::Bank2);
    assert_eq!(
        snapshot(&root.bank_dir(BankId::Bank1)),
        bank1,
        "the running release is not touched"
    );
    assert_eq!(
        fs::read(root.bank_dir(BankId::Bank2).join("bin/app")).unwrap(),
        b"#!/bin/sh\necho 2.0.0\n"
    );
    let state = root.state();
    assert_eq!(
        (state.active, state.phase),
        (BankId::Bank1, Phase::Committed)
    );
    assert_eq!(state.version_of(BankId::Bank1), Some("1.0.0"));
    assert_eq!(state.version_of(BankId::Bank2), Some("2.0.0"));
    assert_eq!(Root::read_state(root.dir()).unwrap(), *root.state());
}

#[test]
fn update_rollback_and_mark_bad() {
    let (_dir, mut root) = running();
    let v2 = Artifact::new(app("2.0.0"), ArchiveFormat::TarGz);
    assert_eq!(stage(&mut root, &v2, "2.0.0", 2).unwrap(), BankId::Bank2);
    root.update_state(|s| s.pending = None).unwrap();
    root.activate(BankId::Bank2, 50).unwrap();
    assert_eq!(root.state().phase, Phase::Trial);

    // The fallback is kept while on trial.
    let v3 = Artifact::new(app("3.0.0"), ArchiveFormat::Tar);
    assert!(matches!(
        stage(&mut root, &v3, "3.0.0", 3),
        Err(LayoutError::TrialInProgress)
    ));
    assert_eq!(root.bank_record(BankId::Bank1).unwrap().version, "1.0.0");

    assert_eq!(root.rollback().unwrap(), BankId::Bank1);
    root.mark_bad("2.0.0", 2, "health check failed 3 times")
        .unwrap();
    let state = root.state();
    assert_eq!(
        (state.active, state.phase),
        (BankId::Bank1, Phase::Committed)
    );
    assert_eq!(state.bad_versions.len(), 1);
    assert_eq!(state.bad_versions[0].reason, "health check failed 3 times");
    assert_eq!(state.version_of(BankId::Bank2), Some("2.0.0"));
    root.mark_bad("2.0.0", 5, "again").unwrap();
    assert_eq!(root.state().bad_versions.len(), 1);
    assert_eq!(root.state().bad_versions[0].sequence, 5);

    // Rolling back into the version that was marked bad is refused and changes nothing.
    let before = root.state().clone();
    assert!(matches!(
        root.rollback(),
        Err(LayoutError::PreviousMarkedBad { bank: BankId::Bank2, ref version, .. }) if version == "2.0.0"
    ));
    assert_eq!(*root.state(), before);
    assert_eq!(Root::read_state(root.dir()).unwrap(), *root.state());
}

#[test]
fn rollback_works_both_ways_without_network() {
    let (_dir, mut root) = running();
    let v2 = Artifact::new(app("2.0.0"), ArchiveFormat::TarZst);
    assert_eq!(stage(&mut root, &v2, "2.0.0", 2).unwrap(), BankId::Bank2);
    root.activate(BankId::Bank2, 50).unwrap();
    root.commit().unwrap();
    assert_eq!(root.rollback().unwrap(), BankId::Bank1);
    let out = fs::read(root.bank_dir(BankId::Bank1).join("bin/app")).unwrap();
    assert_eq!(out, b"#!/bin/sh\necho 1.0.0\n");
    assert_eq!(root.rollback().unwrap(), BankId::Bank2);
    let out = fs::read(root.bank_dir(BankId::Bank2).join("bin/app")).unwrap();
    assert_eq!(out, b"#!/bin/sh\necho 2.0.0\n");
    assert_eq!(Root::read_state(root.dir()).unwrap(), *root.state());
}

#[test]
fn activate_and_rollback_need_a_release() {
    let (_dir, mut root) = fresh();
    assert!(matches!(
        root.activate(BankId::Bank2, 1),
        Err(LayoutError::NoRecord {
            bank: BankId::Bank2
        })
    ));
    assert!(matches!(root.rollback(), Err(LayoutError::NoPrevious)));
    let (_dir, mut root) = running();
    assert!(matches!(root.rollback(), Err(LayoutError::NoPrevious)));
}

#[test]
fn setuid_setgid_and_sticky_bits_are_dropped() {
    let payload = || {
        Payload::new()
            .file("bin/app", b"#!/bin/sh\n", 0o755)
            .file("suid", b"x", 0o4755)
            .file("sgid", b"x", 0o2750)
            .dir("tmp/", 0o1777)
    };
    for format in FORMATS {
        let (_dir, mut root) = fresh();
        let bank = stage(&mut root, &Artifact::new(payload(), format), "1", 1).unwrap();
        let b = root.bank_dir(bank);
        assert_eq!(mode(&b.join("suid")), 0o755);
        assert_eq!(mode(&b.join("sgid")), 0o750);
        // Group and others never write into a bank: only the agent does (issue 8.8).
        assert_eq!(mode(&b.join("tmp")), 0o755);
    }
}

#[test]
fn read_only_folders_are_filled_then_locked_and_can_be_replaced() {
    let payload = || {
        Payload::new()
            .file("bin/app", b"#!/bin/sh\n", 0o755)
            .dir("ro/", 0o555)
            .file("ro/inside", b"data", 0o444)
            .dir("ro/deeper/", 0o500)
            .file("ro/deeper/f", b"f", 0o400)
    };
    let (_dir, mut root) = running();
    let bank = stage(
        &mut root,
        &Artifact::new(payload(), ArchiveFormat::Tar),
        "2",
        2,
    )
    .unwrap();
    let b = root.bank_dir(bank);
    assert_eq!(mode(&b.join("ro")), 0o555);
    assert_eq!(mode(&b.join("ro/deeper")), 0o500);
    assert_eq!(fs::read(b.join("ro/inside")).unwrap(), b"data");
    // Staging again wipes the read-only tree first.
    let bank2 = stage(
        &mut root,
        &Artifact::new(app("3"), ArchiveFormat::Tar),
        "3",
        3,
    )
    .unwrap();
    assert_eq!(bank2, bank);
    assert!(!b.join("ro").exists());
}

#[test]
fn archives_made_with_tar_c_dot_extract() {
    let payload = Payload::new()
        .file("bin/app", b"#!/bin/sh\n", 0o755)
        .dir("./", 0o700)
        .dir("./bin/", 0o755)
        .file("./bin/app", b"app", 0o755)
        .file("./.bankswap-other", b"fine", 0o644)
        .file("sub/.bankswap-record.json", b"not at the top: fine", 0o644);
    let (_dir, mut root) = fresh();
    let before = mode(&root.bank_dir(BankId::Bank1));
    let bank = stage(
        &mut root,
        &Artifact::new(payload, ArchiveFormat::TarZst),
        "1",
        1,
    )
    .unwrap();
    assert_eq!(bank, BankId::Bank1);
    let b = root.bank_dir(bank);
    assert_eq!(fs::read(b.join("bin/app")).unwrap(), b"app");
    assert!(b.join("sub/.bankswap-record.json").is_file());
    assert_eq!(mode(&b), before, "`./` does not change the bank folder");
}

#[test]
fn long_names_from_gnu_and_pax_headers() {
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
    let pax_name = format!("{}/pax-file", "p".repeat(150));
    for format in FORMATS {
        let payload = Payload::new()
            .file("bin/app", b"#!/bin/sh\n", 0o755)
            .long_file(&long, b"gnu")
            .pax_file(&pax_name, b"pax");
        let (_dir, mut root) = fresh();
        let bank = stage(&mut root, &Artifact::new(payload, format), "1", 1).unwrap();
        let b = root.bank_dir(bank);
        assert_eq!(fs::read(b.join(&long)).unwrap(), b"gnu");
        assert_eq!(fs::read(b.join(&pax_name)).unwrap(), b"pax");
        assert!(!b.join("short-name").exists());
    }
}

#[test]
fn a_repeated_entry_takes_the_last_content_and_hard_links_keep_theirs() {
    let payload = Payload::new()
        .file("bin/app", b"#!/bin/sh\n", 0o755)
        .file("a", b"first", 0o644)
        .hard_link("b", "a")
        .file("a", b"second", 0o600)
        .symlink("l", "a")
        .symlink("l", "b");
    let (_dir, mut root) = fresh();
    let bank = stage(
        &mut root,
        &Artifact::new(payload, ArchiveFormat::Tar),
        "1",
        1,
    )
    .unwrap();
    let b = root.bank_dir(bank);
    assert_eq!(fs::read(b.join("a")).unwrap(), b"second");
    assert_eq!(mode(&b.join("a")), 0o600);
    assert_eq!(fs::read(b.join("b")).unwrap(), b"first");
    assert_eq!(fs::read_link(b.join("l")).unwrap(), Path::new("b"));
}

#[test]
fn big_files_stream_in_chunks_and_progress_is_reported() {
    // 3 MiB of incompressible data: many chunks, a few progress calls.
    let mut data = vec![0u8; 3 << 20];
    let mut x: u32 = 1;
    for byte in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *byte = x as u8;
    }
    for format in FORMATS {
        let artifact = Artifact::new(
            Payload::new()
                .file("bin/app", b"#!/bin/sh\n", 0o755)
                .file("big.bin", &data, 0o644),
            format,
        );
        let (_dir, mut root) = fresh();
        let mut calls = Vec::new();
        let bank = root
            .stage(artifact.bytes.as_slice(), artifact.spec("1", 1), &mut |n| {
                calls.push(n)
            })
            .unwrap();
        assert!(
            fs::read(root.bank_dir(bank).join("big.bin")).unwrap() == data,
            "{format}"
        );
        assert_eq!(
            calls.last().copied(),
            Some(artifact.bytes.len() as u64),
            "{format}"
        );
        assert!(calls.windows(2).all(|w| w[0] < w[1]), "{format}: {calls:?}");
        assert!(
            (3..=4).contains(&calls.len()),
            "{format}: about every MiB: {calls:?}"
        );
    }
}

#[test]
fn update_state_persists_but_cannot_contradict_the_records() {
    let (dir, mut root) = running();
    root.update_state(|s| {
        s.last_check = Some(99);
        s.last_error = Some("console unreachable".into());
        s.bank1_version = Some("9.9.9".into());
        s.bank2_version = Some("bogus".into());
    })
    .unwrap();
    let on_disk = Root::read_state(dir.path()).unwrap();
    assert_eq!(on_disk.last_check, Some(99));
    assert_eq!(on_disk.version_of(BankId::Bank1), Some("1.0.0"));
    assert_eq!(on_disk.version_of(BankId::Bank2), None);
    assert_eq!(on_disk, *root.state());

    drop(root);
    let (root, notes) = Root::open(dir.path()).unwrap();
    assert_eq!(notes, vec![]);
    assert_eq!(*root.state(), on_disk);
    let bank = snapshot(&root.bank_dir(BankId::Bank1));
    assert!(matches!(
        bank.get(Path::new("bin/app")),
        Some(Node::File { mode: 0o755, .. })
    ));
}

#[test]
fn an_idle_bank_deleted_by_hand_does_not_break_updating() {
    let (_dir, mut root) = running();
    fs::remove_dir_all(root.bank_dir(BankId::Bank2)).unwrap();
    let v2 = Artifact::new(app("2.0.0"), ArchiveFormat::TarZst);
    assert_eq!(stage(&mut root, &v2, "2.0.0", 2).unwrap(), BankId::Bank2);
    assert!(root.bank_dir(BankId::Bank2).join("bin/app").is_file());
}

#[test]
fn roots_and_errors_can_cross_threads() {
    fn send<T: Send>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    send::<Root>();
    error::<LayoutError>();
}

#[test]
fn activate_committed_is_one_write_with_no_trial() {
    let (_dir, mut root) = running();
    let v2 = Artifact::new(app("2.0.0"), ArchiveFormat::TarZst);
    assert_eq!(stage(&mut root, &v2, "2.0.0", 2).unwrap(), BankId::Bank2);
    root.activate_committed(BankId::Bank2).unwrap();
    let state = Root::read_state(root.dir()).unwrap();
    assert_eq!(
        (state.active, state.phase),
        (BankId::Bank2, Phase::Committed)
    );
    assert_eq!(state.trial_started, None);
    assert_eq!(state.highest_sequence, 2);
    assert!(matches!(root.activate_committed(BankId::Bank1), Ok(())));
}

#[test]
fn latest_time_rises_with_staging_times_and_is_never_lowered() {
    let (dir, mut root) = running();
    // The running bank was staged at 1_700_000_000 (support's record).
    assert_eq!(root.state().latest_time, Some(1_700_000_000));
    root.update_state(|s| s.note_time(1_800_000_000)).unwrap();
    assert_eq!(root.state().latest_time, Some(1_800_000_000));
    // Neither an older time nor a caller writing a lower value lowers it.
    root.update_state(|s| s.note_time(1_750_000_000)).unwrap();
    root.update_state(|s| s.latest_time = Some(5)).unwrap();
    root.update_state(|s| s.latest_time = None).unwrap();
    assert_eq!(root.state().latest_time, Some(1_800_000_000));
    assert_eq!(
        Root::read_state(dir.path()).unwrap().latest_time,
        Some(1_800_000_000)
    );
}
