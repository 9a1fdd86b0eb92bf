//! Talking to the console over HTTPS: the client (system roots plus
//! `[tls] ca_certs`, `[proxy]`, timeouts), the manifest check with
//! `If-None-Match` and the push `wait`, and the artifact stream that resumes
//! with `Range` after a broken connection.

use std::io::{self, Read};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, IF_NONE_MATCH, RANGE};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::channel::MAX_SIGNATURE_BYTES;
use crate::config::AgentConfig;

/// Connecting to the console must not hang an agent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A stalled transfer (no byte for this long) is broken; the artifact stream resumes it.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The console holds a push request at most this long (it caps `wait` itself too).
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// Resumes tried in a row without a byte of progress before staging gives up.
const MAX_RESUMES: u32 = 8;
/// First pause before a resume; doubles per failed try.
const RESUME_BACKOFF: Duration = Duration::from_millis(250);
/// Chunks buffered between the network and the stager (bounded memory).
const CHUNK_QUEUE: usize = 16;

/// Builds the HTTPS client of the agent.
pub fn client(config: &AgentConfig) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("bankswap/", env!("CARGO_PKG_VERSION")));
    for path in &config.ca_certs {
        let pem =
            std::fs::read(path).with_context(|| format!("[tls] ca_certs {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("[tls] ca_certs {}: not PEM certificates", path.display()))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    // SPEC §10: the agent's client certificate, once enrolled.
    if let Some(stored) = crate::identity::load(&config.root)? {
        builder = builder.identity(crate::identity::client_identity(&stored)?);
    }
    if let Some(proxy) = &config.proxy {
        let mut p = reqwest::Proxy::all(&proxy.url)
            .with_context(|| format!("[proxy] url {}", proxy.url))?;
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
        builder = builder.proxy(p);
    }
    builder.build().context("building the HTTPS client")
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
    },
}

/// Asks for the channel's manifest. With an `etag` and a `wait`, a console holds the
/// request until a release is published or the wait ends; a static host answers at once.
pub async fn check(
    http: &reqwest::Client,
    base: &str,
    channel: &str,
    etag: Option<&str>,
    wait: Duration,
) -> anyhow::Result<Checked> {
    let manifest_url = url(base, &format!("channels/{channel}/release.json"));
    let mut request = http.get(&manifest_url).timeout(wait + READ_TIMEOUT);
    if let Some(etag) = etag {
        request = request
            .header(IF_NONE_MATCH, etag)
            .query(&[("wait", wait.as_secs())]);
    }
    let response = request
        .send()
        .await
        .map_err(|e| anyhow!("{manifest_url}: {}", describe(&e)))?;
    if response.status() == StatusCode::NOT_MODIFIED {
        return Ok(Checked::Unchanged);
    }
    let response = ok_status(response, &manifest_url)?;
    let new_etag = response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let manifest = read_capped(response, signing::MAX_MANIFEST_BYTES as u64, &manifest_url).await?;
    let sig_url = format!("{manifest_url}.minisig");
    let response = http
        .get(&sig_url)
        .send()
        .await
        .map_err(|e| anyhow!("{sig_url}: {}", describe(&e)))?;
    let response = ok_status(response, &sig_url)?;
    let signature = read_capped(response, MAX_SIGNATURE_BYTES, &sig_url).await?;
    Ok(Checked::Release {
        manifest,
        signature,
        etag: new_etag,
    })
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
async fn read_capped(
    mut response: reqwest::Response,
    limit: u64,
    url: &str,
) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| anyhow!("{url}: {}", describe(&e)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            body.truncate(limit as usize + 1);
            break;
        }
    }
    Ok(body)
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
}

impl ArtifactStream {
    /// Starts fetching `url` on the current runtime.
    pub fn open(http: reqwest::Client, url: String, size: u64) -> ArtifactStream {
        let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
        tokio::spawn(async move {
            if let Err(err) = pump(&http, &url, size, &tx).await {
                let _ = tx.send(Err(io::Error::other(err.to_string()))).await;
            }
        });
        ArtifactStream {
            chunks: rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ArtifactStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(err)) => return Err(err),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// Fetches `url` into `tx`, resuming with `Range` after errors.
async fn pump(
    http: &reqwest::Client,
    url: &str,
    size: u64,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> anyhow::Result<()> {
    let limit = size + 1;
    let mut offset = 0u64;
    let mut failures = 0u32;
    let mut resumes = 0u32;
    loop {
        let before = offset;
        match fetch_from(http, url, offset, limit, tx).await {
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
            Err((n, err)) => {
                offset += n;
                if offset > before {
                    failures = 0;
                }
                failures += 1;
                if failures > MAX_RESUMES {
                    bail!("{url}: {err:#} (gave up after {MAX_RESUMES} tries without progress)");
                }
                resumes += 1;
                let pause = RESUME_BACKOFF * 2u32.saturating_pow(failures - 1);
                warn!(url, offset, error = %format!("{err:#}"), "artifact download broken; resuming");
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

/// One request from `offset`; on error, returns the bytes it did deliver.
async fn fetch_from(
    http: &reqwest::Client,
    url: &str,
    offset: u64,
    limit: u64,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> Result<Fetch, (u64, anyhow::Error)> {
    let mut request = http.get(url);
    if offset > 0 {
        request = request.header(RANGE, format!("bytes={offset}-"));
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| (0, anyhow!(describe(&e))))?;
    let status = response.status();
    if offset > 0 && status == StatusCode::RANGE_NOT_SATISFIABLE {
        return Ok(Fetch::Done(0)); // nothing after `offset`: the stager decides if that is short
    }
    let expected = if offset > 0 {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    if status != expected {
        return Err((
            0,
            anyhow!("the server answered {status} (wanted {expected})"),
        ));
    }
    if offset > 0 {
        let range = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !range.starts_with(&format!("bytes {offset}-")) {
            return Err((
                0,
                anyhow!("the server answered Content-Range `{range}` for bytes={offset}-"),
            ));
        }
    }
    let mut delivered = 0u64;
    loop {
        match response.chunk().await {
            Ok(Some(mut chunk)) => {
                let room = limit - offset - delivered;
                if chunk.len() as u64 > room {
                    chunk.truncate(room as usize);
                }
                delivered += chunk.len() as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    return Ok(Fetch::ReceiverGone);
                }
                if offset + delivered >= limit {
                    debug!(url, "artifact limit reached");
                    return Ok(Fetch::Done(delivered));
                }
            }
            Ok(None) => return Ok(Fetch::Done(delivered)),
            Err(e) => return Err((delivered, anyhow!(describe(&e)))),
        }
    }
}
