//! Talking to the console over HTTPS: the client (system roots plus
//! `[tls] ca_certs`, `[proxy]`, timeouts), the manifest check with
//! `If-None-Match` and the push `wait` (with the channel's key rotation
//! record, SPEC §13), and the artifact stream that resumes with `Range`
//! after a broken connection.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, DATE, ETAG, IF_NONE_MATCH, RANGE};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::channel::MAX_SIGNATURE_BYTES;
use crate::config::{AgentConfig, Timeouts, redact_url};
use crate::progress::{Meter, ProgressReport, SharedMeter};

/// Resumes tried in a row without good progress before staging gives up (a
/// cut for dripping below the floor rate counts even if it moved some bytes).
const MAX_RESUMES: u32 = 8;
/// First pause before a resume; doubles per failed try, up to the rate window.
const RESUME_BACKOFF: Duration = Duration::from_millis(250);
/// Chunks buffered between the network and the stager (bounded memory). A chunk is
/// what hyper read at once, up to its ~400 KiB read buffer, and holds that buffer
/// until it is consumed: 16 of them were 8 MiB of the agent's peak while staging
/// (heaptrack). Two keep the stager fed; the kernel's socket buffer holds the rest.
const CHUNK_QUEUE: usize = 2;

/// What every HTTPS client of the agent is built from (system roots plus
/// `[tls] ca_certs`, `[proxy]`, the connect timeout), read once so that a
/// renewed certificate can be put into a new client without reading again.
#[derive(Debug, Clone)]
pub struct ClientSetup {
    /// Extra trust roots (`[tls] ca_certs`).
    roots: Vec<reqwest::Certificate>,
    /// `[proxy]`, with its credentials.
    proxy: Option<reqwest::Proxy>,
    /// `[timeouts] connect`.
    connect: Duration,
}

impl ClientSetup {
    /// Reads the trust roots and the proxy settings of `config`.
    pub fn new(config: &AgentConfig) -> anyhow::Result<ClientSetup> {
        let mut roots = Vec::new();
        for path in &config.ca_certs {
            let pem = std::fs::read(path)
                .with_context(|| format!("[tls] ca_certs {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!("[tls] ca_certs {}: not PEM certificates", path.display())
            })?;
            roots.extend(certs);
        }
        let proxy = match &config.proxy {
            None => None,
            Some(proxy) => {
                // Never echo the URL as written: it may carry credentials.
                let mut p = reqwest::Proxy::all(proxy.url.as_str())
                    .map_err(|e| anyhow!("[proxy] url {}: {e}", redact_url(proxy.url.as_str())))?;
                if let Some(user) = &proxy.username {
                    let password = match &proxy.password_file {
                        Some(f) => std::fs::read_to_string(f)
                            .with_context(|| format!("[proxy] password_file {}", f.display()))?
                            .trim_end_matches(['\r', '\n'])
                            .to_string(),
                        None => String::new(),
                    };
                    p = p.basic_auth(user, &password);
                }
                Some(p)
            }
        };
        Ok(ClientSetup {
            roots,
            proxy,
            connect: config.timeouts.connect,
        })
    }

    /// A client builder with these settings and no client certificate. It has
    /// a connect timeout but no read or overall timeout: each request sets its
    /// own (a held push request sends nothing for minutes, and must not be cut for it).
    pub fn builder(&self) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(self.connect)
            .user_agent(concat!("bankswap/", env!("CARGO_PKG_VERSION")));
        for cert in &self.roots {
            builder = builder.add_root_certificate(cert.clone());
        }
        if let Some(proxy) = &self.proxy {
            builder = builder.proxy(proxy.clone());
        }
        builder
    }

    /// A client presenting `identity` (SPEC §10), if the agent enrolled.
    pub fn client(
        &self,
        identity: Option<&crate::identity::Stored>,
    ) -> anyhow::Result<reqwest::Client> {
        let mut builder = self.builder();
        if let Some(stored) = identity {
            builder = builder.identity(crate::identity::client_identity(stored)?);
        }
        builder.build().context("building the HTTPS client")
    }
}

/// Builds the HTTPS client of the agent ([`ClientSetup`]), with the client
/// certificate stored in the root once enrolled.
pub fn client(config: &AgentConfig) -> anyhow::Result<reqwest::Client> {
    let stored = crate::identity::load(&config.root)?;
    ClientSetup::new(config)?.client(stored.as_ref())
}

/// A `{base}/v1/...` URL.
pub fn url(base: &str, rest: &str) -> String {
    format!("{}/v1/{rest}", base.trim_end_matches('/'))
}

