//! `state.json` and the bank record: their types, and reading them defensively.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{BankId, LayoutError, Phase, RECORD_FILE};

/// The `schema` value this crate writes and understands.
pub const STATE_SCHEMA: u32 = 1;

/// Largest `state.json` read. It holds two versions, a pending manifest (at most 64 KiB
/// by SPEC §4) and a list of bad versions: 4 MiB is far above any honest file and keeps
/// a runaway or hostile file from exhausting memory.
const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;

/// Most bad versions `state.json` keeps; the oldest marks go first. Versions come from
/// signed manifests (at most 64 KiB each), so even 32 absurdly long ones stay below
/// [`MAX_STATE_BYTES`], and no agent meets 32 distinct bad releases between two good ones.
pub const MAX_BAD_VERSIONS: usize = 32;

/// Longest `last_error` and bad-version reason kept, in bytes (cut at a character
/// boundary, with an ellipsis): a line of status, not a log.
pub const MAX_NOTE_BYTES: usize = 1024;

/// Largest bank record read: a manifest (at most 64 KiB) and its signature, plus a few
/// short fields (1 MiB), plus the per-file digests of at most an index's worth of
/// entries (each shorter than its index entry, so [`MAX_INDEX_BYTES`](crate::MAX_INDEX_BYTES)
/// bounds them, twice that for the pretty-printed form). Anything bigger is not a
/// record we wrote.
const MAX_RECORD_BYTES: u64 = 1024 * 1024 + 2 * crate::MAX_INDEX_BYTES;

/// The bank record, `RECORD_FILE` inside a bank: written last, after the bank's files
/// are durable, so its presence means the bank is complete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankRecord {
    /// Payload version (semver text from the manifest).
    pub version: String,
    /// Manifest sequence of the release.
    pub sequence: u64,
    /// SHA-256 of the artifact (lower-case hex), as verified while staging.
    pub sha256: String,
    /// When the bank was staged, unix seconds (passed in by the caller).
    pub staged_at: u64,
    /// Product of the release.
    pub product: String,
    /// Channel the release came from.
    pub channel: String,
    /// Entrypoint command, relative to the bank folder.
    pub command: String,
    /// Entrypoint arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// The exact signed manifest bytes, for audit and re-verification.
    pub manifest: String,
    /// The exact minisign signature of `manifest`.
    pub signature: String,
    /// The regular files of the bank with their digests, from the release's
    /// verified file index (issue 14): what a delta staging compares the next
    /// index with, without reading the bank. `None` for a bank staged
    /// without an index (an older agent, or a release published without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<crate::FileDigest>>,
}

/// A version this agent refuses to install again, up to a sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadVersion {
    /// The payload version.
    pub version: String,
    /// Bad at or below this manifest sequence; a higher sequence re-publishing it clears it.
    pub sequence: u64,
    /// Why it was marked bad (e.g. "health check failed 3 times").
    pub reason: String,
}

/// A release that passed verification and waits for its slot (or is being staged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The payload version.
    pub version: String,
    /// The manifest sequence.
    pub sequence: u64,
    /// Earliest start, unix seconds.
    pub not_before: u64,
    /// The exact signed manifest bytes.
    pub manifest: String,
    /// The exact minisign signature of `manifest`.
    pub signature: String,
}

/// `state.json`: the single source of truth of a root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Layout schema, [`STATE_SCHEMA`].
    pub schema: u32,
    /// The bank the supervisor runs.
    pub active: BankId,
    /// Whether the active bank is committed or on trial.
    pub phase: Phase,
    /// Version held by Bank1, kept in sync with its record.
    #[serde(default)]
    pub bank1_version: Option<String>,
    /// Version held by Bank2, kept in sync with its record.
    #[serde(default)]
    pub bank2_version: Option<String>,
    /// Highest manifest sequence ever accepted (replay defence).
    pub highest_sequence: u64,
    /// Product this root runs; `None` on a fresh root (accepts any).
    #[serde(default)]
    pub product: Option<String>,
    /// Versions marked bad by this agent.
    #[serde(default)]
    pub bad_versions: Vec<BadVersion>,
    /// A verified release waiting to be staged.
    #[serde(default)]
    pub pending: Option<Pending>,
    /// When the current trial started, unix seconds.
    #[serde(default)]
    pub trial_started: Option<u64>,
    /// When the console was last asked, unix seconds.
    #[serde(default)]
    pub last_check: Option<u64>,
    /// The last error, one line, for `status` and reports.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The latest trustworthy time this root has seen, unix seconds: a verified
    /// release's `published_at`, the console's `Date`, the banks' staging times.
    /// Never lowered; expiry is checked against the later of it and the clock.
    #[serde(default)]
    pub latest_time: Option<u64>,
}

