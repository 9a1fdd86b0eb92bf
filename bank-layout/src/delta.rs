//! Delta staging (issue 14): the new release's tree is built in the scratch
//! folder from its [`Index`], taking every file whose digest the active bank's
//! record lists from the active bank (read only: cloned with `FICLONE` where
//! the file system can, else copied) and every other file from an object the
//! caller supplies. The swap afterwards is the one of [`Root::stage`].
//!
//! Every file is checked as it is written: a copied or cloned file is read
//! back and hashed, an object is capped at its announced compressed size,
//! decompressed, capped at the file's size and hashed; any mismatch fails the
//! staging, and the scratch folder (never a bank) is removed. Then the whole
//! tree is walked and compared with the index (types, modes, sizes, nothing
//! more), links are resolved inside the bank, the entrypoint is checked, and
//! only then is the record written and the tree swapped in.
//!
//! **Architecture Invariant:** no network here: object bytes come through
//! [`ObjectSource`], which the binary implements over HTTPS.
//!
//! The plan and the staging entry point are here; `tree` builds the tree and checks
//! it against the index, `file` writes one file checked (a clone or copy, or an
//! object decompressed).

mod file;
mod tree;

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};

use self::tree::{Build, check_tree};
use crate::delta_index::{FileDigest, Index};
use crate::{BankId, BankRecord, LayoutError, Root, StageSpec, fsutil};

/// Supplies the objects a delta staging needs, one at a time, in the order of
/// [`DeltaPlan::fetch`]. Implemented by the binary (HTTPS, a few in parallel);
/// this crate caps and checks whatever it returns.
pub trait ObjectSource {
    /// The object of the file whose bytes hash to `sha256`: those bytes,
    /// zstd-compressed, announced as `packed` bytes long.
    fn object(&mut self, sha256: &str, packed: u64) -> io::Result<Box<dyn Read + '_>>;

    /// Whether the next object would come without waiting (a download that
    /// has it, or has failed). Staging copies files from the active bank
    /// meanwhile, so the network and the disk work at once.
    fn ready(&mut self) -> bool {
        true
    }
}

/// An object a delta staging asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedObject {
    /// The sha256 of the file's bytes (the object's name).
    pub sha256: String,
    /// The object's announced size.
    pub packed: u64,
}

/// What a delta staging of an index into the idle bank will fetch and reuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaPlan {
    /// The objects to fetch, each once, in the order staging asks for them.
    pub fetch: Vec<WantedObject>,
    /// Their announced bytes (what goes over the wire).
    pub fetch_bytes: u64,
    /// Files taken from the active bank.
    pub reused_files: u64,
    /// Their bytes.
    pub reused_bytes: u64,
}

impl Root {
    /// What staging `index` by delta would fetch, from the active bank's record:
    /// `None` when that record has no per-file digests (a bank this agent did
    /// not stage itself, or an empty root), so the caller downloads the full
    /// artifact instead. Reads no file.
    pub fn delta_plan(&self, index: &Index) -> Option<DeltaPlan> {
        let files = self.active_files()?;
        let have: HashSet<(&str, u64)> =
            files.iter().map(|f| (f.sha256.as_str(), f.size)).collect();
        let mut plan = DeltaPlan {
            fetch: Vec::new(),
            fetch_bytes: 0,
            reused_files: 0,
            reused_bytes: 0,
        };
        let mut wanted = HashSet::new();
        for (_, size, sha256, packed) in index.files() {
            if have.contains(&(sha256, size)) {
                plan.reused_files += 1;
                plan.reused_bytes += size;
            } else if wanted.insert(sha256) {
                plan.fetch.push(WantedObject {
                    sha256: sha256.to_owned(),
                    packed,
                });
                plan.fetch_bytes = plan.fetch_bytes.saturating_add(packed);
            }
        }
        Some(plan)
    }

    /// The per-file digests of the active bank, read from its record on disk
    /// (the in-memory records do not keep them): `None` when the record has
    /// none, cannot be read, or is not the release the root knows there.
    fn active_files(&self) -> Option<Vec<FileDigest>> {
        let known = self.bank_record(self.active_bank())?;
        let on_disk = BankRecord::read(&self.bank_dir(self.active_bank())).ok()??;
        if (on_disk.sequence, &on_disk.sha256) != (known.sequence, &known.sha256) {
            return None;
        }
        on_disk.files
    }

    /// Stages the release whose tree is `index` into the idle bank, from the
    /// active bank plus the objects of [`Root::delta_plan`] read from `objects`
    /// (see the module doc). `spec` gives the record (its `sha256` stays the
    /// artifact's, the tree it names) and the bounds; its `format` and `size`
    /// are not used. `progress` gets the bytes of the tree written so far.
    ///
    /// On error both banks and `state.json` are as they were, as with
    /// [`Root::stage`]; [`LayoutError::NoDelta`] when the active bank has no
    /// per-file digests.
    pub fn stage_delta(
        &mut self,
        index: &Index,
        spec: StageSpec<'_>,
        objects: &mut dyn ObjectSource,
        progress: &mut dyn FnMut(u64),
    ) -> Result<BankId, LayoutError> {
        index.check()?;
        let plan = self.delta_plan(index).ok_or(LayoutError::NoDelta)?;
        let active = self.bank_dir(self.active_bank());
        let sources: HashMap<(String, u64), String> = self
            .active_files()
            .unwrap_or_default()
            .into_iter()
            .map(|f| ((f.sha256, f.size), f.path))
            .collect();
        let spec = StageSpec {
            unpacked_size: Some(index.unpacked_size()),
            entries: Some(index.entries.len() as u64),
            ..spec
        };
        let record = BankRecord {
            sha256: spec.sha256.to_owned(),
            files: Some(index.digests()),
            ..spec.record.clone()
        };
        let mut build = Build {
            active: &active,
            sources,
            plan: plan.fetch.iter(),
            written: HashMap::new(),
            objects,
            done: 0,
            progress,
        };
        self.stage_with(&spec, |scratch| {
            build.tree(scratch, index)?;
            check_tree(scratch, index)?;
            crate::entrypoint::check(scratch, &record.command)?;
            fsutil::sync_tree(scratch)?;
            Ok(record)
        })
    }
}
