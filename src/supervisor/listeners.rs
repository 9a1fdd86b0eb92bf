//! The `[[listen]]` sockets: bound once when the agent starts and kept open for
//! its whole life, so connections wait in the kernel's backlog while one
//! payload generation replaces another, and no payload needs the privilege to
//! bind.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SupervisorError;
use super::socket::{self, Bound};
use crate::config::ListenConfig;

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
    /// The sockets, in config order: the payload gets them as fds 3, 4, …
    sockets: Vec<Listener>,
}

/// One bound, listening socket.
#[derive(Debug)]
struct Listener {
    /// The name given in `LISTEN_FDNAMES`.
    name: String,
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
        if config.len() > MAX_LISTENERS {
            return Err(SupervisorError::TooManyListeners {
                count: config.len(),
                max: MAX_LISTENERS,
            });
        }
        let mut sockets = Vec::with_capacity(config.len());
        for listen in config {
            check_name(&listen.name)?;
            let (fd, bound) = if is_socket_path(&listen.address) {
                socket::bind_unix(Path::new(&listen.address), listen.mode)?
            } else {
                socket::bind_tcp(&listen.address)?
            };
            tracing::info!(name = %listen.name, address = %listen.address, %bound, "listening");
            sockets.push(Listener {
                name: listen.name.clone(),
                fd,
                bound,
            });
        }
        Ok(Listeners { sockets })
    }

    /// No sockets: the payload binds its own.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "contract API; the agent binds even an empty list")
    )]
    pub fn none() -> Listeners {
        Listeners {
            sockets: Vec::new(),
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

/// One listener as handed from one agent image to the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InheritedListener {
    /// Its `LISTEN_FDNAMES` name.
    pub name: String,
    /// Its fd number.
    pub fd: RawFd,
    /// What it is bound to.
    pub bound: BoundState,
}

/// A listener's local end, as handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum BoundState {
    /// TCP, with its actual address.
    Tcp {
        /// The bound address.
        addr: SocketAddr,
    },
    /// A Unix stream socket file we created.
    Unix {
        /// The socket file.
        path: PathBuf,
        /// Its `st_dev`.
        dev: u64,
        /// Its `st_ino`.
        ino: u64,
    },
}

impl Listeners {
    /// The sockets as the next agent image needs them.
    pub fn handover_state(&self) -> Vec<InheritedListener> {
        self.sockets
            .iter()
            .map(|s| InheritedListener {
                name: s.name.clone(),
                fd: s.fd.as_raw_fd(),
                bound: match &s.bound {
                    Bound::Tcp(addr) => BoundState::Tcp { addr: *addr },
                    Bound::Unix { path, dev, ino } => BoundState::Unix {
                        path: path.clone(),
                        dev: *dev,
                        ino: *ino,
                    },
                },
            })
            .collect()
    }

    /// Takes over the sockets handed over by the previous agent image: each
    /// must be a listening socket bound where the hand-over says.
    pub fn from_inherited(
        inherited: Vec<(InheritedListener, OwnedFd)>,
    ) -> Result<Listeners, SupervisorError> {
        if inherited.len() > MAX_LISTENERS {
            return Err(SupervisorError::TooManyListeners {
                count: inherited.len(),
                max: MAX_LISTENERS,
            });
        }
        let mut sockets = Vec::with_capacity(inherited.len());
        for (listener, fd) in inherited {
            check_name(&listener.name)?;
            let address = match &listener.bound {
                BoundState::Tcp { addr } => addr.to_string(),
                BoundState::Unix { path, .. } => path.display().to_string(),
            };
            let invalid = |reason: &'static str| SupervisorError::InvalidAddress {
                address: address.clone(),
                reason,
            };
            if !rustix::net::sockopt::socket_acceptconn(&fd).unwrap_or(false) {
                return Err(invalid("the inherited fd is not a listening socket"));
            }
            let local = rustix::net::getsockname(&fd).map_err(|_| invalid("no local address"))?;
            let bound = match listener.bound {
                BoundState::Tcp { addr } => {
                    let actual = SocketAddr::try_from(local).ok();
                    if actual != Some(addr) {
                        return Err(invalid("the inherited socket is bound elsewhere"));
                    }
                    Bound::Tcp(addr)
                }
                BoundState::Unix { path, dev, ino } => {
                    let actual = rustix::net::SocketAddrUnix::try_from(local).ok();
                    let same = actual
                        .as_ref()
                        .and_then(|a| a.path().map(|p| p.to_bytes().to_vec()))
                        .is_some_and(|p| p == path.as_os_str().as_encoded_bytes());
                    if !same {
                        return Err(invalid("the inherited socket is bound elsewhere"));
                    }
                    Bound::Unix { path, dev, ino }
                }
            };
            tracing::info!(name = %listener.name, %bound, "listening (inherited)");
            sockets.push(Listener {
                name: listener.name,
                fd,
                bound,
            });
        }
        Ok(Listeners { sockets })
    }
}

/// Socket paths start with `/` or `./`; everything else is `host:port`.
fn is_socket_path(address: &str) -> bool {
    address.starts_with('/') || address.starts_with("./")
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
}
