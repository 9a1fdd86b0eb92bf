//! `publish --rotate-key NEW.pub [--revoke OLD.pub]`: sign a key rotation
//! record with `--key` and write it into the channel
//! (`v1/channels/{channel}/keys.json` + `.minisig`). Agents that trust
//! `--key` then trust NEW as well, and refuse what a revoked key signs.

use std::path::Path;

use anyhow::Context;
use signing::{KeyRing, PublicKey, RotationRecord, SecretKey};

use crate::channel::ChannelDir;
use crate::cli::PublishArgs;
use crate::clock;
use crate::error::UsageError;

/// Runs `publish --rotate-key` / `--revoke`.
pub fn run(args: &PublishArgs, secret: &SecretKey) -> anyhow::Result<()> {
    let Some(to) = &args.to else {
        return Err(UsageError::new(
            "--rotate-key and --revoke write into a console data folder: use --to DIR \
             (the console has no upload route for rotation records yet)",
        )
        .into());
    };
    let endorse = args
        .rotate_key
        .iter()
        .map(|path| public_key("--rotate-key", path))
        .collect::<Result<Vec<_>, _>>()?;
    let revoke = args
        .revoke
        .iter()
        .map(|path| public_key("--revoke", path))
        .collect::<Result<Vec<_>, _>>()?;
    let channel = ChannelDir::new(to, &args.channel);
    let current = channel.rotation_sequence()?;
    let record = RotationRecord {
        channel: args.channel.clone(),
        sequence: current + 1,
        endorse,
        revoke,
        published_at: clock::now_seconds(),
    };
    let bytes = record.to_json();
    let comment = format!(
        "timestamp:{}\tfile:keys.json\tchannel:{}\tsequence:{}",
        clock::unix(record.published_at),
        record.channel,
        record.sequence
    );
    let signature = secret.sign(&bytes, &comment).to_file_string();
    // Check it as an agent that trusts --key would, so that nothing is
    // written that every agent refuses (a self-revocation without a
    // successor, a key both endorsed and revoked).
    let ring = KeyRing::restore(vec![secret.public_key()], Vec::new(), Vec::new(), current);
    signing::verify_rotation(&bytes, signature.as_bytes(), &ring, &args.channel)
        .map_err(|e| UsageError::new(format!("the rotation record would be refused: {e}")))?;
    channel.write_rotation(&bytes, signature.as_bytes())?;
    println!(
        "published key rotation {} on channel {}, signed by {}: endorses [{}], revokes [{}]",
        record.sequence,
        record.channel,
        secret.key_id(),
        ids(&record.endorse),
        ids(&record.revoke),
    );
    Ok(())
}

/// Reads a public key file named by `flag`.
fn public_key(flag: &str, path: &Path) -> anyhow::Result<PublicKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))?;
    PublicKey::parse(&text)
        .map_err(|e| UsageError::new(format!("{flag} {}: {e}", path.display())).into())
}

/// Key ids as "A, B".
fn ids(keys: &[PublicKey]) -> String {
    keys.iter()
        .map(|k| k.key_id().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
