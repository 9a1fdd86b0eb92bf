//! The release manifest (SPEC §4): its JSON shape and the checks a manifest
//! must pass on its own, before any policy looks at it.
//!
//! Manifests grow (SPEC §4): fields this agent does not know are ignored
//! (they are signed, and a new field only ever adds a check for newer
//! agents), but a `schema` newer than [`MANIFEST_SCHEMA`] is refused with an
//! error that says to update the agent first. Every time and duration is
//! bounded (see `wire_time.rs`), so no signed value can overflow or panic
//! the code that computes with it.

use std::time::{Duration, SystemTime};

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::error::ReleaseError;
use crate::wire_time::{check_duration, check_time, human_duration, rfc3339};

/// The manifest schema this crate reads and writes.
pub const MANIFEST_SCHEMA: u32 = 1;

/// A channel's release manifest, as published in `release.json`.
///
/// Times lie within the years 1970..=9999 and durations are at most
/// [`MAX_DURATION`](crate::MAX_DURATION): [`Manifest::from_json`] refuses
/// anything else, so callers may add them freely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Schema version; must be [`MANIFEST_SCHEMA`] (a newer one is refused
    /// with "update the agent first").
    pub schema: u32,
    /// What the release carries: a payload (the default) or a build of the
    /// agent itself (SPEC §9).
    #[serde(default, skip_serializing_if = "ReleaseKind::is_payload")]
    pub kind: ReleaseKind,
    /// The platform the release is built for (e.g. `"linux-x86_64"`);
    /// `None` runs anywhere. An agent ignores releases for another platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The product the payload is for (e.g. `"acme-connector"`).
    pub product: String,
    /// The channel this manifest was published on (e.g. `"stable"`).
    pub channel: String,
    /// Increases with every publish on the channel; defends against replays.
    pub sequence: u64,
    /// The payload's version.
    pub version: Version,
    /// When the release was published (RFC 3339 on the wire).
    #[serde(with = "rfc3339")]
    pub published_at: SystemTime,
    /// After this instant the manifest is refused (RFC 3339 on the wire).
    #[serde(with = "rfc3339")]
    pub expires_at: SystemTime,
    /// The payload archive.
    pub artifact: Artifact,
    /// What to run from the unpacked payload.
    pub entrypoint: Entrypoint,
    /// Optional window that spreads the release over the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// `true` lets this release carry a version older than the running one.
    #[serde(default)]
    pub downgrade: bool,
}

/// What a release carries (`kind` on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseKind {
    /// A payload for the banks (`"payload"`, the default).
    #[default]
    Payload,
    /// A build of the agent itself (`"agent"`, SPEC §9).
    Agent,
}

impl std::fmt::Display for ReleaseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReleaseKind::Payload => "payload",
            ReleaseKind::Agent => "agent",
        })
    }
}

impl ReleaseKind {
    /// `true` for [`ReleaseKind::Payload`] (left out of the JSON).
    pub fn is_payload(&self) -> bool {
        *self == ReleaseKind::Payload
    }
}

/// The payload archive a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// `https://…` URL, or a relative path under `{base}/v1/`.
    pub path: String,
    /// Exact size in bytes; the download never reads past it.
    pub size: u64,
    /// SHA-256 of the archive, 64 lower-case hex digits.
    pub sha256: String,
    /// Archive format.
    pub format: ArtifactFormat,
    /// Total bytes of the regular files in the archive: staging never
    /// writes more, and checks free space for it first (SPEC §13).
    /// `publish` fills it; older manifests may lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpacked_size: Option<u64>,
    /// Number of entries (files, folders, links) in the archive: staging
    /// never creates more. `publish` fills it; older manifests may lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
}

/// The archive formats a payload may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ArtifactFormat {
    /// Plain tar (`"tar"`).
    #[serde(rename = "tar")]
    Tar,
    /// Gzip-compressed tar (`"tar.gz"`).
    #[serde(rename = "tar.gz")]
    TarGz,
    /// Zstandard-compressed tar (`"tar.zst"`).
    #[serde(rename = "tar.zst")]
    TarZst,
}

/// The command to start from the unpacked payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entrypoint {
    /// Program path, relative to the bank (e.g. `"bin/connector"`).
    pub command: String,
    /// Arguments passed to it.
    #[serde(default)]
    pub args: Vec<String>,
}

/// A window over which the fleet picks up a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// When the window opens (RFC 3339 on the wire).
    #[serde(with = "rfc3339")]
    pub start: SystemTime,
    /// How long the window lasts (humantime on the wire, e.g. `"6h"`), at
    /// most [`MAX_DURATION`](crate::MAX_DURATION).
    #[serde(with = "human_duration")]
    pub duration: Duration,
}