impl Default for State {
    /// The state of a fresh root: Bank1 active and empty, committed, nothing seen.
    fn default() -> State {
        State {
            schema: STATE_SCHEMA,
            active: BankId::Bank1,
            phase: Phase::Committed,
            bank1_version: None,
            bank2_version: None,
            highest_sequence: 0,
            product: None,
            bad_versions: Vec::new(),
            pending: None,
            trial_started: None,
            last_check: None,
            last_error: None,
            latest_time: None,
        }
    }
}

/// The one bad-version rule, used by the rollback refusal here and (through the binary)
/// by the release policy: `version` at `sequence` is refused when a mark names the same
/// version (semver equality; exact text where either does not parse) at or above that
/// sequence. A higher sequence re-publishing the version clears the mark.
pub fn marked_bad<'a>(
    bad_versions: &'a [BadVersion],
    version: &str,
    sequence: u64,
) -> Option<&'a BadVersion> {
    let parsed = semver::Version::parse(version).ok();
    bad_versions.iter().find(|bad| {
        let same = match (&parsed, semver::Version::parse(&bad.version).ok()) {
            (Some(a), Some(b)) => *a == b,
            _ => bad.version == version,
        };
        same && sequence <= bad.sequence
    })
}

/// `text` cut to at most [`MAX_NOTE_BYTES`] bytes at a character boundary, one line.
pub(crate) fn bounded_note(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() <= MAX_NOTE_BYTES {
        return line;
    }
    let mut end = MAX_NOTE_BYTES - '…'.len_utf8();
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// Marks `version` bad at or below `sequence` in `bad_versions` (the banks' list or the
/// agent's): an existing mark of that version is raised to the higher sequence, takes
/// the new reason and becomes the newest.
pub(crate) fn add_bad(
    bad_versions: &mut Vec<BadVersion>,
    version: &str,
    sequence: u64,
    reason: &str,
) {
    let mut mark = BadVersion {
        version: version.to_owned(),
        sequence,
        reason: bounded_note(reason),
    };
    if let Some(i) = bad_versions.iter().position(|b| b.version == version) {
        mark.sequence = mark.sequence.max(bad_versions[i].sequence);
        bad_versions.remove(i);
    }
    bad_versions.push(mark);
}

impl State {
    /// Marks `version` bad at or below `sequence`: an existing mark of that version is
    /// raised to the higher sequence, takes the new reason and becomes the newest.
    pub(crate) fn add_bad(&mut self, version: &str, sequence: u64, reason: &str) {
        add_bad(&mut self.bad_versions, version, sequence, reason);
    }

    /// Applies the bounds of what `state.json` keeps: at most [`MAX_BAD_VERSIONS`] (the
    /// newest), notes at most [`MAX_NOTE_BYTES`]; so it never outgrows its read cap.
    pub(crate) fn bound(&mut self) {
        let excess = self.bad_versions.len().saturating_sub(MAX_BAD_VERSIONS);
        self.bad_versions.drain(..excess);
        for bad in &mut self.bad_versions {
            if bad.reason.len() > MAX_NOTE_BYTES {
                bad.reason = bounded_note(&bad.reason);
            }
        }
        if let Some(error) = &self.last_error
            && error.len() > MAX_NOTE_BYTES
        {
            self.last_error = Some(bounded_note(error));
        }
    }

    /// Raises [`State::latest_time`] to `unix` if that is later; never lowers it.
    pub fn note_time(&mut self, unix: u64) {
        self.latest_time = Some(self.latest_time.map_or(unix, |t| t.max(unix)));
    }

    /// The version `state.json` lists for `bank`.
    pub fn version_of(&self, bank: BankId) -> Option<&str> {
        match bank {
            BankId::Bank1 => self.bank1_version.as_deref(),
            BankId::Bank2 => self.bank2_version.as_deref(),
        }
    }

    /// Sets the version listed for `bank`.
    pub(crate) fn set_version(&mut self, bank: BankId, version: Option<String>) {
        match bank {
            BankId::Bank1 => self.bank1_version = version,
            BankId::Bank2 => self.bank2_version = version,
        }
    }

    /// Makes the listed versions and `highest_sequence` agree with the bank records,
    /// and raises `latest_time` to their staging times.
    /// Returns the banks whose listed version changed, with the old listing.
    pub(crate) fn sync_with(
        &mut self,
        records: &[Option<BankRecord>; 2],
    ) -> Vec<(BankId, Option<String>)> {
        let mut changed = Vec::new();
        for bank in BankId::ALL {
            let actual = records[bank.index()].as_ref().map(|r| r.version.clone());
            if self.version_of(bank) != actual.as_deref() {
                changed.push((bank, self.version_of(bank).map(str::to_owned)));
                self.set_version(bank, actual);
            }
            if let Some(record) = &records[bank.index()] {
                self.highest_sequence = self.highest_sequence.max(record.sequence);
                self.note_time(record.staged_at);
            }
        }
        changed
    }

    /// The bytes written to `state.json`: pretty JSON and a trailing newline.
    pub(crate) fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Parses `state.json` bytes; `path` only names the file in the error.
    pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<State, LayoutError> {
        let corrupt = |reason: String| LayoutError::CorruptState {
            path: path.to_path_buf(),
            reason,
        };
        let state: State = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if state.schema != STATE_SCHEMA {
            return Err(corrupt(format!(
                "unsupported schema {} (this bankswap understands {STATE_SCHEMA})",
                state.schema
            )));
        }
        Ok(state)
    }

    /// Reads `path`: `Ok(None)` if it does not exist.
    pub(crate) fn read(path: &Path) -> Result<Option<State>, LayoutError> {
        match read_capped(path, MAX_STATE_BYTES) {
            Ok(Capped::Whole(bytes)) => State::parse(path, &bytes).map(Some),
            Ok(Capped::TooBig) => Err(LayoutError::CorruptState {
                path: path.to_path_buf(),
                reason: format!("larger than {MAX_STATE_BYTES} bytes"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LayoutError::io(path, e)),
        }
    }
}

impl BankRecord {
    /// Reads the record of the bank folder `bank_dir`. `Ok(None)` if it is missing, too
    /// big, not a regular file or not valid JSON: such a bank is not complete. Other I/O
    /// errors are returned, so that a passing EACCES never makes a good bank look empty.
    pub(crate) fn read(bank_dir: &Path) -> Result<Option<BankRecord>, LayoutError> {
        let path = bank_dir.join(RECORD_FILE);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_file() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LayoutError::io(&path, e)),
        }
        match read_capped(&path, MAX_RECORD_BYTES) {
            Ok(Capped::Whole(bytes)) => Ok(serde_json::from_slice(&bytes).ok()),
            Ok(Capped::TooBig) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LayoutError::io(&path, e)),
        }
    }

    /// The bytes written to `RECORD_FILE`.
    pub(crate) fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}

/// A file read with a size cap.
pub(crate) enum Capped {
    /// The whole content, within the cap.
    Whole(Vec<u8>),
    /// The file is larger than the cap.
    TooBig,
}

/// Reads at most `cap` bytes of `path`, telling whether there was more.
pub(crate) fn read_capped(path: &Path, cap: u64) -> io::Result<Capped> {
    let mut bytes = Vec::new();
    File::open(path)?.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Ok(Capped::TooBig);
    }
    Ok(Capped::Whole(bytes))
}

#[cfg(test)]
mod tests;
