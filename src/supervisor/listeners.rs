//! The `[[listen]]` sockets: bound when the agent starts and kept open for its
//! whole life, so connections wait in the kernel's backlog while one payload
//! generation replaces another, and no payload needs the privilege to bind.
//!
//! A reload may change the set ([`Listeners::reconfigure`]): a socket whose
//! configured address stays keeps its fd (and so its port and its queued
//! connections), new ones are bound at once (a taken port refuses the whole
//! reload), and the ones dropped are *retired*: kept open, their socket files
//! kept, until the generations started before the reload have stopped.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::SupervisorError;
use super::socket::{self, Bound};
use crate::config::ListenConfig;

mod inherit;

#[cfg(test)]
pub use self::inherit::BoundState;
pub use self::inherit::InheritedListener;

/// At most this many sockets are handed over (fds 3..67). systemd has no such
/// bound, but no service needs more, and it keeps the fd shuffle in the child
/// (which must not allocate) on the stack.
pub const MAX_LISTENERS: usize = 64;

/// The longest name `LISTEN_FDNAMES` may carry (systemd's `FDNAME_MAX`).
const MAX_NAME_LEN: usize = 255;

/// The `[[listen]]` sockets, bound once at agent start and kept open for the agent's life.
///
/// Every generation shares the sockets' open file descriptions, so a mode one
/// sets (`O_NONBLOCK`) is seen by the next: payloads set the mode they need.
/// The agent never accepts on them, so it does not care.
#[derive(Debug)]
pub struct Listeners {
    /// The sockets, in config order: the next payload generation gets them as fds 3, 4, …
    sockets: Vec<Listener>,
    /// Sockets a reload dropped: only older generations use them; closed by
    /// [`Listeners::release_retired`].
    retired: Vec<Listener>,
}

/// One bound, listening socket.
#[derive(Debug)]
struct Listener {
    /// The name given in `LISTEN_FDNAMES`.
    name: String,
    /// The address as configured (`host:port` or a path): a reload keeps the
    /// socket of an address it still lists.
    address: String,
    /// The socket: listening, blocking, close-on-exec in the agent.
    fd: OwnedFd,
    /// What it is bound to.
    bound: Bound,
}

impl Listeners {
    /// Binds every configured socket: `host:port` (IPv4 or IPv6) for TCP, or a
    /// path starting with `/` or `./` for a Unix stream socket (a stale socket
    /// file is removed first; `mode` is applied before `listen`).
    pub fn bind(config: &[ListenConfig]) -> Result<Listeners, SupervisorError> {
        check_count(config.len())?;
        let mut sockets = Vec::with_capacity(config.len());
        for listen in config {
            check_name(&listen.name)?;
            sockets.push(bind_one(listen)?);
        }
        Ok(Listeners {
            sockets,
            retired: Vec::new(),
        })
    }

    /// Switches to the sockets of `config` for the generations started from
    /// now on: an address listed before keeps its socket (renamed if its name
    /// changed; a Unix socket takes the new `mode`), a new one is bound, and
    /// the ones no longer listed are retired. When any socket cannot be bound
    /// (a port in use), nothing changes and the error names it.
    pub fn reconfigure(
        &mut self,
        config: &[ListenConfig],
    ) -> Result<ListenChange, SupervisorError> {
        check_count(config.len())?;
        // First everything that can fail, touching nothing of the running set.
        let mut taken = vec![false; self.sockets.len()];
        let mut plan = Vec::with_capacity(config.len());
        for listen in config {
            check_name(&listen.name)?;
            let kept = self
                .sockets
                .iter()
                .enumerate()
                .position(|(i, s)| !taken[i] && s.address == listen.address);
            match kept {
                Some(i) => {
                    taken[i] = true;
                    plan.push(Slot::Kept(i));
                }
                None => plan.push(Slot::New(Box::new(bind_one(listen)?))),
            }
        }
        for (listen, slot) in config.iter().zip(&plan) {
            if let (Slot::Kept(i), Some(mode)) = (slot, listen.mode)
                && let Bound::Unix { path, .. } = &self.sockets[*i].bound
            {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(
                    |source| SupervisorError::Chmod {
                        path: path.clone(),
                        mode,
                        source,
                    },
                )?;
            }
        }
        let mut change = ListenChange::default();
        let mut old: Vec<Option<Listener>> = std::mem::take(&mut self.sockets)
            .into_iter()
            .map(Some)
            .collect();
        for (listen, slot) in config.iter().zip(plan) {
            let listener = match slot {
                Slot::Kept(i) => {
                    let Some(mut listener) = old[i].take() else {
                        continue; // each index is taken once (`taken` above)
                    };
                    listener.name.clone_from(&listen.name);
                    change.kept.push(listen.name.clone());
                    listener
                }
                Slot::New(listener) => {
                    change.added.push(listen.name.clone());
                    *listener
                }
            };
            self.sockets.push(listener);
        }
        for listener in old.into_iter().flatten() {
            tracing::info!(name = %listener.name, bound = %listener.bound, "retired: open until the older generations stop");
            change.retired.push(listener.name.clone());
            self.retired.push(listener);
        }
        Ok(change)
    }

