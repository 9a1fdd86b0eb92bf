//! `publish --console`: the admin side of the console's upload API
//! (`src/console/admin.rs`): the channel's history, the artifact upload
//! (streamed from disk, skipped when the console has it) and the release
//! upload, over HTTPS with the admin token as a bearer token.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use thiserror::Error;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::ReaderStream;

use super::pack::Packed;
use crate::console::admin_client::{check_console_url, https_client_builder, runtime};
use crate::console::{ErrorBody, History, Published, ReleaseUpload};
use crate::progress::Progress;

/// Connecting to the console must not hang `publish`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Small requests (history, release) that take longer have failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest history listing read: ~100 bytes per release.
const MAX_HISTORY_BYTES: usize = 16 * 1024 * 1024;
/// The largest error or other small answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Bytes read from disk per upload chunk.
const CHUNK_BYTES: usize = 256 * 1024;
/// An artifact upload may take [`REQUEST_TIMEOUT`] plus its size at this rate:
/// a floor any working link beats, so only a stalled upload times out.
const MIN_UPLOAD_BYTES_PER_SEC: u64 = 64 * 1024;

/// A refusal by the console, with its one-line reason.
#[derive(Debug, Error)]
pub enum UploadError {
    /// 401: the token is missing or wrong.
    #[error(
        "{reason} (HTTP 401); check --token, --token-file or BANKSWAP_TOKEN against the console's --admin-token-file"
    )]
    Unauthorized {
        /// The console's reason.
        reason: String,
    },
    /// Any other refusal.
    #[error("{reason} (HTTP {status})")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The console's reason.
        reason: String,
    },
}

/// A console that accepts uploads, for one channel.
pub struct Console {
    /// The console's base URL, without a trailing slash.
    base: String,
    /// The channel published on.
    channel: String,
    /// The admin token.
    token: String,
    /// The HTTPS client (system roots plus `--ca-cert`).
    http: reqwest::Client,
    /// Runs the requests; `publish` is otherwise synchronous.
    runtime: tokio::runtime::Runtime,
}

impl Console {
    /// A client for `url` trusting the system roots plus `ca_cert`.
    pub fn connect(
        url: &str,
        channel: &str,
        token: String,
        ca_cert: Option<&Path>,
    ) -> anyhow::Result<Console> {
        check_console_url(url)?;
        let http = https_client_builder(ca_cert)?
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("bankswap/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("setting up the HTTPS client")?;
        Ok(Console {
            base: url.trim_end_matches('/').to_string(),
            channel: channel.to_string(),
            token,
            http,
            runtime: runtime()?,
        })
    }

    /// The base URL, for messages.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// What failed, as an error's context: `publish to URL`.
    pub fn failed(&self) -> String {
        format!("publish to {}", self.base)
    }

    /// The channel's current sequence, releases and the console's trusted keys.
    pub fn history(&self) -> anyhow::Result<History> {
        let url = self.url_of(&format!("admin/channels/{}/history", self.channel));
        let body = self.runtime.block_on(async {
            let response = self.admin(Method::GET, &url).send().await?;
            read_ok(response, MAX_HISTORY_BYTES).await
        })?;
        serde_json::from_slice(&body).with_context(|| format!("reading the history from {url}"))
    }

    /// A past release's manifest and signature, as the console stores them.
    pub fn history_entry(&self, sequence: u64) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let manifest_url = self.url_of(&format!(
            "channels/{}/history/{sequence}.json",
            self.channel
        ));
        let signature_url = format!("{manifest_url}.minisig");
        self.runtime.block_on(async {
            let limit = signing::MAX_MANIFEST_BYTES;
            let manifest = read_ok(self.get(&manifest_url).send().await?, limit).await?;
            let limit = signing::MAX_SIGNATURE_BYTES;
            let signature = read_ok(self.get(&signature_url).send().await?, limit).await?;
            Ok((manifest, signature))
        })
    }

    /// Whether the console already serves `public` with `size` bytes (a HEAD).
    async fn serves(&self, public: &str, size: u64) -> anyhow::Result<bool> {
        let head = self
            .http
            .head(public)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await?;
        Ok(head.status() == StatusCode::OK && head.content_length() == Some(size))
    }

    /// Uploads the archive unless the console already serves it with its size.
    pub fn upload_artifact(&self, packed: &Packed) -> anyhow::Result<()> {
        let public = self.url_of(&format!("artifacts/{}", packed.name()));
        let upload = self.url_of(&format!("admin/artifacts/{}", packed.name()));
        self.runtime.block_on(async {
            if self.serves(&public, packed.size).await? {
                return Ok(());
            }
            let file = tokio::fs::File::open(&packed.file)
                .await
                .with_context(|| format!("reading {}", packed.file.display()))?;
            let reader = Counting {
                inner: file,
                done: 0,
                progress: Some(Progress::new(
                    &format!("uploading {}", packed.name()),
                    packed.size,
                )),
            };
            let body = reqwest::Body::wrap_stream(ReaderStream::with_capacity(reader, CHUNK_BYTES));
            let allowed =
                REQUEST_TIMEOUT + Duration::from_secs(packed.size / MIN_UPLOAD_BYTES_PER_SEC);
            let response = self
                .admin(Method::PUT, &upload)
                .timeout(allowed)
                .header(CONTENT_LENGTH, packed.size)
                .body(body)
                .send()
                .await?;
            read_ok(response, MAX_ANSWER_BYTES).await.map(drop)
        })
    }

