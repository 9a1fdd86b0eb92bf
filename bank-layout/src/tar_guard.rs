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
mod tests {
    use super::*;

    /// A GNU header of `kind` named `name` whose size field is `size_field`, as written.
    fn header(name: &str, kind: EntryType, size_field: [u8; 12]) -> [u8; BLOCK] {
        let mut header = Header::new_gnu();
        header.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.as_mut_bytes()[124..136].copy_from_slice(&size_field);
        header.set_cksum();
        *header.as_bytes()
    }

    /// The 12-byte size field in octal, as tar writes it.
    fn octal(size: u64) -> [u8; 12] {
        let mut field = [0u8; 12];
        field[..11].copy_from_slice(format!("{size:011o}").as_bytes());
        field
    }

    /// The 12-byte size field in GNU base-256: high bit of the first byte set, the
    /// value big-endian in the rest.
    fn base256(size: u64) -> [u8; 12] {
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[4..].copy_from_slice(&size.to_be_bytes());
        field
    }

    /// One pax record: `<len> <key>=<value>\n`, where len counts the whole record.
    fn record(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}").into_bytes()
    }

    /// `data` padded with zeros to a whole number of blocks.
    fn padded(data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        out.resize(data.len().next_multiple_of(BLOCK), 0);
        out
    }

    /// Reads `tar` through a guard, `step` bytes per read; returns what came out, or the
    /// refusal (and how many bytes had come out before it).
    fn through(tar: &[u8], step: usize) -> Result<Vec<u8>, (LayoutError, usize)> {
        let mut guard = TarGuard::new(tar);
        let mut out = Vec::new();
        let mut buf = vec![0; step];
        loop {
            match guard.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => return Err((guard.take_refusal().unwrap(), out.len())),
            }
        }
    }

    /// Names of the entries `tar::Archive` reads through a guard, or the guard's refusal.
    fn entries(tar: &[u8]) -> Result<Vec<String>, LayoutError> {
        let mut archive = tar::Archive::new(TarGuard::new(tar));
        let names: Result<Vec<String>, io::Error> = archive.entries().and_then(|entries| {
            entries
                .map(|e| e.map(|e| String::from_utf8_lossy(&e.path_bytes()).into_owned()))
                .collect()
        });
        match archive.into_inner().take_refusal() {
            Some(refusal) => Err(refusal),
            None => Ok(names.unwrap()),
        }
    }

    /// Entries of every kind of header the guard follows, without the end blocks.
    fn mixed_entries() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        builder.append_data(&mut h, "a.txt", &b"hello"[..]).unwrap();
        let mut h = Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        let long = format!("{}/b.txt", "d".repeat(200));
        builder.append_data(&mut h, long, &b"abc"[..]).unwrap();
        let mut h = Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o644);
        builder.append_data(&mut h, "empty", &b""[..]).unwrap();
        // Not `into_inner`: that would write the end blocks.
        let mut tar = std::mem::take(builder.get_mut());
        // A pax header with a `size` record moves the next header; then a file whose
        // size is in base-256.
        let records = b"12 size=700\n";
        tar.extend(header("PaxHeader", EntryType::XHeader, octal(12)));
        tar.extend(padded(records));
        tar.extend(header("c.bin", EntryType::Regular, octal(0)));
        tar.extend(padded(&[7; 700]));
        tar.extend(header("d.bin", EntryType::Regular, base256(513)));
        tar.extend(padded(&[9; 513]));
        tar
    }

    /// [`mixed_entries`], the end blocks, and trailing bytes.
    fn mixed() -> Vec<u8> {
        let mut tar = mixed_entries();
        tar.extend([0; 2 * BLOCK]);
        tar.extend(b"trailing bytes after the end pass as they are");
        tar
    }

    #[test]
    fn every_byte_passes_unchanged_whatever_the_read_size() {
        let tar = mixed();
        for step in [1, 7, 511, 512, 513, 4096, 1 << 20] {
            assert_eq!(through(&tar, step).unwrap(), tar, "step {step}");
        }
        assert_eq!(
            entries(&tar).unwrap(),
            [
                "a.txt",
                &format!("{}/b.txt", "d".repeat(200)),
                "empty",
                "c.bin",
                "d.bin",
            ]
        );
    }

    #[test]
    fn base_256_sizes_are_read_like_octal_ones() {
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[11] = 0x01;
        field[10] = 0x02; // 0x0201 = 513
        assert_eq!(field, base256(513));
        let h = header("x", EntryType::Regular, base256(513));
        assert_eq!(Header::from_byte_slice(&h).entry_size().unwrap(), 513);

        // A long name claiming 1 TiB in base-256 is refused at its header.
        let mut tar = header("././@LongLink", EntryType::GNULongName, base256(1 << 40)).to_vec();
        tar.extend([0; 2 * BLOCK]);
        let (refusal, passed) = through(&tar, 4096).unwrap_err();
        assert_eq!(passed, 0, "nothing of a refused header is handed on");
        assert!(
            matches!(
                refusal,
                LayoutError::HeaderTooLarge { size, offset: 0, limit: MAX_META_HEADER, .. }
                    if size == 1 << 40
            ),
            "{refusal:?}"
        );
        // The same claim in octal.
        let mut tar = header("././@LongLink", EntryType::GNULongName, octal(1 << 30)).to_vec();
        tar.extend([0; 2 * BLOCK]);
        let (refusal, _) = through(&tar, 4096).unwrap_err();
        assert!(
            matches!(
                refusal,
                LayoutError::HeaderTooLarge {
                    size: 1_073_741_824,
                    ..
                }
            ),
            "{refusal:?}"
        );
    }

    #[test]
    fn every_in_memory_header_kind_is_bounded_and_named() {
        for (kind, name) in [
            (EntryType::GNULongName, "GNU long name header"),
            (EntryType::GNULongLink, "GNU long link header"),
            (EntryType::XHeader, "pax extended header"),
            (EntryType::XGlobalHeader, "pax global header"),
        ] {
            let mut tar = mixed_entries();
            let at = tar.len() as u64;
            tar.extend(header("meta", kind, octal(MAX_META_HEADER + 1)));
            let (refusal, passed) = through(&tar, 1 << 16).unwrap_err();
            assert_eq!(passed as u64, at);
            match refusal {
                LayoutError::HeaderTooLarge {
                    kind,
                    offset,
                    size,
                    limit,
                } => {
                    assert_eq!((kind, offset, size, limit), (name, at, 65_537, 65_536));
                }
                other => panic!("{name}: {other:?}"),
            }
            // At the bound, the header passes the guard.
            let mut tar = header("meta", kind, octal(MAX_META_HEADER)).to_vec();
            tar.extend(vec![0; MAX_META_HEADER as usize]);
            assert!(through(&tar, 4096).is_ok(), "{name}");
        }
    }

    #[test]
    fn the_same_refusal_on_every_read_after_it() {
        let tar = header("L", EntryType::GNULongName, octal(1 << 20));
        let mut guard = TarGuard::new(&tar[..]);
        let mut buf = [0; 64];
        let first = guard.read(&mut buf).unwrap_err();
        let second = guard.read(&mut buf).unwrap_err();
        assert_eq!(first.to_string(), second.to_string());
        assert_eq!(first.kind(), io::ErrorKind::InvalidData);
        assert!(matches!(
            guard.take_refusal(),
            Some(LayoutError::HeaderTooLarge { .. })
        ));
    }

    #[test]
    fn a_pax_size_record_moves_the_next_header_as_in_tar() {
        // The size field says 0 but the pax record says 1024: the bytes after the header
        // are data, even though they look like a hostile long-name header.
        let fake = header("././@LongLink", EntryType::GNULongName, octal(1 << 30));
        let mut tar = header("PaxHeader", EntryType::XHeader, octal(13)).to_vec();
        tar.extend(padded(b"13 size=1024\n"));
        tar.extend(header("carrier", EntryType::Regular, octal(0)));
        tar.extend(fake);
        tar.extend([b'x'; BLOCK]);
        tar.extend([0; 2 * BLOCK]);
        assert_eq!(entries(&tar).unwrap(), ["carrier"]);

        // The size field says 512 but the pax record says 0: what follows the header is
        // the next header, and `tar` reads it as one.
        let mut tar = header("PaxHeader", EntryType::XHeader, octal(10)).to_vec();
        tar.extend(padded(b"10 size=0\n"));
        tar.extend(header("carrier", EntryType::Regular, octal(512)));
        tar.extend(fake);
        tar.extend([0; 2 * BLOCK]);
        assert!(matches!(
            entries(&tar),
            Err(LayoutError::HeaderTooLarge {
                size: 1_073_741_824,
                ..
            })
        ));
    }

    #[test]
    fn a_pax_size_record_skips_long_names_and_ends_with_its_member() {
        // x, then L (its own size field counts), then the member (pax size counts), then
        // plain entries (their own size fields count again). The sizes differ in blocks,
        // so a guard applying a size to the wrong header would lose its way.
        let long = format!("{}/f\0", "n".repeat(150));
        let mut tar = header("PaxHeader", EntryType::XHeader, octal(12)).to_vec();
        tar.extend(padded(b"12 size=700\n"));
        tar.extend(header(
            "././@LongLink",
            EntryType::GNULongName,
            octal(long.len() as u64),
        ));
        tar.extend(padded(long.as_bytes()));
        tar.extend(header("short", EntryType::Regular, octal(0)));
        tar.extend(padded(&[1; 700]));
        tar.extend(header("next", EntryType::Regular, octal(3)));
        tar.extend(padded(b"abc"));
        tar.extend(header("last", EntryType::Regular, octal(5)));
        tar.extend(padded(b"hello"));
        tar.extend([0; 2 * BLOCK]);
        assert_eq!(
            entries(&tar).unwrap(),
            [
                format!("{}/f", "n".repeat(150)),
                "next".into(),
                "last".into()
            ]
        );

        // A long-name header without ustar or GNU magic is a member of its own for `tar`:
        // the pax size does not apply to it (it is of a long-name type), and ends with it.
        let mut old = Header::new_old();
        old.as_mut_bytes()[..4].copy_from_slice(b"oldL");
        old.set_entry_type(EntryType::GNULongName);
        old.set_size(3);
        old.set_cksum();
        let mut tar = header("PaxHeader", EntryType::XHeader, octal(12)).to_vec();
        tar.extend(padded(b"12 size=700\n"));
        tar.extend(old.as_bytes());
        tar.extend(padded(b"abc"));
        tar.extend(header("plain", EntryType::Regular, octal(5)));
        tar.extend(padded(b"hello"));
        tar.extend(header("after", EntryType::Regular, octal(5)));
        tar.extend(padded(b"hello"));
        tar.extend([0; 2 * BLOCK]);
        assert_eq!(entries(&tar).unwrap(), ["oldL", "plain", "after"]);

        // A malformed or non-numeric size record is ignored, as `tar` ignores it.
        assert_eq!(pax_size(b"11 size=20\n"), Some(20));
        assert_eq!(pax_size(b"12 size=abc\n"), None);
        assert_eq!(pax_size(b"9 bad=1\n11 size=20\n"), None);
        assert_eq!(pax_size(b"10 path=a\n11 size=20\n"), Some(20));
    }

    #[test]
    fn gnu_sparse_entries_are_refused() {
        let mut sparse = Header::new_gnu();
        sparse.set_path("holes.img").unwrap();
        sparse.set_entry_type(EntryType::GNUSparse);
        sparse.set_size(512);
        sparse.as_gnu_mut().unwrap().set_is_extended(true);
        sparse.set_cksum();
        let mut tar = sparse.as_bytes().to_vec();
        tar.extend([0; 4 * BLOCK]);
        let (refusal, passed) = through(&tar, 4096).unwrap_err();
        assert_eq!(passed, 0);
        match refusal {
            LayoutError::UnsupportedEntry { entry, kind } => {
                assert_eq!(
                    (entry.as_str(), kind.as_str()),
                    ("holes.img", "GNU sparse file")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pax_sparse_files_are_refused_before_their_header() {
        let records: Vec<u8> = [
            record("GNU.sparse.major", "1"),
            record("GNU.sparse.minor", "0"),
            record("GNU.sparse.name", "holes.img"),
            record("path", "./GNUSparseFile.1/holes.img"),
        ]
        .concat();
        let mut tar = header("PaxHeader", EntryType::XHeader, octal(records.len() as u64)).to_vec();
        tar.extend(padded(&records));
        let member_at = tar.len();
        tar.extend(header(
            "GNUSparseFile.1/holes.img",
            EntryType::Regular,
            octal(0),
        ));
        tar.extend([0; 2 * BLOCK]);
        let (refusal, passed) = through(&tar, 4096).unwrap_err();
        assert_eq!(passed, member_at);
        match refusal {
            LayoutError::UnsupportedEntry { entry, kind } => {
                assert_eq!(
                    (entry.as_str(), kind.as_str()),
                    ("holes.img", "GNU sparse file")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            pax_sparse_name(b"22 GNU.sparse.size=10\n12 path=a/b\n").as_deref(),
            Some("a/b")
        );
        assert_eq!(pax_sparse_name(b"12 path=a/b\n"), None);
    }

    #[test]
    fn a_bad_size_field_and_a_truncated_header() {
        let mut tar = header("x", EntryType::Regular, *b"12345678901z").to_vec();
        tar.extend([0; 2 * BLOCK]);
        let (refusal, _) = through(&tar, 4096).unwrap_err();
        assert!(
            matches!(&refusal, LayoutError::Archive { reason } if reason.starts_with("tar header at byte 0: ")),
            "{refusal:?}"
        );
        // A stream that ends inside a header: handed on as is, for `tar` to report.
        let partial = &header("x", EntryType::Regular, octal(0))[..100];
        assert_eq!(through(partial, 7).unwrap(), partial);
        // An empty stream is an empty stream.
        assert_eq!(through(&[], 7).unwrap(), b"");
    }
}