/// What a manifest check found.
#[derive(Debug)]
pub enum Checked {
    /// The manifest did not change (304).
    Unchanged,
    /// A manifest and its signature.
    Release {
        /// Manifest bytes (at most the manifest cap + 1, so the policy can say "too large").
        manifest: Vec<u8>,
        /// Signature bytes.
        signature: Vec<u8>,
        /// The ETag to send next time.
        etag: Option<String>,
        /// The channel's key rotation record, if the console has one.
        rotation: Option<Rotation>,
        /// The console's `Date` header, when it sent a valid one.
        date: Option<SystemTime>,
    },
}

/// A channel's key rotation record as fetched (`keys.json` + `.minisig`).
#[derive(Debug, Clone)]
pub struct Rotation {
    /// Record bytes (at most the rotation cap + 1, so verification can say "too large").
    pub record: Vec<u8>,
    /// Signature bytes.
    pub signature: Vec<u8>,
}

/// Asks for the channel's manifest. With an `etag` and a `wait`, a console holds the
/// request until a release is published or the wait ends; a static host answers at once.
/// `agent_id` goes along as a query parameter (manifest and signature): a console
/// rolling a release out in waves serves it only to the agents it admitted (SPEC §11).
pub async fn check(
    http: &reqwest::Client,
    base: &str,
    channel: &str,
    agent_id: Option<&str>,
    etag: Option<&str>,
    wait: Duration,
    timeouts: &Timeouts,
) -> anyhow::Result<Checked> {
    let manifest_url = url(base, &format!("channels/{channel}/release.json"));
    // A held request may stay silent for all of `wait`: its deadline is that
    // plus a margin, never the limit of an ordinary request.
    let (limit, key) = match etag {
        Some(_) => (
            wait.saturating_add(timeouts.held_margin),
            "max_wait + held_margin",
        ),
        None => (timeouts.request, "request"),
    };
    let failed = |e: reqwest::Error| anyhow!("{manifest_url}: {}", describe_cut(&e, limit, key));
    let mut request = http.get(&manifest_url).timeout(limit);
    if let Some(id) = agent_id {
        request = request.query(&[("agent_id", id)]);
    }
    if let Some(etag) = etag {
        request = request
            .header(IF_NONE_MATCH, etag)
            .query(&[("wait", wait.as_secs())]);
    }
    let response = request.send().await.map_err(failed)?;
    if response.status() == StatusCode::NOT_MODIFIED {
        return Ok(Checked::Unchanged);
    }
    let response = ok_status(response, &manifest_url)?;
    let new_etag = response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let date = response
        .headers()
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let manifest = read_capped(response, signing::MAX_MANIFEST_BYTES as u64)
        .await
        .map_err(failed)?;
    let sig_url = format!("{manifest_url}.minisig");
    let failed = |e: reqwest::Error| {
        anyhow!(
            "{sig_url}: {}",
            describe_cut(&e, timeouts.request, "request")
        )
    };
    let mut request = http.get(&sig_url).timeout(timeouts.request);
    if let Some(id) = agent_id {
        request = request.query(&[("agent_id", id)]);
    }
    let response = request.send().await.map_err(failed)?;
    let response = ok_status(response, &sig_url)?;
    let signature = read_capped(response, MAX_SIGNATURE_BYTES)
        .await
        .map_err(failed)?;
    let rotation = rotation(http, base, channel, timeouts).await?;
    Ok(Checked::Release {
        manifest,
        signature,
        etag: new_etag,
        rotation,
        date,
    })
}

/// Asks for the channel's key rotation record and its signature, fetched with
/// every new manifest so that a release signed by an endorsed key verifies.
/// A 404 means the channel has no record.
async fn rotation(
    http: &reqwest::Client,
    base: &str,
    channel: &str,
    timeouts: &Timeouts,
) -> anyhow::Result<Option<Rotation>> {
    let record_url = url(base, &format!("channels/{channel}/keys.json"));
    let Some(record) = get_optional(
        http,
        &record_url,
        signing::MAX_ROTATION_BYTES as u64,
        timeouts,
    )
    .await?
    else {
        return Ok(None);
    };
    let sig_url = format!("{record_url}.minisig");
    let signature = get_optional(http, &sig_url, MAX_SIGNATURE_BYTES, timeouts)
        .await?
        .ok_or_else(|| {
            anyhow!("{sig_url}: the console answered 404 (a record without its signature)")
        })?;
    Ok(Some(Rotation { record, signature }))
}

