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
//! and why are logged and kept in the root ([`LAST_STAGING_FILE`]) for
//! `status`'s `last_staging`; offline `apply` records the same.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bank_layout::{BankId, Index, LayoutError, ObjectSource, Root, WantedObject};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
use sha2::{Digest, Sha256};
use signing::Manifest;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::agent::fetch::{self, ArtifactStream, Cancel, describe, read_capped};
use crate::config::Timeouts;
use crate::progress::{Meter, SharedMeter};
use crate::release::{self, StagePlan, stage_release};
use crate::report::LastStaging;

/// Objects requested at once over the keep-alive client: enough to hide a
/// round trip per small file, few enough to be polite to a static host.
const PARALLEL_OBJECTS: usize = 4;

/// Fetched objects queued for the stager beyond those in flight.
const OBJECT_QUEUE: usize = 2;

/// The largest object a delta staging holds in memory (up to
/// [`PARALLEL_OBJECTS`] + [`OBJECT_QUEUE`] of them at once): a release with a
/// larger changed file is downloaded in full, which streams.
pub const MAX_OBJECT_IN_MEMORY: u64 = 16 * 1024 * 1024;

/// Requests per object before the staging gives up on it: a broken
/// connection is resumed with `Range`, an answer like 404 is final at once.
const OBJECT_TRIES: u32 = 3;

/// The file in the root that keeps how the last release was staged
/// (`status`'s `last_staging`), written once a staging succeeded.
pub const LAST_STAGING_FILE: &str = "last-staging.json";

/// The largest [`LAST_STAGING_FILE`] read: a version, numbers and a reason.
const MAX_LAST_STAGING_BYTES: u64 = 64 * 1024;

/// How `version` was staged: `reason` is `None` for a delta, why for the full artifact.
pub fn outcome(
    version: &str,
    downloaded_bytes: u64,
    full_bytes: u64,
    reason: Option<String>,
) -> LastStaging {
    LastStaging {
        version: version.to_owned(),
        path: if reason.is_some() { "full" } else { "delta" }.to_owned(),
        downloaded_bytes,
        full_bytes,
        saved_bytes: full_bytes.saturating_sub(downloaded_bytes),
        reason,
    }
}

/// Logs how a release was staged (logfmt fields `path`, `downloaded`,
/// `full`, `saved`, `reason`) and keeps it in `root` for `status`. A failed
/// write is logged only: the staging itself succeeded.
pub fn record_staging(root: &Path, staged: &LastStaging) {
    let version = staged.version.as_str();
    let (downloaded, full, saved) = (
        staged.downloaded_bytes,
        staged.full_bytes,
        staged.saved_bytes,
    );
    match &staged.reason {
        None => info!(
            version,
            path = "delta",
            downloaded,
            full,
            saved,
            "staged {version} via delta: downloaded {downloaded} of {full} bytes, saved {saved}"
        ),
        Some(reason) => info!(
            version,
            path = "full",
            downloaded,
            full,
            saved,
            reason = %reason,
            "staged {version} via the full artifact: downloaded {downloaded} of {full} bytes"
        ),
    }
    let written = serde_json::to_vec(staged)
        .map_err(io::Error::other)
        .and_then(|bytes| bank_layout::write_atomic(&root.join(LAST_STAGING_FILE), &bytes));
    if let Err(e) = written {
        warn!(error = %e, "cannot keep how the release was staged for status");
    }
}

