//! `init` and `apply`: install a release from a bundle folder, verified
//! exactly as an online release is, into the idle bank, then swap.

use std::fs::File;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, anyhow};
use bank_layout::{AGENT_DIR, AgentSlots, BankId, Root};
use signing::{KeyRing, ReleaseError, VerifiedRelease};

use crate::agent::self_update::selftest::{Target, qualify_blocking};
use crate::agent::self_update::{Identity, offline_timeout, stage_spec, verify_agent};
use crate::agent_id;
use crate::channel::{ChannelDir, MAX_SIGNATURE_BYTES, read_capped};
use crate::cli::SetupArgs;
use crate::config::{AgentConfig, DEFAULT_SELF_UPDATE_CHANNEL};
use crate::keyring;
use crate::release::{StagePlan, effective_now, open_root, stage_release, verify_with};
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
    let config = args.config.as_deref().map(AgentConfig::load).transpose()?;
    if let Some(channel) = agent_channel(&setup, config.as_ref(), bundle) {
        let config = args.config.as_deref().zip(config.as_ref());
        return apply_agent(&setup, config, &channel, bundle, SystemTime::now());
    }
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

/// The channel of `bundle` that holds an agent release to apply: the setup's
/// channel if its manifest says `"kind": "agent"`; else, when the bundle has no
/// release on that channel, the `[self_update]` channel (default `bankswap`) if
/// it has one. `None`: a payload bundle.
fn agent_channel(
    setup: &ReleaseSetup,
    config: Option<&AgentConfig>,
    bundle: &Path,
) -> Option<String> {
    let kind_of = |channel: &str| -> Option<String> {
        let dir = ChannelDir::new(bundle, channel);
        let bytes = read_capped(&dir.manifest(), signing::MAX_MANIFEST_BYTES as u64).ok()?;
        // A peek only, to pick the path: the release is verified on it in full.
        let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        Some(value["kind"].as_str().unwrap_or("payload").to_owned())
    };
    match kind_of(&setup.channel) {
        Some(kind) => (kind == "agent").then(|| setup.channel.clone()),
        None => {
            let channel = config.map_or(DEFAULT_SELF_UPDATE_CHANNEL, |c| {
                c.self_update.channel.as_str()
            });
            (kind_of(channel).as_deref() == Some("agent")).then(|| channel.to_owned())
        }
    }
}

/// `apply --bundle` of an agent release (SPEC §9, offline): verified with the
/// agent's own sequence and bad list, staged into the idle agent slot, qualified
/// with `--self-test`, and committed in one write: the next start of the
/// installed binary runs it. A build that fails its self-test is marked bad.
fn apply_agent(
    setup: &ReleaseSetup,
    config: Option<(&Path, &AgentConfig)>,
    channel: &str,
    bundle: &Path,
    now: SystemTime,
) -> anyhow::Result<()> {
    let root = open_root(&setup.root)?;
    let (mut slots, notes) = AgentSlots::open(&root, None)
        .with_context(|| format!("root {}: agent slots", setup.root.display()))?;
    for note in notes {
        tracing::warn!(root = %setup.root.display(), "recovered: {note}");
    }
    let dir = ChannelDir::new(bundle, channel);
    let manifest_bytes = read_capped(&dir.manifest(), signing::MAX_MANIFEST_BYTES as u64)
        .with_context(|| format!("bundle {}: reading the manifest", bundle.display()))?;
    let signature = read_capped(&dir.signature(), MAX_SIGNATURE_BYTES)
        .with_context(|| format!("bundle {}: reading the signature", bundle.display()))?;
    let keys = config
        .and_then(|(_, c)| c.self_update.trusted_keys.clone())
        .unwrap_or_else(|| setup.trusted_keys.clone());
    let identity = Identity::of_self(root.dir());
    let verified = verify_agent(
        slots.state(),
        &KeyRing::new(keys),
        channel,
        &identity.version,
        &manifest_bytes,
        &signature,
        effective_now(root.state(), now),
    );
    let release = match verified {
        Err(ReleaseError::NotNewer { version, running }) if version == running => {
            println!("agent {running} is running already; nothing to do");
            return Ok(());
        }
        other => other.with_context(|| format!("agent release {}", dir.manifest().display()))?,
    };
    let manifest = &release.manifest;
    if manifest.artifact.path.starts_with("https://") {
        return Err(anyhow!(
            "agent release {}: the artifact is at {}; an offline bundle must carry it under v1/",
            dir.manifest().display(),
            manifest.artifact.path
        ));
    }
    let artifact_path = dir.artifact(&manifest.artifact.path);
    let file = File::open(&artifact_path)
        .with_context(|| format!("artifact {}", artifact_path.display()))?;
    let spec = stage_spec(&release, &manifest_bytes, &signature, now);
    let slot = slots
        .stage(file, spec, identity.slot, &mut |_| {})
        .with_context(|| format!("artifact {}", artifact_path.display()))?;
    let version = manifest.version.to_string();
    let target = match config {
        Some((path, _)) => Target::Config(path.to_path_buf()),
        None => Target::Root(setup.root.clone()),
    };
    let timeout = offline_timeout(config.map(|(_, c)| &c.self_update));
    match qualify_blocking(&slots.binary(slot), &target, &version, timeout) {
        Ok(report) => slots.set_handover_schemas(slot, report.handover_schemas)?,
        Err(reason) => {
            let reason = format!("agent {version}: {reason}");
            slots
                .mark_bad(&version, manifest.sequence, &reason)
                .context("marking the agent build bad")?;
            return Err(anyhow!("{reason}; marked bad, the installed agent stays"));
        }
    }
    slots
        .activate_committed(slot)
        .context("committing the agent build")?;
    println!(
        "agent {version} installed in {}; the next start runs it",
        root.dir().join(AGENT_DIR).join(slot.dir_name()).display()
    );
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
    let file = File::open(&artifact_path)
        .with_context(|| format!("artifact {}", artifact_path.display()))?;
    let plan = StagePlan::new(&release, &manifest_bytes, &signature, now);
    let bank = stage_release(root, file, plan)
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
