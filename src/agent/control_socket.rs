//! The agent's side of the control socket (protocol in `crate::control`):
//! binds `ROOT/control.sock` owner-only and forwards each request to the core.
//! The socket is bound inside an owner-only folder, chmodded there, and only
//! then renamed into place: whatever the umask, no other user can ever connect.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, anyhow};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::control::{Request, Response, socket_path};

/// A request line longer than this is refused (requests are a few bytes).
const MAX_REQUEST: u64 = 4096;

/// The owner-only folder, beside the socket, where it is bound and chmodded
/// before being renamed into place (removed right after; a leftover is replaced).
const BIND_DIR: &str = "control.sock.bind";

/// A request with the way back to its client.
pub type Envelope = (Request, oneshot::Sender<Response>);

/// Binds the socket (replacing a stale one: the root lock proves no other agent runs)
/// and forwards requests to the agent core. Returns the listener's fd (owned
/// by the accept task for the runtime's life), for an in-place exec.
pub fn serve(root: &Path, core: mpsc::Sender<Envelope>) -> anyhow::Result<RawFd> {
    let path = socket_path(root);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing stale {}", path.display()));
        }
        _ => {}
    }
    let listener = bind_owner_only(root, &path)?;
    Ok(accept_loop(listener, core))
}

/// Serves a listener handed over by the previous agent image of this process
/// (no unlink, no rebind: clients that connected during the exec wait in its
/// backlog). Returns its fd, as [`serve`] does.
pub fn serve_inherited(fd: OwnedFd, core: mpsc::Sender<Envelope>) -> anyhow::Result<RawFd> {
    let std_listener = std::os::unix::net::UnixListener::from(fd);
    std_listener
        .set_nonblocking(true)
        .context("the inherited control socket")?;
    let listener = UnixListener::from_std(std_listener).context("the inherited control socket")?;
    Ok(accept_loop(listener, core))
}

/// Accepts connections in a task of its own, each answered in its own task.
fn accept_loop(listener: UnixListener, core: mpsc::Sender<Envelope>) -> RawFd {
    let fd = listener.as_raw_fd();
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
    fd
}

/// Binds `path` with mode 0600 and no window where another user could connect:
/// bound in a 0700 folder (the umask can only narrow it), chmodded, then renamed.
fn bind_owner_only(root: &Path, path: &Path) -> anyhow::Result<UnixListener> {
    let dir = root.join(BIND_DIR);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing stale {}", dir.display()));
        }
        _ => {}
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let inside = dir.join(crate::control::SOCKET_FILE);
    let listener =
        UnixListener::bind(&inside).with_context(|| format!("binding {}", inside.display()))?;
    std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", inside.display()))?;
    std::fs::rename(&inside, path)
        .with_context(|| format!("moving {} to {}", inside.display(), path.display()))?;
    std::fs::remove_dir(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(listener)
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