/// How the last release was staged into `root`, if one was since this was kept.
pub fn last_staging(root: &Path) -> Option<LastStaging> {
    let mut bytes = Vec::new();
    File::open(root.join(LAST_STAGING_FILE))
        .and_then(|f| f.take(MAX_LAST_STAGING_BYTES).read_to_end(&mut bytes))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

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
    /// and says (log, [`LAST_STAGING_FILE`]) which and what it saved.
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

/// Why the index did not come.
#[derive(Debug)]
enum IndexFailure {
    /// The host has none, or it could not be fetched: the full artifact will do.
    Unavailable(String),
    /// It is not the index the manifest signed: the release is refused.
    Forged(String),
}

/// A delta download under way: the index, then the objects asked for.
pub struct DeltaStaging {
    /// The index bytes (size and digest checked), or why not.
    index: oneshot::Receiver<Result<Vec<u8>, IndexFailure>>,
    /// The objects to fetch, once chosen; dropped to choose the full artifact.
    wanted: oneshot::Sender<Vec<WantedObject>>,
    /// The objects, in the order asked, each capped at its announced size.
    objects: mpsc::Receiver<io::Result<Bytes>>,
    /// Set by an admin rollback's cancel.
    cancelled: Arc<AtomicBool>,
    /// `[update] delta_max_ratio`.
    max_ratio: f64,
    /// For the full artifact, if chosen: the clients, its URL and size, the limits.
    clients: watch::Receiver<reqwest::Client>,
    /// The full artifact's URL.
    url: String,
    /// The full artifact's announced size.
    size: u64,
    /// `[timeouts]`.
    timeouts: Timeouts,
    /// Bytes fetched, for `status` (the objects' total once chosen).
    meter: SharedMeter,
    /// Bytes received for the index and the objects (resumes included), for
    /// the log and `last_staging`.
    wire: Arc<AtomicU64>,
}

impl DeltaStaging {
    /// Waits for the index, chooses, and stages (on the staging thread);
    /// returns the bank and how it was staged.
    fn stage(
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
        info!(
            version,
            objects = delta.fetch.len(),
            reused = delta.reused_files,
            "staged {version} from {} reused files and {} objects",
            delta.reused_files,
            delta.fetch.len()
        );
        let downloaded = wire.load(Ordering::Relaxed);
        Ok((bank, outcome(&version, downloaded, total, None)))
    }
}

/// The error of a staging an admin rollback cancelled.
fn cancelled_error() -> LayoutError {
    LayoutError::Source {
        source: io::Error::other("cancelled by an admin rollback"),
    }
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
            return Err(io::Error::other("cancelled by an admin rollback"));
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
            return Err(io::Error::other("cancelled by an admin rollback"));
        }
        self.inner.read(buf)
    }
}

/// GETs the index: exactly `size` bytes hashing to `sha256`, or why not.
async fn fetch_index(
    http: &reqwest::Client,
    url: &str,
    size: u64,
    sha256: &str,
    timeouts: &Timeouts,
) -> Result<Vec<u8>, IndexFailure> {
    let unavailable = |why: String| IndexFailure::Unavailable(format!("{url}: {why}"));
    let response = http
        .get(url)
        .timeout(timeouts.download)
        .send()
        .await
        .map_err(|e| unavailable(describe(&e)))?;
    if !response.status().is_success() {
        return Err(unavailable(format!(
            "the host answered {}",
            response.status()
        )));
    }
    let body = read_capped(response, size)
        .await
        .map_err(|e| unavailable(describe(&e)))?;
    if body.len() as u64 > size {
        return Err(IndexFailure::Forged(format!(
            "{url} is larger than the {size} bytes the manifest announces"
        )));
    }
    let actual = hex::encode(Sha256::digest(&body));
    if body.len() as u64 != size || actual != sha256 {
        return Err(IndexFailure::Forged(format!(
            "{url} does not match the manifest: {} bytes with sha256 {actual}, expected {size} bytes with sha256 {sha256}",
            body.len()
        )));
    }
    Ok(body)
}

/// A task aborted when dropped (so a cancelled pump takes its fetches with it).
struct Aborting<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches `wanted` from `dir`, [`PARALLEL_OBJECTS`] at a time, and sends
/// each in order; stops at the first failure (sent too) or when the stager is gone.
async fn fetch_objects(
    http: &reqwest::Client,
    dir: &str,
    wanted: Vec<WantedObject>,
    timeouts: &Timeouts,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    wire: &Arc<AtomicU64>,
) {
    let mut next = wanted.into_iter();
    let mut queue = VecDeque::new();
    let start = |object: WantedObject| {
        let http = http.clone();
        let url = format!("{dir}/{}.zst", object.sha256);
        let timeouts = timeouts.clone();
        let wire = wire.clone();
        Aborting(tokio::spawn(async move {
            fetch_object(&http, &url, object.packed, &timeouts, &wire).await
        }))
    };
    for object in next.by_ref().take(PARALLEL_OBJECTS) {
        queue.push_back(start(object));
    }
    while let Some(mut task) = queue.pop_front() {
        let result = match (&mut task.0).await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(format!("object fetch failed: {e}"))),
        };
        let failed = result.is_err();
        if tx.send(result).await.is_err() || failed {
            return;
        }
        if let Some(object) = next.next() {
            queue.push_back(start(object));
        }
    }
}

