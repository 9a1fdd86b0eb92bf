//! The staging pipeline: a reader thread caps and hashes the artifact stream while the
//! calling thread decompresses and extracts it, so hashing overlaps decompression and
//! writes (SPEC §8). Memory stays bounded: a few chunks in flight, never a whole file.

use std::io::{self, BufRead, Read};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use sha2::{Digest, Sha256};

use crate::extract::Limits;
use crate::{ArchiveFormat, BankRecord, LayoutError, extract, fsutil};

/// Bytes read from the source per chunk: large enough that channel and syscall costs
/// vanish next to hashing and decompression, small enough that the chunks in flight
/// (see [`CHANNEL_DEPTH`]) stay well under a MiB.
const CHUNK_SIZE: usize = 128 * 1024;

/// Chunks queued between the reader and the extractor: 3 × 128 KiB lets the reader run
/// ahead over short stalls without growing memory (at most `CHANNEL_DEPTH + 2` chunks
/// exist). Deeper queues bought nothing measurable: the source's own buffers (the
/// kernel's socket buffer, the page cache) absorb longer stalls, outside our memory.
const CHANNEL_DEPTH: usize = 3;

/// Least compressed bytes between two progress calls: often enough for a bar, rare
/// enough to cost nothing.
const PROGRESS_INTERVAL: u64 = 1024 * 1024;

/// Without an announced unpacked size, the archive may unpack to at most this many
/// times its compressed size (but at least [`FALLBACK_MIN_UNPACKED`]). zstd turns 8 GiB
/// of zeros into ~256 KiB (32,000 : 1), while real payloads stay far below 1,000 : 1
/// (the most repetitive test payloads reach ~5,000 : 1): 16,384 keeps both sides apart.
pub const FALLBACK_EXPANSION: u64 = 16_384;

/// Least fallback bound on the unpacked size, for tiny artifacts whose ratio says
/// little (a 1 KiB artifact of a few MiB of a repeated pattern is honest).
pub const FALLBACK_MIN_UNPACKED: u64 = 64 * 1024 * 1024;

/// Without an announced entry count, the archive may hold at most this many entries:
/// three times the 300,000-entry archives staging is measured with (SPEC §8).
pub const FALLBACK_MAX_ENTRIES: u64 = 1_000_000;

/// What to stage: the artifact's announced format, size and digest, and the record to
/// write once the bank is complete.
#[derive(Debug, Clone)]
pub struct StageSpec<'a> {
    /// Container format of the artifact.
    pub format: ArchiveFormat,
    /// Announced size in bytes: never read past it, and it must be reached.
    pub size: u64,
    /// Announced SHA-256 (hex) of the artifact bytes.
    pub sha256: &'a str,
    /// The record to write into the bank on success (its `sha256` is set to the
    /// verified digest). Its `command` is the entrypoint, checked before the bank is
    /// valid: it must be an executable regular file inside the bank.
    pub record: BankRecord,
    /// The manifest's `artifact.unpacked_size`: bytes of file data the archive holds.
    /// Never written past; `None` (an older manifest) means the fallback bound
    /// [`FALLBACK_EXPANSION`] × `size` (at least [`FALLBACK_MIN_UNPACKED`]).
    pub unpacked_size: Option<u64>,
    /// The manifest's `artifact.entries`: archive entries. Never more; `None` means
    /// [`FALLBACK_MAX_ENTRIES`].
    pub entries: Option<u64>,
    /// Stage in place (wiping the idle bank, the rollback target, first) when the file
    /// system has room only for that. Off: such a staging is refused with
    /// [`LayoutError::InPlaceOnly`]. [`Root::space_plan`](crate::Root::space_plan) says
    /// beforehand which it will be.
    pub allow_in_place: bool,
}

impl StageSpec<'_> {
    /// The bounds extraction enforces.
    pub(crate) fn limits(&self) -> Limits {
        let (bytes, bytes_basis) = match self.unpacked_size {
            Some(n) => (n, "announced".to_owned()),
            None => (
                self.size
                    .saturating_mul(FALLBACK_EXPANSION)
                    .max(FALLBACK_MIN_UNPACKED),
                format!(
                    "allowed ({FALLBACK_EXPANSION} times the artifact size, at least {FALLBACK_MIN_UNPACKED}: the manifest announces no unpacked_size)"
                ),
            ),
        };
        let (entries, entries_basis) = match self.entries {
            Some(n) => (n, "announced".to_owned()),
            None => (
                FALLBACK_MAX_ENTRIES,
                "allowed (the manifest announces no entry count)".to_owned(),
            ),
        };
        Limits {
            bytes,
            bytes_basis,
            entries,
            entries_basis,
        }
    }
}

