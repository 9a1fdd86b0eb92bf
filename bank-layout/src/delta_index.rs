//! The file index of a release tree (issue 14): every folder, file and link
//! of the bank a release unpacks to, with each file's size, mode and sha256.
//! `publish` writes it beside the full artifact, the manifest carries its
//! digest, and a delta staging builds the new bank from it.
//!
//! [`Index::from_json`] is the one gate: a parsed index has only relative
//! paths of plain names (no `..`, `.`, empty or absolute component), no entry
//! twice, every entry's parent listed before it as a folder, no entry named
//! like the bank record, and bounded counts. Symlink targets are checked once
//! the tree is built, the way extraction checks them (resolved inside the bank).

use std::collections::HashSet;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::{LayoutError, RECORD_FILE};

/// The index schema this crate reads and writes.
pub const INDEX_SCHEMA: u32 = 1;

/// Largest index read: about 64 bytes plus the path per entry, so 64 MiB holds
/// the 300,000-entry trees staging is measured with (SPEC §8) twice over.
pub const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;

/// Most entries an index may list: the archive fallback bound
/// ([`FALLBACK_MAX_ENTRIES`](crate::FALLBACK_MAX_ENTRIES)).
pub const MAX_INDEX_ENTRIES: usize = crate::stage::FALLBACK_MAX_ENTRIES as usize;

/// Longest path (bytes) an entry may have: Linux's `PATH_MAX`.
const MAX_PATH_BYTES: usize = 4096;

/// Permission bits a bank file or folder may carry (as extraction: no setuid,
/// setgid, sticky, or group/other write).
pub(crate) const PERMISSION_BITS: u32 = 0o755;

/// A release tree, in the order `publish` walked it (sorted, parents first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Must be [`INDEX_SCHEMA`].
    pub schema: u32,
    /// Every entry of the tree.
    pub entries: Vec<IndexEntry>,
}

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum IndexEntry {
    /// A folder.
    Dir {
        /// Path below the bank, `/`-separated plain names.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// A regular file, whose bytes are the object `objects/<sha256>.zst`.
    File {
        /// Path below the bank.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Exact size of the file's bytes.
        size: u64,
        /// SHA-256 of the file's bytes (lower-case hex): the object's name.
        sha256: String,
        /// Exact size of the object (the file's bytes, zstd-compressed on their own).
        packed: u64,
    },
    /// A symbolic link.
    Symlink {
        /// Path below the bank.
        path: String,
        /// What the link points at (resolved inside the bank once built).
        target: String,
    },
}

impl IndexEntry {
    /// The entry's path below the bank.
    pub fn path(&self) -> &str {
        match self {
            IndexEntry::Dir { path, .. }
            | IndexEntry::File { path, .. }
            | IndexEntry::Symlink { path, .. } => path,
        }
    }
}

/// A regular file of a bank as its record remembers it: what a delta staging
/// compares the new index with, without reading the bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Path below the bank.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes (lower-case hex).
    pub sha256: String,
}

impl Index {
    /// Parses and checks an index (see the module doc). Errors are
    /// [`LayoutError::BadIndex`], naming the entry.
    pub fn from_json(bytes: &[u8]) -> Result<Index, LayoutError> {
        let bad = |reason: String| LayoutError::BadIndex { reason };
        if bytes.len() as u64 > MAX_INDEX_BYTES {
            return Err(bad(format!("larger than {MAX_INDEX_BYTES} bytes")));
        }
        let index: Index = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        index.check()?;
        Ok(index)
    }

    /// The index as compact JSON with a trailing newline (what `publish` writes).
    pub fn to_json(&self) -> Vec<u8> {
        match serde_json::to_vec(self) {
            Ok(mut json) => {
                json.push(b'\n');
                json
            }
            // Invariant: strings and integers only, into a Vec.
            Err(e) => unreachable!("an index always serializes to JSON: {e}"),
        }
    }

