//! The reader handed to staging: a blocking `Read` over an artifact download
//! that an async task fetches, and the core's [`Cancel`] handle on it.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::agent::fetch::ranged::pump;
use crate::config::Timeouts;
use crate::progress::{Meter, ProgressReport, SharedMeter};

/// Chunks buffered between the network and the stager (bounded memory). A chunk is
/// what hyper read at once, up to its ~400 KiB read buffer, and holds that buffer
/// until it is consumed: 16 of them were 8 MiB of the agent's peak while staging
/// (heaptrack). Two keep the stager fed; the kernel's socket buffer holds the rest.
const CHUNK_QUEUE: usize = 2;

/// A blocking `Read` over an artifact download, for the stager's thread. An async task
/// fetches it and, when the connection breaks, asks for the rest with `Range: bytes=N-`.
/// It never reads more than `size + 1` bytes, so an endless body cannot exhaust anything.
pub struct ArtifactStream {
    /// Chunks from the fetching task; an `Err` ends the stream.
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    /// The chunk being read.
    current: Bytes,
    /// Set by [`Cancel::cancel`]: every read fails from then on.
    cancelled: Arc<AtomicBool>,
    /// Bytes handed to the stager, for `status` ([`Cancel::progress`]).
    meter: SharedMeter,
}

/// The core's handle on an [`ArtifactStream`] read on another thread: it
/// cancels it (an admin rollback never waits for a download; its reads fail
/// with an io error at once) and tells how far it got.
pub struct Cancel {
    /// Shared with the stream.
    cancelled: Arc<AtomicBool>,
    /// The fetching task: aborting it drops its sender, which wakes a blocked read.
    pump: tokio::task::AbortHandle,
    /// Shared with the stream.
    meter: SharedMeter,
}

impl Cancel {
    /// A cancel for a staging that watches `cancelled`, fetches in `pump` and
    /// counts its bytes in `meter` (the delta staging of `delta_fetch.rs`).
    pub(in crate::agent) fn new(
        cancelled: Arc<AtomicBool>,
        pump: tokio::task::AbortHandle,
        meter: SharedMeter,
    ) -> Cancel {
        Cancel {
            cancelled,
            pump,
            meter,
        }
    }

    /// Bytes read so far, out of the artifact's size, with rate and ETA.
    pub fn progress(&self) -> Option<ProgressReport> {
        self.meter.lock().ok().map(|m| m.report())
    }

    /// Makes the stream's reads fail (including one blocked waiting for the network).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.pump.abort();
    }
}

impl ArtifactStream {
    /// Starts fetching `url` on the current runtime, within `timeouts`. Each
    /// request (the first and every resume) takes the latest of `clients`: a
    /// certificate renewed during a long download is used by its next resume.
    pub fn open(
        clients: watch::Receiver<reqwest::Client>,
        url: String,
        size: u64,
        timeouts: Timeouts,
    ) -> (ArtifactStream, Cancel) {
        ArtifactStream::open_metered(clients, url, size, timeouts, Meter::shared(size))
    }

    /// [`ArtifactStream::open`], counting the bytes read in `meter` (a delta
    /// staging that falls back to the full artifact keeps its meter).
    pub fn open_metered(
        clients: watch::Receiver<reqwest::Client>,
        url: String,
        size: u64,
        timeouts: Timeouts,
        meter: SharedMeter,
    ) -> (ArtifactStream, Cancel) {
        let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
        let pump = tokio::spawn(async move {
            if let Err(err) = pump(&clients, &url, size, &timeouts, &tx).await {
                let _ = tx.send(Err(io::Error::other(format!("{err:#}")))).await;
            }
        });
        let cancelled = Arc::new(AtomicBool::new(false));
        let cancel = Cancel {
            cancelled: cancelled.clone(),
            pump: pump.abort_handle(),
            meter: meter.clone(),
        };
        let stream = ArtifactStream {
            chunks: rx,
            current: Bytes::new(),
            cancelled,
            meter,
        };
        (stream, cancel)
    }

    fn check_cancelled(&self) -> io::Result<()> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(io::Error::other("cancelled by an admin rollback"));
        }
        Ok(())
    }
}

impl Read for ArtifactStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check_cancelled()?;
        while self.current.is_empty() {
            let next = self.chunks.blocking_recv();
            // A cancel aborts the fetching task, which ends the channel: not the artifact's end.
            self.check_cancelled()?;
            match next {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(err)) => return Err(err),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        if let Ok(mut meter) = self.meter.lock() {
            meter.add(n as u64, std::time::Instant::now());
        }
        Ok(n)
    }
}
