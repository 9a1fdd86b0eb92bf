//! The file index of `publish` (issue 14): beside the full artifact, every
//! file of the payload as its own zstd object, `v1/delta/objects/<sha256>.zst`
//! (named by the sha256 of the file's bytes, so an unchanged file is one
//! object across all releases), and the index of the tree,
//! `v1/delta/<sha256>.index.json`, whose path, size and digest the manifest
//! carries. Plain files, so any static host serves them with plain GETs.
//! `publish --console` writes them into a temporary folder and uploads the
//! objects the console lacks, then the index ([`upload_index`]).

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, anyhow};
use bank_layout::{AtomicFile, INDEX_SCHEMA, Index, IndexEntry};
use sha2::{Digest, Sha256};
use signing::IndexRef;

/// Mode of published files: world-readable (a web server serves them).
const PUBLISHED_MODE: u32 = 0o644;

/// zstd level of objects: the artifact's level, so a delta never costs more
/// bytes per file than the full download.
const ZSTD_LEVEL: i32 = 3;

use super::upload::Console;
use crate::release::OBJECTS_DIR;

/// The folder under `v1/` that holds the indexes and objects.
pub const DELTA_DIR: &str = "delta";

/// Mode of the folders: world-readable and searchable, whatever the umask.
const FOLDER_MODE: u32 = 0o755;

/// Read buffer for hashing and compressing a file.
const READ_BUFFER: usize = 256 * 1024;

/// Writes the objects and the index of `payload` into `delta` (the folder
/// [`DELTA_DIR`] of `v1/`) and returns the manifest's pointer to the index.
pub fn write_index(payload: &Path, delta: &Path) -> anyhow::Result<IndexRef> {
    let objects = delta.join(OBJECTS_DIR);
    for dir in [delta, &objects] {
        DirBuilder::new()
            .recursive(true)
            .mode(FOLDER_MODE)
            .create(dir)
            .and_then(|()| fs::set_permissions(dir, Permissions::from_mode(FOLDER_MODE)))
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut entries = Vec::new();
    walk(payload, "", &objects, &mut entries)
        .with_context(|| format!("indexing {}", payload.display()))?;
    let index = Index {
        schema: INDEX_SCHEMA,
        entries,
    };
    // Never publish an index agents would refuse.
    index
        .check()
        .context("the payload's file index is not valid")?;
    let bytes = index.to_json();
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let name = format!("{sha256}.index.json");
    let path = delta.join(&name);
    bank_layout::write_atomic_mode(&path, &bytes, PUBLISHED_MODE)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(IndexRef {
        path: format!("{DELTA_DIR}/{name}"),
        size: bytes.len() as u64,
        sha256,
    })
}

/// `publish --console`: uploads the objects of the index `pointer` names
/// (written by [`write_index`] into `delta`) that the console lacks, then the
/// index itself, so an index is served only once its objects are. Returns
/// how many objects were sent, of how many.
pub fn upload_index(
    console: &Console,
    delta: &Path,
    pointer: &IndexRef,
) -> anyhow::Result<(usize, usize)> {
    let name = pointer
        .path
        .strip_prefix(&format!("{DELTA_DIR}/"))
        .ok_or_else(|| anyhow!("index path {} is not under {DELTA_DIR}/", pointer.path))?;
    let index_file = delta.join(name);
    let bytes =
        fs::read(&index_file).with_context(|| format!("reading {}", index_file.display()))?;
    let index = Index::from_json(&bytes).context("the payload's file index is not valid")?;
    let digests: BTreeSet<&str> = index.files().map(|(_, _, sha256, _)| sha256).collect();
    let mut sent = 0;
    for sha256 in &digests {
        let rel = format!("{OBJECTS_DIR}/{sha256}.zst");
        if console.upload_delta_file(&rel, &delta.join(&rel))? {
            sent += 1;
        }
    }
    console.upload_delta_file(name, &index_file)?;
    Ok((sent, digests.len()))
}

/// Lists the folder `base/rel` in sorted order (as the packer does: a folder
/// before what it holds), writing each file's object.
fn walk(base: &Path, rel: &str, objects: &Path, out: &mut Vec<IndexEntry>) -> anyhow::Result<()> {
    let dir = base.join(rel);
    let mut children = fs::read_dir(&dir)?.collect::<Result<Vec<_>, _>>()?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let name = child.file_name();
        let name = name.to_str().ok_or_else(|| {
            anyhow!(
                "{}: a file index holds UTF-8 names only",
                child.path().display()
            )
        })?;
        let path = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(child.path())?;
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            out.push(IndexEntry::Dir {
                path: path.clone(),
                mode,
            });
            walk(base, &path, objects, out)?;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(child.path())?;
            let target = target
                .to_str()
                .ok_or_else(|| anyhow!("{path}: link target is not UTF-8"))?
                .to_owned();
            out.push(IndexEntry::Symlink { path, target });
        } else if meta.is_file() {
            let (size, sha256, packed) = write_object(&child.path(), objects)?;
            out.push(IndexEntry::File {
                path,
                mode,
                size,
                sha256,
                packed,
            });
        } else {
            return Err(anyhow!(
                "{path}: only files, folders and symlinks can be published"
            ));
        }
    }
    Ok(())
}

