//! `init` and `apply`: install a release from a bundle folder, verified
//! exactly as an online release is, into the idle bank, then swap.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, anyhow};
use bank_layout::{ArchiveFormat, BankId, BankRecord, Root, StageSpec};
use signing::{ArtifactFormat, Expectations, Manifest, ReleaseError, VerifiedRelease};
use tracing::warn;

use crate::agent_id;
use crate::channel::{ChannelDir, MAX_SIGNATURE_BYTES, read_capped};
use crate::cli::SetupArgs;
use crate::clock;
use crate::progress::Progress;
use crate::setup::{self, ReleaseSetup};

/// `bankswap init --root DIR [--bundle DIR]`.
pub fn init(args: &SetupArgs, bundle: Option<&Path>) -> anyhow::Result<()> {
    let Some(bundle) = bundle else {
        let root_dir = setup::root_of(args)?;
        let root = open_root(&root_dir)?;
        let id = agent_id::ensure(root.dir()).context("writing the agent id")?;
        println!(
            "initialized {} (agent-id {id}); no release installed yet",
            root_dir.display()
        );
        return Ok(());
    };
    let setup = setup::for_release(args)?;
    let mut root = open_root(&setup.root)?;
    agent_id::ensure(root.dir()).context("writing the agent id")?;
    match install(&mut root, &setup, bundle, SystemTime::now())? {
        Installed::Swapped { bank, release } => println!(
            "initialized {}: installed {} {} (sequence {}) into {bank}",
            setup.root.display(),
            release.manifest.product,
            release.manifest.version,
            release.manifest.sequence
        ),
        Installed::UpToDate { version } => {
            println!(
                "initialized {}: {version} is installed already",
                setup.root.display()
            );
        }
    }
    Ok(())
}

/// `bankswap apply --root DIR --bundle DIR`.
pub fn apply(args: &SetupArgs, bundle: &Path) -> anyhow::Result<()> {
    let setup = setup::for_release(args)?;
    let mut root = open_root(&setup.root)?;
    match install(&mut root, &setup, bundle, SystemTime::now())? {
        Installed::Swapped { bank, release } => {
            let previous = root.state().version_of(bank.other()).map(str::to_string);
            print!(
                "applied {} (sequence {}) to {bank}",
                release.manifest.version, release.manifest.sequence
            );
            match previous {
                Some(p) => println!(
                    "; previous {p} stays in {} (`bankswap rollback` returns to it)",
                    bank.other()
                ),
                None => println!(),
            }
        }
        Installed::UpToDate { version } => println!("already running {version}; nothing to do"),
    }
    Ok(())
}

/// Opens the root (lock + recovery) and logs what recovery did.
pub fn open_root(dir: &Path) -> anyhow::Result<Root> {
    let (root, recoveries) = Root::open(dir).with_context(|| format!("root {}", dir.display()))?;
    for note in recoveries {
        warn!(root = %dir.display(), "recovered: {note}");
    }
    Ok(root)
}

/// What an install did.
pub enum Installed {
    /// The release was staged into `bank`, activated and committed.
    Swapped {
        /// The bank now active.
        bank: BankId,
        /// The release installed.
        release: Box<VerifiedRelease>,
    },
    /// The release is the running one.
    UpToDate {
        /// The running version.
        version: String,
    },
}

