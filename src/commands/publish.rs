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
//! `target.rs` is where the release goes (folder or console) and the channel's
//! history; `manifest.rs` builds a new payload release's manifest and signs it;
//! `pack.rs` is the deterministic packer; `upload.rs` the console client;
//! `index.rs` the file index and objects of delta updates (written or uploaded).
//! `waves.rs` the rollout plan and prepared rollback of `--waves` (SPEC §11).

mod agent;
mod index;
mod manifest;
mod pack;
mod rotate;
mod target;
mod upload;
mod waves;

use std::time::Duration;

use anyhow::{Context, anyhow};
use signing::Rollout;

// `Known`, `NewRelease`, `Target`, `current`, `semver_flag`, `sign` and
// `signed_by_us` are also what `agent.rs` and `waves.rs` take from here.
use self::manifest::{NewRelease, fresh, semver_flag, sign};
use self::target::{Known, Target, current, signed_by_us};
use crate::cli::PublishArgs;
use crate::clock;
use crate::commands::keys::read_secret_key;
use crate::config::check_channel;
use crate::error::UsageError;

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

/// A duration flag, within the bounds a manifest may carry
/// ([`signing::MAX_DURATION`]): a bad one is a usage error (exit 2).
fn flag_duration(flag: &str, value: &str) -> Result<Duration, UsageError> {
    signing::parse_duration(value).map_err(|why| UsageError::new(format!("{flag}: {why}")))
}