/// Hashes `file` and, unless its object exists already, compresses it into
/// `objects/<sha256>.zst` (crash-safely). Returns size, digest, object size.
fn write_object(file: &Path, objects: &Path) -> anyhow::Result<(u64, String, u64)> {
    let mut hasher = Sha256::new();
    let size = io::copy(
        &mut BufReader::with_capacity(READ_BUFFER, File::open(file)?),
        &mut HashWriter(&mut hasher),
    )?;
    let sha256 = hex::encode(hasher.finalize());
    let object = objects.join(format!("{sha256}.zst"));
    if let Ok(meta) = fs::metadata(&object)
        && meta.is_file()
    {
        return Ok((size, sha256, meta.len()));
    }
    let mut temp = AtomicFile::new(&objects.join("object.zst"), PUBLISHED_MODE)
        .with_context(|| format!("creating a file in {}", objects.display()))?;
    {
        let sink = BufWriter::new(temp.file().try_clone()?);
        let mut encoder = zstd::Encoder::new(sink, ZSTD_LEVEL)?;
        let copied = io::copy(
            &mut BufReader::with_capacity(READ_BUFFER, File::open(file)?.take(size)),
            &mut encoder,
        )?;
        if copied != size {
            return Err(anyhow!("{}: changed while publishing", file.display()));
        }
        encoder.finish()?.flush()?;
    }
    let packed = temp.file().metadata()?.len();
    temp.commit_as(&object)
        .with_context(|| format!("writing {}", object.display()))?;
    Ok((size, sha256, packed))
}

/// Feeds a hasher as a `Write`.
struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_lists_the_tree_and_objects_decompress_to_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let payload = dir.path().join("payload");
        fs::create_dir_all(payload.join("bin")).unwrap();
        fs::write(payload.join("bin/app"), "#!/bin/sh\n").unwrap();
        fs::write(payload.join("data"), vec![7u8; 5000]).unwrap();
        fs::write(payload.join("same"), vec![7u8; 5000]).unwrap();
        std::os::unix::fs::symlink("bin/app", payload.join("link")).unwrap();
        let artifacts = dir.path().join(DELTA_DIR);
        let pointer = write_index(&payload, &artifacts).unwrap();
        assert!(pointer.path.starts_with("delta/"));
        let bytes = fs::read(dir.path().join(&pointer.path)).unwrap();
        assert_eq!(bytes.len() as u64, pointer.size);
        let index = Index::from_json(&bytes).unwrap();
        let paths: Vec<_> = index.entries.iter().map(IndexEntry::path).collect();
        assert_eq!(paths, ["bin", "bin/app", "data", "link", "same"]);
        for (path, size, sha256, packed) in index.files() {
            let object = fs::read(artifacts.join(format!("objects/{sha256}.zst"))).unwrap();
            assert_eq!(object.len() as u64, packed);
            let data = zstd::decode_all(&object[..]).unwrap();
            assert_eq!(data, fs::read(payload.join(path)).unwrap());
            assert_eq!(data.len() as u64, size);
        }
        // Same bytes, one object; publishing again writes the same index.
        assert_eq!(fs::read_dir(artifacts.join("objects")).unwrap().count(), 2);
        assert_eq!(write_index(&payload, &artifacts).unwrap(), pointer);
    }
}
