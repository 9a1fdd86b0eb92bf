//! `bankswap publish`: pack a payload folder into a deterministic `tar.zst`,
//! sign the channel's next manifest on this machine (the secret key never
//! leaves it), and write the release into a console data folder (`--to`) or
//! upload it to a running console (`--console`), which re-verifies it.
//! Every manifest stays in the channel's history, so `--rollback-to` can
//! re-sign an old one with a new sequence.
//!
//! `--rotate-key NEW.pub [--revoke OLD.pub]` publishes a key rotation
//! record instead (`rotate.rs`).
//!
//! `--agent-binary FILE` publishes a build of bankswap itself (`agent.rs`).
//!
//! `pack.rs` is the deterministic packer; `upload.rs` the console client;
//! `index.rs` the file index and objects of delta updates (written or uploaded).
//! `waves.rs` the rollout plan and prepared rollback of `--waves` (SPEC §11).

mod agent;
mod index;
mod pack;
mod rotate;
mod upload;
mod waves;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use signing::{
    Artifact, ArtifactFormat, Entrypoint, MANIFEST_SCHEMA, Manifest, ReleaseKind, Rollout,
    SecretKey, Signature,
};

use self::pack::{Packed, pack_artifact};
use self::upload::Console;
use crate::channel::ChannelDir;
use crate::cli::PublishArgs;
use crate::clock;
use crate::commands::keys::read_secret_key;
use crate::config::check_channel;
use crate::console::{HistoryEntry, read_token_file};
use crate::error::UsageError;

/// The product name when neither `--product` nor the channel says one.
const DEFAULT_PRODUCT: &str = "payload";

/// Where the admin token comes from when no flag gives it (keeps it out of `ps`).
const TOKEN_ENV: &str = "BANKSWAP_TOKEN";

/// Runs `publish`.
pub fn run(args: &PublishArgs) -> anyhow::Result<()> {
    check_channel(&args.channel).map_err(UsageError::new)?;
    let secret = read_secret_key(&args.key)?;
    if args.rotate_key.is_some() || !args.revoke.is_empty() {
        return rotate::run(args, &secret);
    }
    let expires = flag_duration("--expires", &args.expires)?;
    if expires.is_zero() {
        return Err(UsageError::new("--expires 0: a release must stay valid for some time").into());
    }
    let rollout = args
        .rollout
        .as_deref()
        .map(|r| flag_duration("--rollout", r))
        .transpose()?;
    let target = Target::open(args)?;
    let known = target.known(&secret)?;
    let mut manifest = match &args.rollback_to {
        Some(version) => target.historical(&known, version, &secret)?,
        None => match &args.agent_binary {
            Some(file) => agent::fresh(args, file, &target, &known)?,
            None => fresh(args, &target, &known)?,
        },
    };
    let now = clock::now_seconds();
    manifest.sequence = known.sequence + 1;
    manifest.published_at = now;
    manifest.expires_at = now
        .checked_add(expires)
        .ok_or_else(|| anyhow!("the clock is beyond the times a manifest can carry"))?;
    manifest.rollout = rollout.map(|duration| Rollout {
        start: now,
        duration,
    });
    manifest.downgrade = args.downgrade || args.rollback_to.is_some();
    // Never sign what agents would refuse (a clock past 9999, a bad field).
    manifest
        .validate()
        .context("the manifest to sign is not valid")?;
    let plan = waves::plan(args, &known, &manifest)?;
    let (bytes, signature) = sign(&secret, &manifest);
    if let Some(plan) = &plan {
        waves::write_plan(&target, &known, &secret, &manifest, plan)?;
    }
    target.write_release(&manifest, &bytes, &signature)?;
    println!(
        "published {} {} as sequence {} on channel {} ({} bytes, sha256 {})",
        manifest.product,
        manifest.version,
        manifest.sequence,
        manifest.channel,
        manifest.artifact.size,
        manifest.artifact.sha256
    );
    if let Some(plan) = &plan {
        let waves: Vec<String> = plan.waves.iter().map(|w| format!("{w}%")).collect();
        println!(
            "rolling out in waves {} (the console admits agents wave by wave)",
            waves.join(",")
        );
    }
    Ok(())
}

