//! The files of a channel under a base folder (SPEC §4): what `publish`
//! writes, what a bundle holds, and what the console serves.
//!
//! ```text
//! BASE/v1/channels/{channel}/release.json           the manifest
//! BASE/v1/channels/{channel}/release.json.minisig   its signature
//! BASE/v1/channels/{channel}/history/{seq}.json     every manifest ever published (+ .minisig)
//! BASE/v1/artifacts/{sha256}.tar.zst                the payload archives
//! ```

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The largest signature file read (a minisig is ~300 bytes; a trusted comment may be long).
pub const MAX_SIGNATURE_BYTES: u64 = 8 * 1024;

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
