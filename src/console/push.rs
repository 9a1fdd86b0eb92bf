//! Push: one background task notices when a channel's manifest changes and
//! wakes every request held on that channel.
//!
//! Held requests never touch the disk while they wait. A single task stats the
//! `release.json` of every channel somebody waits on, every [`POLL_PERIOD`];
//! only when length, mtime or inode change does it read and hash the file, and
//! only when the hash changes does it publish the new bytes through the
//! channel's `tokio::sync::watch`. The cost of a poll is one `stat` per watched
//! channel, independent of how many agents are held.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::channel::read_capped;

/// How often watched manifests are stat'ed: well inside the 1 s in which
/// agents must learn of a publish (SPEC §8), for a few µs of work per channel.
pub const POLL_PERIOD: Duration = Duration::from_millis(100);

/// The longest a request is held unless `console serve --max-wait` says
/// otherwise: agents reconnect after it, so a longer hold saves little, and
/// intermediaries commonly cut idle requests at 5 min.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(300);

/// The largest manifest served: agents refuse anything larger (SPEC §4).
pub const MAX_MANIFEST_BYTES: u64 = signing::MAX_MANIFEST_BYTES as u64;

/// One version of a file as served: its bytes and strong ETag.
#[derive(Debug)]
pub struct Release {
    /// The quoted sha256 hex of `bytes`.
    pub etag: String,
    /// The file's content.
    pub bytes: Bytes,
}

/// What a held request sees: the latest manifest the watcher read, if any.
pub type Latest = Option<Arc<Release>>;

/// Reads a channel file (at most `limit` bytes) and computes its ETag; `None` if absent.
pub fn read_release(path: &Path, limit: u64) -> io::Result<Option<Release>> {
    let bytes = match read_capped(path, limit) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {limit} bytes", path.display()),
        ));
    }
    Ok(Some(Release {
        etag: etag_of(&bytes),
        bytes: Bytes::from(bytes),
    }))
}

/// A strong ETag: the quoted sha256 hex of the bytes.
pub fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Sha256::digest(bytes)))
}

/// Cheap identity of a file version: a publish renames a new file into place,
/// which changes the inode even when length and mtime happen to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// File length.
    len: u64,
    /// Modification time, seconds.
    mtime: i64,
    /// Modification time, nanoseconds.
    mtime_nsec: i64,
    /// Inode number.
    ino: u64,
}

/// One channel somebody waits on.
struct Watched {
    /// The channel's `release.json`.
    path: PathBuf,
    /// The file's identity when last read (`None`: not read yet, or absent).
    stamp: Option<Stamp>,
    /// Publishes each new manifest to the held requests.
    sender: watch::Sender<Latest>,
}

/// The set of watched channels, shared by the request handlers and the poll task.
#[derive(Clone)]
pub struct Watcher {
    /// Channel name → its watch. Entries go away when nobody waits any more.
    channels: Arc<Mutex<HashMap<String, Watched>>>,
    /// The longest a request is held, whatever its `?wait=` asks.
    max_wait: Duration,
}