/// Where the release goes.
enum Target {
    /// A console data folder (`--to`).
    Folder(ChannelDir),
    /// A running console (`--console`).
    Console(Console),
}

/// What the target knows of the channel.
struct Known {
    /// The channel's current sequence: the new release gets the next one.
    sequence: u64,
    /// The product of the channel's latest release, if any.
    product: Option<String>,
    /// The console's history listing (empty for a folder, which is read directly).
    releases: Vec<HistoryEntry>,
}

impl Target {
    /// The target named by `--to` or `--console` (clap makes it exactly one).
    fn open(args: &PublishArgs) -> anyhow::Result<Target> {
        match (&args.to, &args.console) {
            (Some(to), None) => Ok(Target::Folder(ChannelDir::new(to, &args.channel))),
            (None, Some(url)) => {
                let token = admin_token(args)?;
                let console = Console::connect(url, &args.channel, token, args.ca_cert.as_deref())?;
                Ok(Target::Console(console))
            }
            _ => Err(UsageError::new("give exactly one of --to DIR and --console URL").into()),
        }
    }

    /// The channel's sequence and product; for a console, also checks that it trusts our key.
    fn known(&self, secret: &SecretKey) -> anyhow::Result<Known> {
        match self {
            Target::Folder(channel) => Ok(Known {
                sequence: channel
                    .current_sequence()
                    .with_context(|| format!("reading {}", channel.dir().display()))?,
                product: current(channel)?.map(|m| m.product),
                releases: Vec::new(),
            }),
            Target::Console(console) => {
                let history = console.history().with_context(|| console.failed())?;
                let ours = secret.key_id().to_string();
                if !history.trusted_keys.contains(&ours) {
                    return Err(anyhow!(
                        "the console does not trust key {ours} of --key (it trusts: {}); \
                         start it with --trust for this key's .pub",
                        history.trusted_keys.join(", ")
                    ))
                    .with_context(|| console.failed());
                }
                Ok(Known {
                    sequence: history.sequence,
                    product: history.releases.last().map(|r| r.product.clone()),
                    releases: history.releases,
                })
            }
        }
    }

    /// The newest historical manifest of `version`, to be re-signed (a fleet rollback).
    fn historical(
        &self,
        known: &Known,
        version: &str,
        secret: &SecretKey,
    ) -> anyhow::Result<Manifest> {
        let wanted = semver::Version::parse(version).map_err(|e| {
            UsageError::new(format!("--rollback-to `{version}` is not semver: {e}"))
        })?;
        match self {
            Target::Folder(channel) => historical(channel, &wanted),
            Target::Console(console) => {
                let entry = known
                    .releases
                    .iter()
                    .rev()
                    .find(|r| semver::Version::parse(&r.version).is_ok_and(|v| v == wanted))
                    .ok_or_else(|| {
                        anyhow!("--rollback-to {version}: no release of that version in the channel's history")
                    })
                    .with_context(|| console.failed())?;
                let (bytes, signature) = console
                    .history_entry(entry.sequence)
                    .with_context(|| console.failed())?;
                signed_by_us(&bytes, &signature, secret).with_context(|| {
                    format!(
                        "--rollback-to {version}: history entry {} on {}",
                        entry.sequence,
                        console.url()
                    )
                })
            }
        }
    }

    /// Packs `folder` into the release's archive: into the channel's artifacts
    /// (`--to`), or beside nothing of the console's and uploaded (`--console`;
    /// the temporary copy is removed once uploaded).
    fn pack(&self, folder: &Path) -> anyhow::Result<Packed> {
        match self {
            Target::Folder(channel) => pack_artifact(folder, &channel.artifacts()),
            Target::Console(console) => {
                let temp = tempfile::tempdir().context("creating a temporary folder")?;
                let packed = pack_artifact(folder, temp.path())?;
                console
                    .upload_artifact(&packed)
                    .with_context(|| console.failed())?;
                Ok(packed)
            }
        }
    }

