//! The files of a channel under a base folder (SPEC §4): what `publish`
//! writes, what a bundle holds, and what the console serves.
//!
//! ```text
//! BASE/v1/channels/{channel}/release.json           the manifest
//! BASE/v1/channels/{channel}/release.json.minisig   its signature
//! BASE/v1/channels/{channel}/history/{seq}.json     every manifest ever published (+ .minisig)
//! BASE/v1/channels/{channel}/keys.json              the key rotation record, if any (+ .minisig)
//! BASE/v1/artifacts/{sha256}.tar.zst                the payload archives
//! ```

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The largest signature file read: the one limit of the signing crate
/// ([`signing::MAX_SIGNATURE_BYTES`]), as the `u64` that [`read_capped`] takes.
/// A smaller cap here once made the agent refuse valid signatures with long
/// trusted comments as malformed.
pub const MAX_SIGNATURE_BYTES: u64 = signing::MAX_SIGNATURE_BYTES as u64;

/// The file names of one channel under one base folder.
#[derive(Debug, Clone)]
pub struct ChannelDir {
    /// The `v1` folder.
    v1: PathBuf,
    /// The channel's folder.
    dir: PathBuf,
}

impl ChannelDir {
    /// The channel `channel` under `base` (a console data folder or a bundle).
    pub fn new(base: &Path, channel: &str) -> ChannelDir {
        let v1 = base.join("v1");
        let dir = v1.join("channels").join(channel);
        ChannelDir { v1, dir }
    }

    /// The channel's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current manifest.
    pub fn manifest(&self) -> PathBuf {
        self.dir.join("release.json")
    }

    /// The current manifest's signature.
    pub fn signature(&self) -> PathBuf {
        self.dir.join("release.json.minisig")
    }

    /// The channel's key rotation record (`publish --rotate-key`).
    pub fn keys(&self) -> PathBuf {
        self.dir.join("keys.json")
    }

    /// The key rotation record's signature.
    pub fn keys_signature(&self) -> PathBuf {
        self.dir.join("keys.json.minisig")
    }

    /// The sequence of the current rotation record (0 when there is none):
    /// a new record must exceed it. Read unverified: this is the
    /// publisher's own folder, and agents verify what they apply.
    pub fn rotation_sequence(&self) -> anyhow::Result<u64> {
        let path = self.keys();
        match read_capped(&path, signing::MAX_ROTATION_BYTES as u64) {
            Ok(bytes) => signing::RotationRecord::from_json(&bytes)
                .map(|record| record.sequence)
                .with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes a signed rotation record, each file atomically: the signature
    /// first, then the record (a reader that sees the new record finds its
    /// signature; one that pairs the new signature with the old record
    /// refuses it, retries, and changes nothing).
    pub fn write_rotation(&self, record: &[u8], signature: &[u8]) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        for (path, content) in [(self.keys_signature(), signature), (self.keys(), record)] {
            bank_layout::write_atomic(&path, content)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// The folder of past manifests.
    pub fn history(&self) -> PathBuf {
        self.dir.join("history")
    }

    /// The history file of one sequence number (zero-padded so names sort).
    pub fn history_manifest(&self, sequence: u64) -> PathBuf {
        self.history().join(format!("{sequence:010}.json"))
    }

    /// The folder of artifacts (shared by all channels of a base).
    pub fn artifacts(&self) -> PathBuf {
        self.v1.join("artifacts")
    }

    /// Resolves a manifest's relative `artifact.path` under `v1/`.
    pub fn artifact(&self, relative: &str) -> PathBuf {
        self.v1.join(relative)
    }

    /// Sequence numbers present in the history, ascending.
    pub fn history_sequences(&self) -> io::Result<Vec<u64>> {
        let entries = match std::fs::read_dir(self.history()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut sequences = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_suffix(".json")
                .and_then(|s| s.parse::<u64>().ok())
            {
                sequences.push(seq);
            }
        }
        sequences.sort_unstable();
        Ok(sequences)
    }

    /// The sequence a new release must exceed: the highest in the history, or
    /// of the current manifest if that is higher (a folder written by hand).
    pub fn current_sequence(&self) -> io::Result<u64> {
        let history = self.history_sequences()?.last().copied().unwrap_or(0);
        let current = match read_capped(&self.manifest(), signing::MAX_MANIFEST_BYTES as u64) {
            Ok(bytes) => signing::Manifest::from_json(&bytes).map_or(0, |m| m.sequence),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(history.max(current))
    }

    /// Writes a signed release of `sequence`, each file atomically and in an
    /// order that never serves a manifest without its signature for long:
    /// the history entry (signature, then manifest), then the current
    /// signature, then the current manifest (which is what agents and the
    /// console's push watcher look at). `publish --to` and the console's
    /// upload route both write through here.
    pub fn write_release(
        &self,
        sequence: u64,
        manifest: &[u8],
        signature: &[u8],
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.history())
            .with_context(|| format!("creating {}", self.history().display()))?;
        let history = self.history_manifest(sequence);
        for (path, content) in [
            (signature_path(&history), signature),
            (history, manifest),
            (self.signature(), signature),
            (self.manifest(), manifest),
        ] {
            bank_layout::write_atomic(&path, content)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// Appends `.minisig` to a path.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

/// Reads at most `limit + 1` bytes, so that a caller can tell "too large" without reading it all.
pub fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_written_into_the_history_and_made_current() {
        let base = tempfile::tempdir().unwrap();
        let channel = ChannelDir::new(base.path(), "stable");
        assert_eq!(channel.current_sequence().unwrap(), 0);
        channel.write_release(7, b"manifest", b"signature").unwrap();
        assert_eq!(channel.history_sequences().unwrap(), vec![7]);
        let history = channel.history_manifest(7);
        assert_eq!(std::fs::read(&history).unwrap(), b"manifest");
        assert_eq!(
            std::fs::read(signature_path(&history)).unwrap(),
            b"signature"
        );
        assert_eq!(std::fs::read(channel.manifest()).unwrap(), b"manifest");
        assert_eq!(std::fs::read(channel.signature()).unwrap(), b"signature");
        // The current manifest does not parse here: the history decides.
        assert_eq!(channel.current_sequence().unwrap(), 7);
    }
}