impl Manifest {
    /// The manifest as pretty JSON with a trailing newline: the exact bytes
    /// to sign and publish. Times are written in whole seconds (and clamped
    /// to the years 1970..=9999).
    pub fn to_json(&self) -> Vec<u8> {
        match serde_json::to_vec_pretty(self) {
            Ok(mut json) => {
                json.push(b'\n');
                json
            }
            // Invariant: every field serializes infallibly (strings, numbers,
            // clamped times, durations) into a Vec, which cannot fail to grow.
            Err(e) => unreachable!("a manifest always serializes to JSON: {e}"),
        }
    }

    /// Parses manifest JSON and [`validate`](Self::validate)s it. The
    /// schema is read first, so a newer manifest says "update the agent"
    /// rather than failing on a field it changed. Errors name the field
    /// (`rollout.duration: …`).
    pub fn from_json(json: &[u8]) -> Result<Manifest, ReleaseError> {
        let malformed = |reason: String| ReleaseError::Malformed { reason };
        let schema: SchemaOnly =
            serde_json::from_slice(json).map_err(|e| malformed(e.to_string()))?;
        check_schema(schema.schema).map_err(malformed)?;
        let manifest: Manifest =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(json))
                .map_err(|e| malformed(path_error(&e)))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks what the types alone do not: the schema, the sha256 spelling,
    /// a safe artifact path, a non-empty command, a non-zero size, a sane
    /// platform name, and that every time and duration is within bounds
    /// (for a manifest built in code rather than parsed).
    pub fn validate(&self) -> Result<(), ReleaseError> {
        let malformed = |reason: String| Err(ReleaseError::Malformed { reason });
        if let Err(why) = check_schema(self.schema) {
            return malformed(why);
        }
        let mut times = vec![
            ("published_at", self.published_at),
            ("expires_at", self.expires_at),
        ];
        if let Some(rollout) = &self.rollout {
            times.push(("rollout.start", rollout.start));
            if let Err(why) = check_duration(rollout.duration) {
                return malformed(format!(
                    "rollout.duration {} {why}",
                    humantime::format_duration(rollout.duration)
                ));
            }
        }
        for (field, time) in times {
            if let Err(why) = check_time(time) {
                return malformed(format!("{field} {why}"));
            }
        }
        if let Some(platform) = &self.platform
            && !is_platform_name(platform)
        {
            return malformed(format!(
                "platform {platform:?} is not a platform name (letters, digits, '-', '_')"
            ));
        }
        let sha = &self.artifact.sha256;
        if sha.len() != 64
            || !sha
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return malformed(format!(
                "artifact.sha256 {sha:?} is not 64 lower-case hex digits"
            ));
        }
        if let Err(why) = check_artifact_path(&self.artifact.path) {
            return malformed(format!("artifact.path {:?} {why}", self.artifact.path));
        }
        if self.artifact.size == 0 {
            return malformed("artifact.size is 0".to_owned());
        }
        if self.entrypoint.command.is_empty() {
            return malformed("entrypoint.command is empty".to_owned());
        }
        Ok(())
    }
}

/// Just the schema, read before anything else.
#[derive(Deserialize)]
struct SchemaOnly {
    /// The manifest's schema.
    schema: u32,
}

/// A schema this crate reads: exactly [`MANIFEST_SCHEMA`]; a newer one
/// needs a newer agent.
fn check_schema(schema: u32) -> Result<(), String> {
    if schema > MANIFEST_SCHEMA {
        return Err(format!(
            "schema {schema} is newer than this agent's ({MANIFEST_SCHEMA}): update the agent first"
        ));
    }
    if schema != MANIFEST_SCHEMA {
        return Err(format!(
            "schema {schema} is not supported (expected {MANIFEST_SCHEMA})"
        ));
    }
    Ok(())
}

/// A serde error with the path of the field it is about
/// (`rollout.duration: 500000000000y exceeds the 10-year maximum …`).
pub(crate) fn path_error(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = err.path().to_string();
    if path == "." {
        err.inner().to_string()
    } else {
        format!("{path}: {}", err.inner())
    }
}

/// A platform name: 1 to 64 ASCII letters, digits, `-` and `_`.
fn is_platform_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An artifact path is an `https://` URL or a relative path made only of
/// normal components: no `..` or `.`, no leading `/`, no empty component, no
/// backslash. `%`, `?` and `#` are refused too, because the path is put into
/// a URL where they would change its meaning (`%2e%2e` is `..` to a URL
/// parser).
fn check_artifact_path(path: &str) -> Result<(), &'static str> {
    if path.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    if let Some(rest) = path.strip_prefix("https://") {
        if rest.is_empty() || rest.starts_with('/') {
            return Err("is an https URL without a host");
        }
        if rest.contains(char::is_whitespace) {
            return Err("is an https URL with whitespace");
        }
        return Ok(());
    }
    if path.is_empty() {
        return Err("is empty");
    }
    if path.starts_with('/') {
        return Err("is absolute");
    }
    if path.contains(['\\', '%', '?', '#']) {
        return Err("contains a backslash, '%', '?' or '#'");
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("has an empty, '.' or '..' component");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
}