    /// True when sockets retired by a reload are still open.
    pub fn has_retired(&self) -> bool {
        !self.retired.is_empty()
    }

    /// Closes the retired sockets (and removes their socket files): call once
    /// no generation started before the reload runs.
    pub fn release_retired(&mut self) {
        for listener in self.retired.drain(..) {
            tracing::info!(name = %listener.name, bound = %listener.bound, "closed the retired socket");
        }
    }

    /// No sockets: the payload binds its own.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "contract API; the agent binds even an empty list")
    )]
    pub fn none() -> Listeners {
        Listeners {
            sockets: Vec::new(),
            retired: Vec::new(),
        }
    }

    /// True when no socket is handed over.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// How many sockets are handed over (`LISTEN_FDS`).
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// The actual address of the first TCP listener called `name` (its port,
    /// when the config said `:0`).
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "for tests and the agent's status")
    )]
    pub fn tcp_local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.sockets
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| match s.bound {
                Bound::Tcp(addr) => Some(addr),
                Bound::Unix { .. } => None,
            })
    }

    /// The sockets in fd order (3, 4, …).
    pub(super) fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.sockets.iter().map(|s| s.fd.as_fd())
    }

    /// The sockets' fds, borrowed (for the agent's in-place exec, which
    /// hands them to the next image).
    pub fn borrowed_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.fds().collect()
    }

    /// The value of `LISTEN_FDNAMES`.
    pub(super) fn names(&self) -> String {
        let names: Vec<&str> = self.sockets.iter().map(|s| s.name.as_str()).collect();
        names.join(":")
    }
}

/// What [`Listeners::reconfigure`] did, by `[[listen]]` name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListenChange {
    /// Kept their socket (same fd, same port).
    pub kept: Vec<String>,
    /// Bound now.
    pub added: Vec<String>,
    /// No longer handed to new generations.
    pub retired: Vec<String>,
}

/// Where one socket of a reconfigured set comes from.
enum Slot {
    /// The running set's socket at this index.
    Kept(usize),
    /// Bound for this reload.
    New(Box<Listener>),
}

/// Binds one configured socket.
fn bind_one(listen: &ListenConfig) -> Result<Listener, SupervisorError> {
    let (fd, bound) = if is_socket_path(&listen.address) {
        socket::bind_unix(Path::new(&listen.address), listen.mode)?
    } else {
        socket::bind_tcp(&listen.address)?
    };
    tracing::info!(name = %listen.name, address = %listen.address, %bound, "listening");
    Ok(Listener {
        name: listen.name.clone(),
        address: listen.address.clone(),
        fd,
        bound,
    })
}

/// Socket paths start with `/` or `./`; everything else is `host:port`.
fn is_socket_path(address: &str) -> bool {
    address.starts_with('/') || address.starts_with("./")
}

/// At most [`MAX_LISTENERS`] sockets, configured or handed over.
fn check_count(count: usize) -> Result<(), SupervisorError> {
    if count > MAX_LISTENERS {
        return Err(SupervisorError::TooManyListeners {
            count,
            max: MAX_LISTENERS,
        });
    }
    Ok(())
}