/// GETs a small file within `[timeouts] request`: `None` on 404.
async fn get_optional(
    http: &reqwest::Client,
    url: &str,
    limit: u64,
    timeouts: &Timeouts,
) -> anyhow::Result<Option<Vec<u8>>> {
    let failed =
        |e: reqwest::Error| anyhow!("{url}: {}", describe_cut(&e, timeouts.request, "request"));
    let response = http
        .get(url)
        .timeout(timeouts.request)
        .send()
        .await
        .map_err(failed)?;
    if response.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let response = ok_status(response, url)?;
    Ok(Some(read_capped(response, limit).await.map_err(failed)?))
}

fn ok_status(response: reqwest::Response, url: &str) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        Ok(response)
    } else {
        bail!("{url}: the console answered {status}")
    }
}

/// Reads a body, stopping one byte past `limit` so the caller can report "too large".
pub(super) async fn read_capped(
    mut response: reqwest::Response,
    limit: u64,
) -> reqwest::Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            body.truncate(limit as usize + 1);
            break;
        }
    }
    Ok(body)
}

/// Like [`describe`], but a timeout says which limit cut the request: a
/// console that drips its answer gets a clear error, not "operation timed out".
pub fn describe_cut(err: &reqwest::Error, limit: Duration, key: &str) -> String {
    if err.is_timeout() {
        format!("no complete answer within {limit:?} ([timeouts] {key})")
    } else {
        describe(err)
    }
}