/// Verifies the bundle's release against what the root knows, stages it into the idle bank,
/// activates and commits it. Nothing changes on any error.
pub fn install(
    root: &mut Root,
    setup: &ReleaseSetup,
    bundle: &Path,
    now: SystemTime,
) -> anyhow::Result<Installed> {
    let channel = ChannelDir::new(bundle, &setup.channel);
    let manifest_bytes = read_capped(&channel.manifest(), signing::MAX_MANIFEST_BYTES as u64)
        .with_context(|| format!("bundle {}: reading the manifest", bundle.display()))?;
    let signature = read_capped(&channel.signature(), MAX_SIGNATURE_BYTES)
        .with_context(|| format!("bundle {}: reading the signature", bundle.display()))?;
    let release = match verify(root, setup, &manifest_bytes, &signature, now) {
        Err(ReleaseError::NotNewer { version, running }) if version == running => {
            return Ok(Installed::UpToDate {
                version: running.to_string(),
            });
        }
        other => other.with_context(|| format!("release {}", channel.manifest().display()))?,
    };
    let manifest = &release.manifest;
    if manifest.artifact.path.starts_with("https://") {
        return Err(anyhow!(
            "release {}: the artifact is at {}; an offline bundle must carry it under v1/",
            channel.manifest().display(),
            manifest.artifact.path
        ));
    }
    let artifact_path = channel.artifact(&manifest.artifact.path);
    let file = File::open(&artifact_path)
        .with_context(|| format!("artifact {}", artifact_path.display()))?;
    let record = bank_record(manifest, &manifest_bytes, &signature, now);
    let mut progress = Progress::new(
        &format!("staging {}", manifest.version),
        manifest.artifact.size,
    );
    let bank = root
        .stage(
            BufReader::with_capacity(256 * 1024, file),
            StageSpec {
                format: archive_format(manifest.artifact.format),
                size: manifest.artifact.size,
                sha256: &manifest.artifact.sha256,
                record,
                // The manifest does not announce them yet: the layout's fallback bounds apply.
                unpacked_size: None,
                entries: None,
                allow_in_place: false,
            },
            &mut |done| progress.update(done),
        )
        .with_context(|| format!("artifact {}", artifact_path.display()))?;
    progress.finish();
    // Offline, nobody watches the new version's health: it is committed in the same
    // write that activates it (the admin can `rollback`).
    root.activate_committed(bank)
        .context("activating the new bank")?;
    Ok(Installed::Swapped {
        bank,
        release: Box::new(release),
    })
}

/// Runs the one verification policy with what this root knows.
pub fn verify(
    root: &Root,
    setup: &ReleaseSetup,
    manifest: &[u8],
    signature: &[u8],
    now: SystemTime,
) -> Result<VerifiedRelease, ReleaseError> {
    let state = root.state();
    let running = state
        .version_of(root.active_bank())
        .and_then(|v| semver::Version::parse(v).ok());
    let bad_versions: Vec<signing::BadVersion> = state
        .bad_versions
        .iter()
        .filter_map(|b| {
            Some(signing::BadVersion {
                version: semver::Version::parse(&b.version).ok()?,
                sequence: b.sequence,
            })
        })
        .collect();
    signing::verify_release(
        manifest,
        signature,
        &Expectations {
            trusted_keys: &setup.trusted_keys,
            product: state.product.as_deref(),
            channel: &setup.channel,
            highest_sequence: state.highest_sequence,
            running_version: running.as_ref(),
            bad_versions: &bad_versions,
            now,
        },
    )
}

/// The bank record of a verified manifest.
pub fn bank_record(
    manifest: &Manifest,
    bytes: &[u8],
    signature: &[u8],
    now: SystemTime,
) -> BankRecord {
    BankRecord {
        version: manifest.version.to_string(),
        sequence: manifest.sequence,
        sha256: manifest.artifact.sha256.clone(),
        staged_at: clock::unix(now),
        product: manifest.product.clone(),
        channel: manifest.channel.clone(),
        command: manifest.entrypoint.command.clone(),
        args: manifest.entrypoint.args.clone(),
        manifest: String::from_utf8_lossy(bytes).into_owned(),
        signature: String::from_utf8_lossy(signature).into_owned(),
    }
}

/// The layout crate's name for a manifest's archive format.
pub fn archive_format(format: ArtifactFormat) -> ArchiveFormat {
    match format {
        ArtifactFormat::Tar => ArchiveFormat::Tar,
        ArtifactFormat::TarGz => ArchiveFormat::TarGz,
        ArtifactFormat::TarZst => ArchiveFormat::TarZst,
    }
}
