//! The deterministic packer of `publish`: a payload folder becomes a
//! `<sha256>.tar.zst` whose bytes depend only on the folder's names,
//! contents and modes (sorted entries, fixed owners and times).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use bank_layout::AtomicFile;
use sha2::{Digest, Sha256};

/// Mode of published artifacts: world-readable (a web server serves them).
const ARTIFACT_MODE: u32 = 0o644;

/// zstd level of published archives: fast to make, ~2 GB/s to unpack.
const ZSTD_LEVEL: i32 = 3;

/// Largest zstd window of published archives, as a power of two: 2^20 = 1 MiB. The
/// window is what a decoder must hold in memory, whatever its own buffers; level 3
/// would pick 2 MiB for any archive over 256 KiB. Halving it costs well under 1 % of
/// the archive size on real payloads (matches farther back than a MiB are rare at
/// this level) and keeps an agent staging a release inside its 16 MiB (SPEC §8).
const ZSTD_WINDOW_LOG: u32 = 20;

/// A packed archive.
#[derive(Debug)]
pub struct Packed {
    /// The archive file, `<sha256>.tar.zst`.
    pub file: PathBuf,
    /// Its sha256, lower-case hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Total bytes of the regular files packed (`artifact.unpacked_size`).
    pub unpacked_size: u64,
    /// Number of entries packed: files, folders and links (`artifact.entries`).
    pub entries: u64,
}

/// What the packed tree holds, counted while packing.
#[derive(Debug, Default)]
struct Tally {
    /// Bytes of regular files written.
    bytes: u64,
    /// Entries written.
    entries: u64,
}

impl Packed {
    /// The archive's file name, `<sha256>.tar.zst`.
    pub fn name(&self) -> String {
        format!("{}.tar.zst", self.sha256)
    }
}

/// Packs `payload` into `artifacts/<sha256>.tar.zst`, written crash-safely.
pub fn pack_artifact(payload: &Path, artifacts: &Path) -> anyhow::Result<Packed> {
    fs::create_dir_all(artifacts).with_context(|| format!("creating {}", artifacts.display()))?;
    // The one crash-safe write (bank_layout::AtomicFile): a 0644 temp file beside the
    // final name, which is known only once the digest is.
    let mut temp = AtomicFile::new(&artifacts.join("artifact.tar.zst"), ARTIFACT_MODE)
        .with_context(|| format!("creating a file in {}", artifacts.display()))?;
    let mut sink = HashingWriter {
        inner: BufWriter::new(temp.file().try_clone()?),
        hasher: Sha256::new(),
        size: 0,
    };
    let mut encoder = zstd::Encoder::new(&mut sink, ZSTD_LEVEL)?;
    encoder.window_log(ZSTD_WINDOW_LOG)?;
    let mut builder = tar::Builder::new(encoder);
    let mut tally = Tally::default();
    append_tree(&mut builder, payload, Path::new(""), &mut tally)
        .with_context(|| format!("packing {}", payload.display()))?;
    builder.into_inner()?.finish()?;
    let HashingWriter {
        mut inner,
        hasher,
        size,
    } = sink;
    inner.flush()?;
    drop(inner);
    let sha256 = hex::encode(hasher.finalize());
    let file = artifacts.join(format!("{sha256}.tar.zst"));
    temp.commit_as(&file)
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(Packed {
        file,
        sha256,
        size,
        unpacked_size: tally.bytes,
        entries: tally.entries,
    })
}

/// Appends a folder's entries in sorted order with fixed owners and times: same input, same bytes.
/// Counts into `tally` what it appends.
fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    base: &Path,
    rel: &Path,
    tally: &mut Tally,
) -> io::Result<()> {
    let mut entries = fs::read_dir(base.join(rel))?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = rel.join(entry.file_name());
        let meta = fs::symlink_metadata(entry.path())?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777);
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, &path, io::empty())?;
            tally.entries += 1;
            append_tree(builder, base, &path, tally)?;
        } else if meta.file_type().is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, &path, fs::read_link(entry.path())?)?;
            tally.entries += 1;
        } else if meta.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            // The size is the one read from the open file: what is packed is
            // what is counted, even if the file changes under us.
            let file = File::open(entry.path())?;
            let len = file.metadata()?.len();
            header.set_size(len);
            builder.append_data(&mut header, &path, file.take(len))?;
            tally.entries += 1;
            tally.bytes += len;
        } else {
            return Err(io::Error::other(format!(
                "{}: only files, folders and symlinks can be published",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Counts and hashes what passes through.
struct HashingWriter<W> {
    /// Where the bytes go.
    inner: W,
    /// SHA-256 of every byte written.
    hasher: Sha256,
    /// Bytes written.
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_folder_packs_to_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let payload = dir.path().join("payload");
        fs::create_dir_all(payload.join("bin")).unwrap();
        fs::write(payload.join("bin/app"), "#!/bin/sh\n").unwrap();
        let one = pack_artifact(&payload, &dir.path().join("a")).unwrap();
        let two = pack_artifact(&payload, &dir.path().join("b")).unwrap();
        assert_eq!((&one.sha256, one.size), (&two.sha256, two.size));
        assert_eq!(one.file.file_name(), Some(one.name().as_ref()));
        assert_eq!(fs::read(&one.file).unwrap(), fs::read(&two.file).unwrap());
    }

    #[test]
    fn packing_counts_entries_and_file_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let payload = dir.path().join("payload");
        fs::create_dir_all(payload.join("bin/empty")).unwrap();
        fs::write(payload.join("bin/app"), "#!/bin/sh\n").unwrap();
        fs::write(payload.join("data"), vec![7u8; 5000]).unwrap();
        std::os::unix::fs::symlink("bin/app", payload.join("link")).unwrap();
        let packed = pack_artifact(&payload, &dir.path().join("a")).unwrap();
        // bin, bin/app, bin/empty, data, link
        assert_eq!(packed.entries, 5);
        assert_eq!(packed.unpacked_size, 10 + 5000);
    }
}