/// GETs one object, at most `packed + 1` bytes (the layout crate says "too
/// large"), resuming a broken body with `Range` up to [`OBJECT_TRIES`] times.
async fn fetch_object(
    http: &reqwest::Client,
    url: &str,
    packed: u64,
    timeouts: &Timeouts,
    wire: &AtomicU64,
) -> io::Result<Bytes> {
    let limit = packed.saturating_add(1);
    let mut body: Vec<u8> = Vec::new();
    let mut last = String::new();
    for _ in 0..OBJECT_TRIES {
        let mut request = http.get(url).timeout(timeouts.download);
        if !body.is_empty() {
            request = request.header(RANGE, format!("bytes={}-", body.len()));
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                last = describe(&e);
                continue;
            }
        };
        let status = response.status();
        if status.is_client_error() && status != StatusCode::RANGE_NOT_SATISFIABLE {
            return Err(io::Error::other(format!(
                "{url}: the host answered {status}"
            )));
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            // Nothing past what we have: the layout crate judges its size.
            return Ok(Bytes::from(body));
        }
        let resumed = status == StatusCode::PARTIAL_CONTENT
            && response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {}-", body.len())));
        if !resumed {
            if status != StatusCode::OK {
                last = format!("the host answered {status}");
                continue;
            }
            body.clear();
        }
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = (limit - body.len() as u64) as usize;
                    let taken = chunk.len().min(room);
                    wire.fetch_add(taken as u64, Ordering::Relaxed);
                    body.extend_from_slice(&chunk[..taken]);
                    if body.len() as u64 >= limit {
                        return Ok(Bytes::from(body));
                    }
                }
                Ok(None) => return Ok(Bytes::from(body)),
                Err(e) => {
                    last = describe(&e);
                    warn!(url, offset = body.len(), error = %last, "object download broken; resuming");
                    break;
                }
            }
        }
    }
    Err(io::Error::other(format!(
        "{url}: {last} ({OBJECT_TRIES} tries; giving up)"
    )))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A host that cuts the first answer after `cut` bytes and answers the
    /// resume (`Range: bytes=cut-`) with the rest; returns the requests' heads.
    async fn cutting_host(
        body: Vec<u8>,
        cut: usize,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/o.zst", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut heads = Vec::new();
            for round in 0..2 {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    socket.read_exact(&mut byte).await.unwrap();
                    head.push(byte[0]);
                }
                heads.push(String::from_utf8_lossy(&head).to_lowercase());
                if round == 0 {
                    let answer =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    socket.write_all(answer.as_bytes()).await.unwrap();
                    socket.write_all(&body[..cut]).await.unwrap();
                } else {
                    let answer = format!(
                        "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {cut}-{}/{}\r\nconnection: close\r\n\r\n",
                        body.len() - cut,
                        body.len() - 1,
                        body.len()
                    );
                    socket.write_all(answer.as_bytes()).await.unwrap();
                    socket.write_all(&body[cut..]).await.unwrap();
                }
                socket.shutdown().await.unwrap();
            }
            heads
        });
        (url, task)
    }

    #[tokio::test]
    async fn an_object_cut_mid_body_is_resumed_with_range() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let (url, host) = cutting_host(body.clone(), 30_000).await;
        let http = reqwest::Client::new();
        let got = fetch_object(
            &http,
            &url,
            body.len() as u64,
            &Timeouts::default(),
            &AtomicU64::new(0),
        )
        .await
        .unwrap();
        assert_eq!(&got[..], &body[..]);
        let heads = host.await.unwrap();
        assert!(heads[1].contains("range: bytes=30000-"), "{heads:?}");
    }

    #[tokio::test]
    async fn an_object_is_read_one_byte_past_its_announced_size_only() {
        let body = vec![1u8; 10_000];
        let (url, _host) = cutting_host(body, 10_000).await;
        let http = reqwest::Client::new();
        let got = fetch_object(&http, &url, 100, &Timeouts::default(), &AtomicU64::new(0))
            .await
            .unwrap();
        // The layout crate sees 101 bytes and says "larger than announced".
        assert_eq!(got.len(), 101);
    }
}
