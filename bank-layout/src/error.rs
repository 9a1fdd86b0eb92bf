//! The error type of the bank layout: one variant per failure a caller or a test matches.

use std::io;
use std::path::{Path, PathBuf};

use crate::{BankId, SlotId};

/// Everything that can go wrong with a data root. `Display` is one line naming the
/// input (path, artifact, archive entry) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Another process holds `ROOT/lock`.
    #[error(
        "root {} is locked by another bankswap process{}",
        root.display(),
        holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Locked {
        /// The data root.
        root: PathBuf,
        /// Who holds it, as the holder wrote it into the lock file (`pid 42: bankswap
        /// run`), when it did.
        holder: Option<String>,
    },
    /// A file system operation failed (ENOSPC, EACCES, ...). The OS error is part of
    /// the one line (`/r/Bank2/f: No space left on device`) and not a `source()`, so a
    /// chain printer (anyhow's `{:#}`) shows it once.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file or folder the operation was about.
        path: PathBuf,
        /// The OS error.
        cause: io::Error,
    },
    /// `state.json` exists but cannot be used; nothing on disk was modified.
    #[error(
        "state file {} is corrupt: {reason}; restore it from a backup, or remove it to rebuild it from the bank records",
        path.display()
    )]
    CorruptState {
        /// Path of `state.json`.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// The artifact stream held more bytes than announced.
    #[error("artifact is larger than the {size} bytes announced")]
    TooLarge {
        /// The announced size.
        size: u64,
    },
    /// The artifact stream ended before the announced size.
    #[error("artifact is truncated: it ended after {received} of the {size} bytes announced")]
    Truncated {
        /// The announced size.
        size: u64,
        /// What arrived.
        received: u64,
    },
    /// The artifact's SHA-256 is not the announced one.
    #[error("sha256 mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// The announced digest (hex).
        expected: String,
        /// The digest of the bytes received (lower-case hex).
        actual: String,
    },
    /// An archive entry would land, or point, outside the bank.
    #[error("archive entry `{entry}` escapes the bank: {reason}")]
    PathEscape {
        /// The entry's path as written in the archive.
        entry: String,
        /// Which rule it broke.
        reason: String,
    },
    /// An archive entry of a kind a bank may not hold (device, fifo, ...).
    #[error("archive entry `{entry}` is a {kind}, which a bank may not hold")]
    UnsupportedEntry {
        /// The entry's path as written in the archive.
        entry: String,
        /// What kind of entry it is.
        kind: String,
    },
    /// The archive is malformed (bad compression, bad tar structure, conflicting entries).
    #[error("malformed archive: {reason}")]
    Archive {
        /// What is wrong.
        reason: String,
    },
    /// A tar header whose data the `tar` reader holds whole in memory (a GNU long name
    /// or long link, a pax header) claims more than the limit. Refused before its data is
    /// read: the digest is only known at the end of the stream, and a decompression bomb
    /// behind such a header would otherwise be read into memory first.
    #[error(
        "archive {kind} at byte {offset} of the tar stream claims {size} bytes, more than the {limit} allowed"
    )]
    HeaderTooLarge {
        /// Which header: "GNU long name header", "GNU long link header", "pax extended
        /// header" or "pax global header".
        kind: &'static str,
        /// Its offset in the decompressed tar stream.
        offset: u64,
        /// The data size its size field claims.
        size: u64,
        /// The limit it broke.
        limit: u64,
    },
    /// A release's file index is malformed or unsafe (delta staging, issue 14).
    #[error("file index: {reason}")]
    BadIndex {
        /// What is wrong, naming the entry.
        reason: String,
    },
    /// An object's bytes are not the file the index announces.
    #[error("object for `{path}`: {reason}")]
    ObjectMismatch {
        /// The file of the index it was for.
        path: String,
        /// How it differs.
        reason: String,
    },
    /// An object is longer than the index announces: stopped one byte past it.
    #[error("object {sha256} is larger than the {packed} bytes announced")]
    ObjectTooLarge {
        /// The object's name.
        sha256: String,
        /// Its announced size.
        packed: u64,
    },
    /// The object source failed (a download error, a 404).
    #[error("fetching object {sha256} failed: {source}")]
    ObjectSource {
        /// The object's name.
        sha256: String,
        /// What the source said.
        source: io::Error,
    },
    /// A file of the active bank no longer has the digest its record lists.
    #[error("the running bank's `{path}` no longer matches its record")]
    ActiveFileChanged {
        /// Its path below the bank.
        path: String,
    },
    /// The tree built by a delta staging differs from its index.
    #[error("built tree differs from the index: `{path}` {reason}")]
    TreeMismatch {
        /// The entry.
        path: String,
        /// How.
        reason: String,
    },
    /// A delta staging was asked for, but the active bank's record has no
    /// per-file digests to compare with.
    #[error("the running bank has no per-file digests to stage a delta from")]
    NoDelta,
    /// Reading the artifact stream itself failed (not part of the contract's list:
    /// a source error has no path, and must not be mistaken for a bank write error).
    #[error("reading the artifact failed")]
    Source {
        /// The error the source returned.
        source: io::Error,
    },
    /// The archive unpacks to more bytes than announced (`artifact.unpacked_size`, or
    /// the fallback bound when the manifest announces none): refused before they are written.
    #[error(
        "archive unpacks to more than the {limit} bytes {basis}; stopped before writing past it"
    )]
    UnpackedTooLarge {
        /// The bound.
        limit: u64,
        /// Where the bound comes from ("announced", or the fallback's rule).
        basis: String,
    },
    /// The archive holds more entries than announced (`artifact.entries`, or the fallback).
    #[error("archive holds more than the {limit} entries {basis}")]
    TooManyEntries {
        /// The bound.
        limit: u64,
        /// Where the bound comes from.
        basis: String,
    },
    /// Not enough free space (or inodes) in the root's file system, even in place.
    #[error(
        "not enough space in {}: staging needs {} MiB, {} MiB free ({needed_inodes} inodes needed, {free_inodes} free)",
        root.display(), mib(*needed), mib(*free)
    )]
    NoRoom {
        /// The data root.
        root: PathBuf,
        /// Bytes staging needs.
        needed: u64,
        /// Bytes free for us.
        free: u64,
        /// Inodes staging needs.
        needed_inodes: u64,
        /// Inodes free for us.
        free_inodes: u64,
    },
    /// There is room only to stage in place (over the idle bank, losing the rollback
    /// target), and the caller did not allow it.
    #[error(
        "not enough space in {} for a scratch copy: staging needs {} MiB, {} MiB free; only in place over the idle bank ({} MiB, the rollback target) would fit, which is not allowed (allow_in_place)",
        root.display(), mib(*needed), mib(*free), mib(*idle)
    )]
    InPlaceOnly {
        /// The data root.
        root: PathBuf,
        /// Bytes staging needs.
        needed: u64,
        /// Bytes free for us.
        free: u64,
        /// Bytes the idle bank holds.
        idle: u64,
    },
    /// The release's entrypoint is not a usable program inside the bank.
    #[error("entrypoint `{command}` {reason}")]
    BadEntrypoint {
        /// The command as the manifest gives it.
        command: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Rollback asked for, but the idle bank holds no release.
    #[error("no previous version to roll back to: the idle bank holds no release")]
    NoPrevious,
    /// The other bank holds a version marked bad; rolling back into it is refused.
    #[error(
        "{bank} holds {version}, which is marked bad ({reason}); there is no good version to roll back to"
    )]
    PreviousMarkedBad {
        /// The other bank.
        bank: BankId,
        /// Its version.
        version: String,
        /// Why it was marked bad.
        reason: String,
    },
    /// Staging asked for while the active bank is on trial.
    #[error(
        "a trial is in progress: commit or roll back before staging (the idle bank holds the fallback)"
    )]
    TrialInProgress,
    /// The bank holds no (valid) record, so it cannot be activated.
    #[error("{bank} holds no release")]
    NoRecord {
        /// The bank asked for.
        bank: BankId,
    },
    /// An inherited lock descriptor is not this root's lock held by us.
    #[error("root {}: cannot adopt the inherited lock: {reason}", root.display())]
    LockNotOurs {
        /// The data root.
        root: PathBuf,
        /// What did not match.
        reason: String,
    },
    /// `agent/state.json` exists but cannot be used; nothing on disk was modified.
    #[error(
        "agent state file {} is corrupt: {reason}; remove it to run the installed binary",
        path.display()
    )]
    CorruptAgentState {
        /// Path of `agent/state.json`.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// Staging or a new attempt asked for while an agent build is on trial.
    #[error("an agent self-update is in progress: it must commit or fail first")]
    AgentTrialInProgress,
    /// The agent slot holds no (valid) build.
    #[error("agent/{slot} holds no build")]
    NoAgentBuild {
        /// The slot asked for.
        slot: SlotId,
    },
    /// Both agent slots are in use (the active build and the running one).
    #[error("no idle agent slot: one holds the committed build, the other the running one")]
    NoIdleAgentSlot,
    /// A trial-marker operation did not match the attempt on disk.
    #[error("agent self-update attempt: {reason}")]
    AgentAttemptMismatch {
        /// What did not match.
        reason: String,
    },
}

impl LayoutError {
    /// An [`LayoutError::Io`] about `path`.
    pub(crate) fn io(path: &Path, cause: io::Error) -> LayoutError {
        LayoutError::Io {
            path: path.to_path_buf(),
            cause,
        }
    }

    /// A closure for `map_err` that wraps an `io::Error` about `path`.
    pub(crate) fn at(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
        move |source| LayoutError::io(path, source)
    }
}

/// Bytes in MiB, rounded up: "needs 1 MiB" for 10 bytes, never "needs 0 MiB".
fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1024 * 1024)
}

#[cfg(test)]
mod tests;
