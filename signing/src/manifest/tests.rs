//! Unit tests of `manifest`.

use super::*;

/// The example manifest of SPEC §4, with a real-looking digest.
const SPEC_EXAMPLE: &str = r#"{
  "schema": 1,
  "product": "acme-connector",
  "channel": "stable",
  "sequence": 42,
  "version": "1.4.2",
  "published_at": "2026-11-22T10:00:00Z",
  "expires_at": "2026-12-22T10:00:00Z",
  "artifact": { "path": "artifacts/abc.tar.zst", "size": 73400320,
                "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "format": "tar.zst" },
  "entrypoint": { "command": "bin/connector", "args": ["--serve"] },
  "rollout": { "start": "2026-11-22T10:00:00Z", "duration": "6h" },
  "downgrade": false
}"#;

fn example() -> Manifest {
    Manifest::from_json(SPEC_EXAMPLE.as_bytes()).unwrap()
}

#[test]
fn spec_example_parses() {
    let m = example();
    assert_eq!(m.sequence, 42);
    assert_eq!(m.version, Version::new(1, 4, 2));
    assert_eq!(m.artifact.format, ArtifactFormat::TarZst);
    assert_eq!(m.entrypoint.args, ["--serve"]);
    assert_eq!(
        m.rollout.as_ref().unwrap().duration,
        Duration::from_secs(6 * 3600)
    );
    assert_eq!(
        crate::wire_time::format_rfc3339(m.expires_at),
        "2026-12-22T10:00:00Z"
    );
}

#[test]
fn to_json_round_trips_and_ends_with_a_newline() {
    let m = example();
    let json = m.to_json();
    assert!(json.ends_with(b"}\n"));
    let text = String::from_utf8(json.clone()).unwrap();
    assert!(text.contains("\"expires_at\": \"2026-12-22T10:00:00Z\""));
    assert!(text.contains("\"duration\": \"6h\""));
    assert!(text.contains("\"format\": \"tar.zst\""));
    assert_eq!(Manifest::from_json(&json).unwrap(), m);
}

#[test]
fn optional_fields_default_and_rollout_is_omitted() {
    let mut value: serde_json::Value = serde_json::from_str(SPEC_EXAMPLE).unwrap();
    let object = value.as_object_mut().unwrap();
    object.remove("rollout");
    object.remove("downgrade");
    object["entrypoint"].as_object_mut().unwrap().remove("args");
    let m = Manifest::from_json(value.to_string().as_bytes()).unwrap();
    assert_eq!((m.rollout.clone(), m.downgrade), (None, false));
    assert!(m.entrypoint.args.is_empty());
    assert!(!String::from_utf8(m.to_json()).unwrap().contains("rollout"));
}

#[test]
fn every_format_has_its_wire_name() {
    for (format, name) in [
        (ArtifactFormat::Tar, "\"tar\""),
        (ArtifactFormat::TarGz, "\"tar.gz\""),
        (ArtifactFormat::TarZst, "\"tar.zst\""),
    ] {
        assert_eq!(serde_json::to_string(&format).unwrap(), name);
        assert_eq!(
            serde_json::from_str::<ArtifactFormat>(name).unwrap(),
            format
        );
    }
    assert!(serde_json::from_str::<ArtifactFormat>("\"zip\"").is_err());
}

/// Parses the example after `edit` changed its JSON.
fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> Result<Manifest, ReleaseError> {
    let mut value: serde_json::Value = serde_json::from_str(SPEC_EXAMPLE).unwrap();
    edit(&mut value);
    Manifest::from_json(value.to_string().as_bytes())
}

fn assert_malformed(result: Result<Manifest, ReleaseError>, needle: &str) {
    let err = result.unwrap_err();
    assert!(
        matches!(&err, ReleaseError::Malformed { reason } if reason.contains(needle)),
        "{err}"
    );
}

#[test]
fn unknown_fields_are_ignored_at_every_level() {
    let m = edited(|v| {
        v["extra"] = 1.into();
        v["artifact"]["index"] = "artifacts/x.index".into();
        v["entrypoint"]["env"] = 1.into();
        v["rollout"]["jitter"] = 1.into();
    })
    .unwrap();
    assert_eq!(m, example());
}

#[test]
fn a_newer_schema_says_to_update_the_agent_first() {
    // Read before the rest: a newer manifest may have changed any field.
    assert_malformed(
        edited(|v| {
            v["schema"] = 2.into();
            v["artifact"] = "changed in schema 2".into();
        }),
        "schema 2 is newer than this agent's (1): update the agent first",
    );
    assert_malformed(
        edited(|v| v["schema"] = 0.into()),
        "schema 0 is not supported",
    );
}

