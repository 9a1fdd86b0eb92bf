//! Where a release goes: a console data folder (`--to`) or a running console
//! (`--console`, with its admin token), what it knows of the channel, and the
//! channel's history (for `--rollback-to` and the current release).

use std::fs;
use std::path::Path;

use anyhow::{Context, anyhow};
use signing::{Manifest, SecretKey, Signature};

use super::pack::{Packed, pack_artifact};
use super::upload::Console;
use crate::channel::ChannelDir;
use crate::cli::PublishArgs;
use crate::console::{HistoryEntry, read_token_file};
use crate::error::UsageError;

/// Where the admin token comes from when no flag gives it (keeps it out of `ps`).
const TOKEN_ENV: &str = "BANKSWAP_TOKEN";

/// Where the release goes.
pub(super) enum Target {
    /// A console data folder (`--to`).
    Folder(ChannelDir),
    /// A running console (`--console`).
    Console(Console),
}

/// What the target knows of the channel.
pub(super) struct Known {
    /// The channel's current sequence: the new release gets the next one.
    pub(super) sequence: u64,
    /// The product of the channel's latest release, if any.
    pub(super) product: Option<String>,
    /// The console's history listing (empty for a folder, which is read directly).
    pub(super) releases: Vec<HistoryEntry>,
}

impl Target {
    /// The target named by `--to` or `--console` (clap makes it exactly one).
    pub(super) fn open(args: &PublishArgs) -> anyhow::Result<Target> {
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
    pub(super) fn known(&self, secret: &SecretKey) -> anyhow::Result<Known> {
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
    pub(super) fn historical(
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
    pub(super) fn pack(&self, folder: &Path) -> anyhow::Result<Packed> {
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
    pub(super) fn write_release(
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
pub(super) fn signed_by_us(
    bytes: &[u8],
    signature: &[u8],
    secret: &SecretKey,
) -> anyhow::Result<Manifest> {
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
pub(super) fn current(channel: &ChannelDir) -> anyhow::Result<Option<Manifest>> {
    match channel.history_sequences()?.last() {
        Some(&sequence) => read_manifest(&channel.history_manifest(sequence)).map(Some),
        None => Ok(None),
    }
}

fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}
