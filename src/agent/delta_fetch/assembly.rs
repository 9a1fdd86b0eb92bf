//! The assembly of a delta staging, on the staging thread: wait for the
//! index, choose delta or full, hand the fetched objects to the layout crate
//! ([`release::stage_delta`]), and fall back to the full artifact when the
//! delta cannot be finished.

use std::io::{self, Cursor, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bank_layout::{BankId, Index, LayoutError, ObjectSource, Root, WantedObject};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::agent::delta_fetch::MAX_OBJECT_IN_MEMORY;
use crate::agent::delta_fetch::index::IndexFailure;
use crate::agent::fetch::ArtifactStream;
use crate::config::Timeouts;
use crate::progress::{Meter, SharedMeter};
use crate::release::last_staging::outcome;
use crate::release::{self, StagePlan, stage_release};
use crate::report::LastStaging;

/// A delta download under way: the index, then the objects asked for.
pub struct DeltaStaging {
    /// The index bytes (size and digest checked), or why not.
    pub(super) index: oneshot::Receiver<Result<Vec<u8>, IndexFailure>>,
    /// The objects to fetch, once chosen; dropped to choose the full artifact.
    pub(super) wanted: oneshot::Sender<Vec<WantedObject>>,
    /// The objects, in the order asked, each capped at its announced size.
    pub(super) objects: mpsc::Receiver<io::Result<Bytes>>,
    /// Set by an admin rollback's cancel.
    pub(super) cancelled: Arc<AtomicBool>,
    /// `[update] delta_max_ratio`.
    pub(super) max_ratio: f64,
    /// For the full artifact, if chosen: the clients, its URL and size, the limits.
    pub(super) clients: watch::Receiver<reqwest::Client>,
    /// The full artifact's URL.
    pub(super) url: String,
    /// The full artifact's announced size.
    pub(super) size: u64,
    /// `[timeouts]`.
    pub(super) timeouts: Timeouts,
    /// Bytes fetched, for `status` (the objects' total once chosen).
    pub(super) meter: SharedMeter,
    /// Bytes received for the index and the objects (resumes included), for
    /// the log and `last_staging`.
    pub(super) wire: Arc<AtomicU64>,
}

impl DeltaStaging {
    /// Waits for the index, chooses, and stages (on the staging thread);
    /// returns the bank and how it was staged.
    pub(super) fn stage(
        self,
        root: &mut Root,
        mut plan: StagePlan,
    ) -> Result<(BankId, LastStaging), LayoutError> {
        let DeltaStaging {
            index,
            wanted,
            objects,
            cancelled,
            max_ratio,
            clients,
            url,
            size,
            timeouts,
            meter,
            wire,
        } = self;
        let version = plan.version().to_owned();
        let full_meter = meter.clone();
        let full_cancelled = cancelled.clone();
        let full_wire = wire.clone();
        let full = |root: &mut Root, plan: StagePlan, why: String| {
            info!(version = plan.version(), reason = %why, "staging {} via the full artifact: {why}", plan.version());
            if let Ok(mut m) = full_meter.lock() {
                *m = Meter::new(size);
            }
            let (stream, _own_cancel) =
                ArtifactStream::open_metered(clients, url, size, timeouts, full_meter);
            let stream = Cancellable {
                inner: stream,
                cancelled: full_cancelled,
            };
            let bank = stage_release(root, stream, plan)?;
            let downloaded = full_wire.load(Ordering::Relaxed).saturating_add(size);
            Ok((bank, outcome(&version, downloaded, size, Some(why))))
        };
        let bytes = match index.blocking_recv() {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(IndexFailure::Unavailable(why))) => {
                return full(root, plan, format!("no file index: {why}"));
            }
            Ok(Err(IndexFailure::Forged(why))) => {
                return Err(LayoutError::BadIndex { reason: why });
            }
            Err(_) => return Err(cancelled_error()),
        };
        let index = Index::from_json(&bytes)?;
        // A verified index: whichever way, the new bank's record keeps its digests.
        plan.remember_files(&index);
        let total = plan.artifact_size();
        let delta = match root.delta_plan(&index) {
            None => Err("the running bank has no per-file digests".to_owned()),
            Some(d) if d.fetch_bytes as f64 > max_ratio * total as f64 => Err(format!(
                "its objects are {} of the artifact's {total} bytes, above [update] delta_max_ratio {max_ratio}",
                d.fetch_bytes
            )),
            Some(d) if d.fetch.iter().any(|o| o.packed > MAX_OBJECT_IN_MEMORY) => Err(format!(
                "an object is larger than the {MAX_OBJECT_IN_MEMORY} bytes held in memory"
            )),
            Some(d) => Ok(d),
        };
        let delta = match delta {
            Ok(delta) => delta,
            Err(why) => return full(root, plan, why),
        };
        if let Ok(mut m) = meter.lock() {
            *m = Meter::new(delta.fetch_bytes);
        }
        if wanted.send(delta.fetch.clone()).is_err() {
            return Err(cancelled_error());
        }
        let mut source = Fetched {
            meter,
            objects,
            next: None,
            cancelled: cancelled.clone(),
            unavailable: None,
        };
        let bank = match release::stage_delta(root, &index, &mut source, plan.clone()) {
            Err(LayoutError::ActiveFileChanged { path }) => {
                // Not the release's fault: the running bank was edited by hand.
                let why = format!("the running bank's `{path}` no longer matches its record");
                return full(root, plan, why);
            }
            Err(LayoutError::ObjectSource { .. })
                if !cancelled.load(Ordering::SeqCst) && source.unavailable.is_some() =>
            {
                // The host lacks an object (or keeps failing on it): the scratch
                // tree is gone, and the full artifact has every file.
                let why = source.unavailable.take().unwrap_or_default();
                warn!(version, reason = %why, "an object is unavailable; staging via the full artifact");
                return full(root, plan, why);
            }
            other => other?,
        };
        release::last_staging::log_delta_staged(&version, &delta);
        let downloaded = wire.load(Ordering::Relaxed);
        Ok((bank, outcome(&version, downloaded, total, None)))
    }
}

