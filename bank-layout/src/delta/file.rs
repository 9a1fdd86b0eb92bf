//! One file of a delta tree, checked as it is written: cloned (`FICLONE`) or copied
//! from a file and read back hashed, or decompressed from its object, capped at the
//! announced compressed and unpacked sizes and hashed. Each written file's
//! writeback starts at once, so the tree's final sync finds it mostly on disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::root::PRIVATE_MODE;
use crate::{LayoutError, fsutil};

/// Bytes per read when copying, hashing or decompressing a file.
const COPY_BUFFER: usize = 256 * 1024;

/// Creates `to` (new, private until its mode is set) with the bytes of `from`,
/// cloned where the file system can (`FICLONE`), else copied; returns the
/// digest of what `to` holds, or `None` when `from` is not a regular file of
/// `size` bytes. `from` is opened without following a final symlink.
pub(super) fn copy_checked(
    from: &Path,
    to: &Path,
    size: u64,
) -> Result<Option<String>, LayoutError> {
    let source = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
    {
        Ok(file) => file,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOENT)) => return Ok(None),
        Err(e) => return Err(LayoutError::io(from, e)),
    };
    let meta = source.metadata().map_err(LayoutError::at(from))?;
    if !meta.is_file() || meta.size() != size {
        return Ok(None);
    }
    let mut target = create_private(to)?;
    if clone_file(&source, &target) {
        let mut clone = File::open(to).map_err(LayoutError::at(to))?;
        let (digest, n) =
            hash_copy(&mut clone, &mut io::sink(), size).map_err(|e| LayoutError::io(to, e))?;
        return Ok((n == size).then_some(digest));
    }
    let mut source = source;
    let (digest, n) =
        hash_copy(&mut source, &mut target, size).map_err(|e| LayoutError::io(to, e))?;
    fsutil::start_writeback(&target);
    Ok((n == size).then_some(digest))
}

/// `ioctl(FICLONE)`: shares the blocks of `source` with the empty `target`
/// (btrfs, XFS); false where the file system cannot, and the caller copies.
fn clone_file(source: &File, target: &File) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: FICLONE reads both descriptors, which the borrowed files keep open.
        let rc = unsafe { libc::ioctl(target.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (source, target);
        false
    }
}

/// Creates the new file `path`, mode 0600 until its own is set.
fn create_private(path: &Path) -> Result<File, LayoutError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .open(path)
        .map_err(LayoutError::at(path))
}

/// Copies at most `limit + 1` bytes of `from` into `to`, hashing them;
/// returns the digest (hex) and the count.
fn hash_copy(from: &mut impl Read, to: &mut impl Write, limit: u64) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    let mut capped = from.take(limit.saturating_add(1));
    loop {
        let n = match capped.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Counts what passes through (the compressed side of an object).
struct Counting<R> {
    /// The object's bytes.
    inner: R,
    /// Bytes read so far.
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Writes the file `full` from its object: at most `packed + 1` compressed
/// bytes are read, at most `size + 1` decompressed bytes written, and the
/// bytes must hash to `sha256`.
pub(super) fn write_object(
    reader: Box<dyn Read + '_>,
    full: &Path,
    path: &str,
    size: u64,
    sha256: &str,
    packed: u64,
) -> Result<(), LayoutError> {
    let mismatch = |reason: String| LayoutError::ObjectMismatch {
        path: path.to_owned(),
        reason,
    };
    let source_error = |source: io::Error| LayoutError::ObjectSource {
        sha256: sha256.to_owned(),
        source,
    };
    let mut counted = Counting {
        inner: reader.take(packed.saturating_add(1)),
        count: 0,
    };
    let mut target = create_private(full)?;
    let decoded = {
        let mut decoder = zstd::stream::read::Decoder::new(&mut counted).map_err(source_error)?;
        hash_copy(&mut decoder, &mut target, size)
    };
    fsutil::start_writeback(&target);
    // Whatever the decoder made of it, the object's own size is the first check.
    io::copy(&mut counted, &mut io::sink()).map_err(source_error)?;
    if counted.count > packed {
        return Err(LayoutError::ObjectTooLarge {
            sha256: sha256.to_owned(),
            packed,
        });
    }
    let (actual, written) = decoded.map_err(|e| mismatch(format!("not a zstd object: {e}")))?;
    if counted.count < packed {
        return Err(mismatch(format!(
            "object {sha256} ended after {} of its {packed} bytes",
            counted.count
        )));
    }
    if written != size {
        return Err(mismatch(format!(
            "object {sha256} unpacks to {}{written} bytes, not the {size} announced",
            if written > size { "more than " } else { "" }
        )));
    }
    if actual != sha256 {
        return Err(mismatch(format!(
            "sha256 mismatch: expected {sha256}, got {actual}"
        )));
    }
    Ok(())
}