#[test]
fn kind_platform_and_unpacked_sizes_round_trip() {
    let m = example();
    assert_eq!(
        (m.kind, m.platform.as_deref()),
        (ReleaseKind::Payload, None)
    );
    assert_eq!((m.artifact.unpacked_size, m.artifact.entries), (None, None));
    let text = String::from_utf8(m.to_json()).unwrap();
    assert!(
        !text.contains("kind") && !text.contains("platform"),
        "{text}"
    );
    assert!(!text.contains("unpacked_size") && !text.contains("entries"));

    let agent = edited(|v| {
        v["kind"] = "agent".into();
        v["platform"] = "linux-x86_64".into();
        v["artifact"]["unpacked_size"] = 104_857_600.into();
        v["artifact"]["entries"] = 2000.into();
    })
    .unwrap();
    assert_eq!(agent.kind, ReleaseKind::Agent);
    assert_eq!(agent.platform.as_deref(), Some("linux-x86_64"));
    assert_eq!(agent.artifact.unpacked_size, Some(104_857_600));
    assert_eq!(agent.artifact.entries, Some(2000));
    assert_eq!(Manifest::from_json(&agent.to_json()).unwrap(), agent);

    assert_malformed(edited(|v| v["kind"] = "kernel".into()), "kind");
    assert_malformed(edited(|v| v["platform"] = "".into()), "platform");
    assert_malformed(edited(|v| v["platform"] = "linux x86".into()), "platform");
    assert_malformed(
        edited(|v| v["artifact"]["entries"] = (-1).into()),
        "artifact.entries",
    );
}

#[test]
fn extreme_times_and_durations_are_typed_errors_naming_the_field() {
    let cases: [(&str, &str, serde_json::Value, &str); 12] = [
        (
            "rollout",
            "duration",
            "500000000000y".into(),
            "rollout.duration: 500000000000y exceeds the 10-year maximum",
        ),
        (
            "rollout",
            "duration",
            "10000y".into(),
            "rollout.duration: 10000y exceeds",
        ),
        (
            "rollout",
            "duration",
            "18446744073709551615s".into(),
            "rollout.duration: ",
        ),
        (
            "rollout",
            "duration",
            "-1s".into(),
            "rollout.duration: bad duration",
        ),
        ("rollout", "duration", u64::MAX.into(), "rollout.duration: "),
        (
            "rollout",
            "start",
            "10000-01-01T00:00:00Z".into(),
            "rollout.start: ",
        ),
        (
            "rollout",
            "start",
            "-0001-01-01T00:00:00Z".into(),
            "rollout.start: ",
        ),
        (
            "",
            "expires_at",
            "1969-12-31T23:59:59Z".into(),
            "expires_at: ",
        ),
        ("", "expires_at", u64::MAX.into(), "expires_at: "),
        (
            "",
            "published_at",
            "+9999-12-31T23:59:59Z".into(),
            "published_at: ",
        ),
        (
            "",
            "published_at",
            "99999-12-31T23:59:59Z".into(),
            "published_at: ",
        ),
        ("", "sequence", "18446744073709551616".into(), "sequence: "),
    ];
    for (parent, field, value, needle) in cases {
        let result = edited(|v| {
            let target = if parent.is_empty() { v } else { &mut v[parent] };
            target[field] = value.clone();
        });
        assert_malformed(result, needle);
    }
    // The edge itself is fine: the last second of 9999 with a 10-year window.
    let m = edited(|v| {
        v["expires_at"] = "9999-12-31T23:59:59Z".into();
        v["rollout"]["start"] = "9999-12-31T23:59:59Z".into();
        v["rollout"]["duration"] = "10y".into();
    })
    .unwrap();
    let rollout = m.rollout.unwrap();
    assert!(rollout.start.checked_add(rollout.duration).is_some());
}

#[test]
fn validate_bounds_a_manifest_built_in_code() {
    let last = crate::parse_rfc3339("9999-12-31T23:59:59Z").unwrap();
    let mut m = example();
    m.expires_at = last + Duration::from_secs(86_400);
    let err = m.validate().unwrap_err().to_string();
    assert!(
        err.contains("expires_at is after 9999-12-31T23:59:59Z"),
        "{err}"
    );
    let mut m = example();
    m.rollout.as_mut().unwrap().duration = Duration::from_secs(u64::MAX);
    let err = m.validate().unwrap_err().to_string();
    assert!(
        err.contains("rollout.duration") && err.contains("10-year maximum"),
        "{err}"
    );
    let mut m = example();
    m.published_at = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
    assert!(
        m.validate()
            .unwrap_err()
            .to_string()
            .contains("published_at")
    );
}