/// The error of a staging an admin rollback cancelled.
fn cancelled_error() -> LayoutError {
    LayoutError::Source {
        source: cancelled_io(),
    }
}

/// The I/O error a cancelled read returns (what [`cancelled_error`] carries).
fn cancelled_io() -> io::Error {
    io::Error::other("cancelled by an admin rollback")
}

/// The objects as the layout crate asks for them.
struct Fetched {
    /// From the fetching task, in order.
    objects: mpsc::Receiver<io::Result<Bytes>>,
    /// The next one, taken off the channel by [`ObjectSource::ready`].
    next: Option<Option<io::Result<Bytes>>>,
    /// Set by a cancel.
    cancelled: Arc<AtomicBool>,
    /// Object bytes fetched, for `status`.
    meter: SharedMeter,
    /// Why an object could not be fetched (the host's answer or the network),
    /// as opposed to bytes that came and were refused: the full artifact may do.
    unavailable: Option<String>,
}

impl ObjectSource for Fetched {
    fn ready(&mut self) -> bool {
        if self.next.is_none() {
            match self.objects.try_recv() {
                Ok(object) => self.next = Some(Some(object)),
                Err(mpsc::error::TryRecvError::Empty) => return false,
                Err(mpsc::error::TryRecvError::Disconnected) => self.next = Some(None),
            }
        }
        true
    }

    fn object(&mut self, sha256: &str, _packed: u64) -> io::Result<Box<dyn Read + '_>> {
        let next = match self.next.take() {
            Some(next) => next,
            None => self.objects.blocking_recv(),
        };
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(cancelled_io());
        }
        match next {
            Some(Ok(bytes)) => {
                if let Ok(mut m) = self.meter.lock() {
                    m.add(bytes.len() as u64, std::time::Instant::now());
                }
                Ok(Box::new(Cursor::new(bytes)))
            }
            Some(Err(e)) => {
                self.unavailable = Some(format!("object {sha256} is unavailable: {e}"));
                Err(e)
            }
            None => {
                let e = io::Error::other("the object download ended early");
                self.unavailable = Some(format!("object {sha256} is unavailable: {e}"));
                Err(e)
            }
        }
    }
}

/// The full artifact stream, failing once a cancel is set.
struct Cancellable {
    /// The stream.
    inner: ArtifactStream,
    /// Set by a cancel.
    cancelled: Arc<AtomicBool>,
}

impl Read for Cancellable {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(cancelled_io());
        }
        self.inner.read(buf)
    }
}
