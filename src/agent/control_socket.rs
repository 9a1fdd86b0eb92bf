//! The agent's side of the control socket (protocol in `crate::control`):
//! binds `ROOT/control.sock` owner-only and forwards each request to the core.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, anyhow};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::control::{Request, Response, socket_path};

/// A request line longer than this is refused (requests are a few bytes).
const MAX_REQUEST: u64 = 4096;

/// A request with the way back to its client.
pub type Envelope = (Request, oneshot::Sender<Response>);

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
