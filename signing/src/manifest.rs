//! The release manifest (SPEC §4): its JSON shape and the checks a manifest
//! must pass on its own, before any policy looks at it.
//!
//! Unknown fields are refused everywhere: a field this agent does not know
//! could carry a rule it would silently ignore.

use std::time::{Duration, SystemTime};

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::error::ReleaseError;
use crate::wire_time::{human_duration, rfc3339};

/// The manifest schema this crate reads and writes.
pub const MANIFEST_SCHEMA: u32 = 1;

/// A channel's release manifest, as published in `release.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Schema version; must be [`MANIFEST_SCHEMA`].
    pub schema: u32,
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

/// The payload archive a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// `https://…` URL, or a relative path under `{base}/v1/`.
    pub path: String,
    /// Exact size in bytes; the download never reads past it.
    pub size: u64,
    /// SHA-256 of the archive, 64 lower-case hex digits.
    pub sha256: String,
    /// Archive format.
    pub format: ArtifactFormat,
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
#[serde(deny_unknown_fields)]
pub struct Entrypoint {
    /// Program path, relative to the bank (e.g. `"bin/connector"`).
    pub command: String,
    /// Arguments passed to it.
    #[serde(default)]
    pub args: Vec<String>,
}

/// A window over which the fleet picks up a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// When the window opens (RFC 3339 on the wire).
    #[serde(with = "rfc3339")]
    pub start: SystemTime,
    /// How long the window lasts (humantime on the wire, e.g. `"6h"`).
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

    /// Parses manifest JSON and [`validate`](Self::validate)s it.
    pub fn from_json(json: &[u8]) -> Result<Manifest, ReleaseError> {
        let manifest: Manifest =
            serde_json::from_slice(json).map_err(|e| ReleaseError::Malformed {
                reason: e.to_string(),
            })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks what the types alone do not: the schema, the sha256 spelling,
    /// a safe artifact path, a non-empty command and a non-zero size.
    pub fn validate(&self) -> Result<(), ReleaseError> {
        let malformed = |reason: String| Err(ReleaseError::Malformed { reason });
        if self.schema != MANIFEST_SCHEMA {
            return malformed(format!(
                "schema {} is not supported (expected {MANIFEST_SCHEMA})",
                self.schema
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
    fn unknown_fields_are_refused_at_every_level() {
        assert_malformed(edited(|v| v["extra"] = 1.into()), "unknown field");
        assert_malformed(
            edited(|v| v["artifact"]["mode"] = 1.into()),
            "unknown field",
        );
        assert_malformed(
            edited(|v| v["entrypoint"]["env"] = 1.into()),
            "unknown field",
        );
        assert_malformed(
            edited(|v| v["rollout"]["jitter"] = 1.into()),
            "unknown field",
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
}
