//! The writer thread of an extraction: file data handed over in recycled buffers,
//! written while the next bytes are decompressed, each finished file's writeback
//! started at once.

use std::fs::{File, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, SyncSender};

use crate::{LayoutError, fsutil};

/// Bytes moved per write while extracting a file: large writes keep syscall overhead
/// out of the pipeline (zstd hands out at most 128 KiB blocks anyway); the buffers are
/// recycled, so memory does not grow with the file size.
pub(super) const WRITE_CHUNK: usize = 128 * 1024;

/// Buffers of file data queued for the writer thread: 4 × 128 KiB lets decompression
/// run ahead over a slow write without growing memory (at most `WRITE_QUEUE + 2`
/// buffers exist: the queued ones, the one being written and the one being filled).
pub(super) const WRITE_QUEUE: usize = 4;

/// What the extracting thread hands the writer thread, in order.
pub(super) enum Job {
    /// A file just created: the data that follows goes into it.
    Open {
        /// The file, open for writing.
        file: File,
        /// Its path, for errors.
        path: PathBuf,
        /// The mode to set once it is written, when the umask narrowed the one it was
        /// created with.
        chmod: Option<u32>,
    },
    /// The next `len` bytes of the open file, in `buf` (recycled afterwards).
    Data {
        /// A [`WRITE_CHUNK`] buffer.
        buf: Vec<u8>,
        /// How much of it holds data.
        len: usize,
    },
    /// The open file is complete.
    Close,
}

/// The extractor's end of the writer thread.
pub(super) struct Writer {
    /// Jobs, at most [`WRITE_QUEUE`] waiting.
    pub(super) jobs: SyncSender<Job>,
    /// Buffers written and handed back.
    pub(super) recycled: Receiver<Vec<u8>>,
}

impl Writer {
    /// A buffer to fill: a recycled one, or a new one while fewer than the bound exist.
    pub(super) fn buffer(&self) -> Vec<u8> {
        self.recycled
            .try_recv()
            .unwrap_or_else(|_| vec![0; WRITE_CHUNK])
    }

    /// Queues `job`; fails if the writer stopped (its own error is reported instead).
    pub(super) fn send(&self, job: Job) -> Result<(), LayoutError> {
        self.jobs.send(job).map_err(|_| LayoutError::Archive {
            reason: "the file writer stopped".to_owned(),
        })
    }
}

/// The writer thread: writes each file's data, sets its mode if needed, starts its
/// writeback and closes it. Stops at the first error, which it returns.
pub(super) fn write_files(
    jobs: Receiver<Job>,
    recycle: Sender<Vec<u8>>,
) -> Result<(), LayoutError> {
    let mut open: Option<(File, PathBuf, Option<u32>)> = None;
    for job in jobs {
        match job {
            Job::Open { file, path, chmod } => open = Some((file, path, chmod)),
            Job::Data { buf, len } => {
                if let Some((file, path, _)) = &mut open {
                    file.write_all(&buf[..len]).map_err(LayoutError::at(path))?;
                }
                let _ = recycle.send(buf); // the extractor may be done: fine
            }
            Job::Close => {
                if let Some((file, path, chmod)) = open.take() {
                    if let Some(mode) = chmod {
                        file.set_permissions(Permissions::from_mode(mode))
                            .map_err(LayoutError::at(&path))?;
                    }
                    fsutil::start_writeback(&file);
                }
            }
        }
    }
    Ok(())
}
