//! Offline staging from a bundle folder (`apply --bundle`): the artifact file,
//! or a delta bundle's index and objects, with the same checks as online.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use bank_layout::{BankId, Index, LayoutError, ObjectSource, Root};
use sha2::{Digest, Sha256};
use signing::{IndexRef, Manifest};
use tracing::warn;

use super::last_staging;
use crate::channel::ChannelDir;
use crate::release::stage::{StagePlan, stage_delta, stage_release};

/// Read buffer in front of an offline bundle's object files: large enough that the
/// decompressor sees big chunks, small next to the agent's idle memory.
const STAGE_BUFFER: usize = 256 * 1024;

/// Offline (`apply --bundle`): stages `manifest`'s release from the bundle
/// folder `channel`. With the `artifact` file, as always (its record keeps the
/// index's per-file digests when the bundle has the signed index); without
/// it (a delta bundle: manifest, index and objects), by delta from the
/// bundle's objects, with the same checks as online.
pub fn stage_bundle(
    root: &mut Root,
    channel: &ChannelDir,
    manifest: &Manifest,
    artifact: Option<impl Read + Send>,
    mut plan: StagePlan,
) -> Result<BankId, LayoutError> {
    let index = manifest
        .index
        .as_ref()
        .filter(|i| !i.path.starts_with("https://"));
    let Some(artifact_file) = artifact else {
        let Some(pointer) = index else {
            return Err(LayoutError::BadIndex {
                reason: "a bundle without its artifact needs a file index under v1/".to_owned(),
            });
        };
        let path = channel.artifact(&pointer.path);
        let index = read_index(&path, pointer)?;
        plan.remember_files(&index);
        let delta = root.delta_plan(&index).ok_or(LayoutError::NoDelta)?;
        let objects_dir = path
            .parent()
            .map_or_else(|| PathBuf::from(OBJECTS_DIR), |p| p.join(OBJECTS_DIR));
        let version = plan.version().to_owned();
        let bank = stage_delta(root, &index, &mut BundleObjects { dir: objects_dir }, plan)?;
        last_staging::log_delta_staged(&version, &delta);
        // The same record as online: "downloaded" is what was read from the bundle.
        let read = pointer.size.saturating_add(delta.fetch_bytes);
        let staged = last_staging::outcome(&version, read, manifest.artifact.size, None);
        last_staging::record_staging(root.dir(), &staged);
        return Ok(bank);
    };
    if let Some(pointer) = index {
        match read_index(&channel.artifact(&pointer.path), pointer) {
            Ok(index) => plan.remember_files(&index),
            Err(e) => {
                warn!(error = %e, "the bundle's file index is unusable; the next update downloads in full")
            }
        }
    }
    let (version, size) = (plan.version().to_owned(), plan.artifact_size());
    let bank = stage_release(root, artifact_file, plan)?;
    let why = "the bundle carries the full artifact".to_owned();
    last_staging::record_staging(
        root.dir(),
        &last_staging::outcome(&version, size, size, Some(why)),
    );
    Ok(bank)
}

/// Reads the file index at `path`, which must be the one `pointer` (signed) names.
fn read_index(path: &Path, pointer: &IndexRef) -> Result<Index, LayoutError> {
    let io_error = |cause| LayoutError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| {
            f.take(pointer.size.saturating_add(1))
                .read_to_end(&mut bytes)
        })
        .map_err(io_error)?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if bytes.len() as u64 != pointer.size || actual != pointer.sha256 {
        return Err(LayoutError::BadIndex {
            reason: format!(
                "{} does not match the manifest: {} bytes with sha256 {actual}, expected {} bytes with sha256 {}",
                path.display(),
                bytes.len(),
                pointer.size,
                pointer.sha256
            ),
        });
    }
    Index::from_json(&bytes)
}

/// Where a file index's objects are, beside it (`publish` writes them there).
pub const OBJECTS_DIR: &str = "objects";

/// The objects of an offline bundle: files `objects/<sha256>.zst`.
struct BundleObjects {
    /// The bundle's objects folder.
    dir: PathBuf,
}

impl ObjectSource for BundleObjects {
    fn object(&mut self, sha256: &str, _packed: u64) -> io::Result<Box<dyn Read + '_>> {
        let path = self.dir.join(format!("{sha256}.zst"));
        let file = File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Box::new(BufReader::with_capacity(STAGE_BUFFER, file)))
    }
}
