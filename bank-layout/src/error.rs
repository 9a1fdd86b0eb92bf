//! The error type of the bank layout: one variant per failure a caller or a test matches.

use std::io;
use std::path::{Path, PathBuf};

use crate::BankId;

/// Everything that can go wrong with a data root. `Display` is one line naming the
/// input (path, artifact, archive entry) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Another process holds `ROOT/lock`.
    #[error("root {} is locked by another bankswap process", root.display())]
    Locked {
        /// The data root.
        root: PathBuf,
    },
    /// A file system operation failed (ENOSPC, EACCES, ...).
    #[error("{}", path.display())]
    Io {
        /// The file or folder the operation was about.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
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
    /// Reading the artifact stream itself failed (not part of the contract's list:
    /// a source error has no path, and must not be mistaken for a bank write error).
    #[error("reading the artifact failed")]
    Source {
        /// The error the source returned.
        source: io::Error,
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
}

impl LayoutError {
    /// An [`LayoutError::Io`] about `path`.
    pub(crate) fn io(path: &Path, source: io::Error) -> LayoutError {
        LayoutError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A closure for `map_err` that wraps an `io::Error` about `path`.
    pub(crate) fn at(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
        move |source| LayoutError::io(path, source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_name_input_and_reason() {
        let cases = [
            (
                LayoutError::TooLarge { size: 1_048_576 },
                "artifact is larger than the 1048576 bytes announced",
            ),
            (
                LayoutError::PathEscape {
                    entry: "../etc/passwd".into(),
                    reason: "parent directory component".into(),
                },
                "archive entry `../etc/passwd` escapes the bank: parent directory component",
            ),
            (
                LayoutError::HashMismatch {
                    expected: "ab12".into(),
                    actual: "cd34".into(),
                },
                "sha256 mismatch: expected ab12, got cd34",
            ),
            (
                LayoutError::Locked {
                    root: "/var/lib/bankswap".into(),
                },
                "root /var/lib/bankswap is locked by another bankswap process",
            ),
            (
                LayoutError::Truncated {
                    size: 10,
                    received: 4,
                },
                "artifact is truncated: it ended after 4 of the 10 bytes announced",
            ),
            (
                LayoutError::UnsupportedEntry {
                    entry: "dev/null".into(),
                    kind: "fifo".into(),
                },
                "archive entry `dev/null` is a fifo, which a bank may not hold",
            ),
            (
                LayoutError::HeaderTooLarge {
                    kind: "GNU long name header",
                    offset: 1536,
                    size: 1 << 30,
                    limit: 65_536,
                },
                "archive GNU long name header at byte 1536 of the tar stream claims 1073741824 bytes, more than the 65536 allowed",
            ),
            (
                LayoutError::NoRecord {
                    bank: BankId::Bank2,
                },
                "Bank2 holds no release",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn io_errors_name_the_path_and_the_os_error() {
        let error = LayoutError::io(
            Path::new("/r/Bank2/big.bin"),
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        // The path is the message; the OS error is the source, so that a chain
        // printer (anyhow's `{:#}`) shows each once: "/r/Bank2/big.bin: No space left on device".
        assert_eq!(error.to_string(), "/r/Bank2/big.bin");
        let source = std::error::Error::source(&error)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(source.contains("No space left on device"), "{source}");
    }
}