    /// The checks of [`Index::from_json`], for an index built in code.
    pub fn check(&self) -> Result<(), LayoutError> {
        let bad = |reason: String| Err(LayoutError::BadIndex { reason });
        if self.schema != INDEX_SCHEMA {
            return bad(format!(
                "schema {} is not supported (expected {INDEX_SCHEMA})",
                self.schema
            ));
        }
        if self.entries.len() > MAX_INDEX_ENTRIES {
            return bad(format!("more than {MAX_INDEX_ENTRIES} entries"));
        }
        let mut seen: HashSet<&str> = HashSet::with_capacity(self.entries.len());
        let mut dirs: HashSet<&str> = HashSet::new();
        for entry in &self.entries {
            let path = entry.path();
            if let Err(why) = check_path(path) {
                return bad(format!("entry `{path}` {why}"));
            }
            if !seen.insert(path) {
                return bad(format!("entry `{path}` is listed twice"));
            }
            if let Some((parent, _)) = path.rsplit_once('/')
                && !dirs.contains(parent)
            {
                return bad(format!(
                    "entry `{path}` comes before its folder `{parent}` is listed"
                ));
            }
            match entry {
                IndexEntry::Dir { .. } => {
                    dirs.insert(path);
                }
                IndexEntry::File { sha256, .. } => {
                    if !is_sha256_hex(sha256) {
                        return bad(format!(
                            "entry `{path}`: sha256 {sha256:?} is not 64 lower-case hex digits"
                        ));
                    }
                }
                IndexEntry::Symlink { target, .. } => {
                    if target.is_empty() || target.len() > MAX_PATH_BYTES || target.contains('\0') {
                        return bad(format!("entry `{path}`: link target is empty or malformed"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Total bytes of the regular files.
    pub fn unpacked_size(&self) -> u64 {
        self.files().map(|(_, size, _, _)| size).sum()
    }

    /// Every regular file: path, size, sha256, object size.
    pub fn files(&self) -> impl Iterator<Item = (&str, u64, &str, u64)> {
        self.entries.iter().filter_map(|e| match e {
            IndexEntry::File {
                path,
                size,
                sha256,
                packed,
                ..
            } => Some((path.as_str(), *size, sha256.as_str(), *packed)),
            _ => None,
        })
    }

    /// The per-file digests a bank record keeps of this tree.
    pub fn digests(&self) -> Vec<FileDigest> {
        self.files()
            .map(|(path, size, sha256, _)| FileDigest {
                path: path.to_owned(),
                size,
                sha256: sha256.to_owned(),
            })
            .collect()
    }
}

/// 64 lower-case hex digits.
pub(crate) fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A bank path: `/`-separated plain names, not the record's name at the top.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err("has an empty or overlong path");
    }
    if path.contains('\0') || path.contains('\\') {
        return Err("contains a NUL or a backslash");
    }
    if path.starts_with('/') {
        return Err("escapes the bank: it is absolute");
    }
    if path
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err("escapes the bank: it has an empty, '.' or '..' component");
    }
    // Belt and braces: the split above is the rule; std must agree.
    if !Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err("escapes the bank");
    }
    if path == RECORD_FILE {
        return Err("is the bank record's reserved name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> IndexEntry {
        IndexEntry::File {
            path: path.into(),
            mode: 0o644,
            size: 3,
            sha256: "ab".repeat(32),
            packed: 12,
        }
    }

    fn dir(path: &str) -> IndexEntry {
        IndexEntry::Dir {
            path: path.into(),
            mode: 0o755,
        }
    }

    fn index(entries: Vec<IndexEntry>) -> Index {
        Index {
            schema: INDEX_SCHEMA,
            entries,
        }
    }

    fn reason(entries: Vec<IndexEntry>) -> String {
        let json = index(entries).to_json();
        match Index::from_json(&json) {
            Err(LayoutError::BadIndex { reason }) => reason,
            other => panic!("expected BadIndex, got {other:?}"),
        }
    }

    #[test]
    fn a_good_index_round_trips() {
        let good = index(vec![
            dir("bin"),
            file("bin/app"),
            IndexEntry::Symlink {
                path: "app".into(),
                target: "bin/app".into(),
            },
        ]);
        assert_eq!(Index::from_json(&good.to_json()).unwrap(), good);
        assert_eq!(good.unpacked_size(), 3);
        assert_eq!(good.digests().len(), 1);
    }

    #[test]
    fn escaping_paths_are_refused() {
        for path in ["../x", "/etc/passwd", "a/../../x", "./x", "a//b", "a/", ""] {
            let why = reason(vec![file(path)]);
            assert!(
                why.contains("escapes") || why.contains("empty"),
                "{path}: {why}"
            );
        }
        assert!(reason(vec![file(RECORD_FILE)]).contains("reserved"));
    }

    #[test]
    fn duplicates_and_orphans_are_refused() {
        assert!(reason(vec![file("a"), file("a")]).contains("listed twice"));
        assert!(reason(vec![file("a/b")]).contains("before its folder"));
        // A file is no folder: nothing can be put below it (or below a link).
        assert!(reason(vec![file("a"), file("a/b")]).contains("before its folder"));
    }

    #[test]
    fn bad_digests_schemas_and_unknown_fields_are_refused() {
        let mut bad = file("a");
        if let IndexEntry::File { sha256, .. } = &mut bad {
            *sha256 = "AB".repeat(32);
        }
        assert!(reason(vec![bad]).contains("sha256"));
        let mut other = index(vec![]);
        other.schema = 2;
        assert!(Index::from_json(&other.to_json()).is_err());
        let extra = br#"{"schema":1,"entries":[{"type":"dir","path":"a","mode":493,"uid":0}]}"#;
        assert!(Index::from_json(extra).is_err());
    }
}
