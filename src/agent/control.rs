//! The control socket (`ROOT/control.sock`, owner-only): `status`,
//! `rollback` and `check` talk to the running agent through it. One JSON
//! request line in, one JSON response line out.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::commands::StatusReport;

/// The socket's file name inside the root.
pub const SOCKET_FILE: &str = "control.sock";
/// A request line longer than this is refused (requests are a few bytes).
const MAX_REQUEST: u64 = 4096;
/// How long a client waits for the agent (a rollback stops and starts payloads).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// What a client asks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Request {
    /// The status report.
    Status,
    /// Swap back to the other bank now.
    Rollback,
    /// Check for a release now.
    Check,
}

/// The agent's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// A one-line message (what happened, or the error).
    pub message: String,
    /// The status after the request.
    pub status: Option<StatusReport>,
}

/// A request with the way back to its client.
pub type Envelope = (Request, oneshot::Sender<Response>);

/// The socket path of a root.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join(SOCKET_FILE)
}

/// Binds the socket (replacing a stale one: the root lock proves no other agent runs)
/// and forwards requests to the agent core.
pub fn serve(root: &Path, core: mpsc::Sender<Envelope>) -> anyhow::Result<()> {
    let path = socket_path(root);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing stale {}", path.display()));
        }
        _ => {}
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let core = core.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, core).await {
                    debug!(error = %format!("{e:#}"), "control connection ended");
                }
            });
        }
    });
    Ok(())
}

async fn answer(
    stream: tokio::net::UnixStream,
    core: mpsc::Sender<Envelope>,
) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::io::AsyncReadExt::take(tokio::io::BufReader::new(read), MAX_REQUEST)
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            core.send((request, tx))
                .await
                .map_err(|_| anyhow!("the agent is stopping"))?;
            rx.await.map_err(|_| anyhow!("the agent is stopping"))?
        }
        Err(e) => Response {
            ok: false,
            message: format!("bad request: {e}"),
            status: None,
        },
    };
    let mut bytes = serde_json::to_vec(&response)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    Ok(())
}

/// Sends a request to the agent running on `root`; `None` when no agent listens.
pub fn request(root: &Path, request: Request) -> anyhow::Result<Option<Response>> {
    let path = socket_path(root);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .with_context(|| format!("writing to {}", path.display()))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .with_context(|| format!("reading from {}", path.display()))?;
    let response = serde_json::from_str(answer.trim())
        .with_context(|| format!("{}: unreadable answer", path.display()))?;
    Ok(Some(response))
}