#[test]
fn bad_values_are_refused() {
    assert_malformed(edited(|v| v["schema"] = 2.into()), "schema 2");
    assert_malformed(edited(|v| v["version"] = "1.4".into()), "");
    assert_malformed(
        edited(|v| v["expires_at"] = "2026-12-22".into()),
        "bad timestamp",
    );
    assert_malformed(
        edited(|v| v["rollout"]["duration"] = "soon".into()),
        "bad duration",
    );
    assert_malformed(edited(|v| v["artifact"]["size"] = 0.into()), "size is 0");
    assert_malformed(
        edited(|v| v["entrypoint"]["command"] = "".into()),
        "command is empty",
    );
    assert_malformed(edited(|v| v["sequence"] = (-1).into()), "");
}

#[test]
fn sha256_must_be_64_lower_case_hex_digits() {
    let good = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    for bad in [
        good.to_uppercase(),
        good[1..].to_owned(),
        format!("{good}0"),
        good.replace('9', "g"),
    ] {
        assert_malformed(edited(|v| v["artifact"]["sha256"] = bad.into()), "sha256");
    }
}

#[test]
fn the_index_is_optional_round_trips_and_is_checked_like_the_artifact() {
    assert_eq!(example().index, None);
    assert!(
        !String::from_utf8(example().to_json())
            .unwrap()
            .contains("index")
    );
    let good = "ab".repeat(32);
    let with_index = |path: &str, size: u64, sha: &str| {
        let (path, sha) = (path.to_owned(), sha.to_owned());
        edited(move |v| {
            v["index"] = serde_json::json!({ "path": path, "size": size, "sha256": sha });
        })
    };
    let m = with_index("artifacts/x.index.json", 10, &good).unwrap();
    let index = m.index.clone().unwrap();
    assert_eq!(
        (index.path.as_str(), index.size),
        ("artifacts/x.index.json", 10)
    );
    assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
    assert_malformed(with_index("../x", 10, &good), "index.path");
    assert_malformed(with_index("/x", 10, &good), "index.path");
    assert_malformed(with_index("a/x", 0, &good), "index.size is 0");
    assert_malformed(with_index("a/x", 10, &good.to_uppercase()), "index.sha256");
    assert_malformed(edited(|v| v["index"] = "artifacts/x".into()), "index");
}

#[test]
fn artifact_paths_must_be_https_or_safe_relative_paths() {
    let good = [
        "artifacts/x.tar.zst",
        "x",
        "a/b/c.tar",
        "https://cdn.example.com/a/b.tar.gz",
    ];
    for path in good {
        assert_eq!(check_artifact_path(path), Ok(()), "{path:?}");
    }
    let bad = [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/./x",
        "./x",
        "a//b",
        "a/",
        "a\\..\\b",
        "http://example.com/x",
        "https://",
        "https:///x",
        "https://a b",
        "a/%2e%2e/b",
        "a?b",
        "a#b",
        "a\nb",
    ];
    for path in bad {
        assert!(check_artifact_path(path).is_err(), "{path:?}");
        assert_malformed(
            edited(|v| v["artifact"]["path"] = path.into()),
            "artifact.path",
        );
    }
}

#[test]
fn kind_and_platform_are_checked_after_the_signature() {
    use crate::check_kind_and_platform;
    let payload = example();
    assert_eq!(
        check_kind_and_platform(&payload, ReleaseKind::Payload, "linux-x86_64"),
        Ok(())
    );
    let wrong = check_kind_and_platform(&payload, ReleaseKind::Agent, "linux-x86_64");
    assert_eq!(
        wrong.map_err(|e| e.to_string()),
        Err("manifest is of kind payload, expected agent".to_owned())
    );
    let mut agent = example();
    agent.kind = ReleaseKind::Agent;
    let none = check_kind_and_platform(&agent, ReleaseKind::Agent, "linux-x86_64");
    assert!(
        matches!(none, Err(ReleaseError::OtherPlatform { ref platform, .. }) if platform == "none")
    );
    agent.platform = Some("linux-riscv64".into());
    let other = check_kind_and_platform(&agent, ReleaseKind::Agent, "linux-x86_64");
    assert_eq!(
        other.map_err(|e| e.to_string()),
        Err("release is for platform linux-riscv64, this agent runs linux-x86_64".to_owned())
    );
    agent.platform = Some("linux-x86_64".into());
    assert_eq!(
        check_kind_and_platform(&agent, ReleaseKind::Agent, "linux-x86_64"),
        Ok(())
    );
}
