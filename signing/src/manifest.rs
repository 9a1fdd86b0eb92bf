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
    /// The file index of the release tree, for delta updates (issue 14): an
    /// agent that knows it may build the new bank from its running one plus
    /// the objects that changed. Older agents ignore it; the full artifact
    /// is always there too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexRef>,
}

/// The signed pointer to a release's file index: the manifest's signature
/// covers the index through its digest, and the index covers every object
/// through theirs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRef {
    /// `https://…` URL, or a relative path under `{base}/v1/`. The objects
    /// live in `objects/` beside it (`objects/<sha256>.zst`).
    pub path: String,
    /// Exact size in bytes; the download never reads past it.
    pub size: u64,
    /// SHA-256 of the index, 64 lower-case hex digits.
    pub sha256: String,
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
        let mut files = vec![(
            "artifact",
            &self.artifact.path,
            self.artifact.size,
            &self.artifact.sha256,
        )];
        if let Some(index) = &self.index {
            files.push(("index", &index.path, index.size, &index.sha256));
        }
        // The index is checked exactly like the artifact: it is fetched the same way.
        for (field, path, size, sha) in files {
            if !is_sha256_hex(sha) {
                return malformed(format!(
                    "{field}.sha256 {sha:?} is not 64 lower-case hex digits"
                ));
            }
            if let Err(why) = check_artifact_path(path) {
                return malformed(format!("{field}.path {path:?} {why}"));
            }
            if size == 0 {
                return malformed(format!("{field}.size is 0"));
            }
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

/// 64 lower-case hex digits: how every digest is spelled on the wire.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
mod tests;