/// systemd's rule for fd names: 1–255 printable ASCII characters, no `:`.
fn check_name(name: &str) -> Result<(), SupervisorError> {
    let reason = if name.is_empty() || name.len() > MAX_NAME_LEN {
        "must be 1 to 255 characters"
    } else if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        "must be printable ASCII without ':' or spaces"
    } else {
        return Ok(());
    };
    Err(SupervisorError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    fn listen(name: &str, address: &str, mode: Option<u32>) -> ListenConfig {
        ListenConfig {
            name: name.to_owned(),
            address: address.to_owned(),
            mode,
        }
    }

    #[test]
    fn listeners_are_blocking_close_on_exec_and_queue_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock").display().to_string();
        let config = [
            listen("http", "127.0.0.1:0", None),
            listen("api", &path, None),
        ];
        let listeners = Listeners::bind(&config).unwrap();
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners.names(), "http:api");
        assert_eq!(listeners.tcp_local_addr("api"), None);
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        let addr = listeners.tcp_local_addr("http").unwrap();
        assert_ne!(addr.port(), 0);
        // Nobody accepts: the connection waits in the backlog.
        std::net::TcpStream::connect(addr).unwrap();

        let fd = listeners.fds().next().unwrap().as_raw_fd();
        // SAFETY: fcntl on an fd we own, with flag-reading commands only.
        let (fd_flags, status_flags) = unsafe {
            (
                libc::fcntl(fd, libc::F_GETFD),
                libc::fcntl(fd, libc::F_GETFL),
            )
        };
        assert_ne!(fd_flags & libc::FD_CLOEXEC, 0);
        assert_eq!(status_flags & libc::O_NONBLOCK, 0);
        assert!(rustix::net::sockopt::socket_reuseaddr(listeners.fds().next().unwrap()).unwrap());
    }

    #[test]
    fn bad_addresses_and_names_are_refused() {
        let err = Listeners::bind(&[listen("http", "no-port", None)]).unwrap_err();
        assert!(matches!(err, SupervisorError::Resolve { address, .. } if address == "no-port"));
        for name in ["", "a:b", "has space"] {
            let err = Listeners::bind(&[listen(name, "127.0.0.1:0", None)]).unwrap_err();
            assert!(
                matches!(err, SupervisorError::InvalidName { .. }),
                "{name:?}: {err}"
            );
        }
        let many = vec![listen("x", "127.0.0.1:0", None); MAX_LISTENERS + 1];
        let err = Listeners::bind(&many).unwrap_err();
        assert!(matches!(
            err,
            SupervisorError::TooManyListeners { count: 65, max: 64 }
        ));
    }

    #[test]
    fn reconfigure_keeps_listed_addresses_binds_new_ones_and_retires_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sock");
        let old_unix = path.display().to_string();
        let mut listeners = Listeners::bind(&[
            listen("http", "127.0.0.1:0", None),
            listen("old", &old_unix, None),
        ])
        .unwrap();
        let http_fd = listeners.fds().next().unwrap().as_raw_fd();
        let port = listeners.tcp_local_addr("http").unwrap();

        // A port in use refuses the whole change: the set stays as it was.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap().to_string();
        let err = listeners
            .reconfigure(&[
                listen("web", "127.0.0.1:0", None),
                listen("busy", &busy, None),
            ])
            .unwrap_err();
        assert!(matches!(err, SupervisorError::Bind { ref address, .. } if *address == busy));
        assert_eq!(listeners.names(), "http:old");
        assert!(!listeners.has_retired());

        let change = listeners
            .reconfigure(&[
                listen("web", "127.0.0.1:0", None),
                listen("extra", "127.0.0.1:0", None),
            ])
            .unwrap();
        assert_eq!(change.kept, ["web"]);
        assert_eq!(change.added, ["extra"]);
        assert_eq!(change.retired, ["old"]);
        assert_eq!(listeners.names(), "web:extra");
        // The kept socket is the same fd on the same port.
        assert_eq!(listeners.fds().next().unwrap().as_raw_fd(), http_fd);
        assert_eq!(listeners.tcp_local_addr("web"), Some(port));
        assert_ne!(listeners.tcp_local_addr("extra"), Some(port));
        // Retired: still listening (older generations use it) until released.
        assert!(listeners.has_retired());
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        listeners.release_retired();
        assert!(!listeners.has_retired());
        assert!(!path.exists(), "the retired socket file is removed");
    }
}