impl Default for Watcher {
    fn default() -> Watcher {
        Watcher {
            channels: Arc::default(),
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

impl Watcher {
    /// Starts the poll task; it ends when `stop` is cancelled. Requests are
    /// held at most `max_wait`.
    pub fn start(stop: CancellationToken, max_wait: Duration) -> Watcher {
        let watcher = Watcher {
            max_wait,
            ..Watcher::default()
        };
        let poller = watcher.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_PERIOD);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let this = poller.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || this.poll()).await {
                    warn!(error = %e, "manifest watcher failed");
                }
            }
            debug!("manifest watcher stopped");
        });
        watcher
    }

    /// The longest a request is held.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Subscribes to the manifest at `path` of `channel`. The receiver's
    /// current value is marked seen: only changes after this call wake it.
    pub fn subscribe(&self, channel: &str, path: PathBuf) -> watch::Receiver<Latest> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels
            .entry(channel.to_string())
            .or_insert_with(|| Watched {
                path,
                stamp: None,
                sender: watch::Sender::new(None),
            })
            .sender
            .subscribe()
    }

    /// One poll: stat every watched manifest, re-read the changed ones, wake their waiters.
    fn poll(&self) {
        let snapshot: Vec<(String, PathBuf, Option<Stamp>)> = {
            let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
            channels.retain(|_, watched| watched.sender.receiver_count() > 0);
            channels
                .iter()
                .map(|(name, w)| (name.clone(), w.path.clone(), w.stamp))
                .collect()
        };
        for (name, path, old) in snapshot {
            let stamp = stamp_of(&path);
            if stamp == old && old.is_some() {
                continue;
            }
            let latest = match read_release(&path, MAX_MANIFEST_BYTES) {
                Ok(release) => release.map(Arc::new),
                Err(e) => {
                    warn!(channel = %name, error = %e, "cannot read manifest");
                    continue;
                }
            };
            let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(watched) = channels.get_mut(&name) else {
                continue;
            };
            watched.stamp = stamp;
            watched
                .sender
                .send_if_modified(|current| replace_if_new(&name, current, latest));
        }
    }
}

/// Stores `latest` if its ETag differs from `current`'s; true if it did (waiters wake).
fn replace_if_new(channel: &str, current: &mut Latest, latest: Latest) -> bool {
    if current.as_ref().map(|r| &r.etag) == latest.as_ref().map(|r| &r.etag) {
        return false;
    }
    // The first read of a newly watched channel is not news.
    if current.is_some()
        && let Some(release) = &latest
    {
        info!(channel, etag = %release.etag, "manifest changed");
    }
    *current = latest;
    true
}

/// The file's identity, or `None` when it cannot be stat'ed (absent).
fn stamp_of(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
        ino: meta.ino(),
    })
}

/// Waits until the watched manifest changes or who is admitted to a rollout
/// changes (`admissions`): `Some(latest)` then (the watcher's latest manifest,
/// `None` if it has not read one), `None` when `until` passes or the console
/// stops. The caller decides again what its agent gets.
pub async fn wait_for_news(
    receiver: &mut watch::Receiver<Latest>,
    admissions: &mut watch::Receiver<u64>,
    until: Instant,
    stop: &CancellationToken,
) -> Option<Latest> {
    tokio::select! {
        changed = receiver.changed() => {
            // The sender goes away only when the console stops.
            changed.ok()?;
            Some(receiver.borrow_and_update().clone())
        }
        changed = admissions.changed() => {
            changed.ok()?;
            admissions.borrow_and_update();
            Some(receiver.borrow().clone())
        }
        () = tokio::time::sleep_until(until) => None,
        () = stop.cancelled() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rewrite_wakes_the_waiter_and_an_identical_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("release.json");
        std::fs::write(&path, b"one").unwrap();
        let watcher = Watcher::default();
        let mut rx = watcher.subscribe("stable", path.clone());
        watcher.poll();
        assert_eq!(
            rx.borrow_and_update().as_ref().unwrap().etag,
            etag_of(b"one")
        );
        std::fs::write(dir.path().join("new"), b"one").unwrap();
        std::fs::rename(dir.path().join("new"), &path).unwrap();
        watcher.poll();
        assert!(!rx.has_changed().unwrap(), "same bytes: no wake-up");
        std::fs::write(&path, b"two!").unwrap();
        watcher.poll();
        assert_eq!(
            rx.borrow_and_update().as_ref().unwrap().etag,
            etag_of(b"two!")
        );
    }

    #[tokio::test]
    async fn channels_nobody_waits_on_are_dropped() {
        let watcher = Watcher::default();
        drop(watcher.subscribe("stable", PathBuf::from("/nonexistent/release.json")));
        watcher.poll();
        assert!(watcher.channels.lock().unwrap().is_empty());
    }
}
