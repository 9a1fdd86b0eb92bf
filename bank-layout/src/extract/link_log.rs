//! The deferred symlinks of an extraction: `(path in the bank, target)` records in an
//! unlinked scratch file beside the bank, bounded by [`MAX_LINK_NAME_BYTES`], read back
//! in archive order by `finish`.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::MAX_LINK_NAME_BYTES;
use crate::LayoutError;

/// Bytes of the buffered writer and reader of the deferred-symlink file.
const LINK_LOG_BUFFER: usize = 64 * 1024;

/// Symlinks to create at the end: `(path in the bank, target)` records, appended to an
/// unlinked file (gone by itself after a crash), read back in order.
#[derive(Debug)]
pub(super) struct LinkLog {
    /// The buffered log file.
    writer: BufWriter<File>,
    /// Records written.
    count: u64,
    /// Bytes of names written, at most [`MAX_LINK_NAME_BYTES`].
    name_bytes: u64,
}

impl LinkLog {
    /// A new, already unlinked, log file in `dir` (the root, beside the scratch bank).
    pub(super) fn create(dir: &Path) -> Result<LinkLog, LayoutError> {
        let path = dir.join(format!(".staging-links.{}", std::process::id()));
        let _ = fs::remove_file(&path); // a leftover of a crashed process with our pid
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(LayoutError::at(&path))?;
        fs::remove_file(&path).map_err(LayoutError::at(&path))?;
        Ok(LinkLog {
            writer: BufWriter::with_capacity(LINK_LOG_BUFFER, file),
            count: 0,
            name_bytes: 0,
        })
    }

    /// Appends the symlink `path` -> `target`.
    pub(super) fn push(&mut self, path: &Path, target: &Path) -> Result<(), LayoutError> {
        let len = (path.as_os_str().len() + target.as_os_str().len()) as u64;
        self.name_bytes += len;
        if self.name_bytes > MAX_LINK_NAME_BYTES {
            return Err(LayoutError::Archive {
                reason: format!(
                    "symbolic links with more than {MAX_LINK_NAME_BYTES} bytes of names (at `{}`)",
                    path.display()
                ),
            });
        }
        let mut put = |bytes: &[u8]| -> io::Result<()> {
            let len = u32::try_from(bytes.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
            self.writer.write_all(&len.to_le_bytes())?;
            self.writer.write_all(bytes)
        };
        put(path.as_os_str().as_bytes())
            .and_then(|()| put(target.as_os_str().as_bytes()))
            .map_err(|e| LayoutError::io(Path::new("(deferred symlinks)"), e))?;
        self.count += 1;
        Ok(())
    }

    /// Calls `each` with every record, in order.
    pub(super) fn for_each(
        &mut self,
        mut each: impl FnMut(&Path, &Path) -> Result<(), LayoutError>,
    ) -> Result<(), LayoutError> {
        let at = |e| LayoutError::io(Path::new("(deferred symlinks)"), e);
        if self.count == 0 {
            return Ok(());
        }
        self.writer.flush().map_err(at)?;
        let mut file = self.writer.get_ref();
        file.rewind().map_err(at)?;
        let mut reader = BufReader::with_capacity(LINK_LOG_BUFFER, file);
        let take = |reader: &mut BufReader<&File>| -> io::Result<PathBuf> {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len)?;
            let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
            reader.read_exact(&mut bytes)?;
            Ok(PathBuf::from(OsStr::from_bytes(&bytes)))
        };
        for _ in 0..self.count {
            let path = take(&mut reader).map_err(at)?;
            let target = take(&mut reader).map_err(at)?;
            each(&path, &target)?;
        }
        // Appends go to the end again if anything is pushed later.
        let mut file = self.writer.get_ref();
        file.seek(io::SeekFrom::End(0)).map_err(at)?;
        Ok(())
    }
}
