//! `publish --waves 1%,10%,50%,100% [--success 95%] [--halt-on 5%] [--soak 10m]
//! [--report-deadline 10m]` (SPEC §11): the rollout plan the console follows,
//! and a prepared rollback signed here (the console never holds the key),
//! which `console rollout abort --rollback` publishes.
//!
//! Both go to the target *before* the release: the console then never serves
//! the new release beyond its first wave, not even for an instant.

use std::time::Duration;

use anyhow::Context;
use signing::{Manifest, SecretKey};

use super::{Known, Target, current, sign, signed_by_us};
use crate::cli::PublishArgs;
use crate::console::{PLAN_FILE, Plan, ROLLBACK_FILE, ReleaseUpload, parse_ratio, parse_waves};
use crate::error::UsageError;

/// The plan for `manifest` from the flags; `None` without `--waves`.
pub fn plan(
    args: &PublishArgs,
    known: &Known,
    manifest: &Manifest,
) -> anyhow::Result<Option<Plan>> {
    let Some(waves) = &args.waves else {
        return Ok(None);
    };
    let usage = |flag: &str, e: String| UsageError::new(format!("{flag}: {e}"));
    let waves = parse_waves(waves).map_err(|e| usage("--waves", e))?;
    let success = parse_ratio(&args.success).map_err(|e| usage("--success", e))?;
    let halt_on = parse_ratio(&args.halt_on).map_err(|e| usage("--halt-on", e))?;
    let soak = super::flag_duration("--soak", &args.soak)?;
    let deadline = super::flag_duration("--report-deadline", &args.report_deadline)?;
    let plan = Plan {
        sequence: manifest.sequence,
        version: manifest.version.to_string(),
        previous_sequence: (known.sequence > 0).then_some(known.sequence),
        waves,
        success,
        halt_on,
        soak_secs: soak.as_secs(),
        report_deadline_secs: deadline.max(Duration::from_secs(1)).as_secs(),
    };
    plan.validate().map_err(|e| usage("--waves", e))?;
    Ok(Some(plan))
}

/// Writes (or uploads) the plan and, when the channel had a release, a
/// rollback to it signed with the next sequence after `manifest`'s.
pub fn write_plan(
    target: &Target,
    known: &Known,
    secret: &SecretKey,
    manifest: &Manifest,
    plan: &Plan,
) -> anyhow::Result<()> {
    let rollback = prepared_rollback(target, known, secret, manifest)?;
    match target {
        Target::Folder(channel) => {
            std::fs::create_dir_all(channel.dir())
                .with_context(|| format!("creating {}", channel.dir().display()))?;
            let plan_path = channel.dir().join(PLAN_FILE);
            let bytes = serde_json::to_vec_pretty(plan)?;
            bank_layout::write_atomic(&plan_path, &bytes)
                .with_context(|| format!("writing {}", plan_path.display()))?;
            if let Some((bytes, signature)) = &rollback {
                let path = channel.dir().join(ROLLBACK_FILE);
                let sig_path = crate::channel::signature_path(&path);
                bank_layout::write_atomic(&sig_path, signature.as_bytes())
                    .and_then(|()| bank_layout::write_atomic(&path, bytes))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Target::Console(console) => {
            console
                .put_channel_json("rollout", plan)
                .with_context(|| console.failed())?;
            if let Some((bytes, signature)) = rollback {
                let upload = ReleaseUpload {
                    manifest: String::from_utf8(bytes).context("the manifest is not UTF-8")?,
                    signature,
                };
                console
                    .put_channel_json("rollback", &upload)
                    .with_context(|| console.failed())?;
            }
        }
    }
    Ok(())
}

/// The channel's current release re-signed as a rollback: sequence after
/// `manifest`'s, `downgrade`, the same validity as `manifest`.
fn prepared_rollback(
    target: &Target,
    known: &Known,
    secret: &SecretKey,
    manifest: &Manifest,
) -> anyhow::Result<Option<(Vec<u8>, String)>> {
    let base = match target {
        Target::Folder(channel) => current(channel)?,
        Target::Console(console) => match known.releases.last() {
            None => None,
            Some(entry) => {
                let (bytes, signature) = console
                    .history_entry(entry.sequence)
                    .with_context(|| console.failed())?;
                Some(signed_by_us(&bytes, &signature, secret).with_context(|| {
                    format!("preparing the rollback to history entry {}", entry.sequence)
                })?)
            }
        },
    };
    let Some(mut rollback) = base else {
        return Ok(None);
    };
    rollback.sequence = manifest.sequence + 1;
    rollback.published_at = manifest.published_at;
    rollback.expires_at = manifest.expires_at;
    rollback.rollout = None;
    rollback.downgrade = true;
    rollback
        .validate()
        .context("the prepared rollback is not valid")?;
    Ok(Some(sign(secret, &rollback)))
}
