//! `publish --agent-binary FILE`: a build of bankswap itself as a release
//! (SPEC §9). The file is packed as a one-entry `tar.zst` (`bankswap`, 0755)
//! with the deterministic packer; the manifest says `"kind": "agent"`, the
//! product [`AGENT_PRODUCT`] and the platform (from `--platform`, else the ELF
//! header). Everything else — packing to the target and uploading
//! ([`Target::pack`]), the manifest ([`NewRelease`]), signing, history — is the
//! payload path.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use bank_layout::{AGENT_BINARY, MAX_AGENT_BINARY_BYTES};
use signing::{Entrypoint, Manifest, ReleaseKind};

use super::{Known, NewRelease, Target, semver_flag};
use crate::agent::self_update::AGENT_PRODUCT;
use crate::cli::PublishArgs;
use crate::error::UsageError;
use crate::platform::{self, ELF_HEADER_BYTES};

/// Mode of the build inside the archive (the slot makes it 0755 again anyway).
const BINARY_MODE: u32 = 0o755;

/// A manifest for a new agent build: checks and packs the file (and uploads the
/// archive to a console).
pub(super) fn fresh(
    args: &PublishArgs,
    file: &Path,
    target: &Target,
    known: &Known,
) -> anyhow::Result<Manifest> {
    let Some(version) = &args.version else {
        return Err(UsageError::new("--agent-binary needs --version").into());
    };
    let version = semver_flag(version)?;
    if let Some(product) = &known.product
        && product != AGENT_PRODUCT
    {
        return Err(UsageError::new(format!(
            "channel {}: carries payload releases (product {product}); publish agent builds on a channel of their own",
            args.channel
        ))
        .into());
    }
    let platform = platform_of(file, args.platform.as_deref())?;
    // Packed from a folder holding just the build under its slot name.
    let staging = tempfile::tempdir().context("creating a temporary folder")?;
    let copy = staging.path().join(AGENT_BINARY);
    fs::copy(file, &copy).with_context(|| format!("copying {}", file.display()))?;
    fs::set_permissions(&copy, fs::Permissions::from_mode(BINARY_MODE))
        .with_context(|| format!("setting the mode of {}", copy.display()))?;
    let packed = target.pack(staging.path())?;
    Ok(NewRelease {
        kind: ReleaseKind::Agent,
        platform: Some(platform),
        product: AGENT_PRODUCT.to_owned(),
        version,
        entrypoint: Entrypoint {
            command: AGENT_BINARY.to_owned(),
            args: Vec::new(),
        },
        index: None,
    }
    .manifest(&args.channel, &packed))
}

/// The platform of the build: `--platform` if given, else its ELF header's. The file
/// must be an executable regular file of at most [`MAX_AGENT_BINARY_BYTES`].
fn platform_of(file: &Path, given: Option<&str>) -> Result<String, UsageError> {
    let bad = |why: String| UsageError::new(format!("--agent-binary {}: {why}", file.display()));
    let meta = fs::metadata(file).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".to_owned()));
    }
    if meta.len() > MAX_AGENT_BINARY_BYTES {
        return Err(bad(format!(
            "{} bytes, more than the {MAX_AGENT_BINARY_BYTES} an agent build may have",
            meta.len()
        )));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(bad("not executable".to_owned()));
    }
    if let Some(platform) = given {
        return Ok(platform.to_owned()); // its syntax is checked with the manifest
    }
    let mut header = Vec::with_capacity(ELF_HEADER_BYTES);
    File::open(file)
        .and_then(|f| f.take(ELF_HEADER_BYTES as u64).read_to_end(&mut header))
        .map_err(|e| bad(e.to_string()))?;
    platform::from_elf(&header)
        .map(str::to_owned)
        .ok_or_else(|| bad("not an ELF executable of a known platform; give --platform".to_owned()))
}