    /// Uploads the delta file `file` as `v1/delta/{rel}` (an index or an
    /// object, issue 14) unless the console already serves it with its size;
    /// true when it was sent.
    pub fn upload_delta_file(&self, rel: &str, file: &Path) -> anyhow::Result<bool> {
        let public = self.url_of(&format!("delta/{rel}"));
        let upload = self.url_of(&format!("admin/delta/{rel}"));
        self.runtime.block_on(async {
            let size = tokio::fs::metadata(file)
                .await
                .with_context(|| format!("reading {}", file.display()))?
                .len();
            if self.serves(&public, size).await? {
                return Ok(false);
            }
            let reader = tokio::fs::File::open(file)
                .await
                .with_context(|| format!("reading {}", file.display()))?;
            let body = reqwest::Body::wrap_stream(ReaderStream::with_capacity(reader, CHUNK_BYTES));
            let allowed = REQUEST_TIMEOUT + Duration::from_secs(size / MIN_UPLOAD_BYTES_PER_SEC);
            let response = self
                .admin(Method::PUT, &upload)
                .timeout(allowed)
                .header(CONTENT_LENGTH, size)
                .body(body)
                .send()
                .await?;
            read_ok(response, MAX_ANSWER_BYTES).await.map(|_| true)
        })
    }

    /// Uploads the signed release; the console re-verifies and publishes it.
    pub fn put_release(&self, manifest: &[u8], signature: &str) -> anyhow::Result<Published> {
        let url = self.url_of(&format!("admin/channels/{}/release", self.channel));
        let upload = ReleaseUpload {
            manifest: String::from_utf8(manifest.to_vec()).context("the manifest is not UTF-8")?,
            signature: signature.to_string(),
        };
        let body = self.runtime.block_on(async {
            let response = self.admin(Method::PUT, &url).json(&upload).send().await?;
            read_ok(response, MAX_ANSWER_BYTES).await
        })?;
        serde_json::from_slice(&body).with_context(|| format!("reading the answer of {url}"))
    }

    /// PUTs `body` as JSON to the channel's admin route `what` (`rollout`,
    /// `rollback`: `publish --waves`, waves.rs).
    pub fn put_channel_json(&self, what: &str, body: &impl serde::Serialize) -> anyhow::Result<()> {
        let url = self.url_of(&format!("admin/channels/{}/{what}", self.channel));
        self.runtime.block_on(async {
            let response = self.admin(Method::PUT, &url).json(body).send().await?;
            read_ok(response, MAX_ANSWER_BYTES).await.map(drop)
        })
    }

    /// `{base}/v1/{rest}`.
    fn url_of(&self, rest: &str) -> String {
        format!("{}/v1/{rest}", self.base)
    }

    /// A request with the admin token.
    fn admin(&self, method: Method, url: &str) -> RequestBuilder {
        self.http
            .request(method, url)
            .timeout(REQUEST_TIMEOUT)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
    }

    /// A public GET.
    fn get(&self, url: &str) -> RequestBuilder {
        self.http.get(url).timeout(REQUEST_TIMEOUT)
    }
}

/// The body of a 2xx answer (at most `limit` bytes), or the console's refusal.
async fn read_ok(mut response: Response, limit: usize) -> anyhow::Result<Vec<u8>> {
    let status = response.status();
    let limit = if status.is_success() {
        limit
    } else {
        MAX_ANSWER_BYTES
    };
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            anyhow::bail!(
                "{}: the answer is larger than {limit} bytes",
                response.url()
            );
        }
        body.extend_from_slice(&chunk);
    }
    if status.is_success() {
        return Ok(body);
    }
    let reason = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(answer) => answer.error,
        Err(_) if status == StatusCode::NOT_FOUND => format!(
            "{} is not there: uploads need a console started with --admin-token-file FILE --trust KEY.pub",
            response.url().path()
        ),
        Err(_) => format!(
            "{}: {}",
            response.url().path(),
            status.canonical_reason().unwrap_or("refused")
        ),
    };
    let reason = reason.replace(['\n', '\r'], " ");
    Err(if status == StatusCode::UNAUTHORIZED {
        UploadError::Unauthorized { reason }.into()
    } else {
        UploadError::Refused {
            status: status.as_u16(),
            reason,
        }
        .into()
    })
}

/// An `AsyncRead` that reports how much was read.
struct Counting<R> {
    /// The file being uploaded.
    inner: R,
    /// Bytes read so far.
    done: u64,
    /// Where progress goes (a bar on a terminal, log lines otherwise); taken when done.
    progress: Option<Progress>,
}

impl<R> Drop for Counting<R> {
    fn drop(&mut self) {
        if let Some(progress) = self.progress.take() {
            progress.finish();
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.done += read as u64;
            let done = self.done;
            if let Some(progress) = &mut self.progress {
                progress.update(done);
            }
        }
        polled
    }
}
