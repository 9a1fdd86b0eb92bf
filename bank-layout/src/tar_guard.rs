//! A streaming guard between the decompressor and `tar::Archive`: it follows the tar
//! block structure and refuses, before handing them on, the headers the `tar` crate
//! would read whole into memory when they claim more than [`MAX_META_HEADER`] bytes, and
//! GNU sparse files.
//!
//! Why: the artifact's digest is only known at the end of the stream, so a tampered
//! artifact is decompressed and parsed before it can be refused. `tar` reads the data
//! of a GNU long name or long link (`L`, `K`) and of a pax extended header (`x`) with
//! `read_to_end`, as much as the header's size field claims: one such header in a
//! decompression bomb (gigabytes of zeros in a few KiB of zstd) would allocate
//! gigabytes before the mismatch is seen.
//!
//! **Architecture Invariant:** the guard finds headers exactly where `tar::Archive`
//! (0.4.46, `EntriesFields::next_entry_raw` and `next_entry`) finds them; otherwise a
//! crafted archive could hide a header from it in what it takes for file data. So it
//! reads the size field with `tar::Header::entry_size` itself (octal, or GNU base-256
//! when the high bit of its first byte is set), applies a pax `size` record to the
//! member that follows as `tar` does, and stops following at the first all-zero block,
//! where `tar` stops reading entries. Each of these rules has a test below.
//!
//! GNU sparse entries (`S`, and the old-GNU extension blocks that may follow their
//! header) are refused rather than followed: `tar` builds a list of their chunks that
//! grows with every extension block (another allocation sized by the input), and it
//! expands their holes into zeros anyway, so a release gains nothing from them. Pax
//! sparse files (`GNU.sparse.*` records, `tar --format=posix --sparse`) are refused
//! too: `tar` does not read those records and would extract the file wrong.
//!
//! Cost: file data is read from the decompressor straight into the caller's buffer,
//! never more than up to the next header; only the 512 bytes of each header, and the
//! records of a pax header (at most [`MAX_META_HEADER`]), are copied once more.

use std::io::{self, Read};

use tar::{EntryType, Header, PaxExtensions};

use crate::LayoutError;

/// Largest data size of a header that `tar` holds whole in memory: a GNU long name or
/// long link, a pax extended header (and, though `tar` 0.4.46 streams it, a pax global
/// header). A long name or link target is at most PATH_MAX (4096 bytes on Linux); a
/// pax header adds times, ids and perhaps a few extended attributes. 64 KiB is 16 times
/// that, while the three such headers `tar` holds at once for one member (plus the copy
/// kept here of a pax header's records) stay far below the 32 MiB budget of SPEC §8.
pub(crate) const MAX_META_HEADER: u64 = 64 * 1024;

/// Size of a tar block: a header, and the unit entry data is padded to.
const BLOCK: usize = 512;

/// The pax record that replaces the size field of the next member's header.
const PAX_SIZE: &str = "size";

/// The pax record that names the next member.
const PAX_PATH: &[u8] = b"path";

/// The prefix of the pax records of a GNU sparse file.
const PAX_SPARSE: &[u8] = b"GNU.sparse.";

/// The pax record that holds a GNU sparse file's real name (format 1.0).
const PAX_SPARSE_NAME: &[u8] = b"GNU.sparse.name";

/// A `Read` adapter over a decompressed tar stream that refuses hostile headers.
///
/// After a refusal every read fails; [`TarGuard::take_refusal`] returns the typed error,
/// which the caller reports instead of the one `tar` made of the failed read.
pub(crate) struct TarGuard<R> {
    /// The decompressed tar stream.
    inner: R,
    /// The header block being gathered from `inner` or handed out.
    header: Header,
    /// Where in the block structure the stream is.
    at: At,
    /// Bytes handed out so far: the offset of the next byte in the tar stream.
    offset: u64,
    /// The `size` record of the pending pax header: it replaces the size field of the
    /// next header that is not itself a long name, long link or pax header.
    pax_size: Option<u64>,
    /// The records of the pax header whose data is being handed out.
    pax_records: Option<PaxRecords>,
    /// Why the stream was refused, once it is.
    refusal: Option<LayoutError>,
}

