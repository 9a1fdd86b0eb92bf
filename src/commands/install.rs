//! `init` and `apply`: install a release from a bundle folder, verified
//! exactly as an online release is, into the idle bank, then swap.

use std::fs::File;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, anyhow};
use bank_layout::{BankId, Root};
use signing::{ReleaseError, VerifiedRelease};

use crate::agent_id;
use crate::channel::{ChannelDir, MAX_SIGNATURE_BYTES, read_capped};
use crate::cli::SetupArgs;
use crate::keyring;
use crate::release::{StagePlan, open_root, stage_bundle, verify_with};
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

/// What an install did.
enum Installed {
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
fn install(
    root: &mut Root,
    setup: &ReleaseSetup,
    bundle: &Path,
    now: SystemTime,
) -> anyhow::Result<Installed> {
    let channel = ChannelDir::new(bundle, &setup.channel);
    // A rotation record in the bundle is applied (and persisted) first: the
    // release may be signed by the key it endorses.
    let ring = keyring::accept_rotation(root.dir(), &channel, &setup.channel, &setup.trusted_keys)
        .with_context(|| format!("bundle {}", bundle.display()))?;
    let manifest_bytes = read_capped(&channel.manifest(), signing::MAX_MANIFEST_BYTES as u64)
        .with_context(|| format!("bundle {}: reading the manifest", bundle.display()))?;
    let signature = read_capped(&channel.signature(), MAX_SIGNATURE_BYTES)
        .with_context(|| format!("bundle {}: reading the signature", bundle.display()))?;
    let release = match verify_with(root.state(), setup, &ring, &manifest_bytes, &signature, now) {
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
    let file = match File::open(&artifact_path) {
        Ok(file) => Some(file),
        // A delta bundle carries the file index and the objects only (issue 14).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && manifest.index.is_some() => None,
        Err(e) => {
            return Err(e).with_context(|| format!("artifact {}", artifact_path.display()));
        }
    };
    let plan = StagePlan::new(setup, &release, &manifest_bytes, &signature, now);
    let bank = stage_bundle(root, &channel, manifest, file, plan)
        .with_context(|| format!("artifact {}", artifact_path.display()))?;
    // Offline, nobody watches the new version's health: it is committed in the same
    // write that activates it (the admin can `rollback`).
    root.activate_committed(bank)
        .context("activating the new bank")?;
    Ok(Installed::Swapped {
        bank,
        release: Box::new(release),
    })
}
