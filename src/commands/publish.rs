//! `bankswap publish`: pack a payload folder into a deterministic `tar.zst`,
//! write the channel's next manifest and its signature into a console data
//! folder, and keep every manifest in the channel's history.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, anyhow};
use sha2::{Digest, Sha256};
use signing::{
    Artifact, ArtifactFormat, Entrypoint, MANIFEST_SCHEMA, Manifest, Rollout, SecretKey,
};

use crate::channel::ChannelDir;
use crate::cli::PublishArgs;
use crate::clock;
use crate::commands::keys::read_secret_key;
use crate::config::{check_channel, parse_duration};
use crate::error::UsageError;

/// zstd level of published archives: fast to make, ~2 GB/s to unpack.
const ZSTD_LEVEL: i32 = 3;
/// The product name when neither `--product` nor the channel says one.
const DEFAULT_PRODUCT: &str = "payload";

/// Runs `publish`.
pub fn run(args: &PublishArgs) -> anyhow::Result<()> {
    check_channel(&args.channel).map_err(UsageError::new)?;
    let secret = read_secret_key(&args.key)?;
    let expires = parse_duration("--expires", &args.expires).map_err(UsageError::new)?;
    let rollout = args
        .rollout
        .as_deref()
        .map(|r| parse_duration("--rollout", r))
        .transpose()
        .map_err(UsageError::new)?;
    let channel = ChannelDir::new(&args.to, &args.channel);
    let now = clock::now_seconds();
    let sequence = channel.history_sequences()?.last().copied().unwrap_or(0) + 1;
    let mut manifest = match &args.rollback_to {
        Some(version) => historical(&channel, version)?,
        None => fresh(args, &channel)?,
    };
    manifest.sequence = sequence;
    manifest.published_at = now;
    manifest.expires_at = now + expires;
    manifest.rollout = rollout.map(|duration| Rollout {
        start: now,
        duration,
    });
    manifest.downgrade = args.downgrade || args.rollback_to.is_some();
    write_release(&channel, &secret, &manifest)?;
    println!(
        "published {} {} as sequence {} on channel {} ({} bytes, sha256 {})",
        manifest.product,
        manifest.version,
        manifest.sequence,
        manifest.channel,
        manifest.artifact.size,
        manifest.artifact.sha256
    );
    Ok(())
}

/// A manifest for a new payload: packs the folder.
fn fresh(args: &PublishArgs, channel: &ChannelDir) -> anyhow::Result<Manifest> {
    let (Some(payload), Some(version), Some(entrypoint)) =
        (&args.payload, &args.version, &args.entrypoint)
    else {
        return Err(UsageError::new("--payload, --version and --entrypoint are required").into());
    };
    let version = semver::Version::parse(version)
        .map_err(|e| UsageError::new(format!("--version `{version}` is not semver: {e}")))?;
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
    let product = match &args.product {
        Some(p) => p.clone(),
        None => current(channel)?.map_or_else(|| DEFAULT_PRODUCT.to_string(), |m| m.product),
    };
    let (sha256, size) = pack_artifact(payload, &channel.artifacts())?;
    Ok(Manifest {
        schema: MANIFEST_SCHEMA,
        product,
        channel: args.channel.clone(),
        sequence: 0,
        version,
        published_at: SystemTime::UNIX_EPOCH,
        expires_at: SystemTime::UNIX_EPOCH,
        artifact: Artifact {
            path: format!("artifacts/{sha256}.tar.zst"),
            size,
            sha256,
            format: ArtifactFormat::TarZst,
        },
        entrypoint: Entrypoint {
            command,
            args: words.collect(),
        },
        rollout: None,
        downgrade: false,
    })
}

/// The newest historical manifest of `version`, to be re-signed (a fleet rollback).
fn historical(channel: &ChannelDir, version: &str) -> anyhow::Result<Manifest> {
    let wanted = semver::Version::parse(version)
        .map_err(|e| UsageError::new(format!("--rollback-to `{version}` is not semver: {e}")))?;
    for sequence in channel.history_sequences()?.into_iter().rev() {
        let manifest = read_manifest(&channel.history_manifest(sequence))?;
        if manifest.version == wanted {
            return Ok(manifest);
        }
    }
    Err(anyhow!(
        "--rollback-to {version}: no release of that version in {}",
        channel.history().display()
    ))
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

/// Signs and writes: history first, then the signature, then the manifest, each atomically.
fn write_release(
    channel: &ChannelDir,
    secret: &SecretKey,
    manifest: &Manifest,
) -> anyhow::Result<()> {
    let bytes = manifest.to_json();
    let comment = format!(
        "timestamp:{}\tfile:release.json\tchannel:{}\tsequence:{}\tversion:{}",
        clock::unix(manifest.published_at),
        manifest.channel,
        manifest.sequence,
        manifest.version
    );
    let signature = secret.sign(&bytes, &comment).to_file_string();
    fs::create_dir_all(channel.history())
        .with_context(|| format!("creating {}", channel.history().display()))?;
    let history = channel.history_manifest(manifest.sequence);
    for (path, content) in [
        (
            crate::channel::signature_path(&history),
            signature.as_bytes(),
        ),
        (history.clone(), &bytes[..]),
        (channel.signature(), signature.as_bytes()),
        (channel.manifest(), &bytes[..]),
    ] {
        bank_layout::write_atomic(&path, content)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Packs `payload` into `artifacts/<sha256>.tar.zst`; returns the digest and size.
fn pack_artifact(payload: &Path, artifacts: &Path) -> anyhow::Result<(String, u64)> {
    fs::create_dir_all(artifacts).with_context(|| format!("creating {}", artifacts.display()))?;
    let temp = tempfile::NamedTempFile::new_in(artifacts)
        .with_context(|| format!("creating a file in {}", artifacts.display()))?;
    let mut sink = HashingWriter {
        inner: BufWriter::new(temp.reopen()?),
        hasher: Sha256::new(),
        size: 0,
    };
    let encoder = zstd::Encoder::new(&mut sink, ZSTD_LEVEL)?;
    let mut builder = tar::Builder::new(encoder);
    append_tree(&mut builder, payload, Path::new(""))
        .with_context(|| format!("packing {}", payload.display()))?;
    builder.into_inner()?.finish()?;
    let HashingWriter {
        mut inner,
        hasher,
        size,
    } = sink;
    inner.flush()?;
    inner.get_ref().sync_all()?;
    drop(inner);
    let sha256 = hex::encode(hasher.finalize());
    let target = artifacts.join(format!("{sha256}.tar.zst"));
    temp.persist(&target)
        .with_context(|| format!("writing {}", target.display()))?;
    File::open(artifacts)?.sync_all()?;
    Ok((sha256, size))
}

/// Appends a folder's entries in sorted order with fixed owners and times: same input, same bytes.
fn append_tree<W: Write>(builder: &mut tar::Builder<W>, base: &Path, rel: &Path) -> io::Result<()> {
    let mut entries = fs::read_dir(base.join(rel))?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = rel.join(entry.file_name());
        let meta = fs::symlink_metadata(entry.path())?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777);
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, &path, io::empty())?;
            append_tree(builder, base, &path)?;
        } else if meta.file_type().is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, &path, fs::read_link(entry.path())?)?;
        } else if meta.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            builder.append_data(&mut header, &path, File::open(entry.path())?)?;
        } else {
            return Err(io::Error::other(format!(
                "{}: only files, folders and symlinks can be published",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Counts and hashes what passes through.
struct HashingWriter<W> {
    /// Where the bytes go.
    inner: W,
    /// SHA-256 of every byte written.
    hasher: Sha256,
    /// Bytes written.
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