/// A position in the block structure.
#[derive(Debug, Clone, Copy)]
enum At {
    /// Gathering a header block: `filled` bytes read, none handed out yet.
    Gathering {
        /// Bytes of `header` read from `inner`.
        filled: usize,
    },
    /// Handing out a checked header block (or the partial block the stream ended in).
    Serving {
        /// Bytes of `header` handed out.
        served: usize,
        /// Bytes of `header` to hand out: [`BLOCK`], or fewer at the end of the stream.
        len: usize,
        /// What follows the block.
        next: Next,
    },
    /// Inside an entry's data.
    Data {
        /// Bytes (data and padding to a block) before the next header.
        left: u64,
    },
    /// After the end-of-archive block: `tar` reads no more entries, and the rest (more
    /// zero blocks, record padding) passes as is.
    End,
}

/// What follows a header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// This many bytes of data and padding, then a header.
    Data(u64),
    /// Nothing `tar` reads as entries.
    End,
}

/// The records of a pax header, kept to find its `size` record.
struct PaxRecords {
    /// The records so far.
    data: Vec<u8>,
    /// Their full length (the header's size; the padding after it is not kept).
    len: usize,
}

impl<R: Read> TarGuard<R> {
    /// Guards the decompressed tar stream `inner`.
    pub(crate) fn new(inner: R) -> TarGuard<R> {
        TarGuard {
            inner,
            header: Header::new_old(),
            at: At::Gathering { filled: 0 },
            offset: 0,
            pax_size: None,
            pax_records: None,
            refusal: None,
        }
    }

    /// The error that made the guard refuse the stream, if it did.
    pub(crate) fn take_refusal(&mut self) -> Option<LayoutError> {
        self.refusal.take()
    }

    /// Hands out entry data: at most `left` bytes, read straight into `buf`.
    fn read_data(&mut self, buf: &mut [u8], left: u64) -> io::Result<usize> {
        let len = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
        let n = self.inner.read(&mut buf[..len])?;
        if let Some(pax) = &mut self.pax_records {
            let keep = (pax.len - pax.data.len()).min(n);
            pax.data.extend_from_slice(&buf[..keep]);
        }
        self.offset += n as u64;
        let left = left - n as u64;
        self.at = if left == 0 {
            self.end_of_data()
        } else {
            At::Data { left }
        };
        Ok(n)
    }

    /// Reads the header block from `inner` until it is full or the stream ends; returns
    /// how much of it there is.
    fn gather(&mut self, mut filled: usize) -> io::Result<usize> {
        while filled < BLOCK {
            match self.inner.read(&mut self.header.as_mut_bytes()[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.at = At::Gathering { filled };
                    return Err(e);
                }
            }
        }
        Ok(filled)
    }

    /// Checks the full header block at `offset` and says what follows it, or why the
    /// stream is refused.
    fn inspect(&mut self) -> Result<Next, LayoutError> {
        let header = &self.header;
        // tar: a block of zeros ends the archive (`ignore_zeros` is off).
        if header.as_bytes().iter().all(|&b| b == 0) {
            return Ok(Next::End);
        }
        let kind = header.entry_type();
        let claimed = header.entry_size().map_err(|e| LayoutError::Archive {
            reason: format!("tar header at byte {}: {e}", self.offset),
        })?;
        let meta = meta_kind(kind);
        if let Some(what) = meta
            && claimed > MAX_META_HEADER
        {
            return Err(LayoutError::HeaderTooLarge {
                kind: what,
                offset: self.offset,
                size: claimed,
                limit: MAX_META_HEADER,
            });
        }
        if kind.is_gnu_sparse() {
            return Err(sparse(
                String::from_utf8_lossy(&header.path_bytes()).into_owned(),
            ));
        }
        // tar (next_entry_raw): a pax `size` record replaces the size field of the next
        // header that is not itself a long name, long link or pax header.
        let size = match meta {
            Some(_) => claimed,
            None => self.pax_size.unwrap_or(claimed),
        };
        // tar (next_entry): a long name, long link or pax header with ustar or GNU magic
        // belongs to the member that follows; any other header is that member, so the
        // pax records end with it.
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        let prefix =
            kind.is_gnu_longname() || kind.is_gnu_longlink() || kind.is_pax_local_extensions();
        if !(recognized && prefix) {
            self.pax_size = None;
        }
        if recognized && kind.is_pax_local_extensions() {
            // `size` is at most MAX_META_HEADER here (checked above).
            let len = usize::try_from(size.min(MAX_META_HEADER)).unwrap_or_default();
            self.pax_records = Some(PaxRecords {
                data: Vec::with_capacity(len),
                len,
            });
        }
        // tar: the next header is at the next block boundary after the data.
        let Some(padded) = size.checked_next_multiple_of(BLOCK as u64) else {
            return Err(LayoutError::Archive {
                reason: format!(
                    "tar header at byte {}: entry size {size} overflows",
                    self.offset
                ),
            });
        };
        Ok(Next::Data(padded))
    }

