//! Where a command's setup comes from (SPEC §6): the config file, overridden
//! by `--root`, or `--trust KEY.pub` with `--channel` standing in for it.

use std::path::{Path, PathBuf};

use signing::PublicKey;

use crate::cli::{RootArgs, SetupArgs};
use crate::config::{self, AgentConfig, DEFAULT_CHANNEL, DEFAULT_CONFIG, DEFAULT_ROOT};
use crate::error::UsageError;

/// What an offline command needs to verify and install a release.
#[derive(Debug)]
pub struct ReleaseSetup {
    /// The data root.
    pub root: PathBuf,
    /// The channel accepted.
    pub channel: String,
    /// The trusted keys.
    pub trusted_keys: Vec<PublicKey>,
    /// `[update] allow_in_place` of the config (false without one).
    pub allow_in_place: bool,
}

/// The config named by `--config`, or the default one when it exists and nothing stands in for it.
fn config_file(explicit: Option<&Path>, stand_in: bool) -> Result<Option<AgentConfig>, UsageError> {
    match explicit {
        Some(path) => AgentConfig::load(path).map(Some),
        None if !stand_in && Path::new(DEFAULT_CONFIG).exists() => {
            AgentConfig::load(Path::new(DEFAULT_CONFIG)).map(Some)
        }
        None => Ok(None),
    }
}

/// Resolves the root for `status`, `rollback` and `init` without a bundle.
pub fn root_only(args: &RootArgs) -> Result<PathBuf, UsageError> {
    if let Some(root) = &args.root {
        return Ok(root.clone());
    }
    let config = config_file(args.config.as_deref(), false)?;
    Ok(config.map_or_else(|| PathBuf::from(DEFAULT_ROOT), |c| c.root))
}

/// Resolves root, channel and keys for the commands that verify releases.
pub fn for_release(args: &SetupArgs) -> Result<ReleaseSetup, UsageError> {
    let config = config_file(args.config.as_deref(), !args.trust.is_empty())?;
    let trusted_keys = if args.trust.is_empty() {
        match &config {
            Some(c) => c.trusted_keys.clone(),
            None => {
                return Err(UsageError::new(
                    "no trusted keys: give --config FILE, or --trust KEY.pub (repeatable)",
                ));
            }
        }
    } else {
        args.trust
            .iter()
            .map(|k| config::load_public_key(k, Path::new(".")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(UsageError::new)?
    };
    let channel = match (&args.channel, &config) {
        (Some(c), _) => c.clone(),
        (None, Some(c)) => c.channel.clone(),
        (None, None) => DEFAULT_CHANNEL.to_string(),
    };
    config::check_channel(&channel).map_err(UsageError::new)?;
    let root = match (&args.root, &config) {
        (Some(r), _) => r.clone(),
        (None, Some(c)) => c.root.clone(),
        (None, None) => PathBuf::from(DEFAULT_ROOT),
    };
    Ok(ReleaseSetup {
        root,
        channel,
        trusted_keys,
        allow_in_place: config.as_ref().is_some_and(|c| c.update.allow_in_place),
    })
}

/// The root-only view of release flags (`init` without `--bundle`).
pub fn root_of(args: &SetupArgs) -> Result<PathBuf, UsageError> {
    root_only(&RootArgs {
        config: args.config.clone(),
        root: args.root.clone(),
    })
}
