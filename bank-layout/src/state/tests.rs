//! Unit tests of `state`.

use super::*;

#[test]
fn note_time_keeps_the_latest() {
    let mut state = State::default();
    assert_eq!(state.latest_time, None);
    state.note_time(20);
    state.note_time(10);
    assert_eq!(state.latest_time, Some(20));
    state.note_time(30);
    assert_eq!(state.latest_time, Some(30));
    // An old state.json without the field reads as "nothing seen".
    let old = r#"{"schema":1,"active":"Bank1","phase":"committed","highest_sequence":0}"#;
    assert!(matches!(serde_json::from_str::<State>(old), Ok(s) if s.latest_time.is_none()));
}

#[test]
fn state_round_trips_and_uses_contract_names() {
    let mut state = State {
        active: BankId::Bank2,
        phase: Phase::Trial,
        ..State::default()
    };
    state.bank2_version = Some("1.4.2".into());
    let bytes = state.to_bytes().unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("\"active\": \"Bank2\""), "{text}");
    assert!(text.contains("\"phase\": \"trial\""), "{text}");
    assert!(text.ends_with("}\n"));
    let parsed = State::parse(Path::new("state.json"), &bytes);
    assert!(matches!(parsed, Ok(ref s) if *s == state), "{parsed:?}");
}

#[test]
fn optional_fields_may_be_missing() {
    let text = br#"{"schema":1,"active":"Bank1","phase":"committed","highest_sequence":3}"#;
    let parsed = State::parse(Path::new("s"), text);
    assert!(matches!(parsed, Ok(ref s) if s.highest_sequence == 3 && s.pending.is_none()));
}

#[test]
fn unknown_schema_and_garbage_are_corrupt() {
    let text = br#"{"schema":2,"active":"Bank1","phase":"committed","highest_sequence":0}"#;
    let parsed = State::parse(Path::new("s"), text);
    assert!(
        matches!(parsed, Err(LayoutError::CorruptState { ref reason, .. }) if reason.contains("schema 2"))
    );
    assert!(matches!(
        State::parse(Path::new("s"), b"{\"schema\":1,"),
        Err(LayoutError::CorruptState { .. })
    ));
}

#[test]
fn sync_follows_the_records() {
    let mut state = State {
        bank1_version: Some("1.0.0".into()),
        ..State::default()
    };
    let record = BankRecord {
        version: "2.0.0".into(),
        sequence: 9,
        ..BankRecord::default()
    };
    let changed = state.sync_with(&[None, Some(record)]);
    assert_eq!(state.bank1_version, None);
    assert_eq!(state.bank2_version.as_deref(), Some("2.0.0"));
    assert_eq!(state.highest_sequence, 9);
    assert_eq!(
        changed,
        vec![
            (BankId::Bank1, Some("1.0.0".to_owned())),
            (BankId::Bank2, None)
        ]
    );
}

#[test]
fn records_that_are_not_ours_read_as_none() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(BankRecord::read(dir.path()), Ok(None)));
    std::fs::write(dir.path().join(RECORD_FILE), b"not json").unwrap();
    assert!(matches!(BankRecord::read(dir.path()), Ok(None)));
    let record = BankRecord {
        version: "1.0.0".into(),
        ..BankRecord::default()
    };
    std::fs::write(dir.path().join(RECORD_FILE), record.to_bytes().unwrap()).unwrap();
    assert!(matches!(BankRecord::read(dir.path()), Ok(Some(r)) if r == record));
}

#[test]
fn one_bad_version_rule() {
    let bad = [BadVersion {
        version: "1.2.0".into(),
        sequence: 7,
        reason: "r".into(),
    }];
    assert!(marked_bad(&bad, "1.2.0", 7).is_some());
    assert!(marked_bad(&bad, "1.2.0", 3).is_some());
    assert!(
        marked_bad(&bad, "1.2.0", 8).is_none(),
        "re-published higher"
    );
    assert!(marked_bad(&bad, "1.2.1", 7).is_none());
    let odd = [BadVersion {
        version: "not-semver".into(),
        sequence: 1,
        reason: "r".into(),
    }];
    assert!(marked_bad(&odd, "not-semver", 1).is_some());
}

#[test]
fn the_state_stays_bounded() {
    let mut state = State::default();
    for i in 0..50_000u64 {
        state.add_bad(&format!("1.0.{i}"), i, &"x".repeat(5000));
        state.bound();
    }
    state.last_error = Some("e".repeat(1 << 20));
    state.bound();
    assert_eq!(state.bad_versions.len(), MAX_BAD_VERSIONS);
    assert_eq!(state.bad_versions.last().map(|b| b.sequence), Some(49_999));
    assert!(
        state
            .last_error
            .as_ref()
            .is_some_and(|e| e.len() <= MAX_NOTE_BYTES)
    );
    let bytes = state.to_bytes().unwrap();
    assert!(
        (bytes.len() as u64) < MAX_STATE_BYTES / 16,
        "{}",
        bytes.len()
    );
    // A repeated mark moves to the newest place and keeps the higher sequence.
    state.add_bad("1.0.49968", 1, "again");
    let last = state.bad_versions.last().unwrap();
    assert_eq!(
        (last.version.as_str(), last.sequence),
        ("1.0.49968", 49_968)
    );
    assert_eq!(bounded_note("a\nb"), "a b");
}