    /// The position after a header block followed by `next`.
    fn after_header(&mut self, next: Next) -> At {
        match next {
            Next::End => At::End,
            Next::Data(0) => self.end_of_data(),
            Next::Data(left) => At::Data { left },
        }
    }

    /// An entry's data is over: a pax header's records take effect; a header follows.
    fn end_of_data(&mut self) -> At {
        if let Some(pax) = self.pax_records.take() {
            self.pax_size = pax_size(&pax.data);
            if let Some(entry) = pax_sparse_name(&pax.data) {
                // Refused at the next read, before the member's header is handed on.
                self.refusal = Some(sparse(entry));
            }
        }
        At::Gathering { filled: 0 }
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(refusal) = &self.refusal {
            return Err(refused(refusal));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.at {
                At::End => return self.inner.read(buf),
                At::Data { left } => return self.read_data(buf, left),
                At::Serving { served, len, next } => {
                    let n = (len - served).min(buf.len());
                    buf[..n].copy_from_slice(&self.header.as_bytes()[served..served + n]);
                    self.offset += n as u64;
                    self.at = if served + n < len {
                        At::Serving {
                            served: served + n,
                            len,
                            next,
                        }
                    } else {
                        self.after_header(next)
                    };
                    return Ok(n);
                }
                At::Gathering { filled } => {
                    let len = self.gather(filled)?;
                    if len == 0 {
                        // The stream ends at a block boundary: `tar` takes that as the end.
                        self.at = At::Gathering { filled: 0 };
                        return Ok(0);
                    }
                    let next = if len < BLOCK {
                        Next::End // a partial block: `tar` fails on it, we hand it on
                    } else {
                        match self.inspect() {
                            Ok(next) => next,
                            Err(refusal) => {
                                let error = refused(&refusal);
                                self.refusal = Some(refusal);
                                return Err(error);
                            }
                        }
                    };
                    self.at = At::Serving {
                        served: 0,
                        len,
                        next,
                    };
                }
            }
        }
    }
}

/// What a header `tar` holds in memory is called in errors; `None` for other kinds.
fn meta_kind(kind: EntryType) -> Option<&'static str> {
    if kind.is_gnu_longname() {
        Some("GNU long name header")
    } else if kind.is_gnu_longlink() {
        Some("GNU long link header")
    } else if kind.is_pax_local_extensions() {
        Some("pax extended header")
    } else if kind.is_pax_global_extensions() {
        Some("pax global header")
    } else {
        None
    }
}

/// The `size` record of pax records, read as `tar` (`pax_extensions_value`) reads it:
/// the first `size` key wins; a malformed record before it, or a value that is not a
/// number, means none.
fn pax_size(records: &[u8]) -> Option<u64> {
    for record in PaxExtensions::new(records) {
        let record = record.ok()?;
        if record.key() == Ok(PAX_SIZE) {
            return record.value().ok()?.parse().ok();
        }
    }
    None
}

/// If pax records describe a GNU sparse file (`GNU.sparse.*`, formats 0.0 to 1.0), its
/// name. `tar` does not read these records: it would extract the sparse map and the
/// data chunks as the file's content, under a made-up name (`GNUSparseFile.N/...`).
fn pax_sparse_name(records: &[u8]) -> Option<String> {
    let mut sparse = false;
    let mut names = (None, None);
    for record in PaxExtensions::new(records).filter_map(Result::ok) {
        let key = record.key_bytes();
        if key.starts_with(PAX_SPARSE) {
            sparse = true;
        }
        if key == PAX_SPARSE_NAME {
            names.0 = Some(record.value_bytes());
        } else if key == PAX_PATH {
            names.1 = Some(record.value_bytes());
        }
    }
    let name = names.0.or(names.1).unwrap_or_default();
    sparse.then(|| String::from_utf8_lossy(name).into_owned())
}

/// The refusal of the GNU sparse file `entry`.
fn sparse(entry: String) -> LayoutError {
    LayoutError::UnsupportedEntry {
        entry,
        kind: "GNU sparse file".to_owned(),
    }
}

/// The I/O error `tar` sees after a refusal (the typed error is reported instead).
fn refused(refusal: &LayoutError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, refusal.to_string())
}

#[cfg(test)]
mod tests;