    /// Writes (`--to`) or uploads (`--console`) the signed release.
    fn write_release(
        &self,
        manifest: &Manifest,
        bytes: &[u8],
        signature: &str,
    ) -> anyhow::Result<()> {
        match self {
            Target::Folder(channel) => {
                channel.write_release(manifest.sequence, bytes, signature.as_bytes())
            }
            Target::Console(console) => console
                .put_release(bytes, signature)
                .map(drop)
                .with_context(|| console.failed()),
        }
    }
}

/// A manifest for a new payload: packs the folder (and uploads the archive to a console).
fn fresh(args: &PublishArgs, target: &Target, known: &Known) -> anyhow::Result<Manifest> {
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
struct NewRelease {
    /// A payload or a build of the agent.
    kind: ReleaseKind,
    /// The platform it runs on (required for agent builds).
    platform: Option<String>,
    /// The product name agents check.
    product: String,
    /// `--version`.
    version: semver::Version,
    /// What the agent runs from the unpacked archive.
    entrypoint: Entrypoint,
    /// The file index of delta updates (payloads; agent builds have none).
    index: Option<signing::IndexRef>,
}

impl NewRelease {
    /// The manifest of this release of `packed` on `channel`; [`run`] sets its
    /// sequence, times, rollout and downgrade flag before signing.
    fn manifest(self, channel: &str, packed: &Packed) -> Manifest {
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
fn semver_flag(version: &str) -> Result<semver::Version, UsageError> {
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

/// A duration flag, within the bounds a manifest may carry
/// ([`signing::MAX_DURATION`]): a bad one is a usage error (exit 2).
fn flag_duration(flag: &str, value: &str) -> Result<Duration, UsageError> {
    signing::parse_duration(value).map_err(|why| UsageError::new(format!("{flag}: {why}")))
}

/// The admin token: `--token`, `--token-file`, or `BANKSWAP_TOKEN`.
fn admin_token(args: &PublishArgs) -> Result<String, UsageError> {
    if let Some(file) = &args.token_file {
        return read_token_file(file, "--token-file");
    }
    let (token, source) = match &args.token {
        Some(token) => (token.clone(), "--token"),
        None => match std::env::var(TOKEN_ENV) {
            Ok(token) if !token.trim().is_empty() => (token.trim().to_string(), TOKEN_ENV),
            _ => {
                return Err(UsageError::new(format!(
                    "--console needs the admin token: --token-file FILE, {TOKEN_ENV}, or --token T"
                )));
            }
        },
    };
    // The console judges the token; only what cannot go into a header is refused here.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(UsageError::new(format!(
            "{source}: the token must be visible ASCII characters without spaces"
        )));
    }
    Ok(token)
}

/// The newest manifest of `wanted` in a folder's history.
fn historical(channel: &ChannelDir, wanted: &semver::Version) -> anyhow::Result<Manifest> {
    for sequence in channel.history_sequences()?.into_iter().rev() {
        let manifest = read_manifest(&channel.history_manifest(sequence))?;
        if manifest.version == *wanted {
            return Ok(manifest);
        }
    }
    Err(anyhow!(
        "--rollback-to {wanted}: no release of that version in {}",
        channel.history().display()
    ))
}

/// A history entry fetched from a console, accepted only if `--key` signed
/// it: the console must not get this key to sign something it never signed.
fn signed_by_us(bytes: &[u8], signature: &[u8], secret: &SecretKey) -> anyhow::Result<Manifest> {
    let ours = [secret.public_key()];
    let text = std::str::from_utf8(signature).context("the signature is not text")?;
    Signature::parse(text)
        .and_then(|s| s.verify(&ours, bytes).map(drop))
        .context(
            "not signed by --key, so it is not re-signed (after a key rotation, publish the payload again)",
        )?;
    Manifest::from_json(bytes).context("the manifest is malformed")
}

/// The channel's current manifest, if any.
fn current(channel: &ChannelDir) -> anyhow::Result<Option<Manifest>> {
    match channel.history_sequences()?.last() {
        Some(&sequence) => read_manifest(&channel.history_manifest(sequence)).map(Some),
        None => Ok(None),
    }
}

fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// The manifest's bytes and their minisign signature (a text file).
fn sign(secret: &SecretKey, manifest: &Manifest) -> (Vec<u8>, String) {
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
