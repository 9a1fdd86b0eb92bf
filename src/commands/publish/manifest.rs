//! The manifest of a new release: a payload's (pack the folder, write or
//! upload its delta index), the parts payload and agent releases differ in
//! (`NewRelease`), and the signature of the finished manifest.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;
use signing::{
    Artifact, ArtifactFormat, Entrypoint, MANIFEST_SCHEMA, Manifest, ReleaseKind, SecretKey,
};

use super::index;
use super::pack::Packed;
use super::target::{Known, Target};
use super::upload::Console;
use crate::cli::PublishArgs;
use crate::clock;
use crate::error::UsageError;

/// The product name when neither `--product` nor the channel says one.
const DEFAULT_PRODUCT: &str = "payload";

/// A manifest for a new payload: packs the folder (and uploads the archive to a console).
pub(super) fn fresh(
    args: &PublishArgs,
    target: &Target,
    known: &Known,
) -> anyhow::Result<Manifest> {
    let (Some(payload), Some(version), Some(entrypoint)) =
        (&args.payload, &args.version, &args.entrypoint)
    else {
        return Err(UsageError::new("--payload, --version and --entrypoint are required").into());
    };
    let version = semver_flag(version)?;
    let mut words = entrypoint.split_whitespace().map(str::to_string);
    let command = words
        .next()
        .ok_or_else(|| UsageError::new("--entrypoint is empty"))?;
    if !payload.join(&command).is_file() {
        return Err(UsageError::new(format!(
            "--entrypoint `{command}` is not a file in {}",
            payload.display()
        ))
        .into());
    }
    let product = args
        .product
        .clone()
        .or_else(|| known.product.clone())
        .unwrap_or_else(|| DEFAULT_PRODUCT.to_string());
    if known.product.as_deref() == Some(crate::agent::self_update::AGENT_PRODUCT)
        && args.product.is_none()
    {
        return Err(UsageError::new(format!(
            "channel {}: carries agent releases; publish payloads on another channel",
            args.channel
        ))
        .into());
    }
    let index = match target {
        Target::Folder(channel) => {
            index::write_index(payload, &channel.artifact(index::DELTA_DIR))?
        }
        Target::Console(console) => {
            // Written beside nothing of the console's: removed once uploaded.
            let temp = tempfile::tempdir().context("creating a temporary folder")?;
            upload_file_index(console, payload, temp.path())?
        }
    };
    let packed = target.pack(payload)?;
    Ok(NewRelease {
        kind: ReleaseKind::Payload,
        platform: args.platform.clone(),
        product,
        version,
        entrypoint: Entrypoint {
            command,
            args: words.collect(),
        },
        index: Some(index),
    }
    .manifest(&args.channel, &packed))
}

/// What a new release is besides its archive: where payload and agent releases differ.
pub(super) struct NewRelease {
    /// A payload or a build of the agent.
    pub(super) kind: ReleaseKind,
    /// The platform it runs on (required for agent builds).
    pub(super) platform: Option<String>,
    /// The product name agents check.
    pub(super) product: String,
    /// `--version`.
    pub(super) version: semver::Version,
    /// What the agent runs from the unpacked archive.
    pub(super) entrypoint: Entrypoint,
    /// The file index of delta updates (payloads; agent builds have none).
    pub(super) index: Option<signing::IndexRef>,
}

impl NewRelease {
    /// The manifest of this release of `packed` on `channel`; [`run`](super::run) sets its
    /// sequence, times, rollout and downgrade flag before signing.
    pub(super) fn manifest(self, channel: &str, packed: &Packed) -> Manifest {
        Manifest {
            schema: MANIFEST_SCHEMA,
            kind: self.kind,
            platform: self.platform,
            product: self.product,
            channel: channel.to_owned(),
            sequence: 0,
            version: self.version,
            published_at: SystemTime::UNIX_EPOCH,
            expires_at: SystemTime::UNIX_EPOCH,
            artifact: Artifact {
                path: format!("artifacts/{}", packed.name()),
                size: packed.size,
                sha256: packed.sha256.clone(),
                format: ArtifactFormat::TarZst,
                unpacked_size: Some(packed.unpacked_size),
                entries: Some(packed.entries),
            },
            entrypoint: self.entrypoint,
            rollout: None,
            downgrade: false,
            index: self.index,
        }
    }
}

/// `--version V` of a new release, which must be semver.
pub(super) fn semver_flag(version: &str) -> Result<semver::Version, UsageError> {
    semver::Version::parse(version)
        .map_err(|e| UsageError::new(format!("--version `{version}` is not semver: {e}")))
}

/// The file index and objects of `payload` (issue 14), written under `temp`
/// and uploaded to `console`: the console serves delta updates as a folder does.
fn upload_file_index(
    console: &Console,
    payload: &Path,
    temp: &Path,
) -> anyhow::Result<signing::IndexRef> {
    let delta = temp.join(index::DELTA_DIR);
    let pointer = index::write_index(payload, &delta)?;
    let (sent, objects) =
        index::upload_index(console, &delta, &pointer).with_context(|| console.failed())?;
    tracing::info!(
        sent,
        objects,
        "uploaded {sent} of {objects} delta objects (the console had the rest)"
    );
    Ok(pointer)
}

/// The manifest's bytes and their minisign signature (a text file).
pub(super) fn sign(secret: &SecretKey, manifest: &Manifest) -> (Vec<u8>, String) {
    let bytes = manifest.to_json();
    let comment = format!(
        "timestamp:{}\tfile:release.json\tchannel:{}\tsequence:{}\tversion:{}",
        clock::unix(manifest.published_at),
        manifest.channel,
        manifest.sequence,
        manifest.version
    );
    let signature = secret.sign(&bytes, &comment).to_file_string();
    (bytes, signature)
}