/// One line for a reqwest error, with its causes (reqwest's own Display hides them).
pub fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

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
    pub(super) fn new(
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

/// Fetches `url` into `tx`, resuming with `Range` after errors. Statuses that
/// asking again will not change (403, 404, 410, …) end it at once.
async fn pump(
    clients: &watch::Receiver<reqwest::Client>,
    url: &str,
    size: u64,
    timeouts: &Timeouts,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> anyhow::Result<()> {
    let limit = size.saturating_add(1);
    let mut offset = 0u64;
    let mut failures = 0u32;
    let mut resumes = 0u32;
    loop {
        let http = clients.borrow().clone();
        match fetch_from(&http, url, offset, limit, timeouts, tx).await {
            Ok(Fetch::Done(n)) => {
                offset += n;
                if resumes > 0 {
                    info!(
                        url,
                        bytes = offset,
                        resumes,
                        "artifact fetched after resuming"
                    );
                }
                return Ok(());
            }
            Ok(Fetch::ReceiverGone) => return Ok(()),
            Err(cut) => {
                if let Cut::Refused(status) = cut.why {
                    bail!("artifact {url} answered {status}");
                }
                offset += cut.delivered;
                // A drip moves a few bytes per cut: that is no progress.
                if cut.delivered > 0 && !matches!(cut.why, Cut::Slow) {
                    failures = 0;
                }
                failures += 1;
                let err = cut.error;
                if failures > MAX_RESUMES {
                    bail!("artifact {url}: {err} ({MAX_RESUMES} tries in a row; giving up)");
                }
                resumes += 1;
                let pause = RESUME_BACKOFF
                    .saturating_mul(2u32.saturating_pow(failures - 1))
                    .min(timeouts.rate_window);
                warn!(url, offset, error = %err, "artifact download broken; resuming");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// How one request ended.
enum Fetch {
    /// The body ended (or the limit was reached) after this many bytes.
    Done(u64),
    /// The stager stopped reading.
    ReceiverGone,
}

/// Why a request was cut short.
enum Cut {
    /// An answer that asking again will not change.
    Refused(StatusCode),
    /// Slower than `[timeouts] min_rate` over a window.
    Slow,
    /// Anything else (a broken connection, a deadline, a wrong answer): resumed.
    Broken,
}

/// A request cut short: what it delivered, and why.
struct Cutoff {
    /// Bytes delivered before the cut.
    delivered: u64,
    /// What kind of cut.
    why: Cut,
    /// One line for the log and the error.
    error: String,
}

impl Cutoff {
    fn new(delivered: u64, why: Cut, error: impl Into<String>) -> Cutoff {
        Cutoff {
            delivered,
            why,
            error: error.into(),
        }
    }
}

/// Measures the transfer rate over consecutive windows of `[timeouts] rate_window`.
struct RateFloor {
    /// When the current window began.
    start: Instant,
    /// Bytes received in the current window.
    bytes: u64,
    /// Window length.
    window: Duration,
    /// Bytes a window must bring (`min_rate × window`).
    needed: u64,
    /// The floor, bytes per second (for the message).
    min_rate: u64,
}

impl RateFloor {
    fn new(timeouts: &Timeouts) -> RateFloor {
        RateFloor {
            start: Instant::now(),
            bytes: 0,
            window: timeouts.rate_window,
            needed: (timeouts.min_rate as f64 * timeouts.rate_window.as_secs_f64()) as u64,
            min_rate: timeouts.min_rate,
        }
    }

    /// When the current window ends.
    fn end(&self) -> Instant {
        self.start + self.window
    }

    /// Time the stager kept us waiting is not the network's fault.
    fn exclude(&mut self, blocked: Duration) {
        self.start += blocked;
    }

    /// Counts `n` bytes; at the end of a window, checks it brought enough.
    fn add(&mut self, n: u64, now: Instant) -> Result<(), String> {
        self.bytes = self.bytes.saturating_add(n);
        if now < self.end() {
            return Ok(());
        }
        if self.bytes < self.needed {
            return Err(format!(
                "{} bytes in {:?}, below the floor of {} B/s ([timeouts] min_rate)",
                self.bytes, self.window, self.min_rate
            ));
        }
        self.start = now;
        self.bytes = 0;
        Ok(())
    }
}

/// One request from `offset`; on error, returns the bytes it did deliver.
async fn fetch_from(
    http: &reqwest::Client,
    url: &str,
    offset: u64,
    limit: u64,
    timeouts: &Timeouts,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> Result<Fetch, Cutoff> {
    let deadline = Instant::now() + timeouts.download;
    let mut request = http.get(url);
    if offset > 0 {
        request = request.header(RANGE, format!("bytes={offset}-"));
    }
    let answer = timeouts.request.min(timeouts.download);
    let mut response = match tokio::time::timeout(answer, request.send()).await {
        Err(_) => {
            return Err(Cutoff::new(
                0,
                Cut::Broken,
                format!("no answer within {answer:?} ([timeouts] request)"),
            ));
        }
        Ok(Err(e)) => return Err(Cutoff::new(0, Cut::Broken, describe(&e))),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if offset > 0 && status == StatusCode::RANGE_NOT_SATISFIABLE {
        return Ok(Fetch::Done(0)); // nothing after `offset`: the stager decides if that is short
    }
    if is_final(status) {
        return Err(Cutoff::new(0, Cut::Refused(status), status.to_string()));
    }
    let expected = if offset > 0 {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    if status != expected {
        return Err(Cutoff::new(
            0,
            Cut::Broken,
            format!("the server answered {status} (wanted {expected})"),
        ));
    }
    if offset > 0 {
        let range = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !range.starts_with(&format!("bytes {offset}-")) {
            return Err(Cutoff::new(
                0,
                Cut::Broken,
                format!("the server answered Content-Range `{range}` for bytes={offset}-"),
            ));
        }
    }
    let mut delivered = 0u64;
    let mut floor = RateFloor::new(timeouts);
    loop {
        let next = tokio::time::timeout_at(floor.end().min(deadline), response.chunk()).await;
        let now = Instant::now();
        match next {
            Err(_) if now >= deadline => {
                return Err(Cutoff::new(
                    delivered,
                    Cut::Broken,
                    format!(
                        "not finished within {:?} ([timeouts] download)",
                        timeouts.download
                    ),
                ));
            }
            Err(_) => {
                if let Err(slow) = floor.add(0, now) {
                    return Err(Cutoff::new(delivered, Cut::Slow, slow));
                }
            }
            Ok(Ok(Some(mut chunk))) => {
                let room = limit - offset - delivered;
                if chunk.len() as u64 > room {
                    chunk.truncate(room as usize);
                }
                let n = chunk.len() as u64;
                delivered += n;
                if let Err(slow) = floor.add(n, now) {
                    return Err(Cutoff::new(delivered, Cut::Slow, slow));
                }
                let sent = Instant::now();
                if tx.send(Ok(chunk)).await.is_err() {
                    return Ok(Fetch::ReceiverGone);
                }
                floor.exclude(sent.elapsed());
                if offset + delivered >= limit {
                    debug!(url, "artifact limit reached");
                    return Ok(Fetch::Done(delivered));
                }
            }
            Ok(Ok(None)) => return Ok(Fetch::Done(delivered)),
            Ok(Err(e)) => return Err(Cutoff::new(delivered, Cut::Broken, describe(&e))),
        }
    }
}

/// Statuses that asking again will not change: the host refuses, or has no
/// such file. Reported at once instead of retried (408 and 429 are worth a retry).
fn is_final(status: StatusCode) -> bool {
    status.is_client_error()
        && !matches!(
            status,
            StatusCode::REQUEST_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
                | StatusCode::RANGE_NOT_SATISFIABLE
        )
}
