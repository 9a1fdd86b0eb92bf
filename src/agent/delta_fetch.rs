//! Delta updates, the agent's side (issue 14): a release whose manifest
//! carries a file index is fetched as the index plus only the objects the
//! running bank lacks, unless that is not worth it; the layout crate builds
//! and checks the tree ([`Root::stage_delta`]).
//!
//! The order of §4 holds: the index is requested only once the manifest is
//! verified (this runs after `verify`), and is used only if its size and
//! digest are the manifest's; every object is capped at its announced size
//! here and again, with its digest, by the layout crate before the tree can
//! become a bank.
//!
//! Choosing (on the staging thread, once the index is in): the full artifact
//! is downloaded instead when the index is unavailable (a host that has
//! none), when the running bank's record has no per-file digests (a bank this
//! agent did not stage with an index), when the objects add up to more than
//! `[update] delta_max_ratio` of the artifact, or when one object is larger
//! than [`MAX_OBJECT_IN_MEMORY`]; and, after trying, when an object cannot
//! be fetched (a 404, a host that keeps failing): the scratch tree goes and
//! the full artifact is staged instead. The way taken, the bytes downloaded
//! and why are logged and kept in the root
//! ([`LAST_STAGING_FILE`](crate::release::last_staging::LAST_STAGING_FILE)) for `status`'s
//! `last_staging`; offline `apply` records the same.
//!
//! This file opens the download (full, or a delta) and stages it; the delta's
//! pieces are `index.rs` (the index fetch), `objects.rs` (the object fetch),
//! `assembly.rs` (the choice and the tree built from the objects); how the
//! last release was staged is kept by `release/last_staging.rs`.

mod assembly;
mod index;
mod objects;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bank_layout::{BankId, LayoutError, Root};
use signing::Manifest;
use tokio::sync::{mpsc, oneshot, watch};

use crate::agent::fetch::{self, ArtifactStream, Cancel};
use crate::config::Timeouts;
use crate::progress::Meter;
use crate::release::{StagePlan, stage_release};

use self::assembly::DeltaStaging;
use self::index::fetch_index;
use self::objects::fetch_objects;
pub use crate::release::last_staging::{last_staging, outcome, record_staging};

/// Objects requested at once over the keep-alive client: enough to hide a
/// round trip per small file, few enough to be polite to a static host.
const PARALLEL_OBJECTS: usize = 4;

/// Fetched objects queued for the stager beyond those in flight.
const OBJECT_QUEUE: usize = 2;

/// The largest object a delta staging holds in memory (up to
/// [`PARALLEL_OBJECTS`] + [`OBJECT_QUEUE`] of them at once): a release with a
/// larger changed file is downloaded in full, which streams.
pub const MAX_OBJECT_IN_MEMORY: u64 = 16 * 1024 * 1024;

/// How a release's bytes come in: the full artifact stream, or a delta.
pub enum Download {
    /// The full artifact (no index, or delta updates off: why).
    Full(ArtifactStream, String),
    /// The index first, then objects or, if not worth it, the full artifact.
    Delta(Box<DeltaStaging>),
}

impl Download {
    /// Starts fetching `manifest`'s release from `base` (its artifact at `url`):
    /// a delta when the manifest has an index and `max_ratio` is above 0.
    pub fn open(
        clients: watch::Receiver<reqwest::Client>,
        base: &str,
        manifest: &Manifest,
        url: String,
        timeouts: Timeouts,
        max_ratio: f64,
    ) -> (Download, Cancel) {
        let size = manifest.artifact.size;
        let why = match &manifest.index {
            None => Some("the release has no file index".to_owned()),
            Some(_) if max_ratio <= 0.0 => {
                Some("delta updates are off ([update] delta_max_ratio = 0)".to_owned())
            }
            Some(_) => None,
        };
        let (Some(index), None) = (manifest.index.as_ref(), why.as_ref()) else {
            let (stream, cancel) = ArtifactStream::open(clients, url, size, timeouts);
            let why = why.unwrap_or_default();
            return (Download::Full(stream, why), cancel);
        };
        let index_url = if index.path.starts_with("https://") {
            index.path.clone()
        } else {
            fetch::url(base, &index.path)
        };
        let objects_url = match index_url.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/objects"),
            None => format!("{index_url}/objects"),
        };
        let (index_tx, index_rx) = oneshot::channel();
        let (wanted_tx, wanted_rx) = oneshot::channel();
        let (objects_tx, objects_rx) = mpsc::channel(OBJECT_QUEUE);
        // The index and the objects come within minutes: the client of now does.
        let pump_http = clients.borrow().clone();
        let pump_timeouts = timeouts.clone();
        let (index_size, index_sha) = (index.size, index.sha256.clone());
        let wire = Arc::new(AtomicU64::new(0));
        let pump_wire = wire.clone();
        let pump = tokio::spawn(async move {
            let fetched = fetch_index(
                &pump_http,
                &index_url,
                index_size,
                &index_sha,
                &pump_timeouts,
            )
            .await;
            if let Ok(body) = &fetched {
                pump_wire.fetch_add(body.len() as u64, Ordering::Relaxed);
            }
            let ok = fetched.is_ok();
            if index_tx.send(fetched).is_err() || !ok {
                return;
            }
            // Dropped unanswered: the stager chose the full artifact.
            if let Ok(wanted) = wanted_rx.await {
                fetch_objects(
                    &pump_http,
                    &objects_url,
                    wanted,
                    &pump_timeouts,
                    &objects_tx,
                    &pump_wire,
                )
                .await;
            }
        });
        let cancelled = Arc::new(AtomicBool::new(false));
        let meter = Meter::shared(size);
        let cancel = Cancel::new(cancelled.clone(), pump.abort_handle(), meter.clone());
        let delta = DeltaStaging {
            meter,
            index: index_rx,
            wanted: wanted_tx,
            objects: objects_rx,
            cancelled,
            max_ratio,
            clients,
            url,
            size,
            timeouts,
            wire,
        };
        (Download::Delta(Box::new(delta)), cancel)
    }

    /// Stages the release on the staging thread, the one way or the other,
    /// and says (log, [`LAST_STAGING_FILE`](crate::release::last_staging::LAST_STAGING_FILE))
    /// which and what it saved.
    pub fn stage(self, root: &mut Root, plan: StagePlan) -> Result<BankId, LayoutError> {
        let (bank, staged) = match self {
            Download::Full(stream, why) => {
                let (version, size) = (plan.version().to_owned(), plan.artifact_size());
                let bank = stage_release(root, stream, plan)?;
                (bank, outcome(&version, size, size, Some(why)))
            }
            Download::Delta(delta) => delta.stage(root, plan)?,
        };
        record_staging(root.dir(), &staged);
        Ok(bank)
    }
}