/// Streams `source` into the empty folder `bank`: caps, hashes, extracts, checks the
/// entrypoint and syncs. Returns the verified digest (lower-case hex). The caller
/// removes the folder on error. `scratch_dir` (the root) holds the unlinked file of
/// deferred symlinks.
///
/// Error priority: a size problem, a source error or a digest mismatch is reported
/// before any archive error, since it is the cause of a decompression failure.
pub(crate) fn stream_into(
    bank: &Path,
    scratch_dir: &Path,
    source: impl Read + Send,
    spec: &StageSpec<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<String, LayoutError> {
    let size = spec.size;
    let limits = spec.limits();
    let (extracted, report) = std::thread::scope(|scope| {
        let (chunks_tx, chunks_rx) = mpsc::sync_channel(CHANNEL_DEPTH);
        let (recycle_tx, recycle_rx) = mpsc::channel();
        let reader = scope.spawn(move || read_and_hash(source, size, chunks_tx, recycle_rx));
        let mut input = ChannelReader {
            chunks: chunks_rx,
            recycle: recycle_tx,
            current: None,
            pos: 0,
            consumed: 0,
            reported: 0,
            progress,
        };
        let extracted =
            extract::extract_archive(&mut input, spec.format, bank, &limits, scratch_dir);
        // Whatever the archive did, hash every announced byte (capped at `size`).
        input.drain();
        match reader.join() {
            Ok(report) => (extracted, report),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    match report.failure {
        Some(StreamFailure::TooLarge) => return Err(LayoutError::TooLarge { size }),
        Some(StreamFailure::Truncated) => {
            return Err(LayoutError::Truncated {
                size,
                received: report.received,
            });
        }
        Some(StreamFailure::Source(source)) => return Err(LayoutError::Source { source }),
        None => {}
    }
    let actual = hex::encode(report.digest);
    if !actual.eq_ignore_ascii_case(spec.sha256) {
        return Err(LayoutError::HashMismatch {
            expected: spec.sha256.to_owned(),
            actual,
        });
    }
    extract::finish(bank, extracted?)?;
    crate::entrypoint::check(bank, &spec.record.command)?;
    fsutil::sync_tree(bank)?;
    Ok(actual)
}

/// A chunk of the artifact: `buf[..len]` is data; `buf` is recycled afterwards.
struct Chunk {
    /// The buffer, [`CHUNK_SIZE`] long.
    buf: Vec<u8>,
    /// How much of it holds data.
    len: usize,
}

/// Why the stream was not exactly the announced bytes.
enum StreamFailure {
    /// More bytes than announced.
    TooLarge,
    /// Fewer bytes than announced.
    Truncated,
    /// The source returned an error.
    Source(io::Error),
}

/// What the reader thread saw.
struct StreamReport {
    /// SHA-256 of the bytes received.
    digest: [u8; 32],
    /// Bytes received (at most the announced size).
    received: u64,
    /// What was wrong with the stream, if anything.
    failure: Option<StreamFailure>,
}

/// The reader thread: reads at most `size` bytes in [`CHUNK_SIZE`] chunks, hashes them
/// and sends them on; then probes for one byte too many.
fn read_and_hash(
    mut source: impl Read,
    size: u64,
    chunks: SyncSender<Chunk>,
    recycled: Receiver<Vec<u8>>,
) -> StreamReport {
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let failure = loop {
        let left = size - received;
        if left == 0 {
            break probe(&mut source);
        }
        let want = usize::try_from(left).map_or(CHUNK_SIZE, |left| left.min(CHUNK_SIZE));
        let mut buf = recycled.try_recv().unwrap_or_else(|_| vec![0; CHUNK_SIZE]);
        let len = match fill(&mut source, &mut buf[..want]) {
            Ok(len) => len,
            Err(e) => break Some(StreamFailure::Source(e)),
        };
        hasher.update(&buf[..len]);
        received += len as u64;
        if len > 0 && chunks.send(Chunk { buf, len }).is_err() {
            // The extractor is gone (it only lets go when unwinding): stop reading.
            break None;
        }
        if len < want {
            break Some(StreamFailure::Truncated);
        }
    };
    StreamReport {
        digest: hasher.finalize().into(),
        received,
        failure,
    }
}

/// After the announced size: one more byte means the stream is too large.
fn probe(source: &mut impl Read) -> Option<StreamFailure> {
    let mut one = [0u8; 1];
    loop {
        match source.read(&mut one) {
            Ok(0) => return None,
            Ok(_) => return Some(StreamFailure::TooLarge),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(StreamFailure::Source(e)),
        }
    }
}

/// Reads until `buf` is full or the source ends; returns how much was read.
pub(crate) fn fill(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The extractor's end of the channel, as a `BufRead` (no copy into another buffer).
struct ChannelReader<'p> {
    /// Chunks from the reader thread; disconnected = end of stream.
    chunks: Receiver<Chunk>,
    /// Empty buffers back to the reader thread, so chunks are not reallocated.
    recycle: Sender<Vec<u8>>,
    /// The chunk being consumed.
    current: Option<Chunk>,
    /// Read position in `current`.
    pos: usize,
    /// Compressed bytes received so far.
    consumed: u64,
    /// `consumed` at the last progress call.
    reported: u64,
    /// The caller's progress callback.
    progress: &'p mut dyn FnMut(u64),
}

impl ChannelReader<'_> {
    /// Takes the next chunk; false at the end of the stream.
    fn next_chunk(&mut self) -> bool {
        if let Some(done) = self.current.take() {
            let _ = self.recycle.send(done.buf); // the reader may have finished: fine
        }
        self.pos = 0;
        match self.chunks.recv() {
            Ok(chunk) => {
                self.consumed += chunk.len as u64;
                if self.consumed - self.reported >= PROGRESS_INTERVAL {
                    self.report();
                }
                self.current = Some(chunk);
                true
            }
            Err(_) => {
                self.report();
                false
            }
        }
    }

    /// Calls the progress callback if there is news.
    fn report(&mut self) {
        if self.consumed != self.reported {
            self.reported = self.consumed;
            (self.progress)(self.consumed);
        }
    }

    /// Receives and drops the rest of the stream, so the reader hashes all of it.
    fn drain(&mut self) {
        while self.next_chunk() {}
    }
}

impl Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.as_ref().is_none_or(|c| self.pos >= c.len) {
            if !self.next_chunk() {
                return Ok(&[]);
            }
        }
        Ok(match &self.current {
            Some(chunk) => &chunk.buf[self.pos..chunk.len],
            None => &[],
        })
    }

    fn consume(&mut self, amount: usize) {
        self.pos += amount;
    }
}
