//! The hand-over of the `[[listen]]` sockets from one agent image to the next
//! (an in-place exec of a self-update or a re-exec): what the old image writes
//! ([`InheritedListener`], [`BoundState`]) and how the new one checks and takes
//! each inherited fd back ([`Listeners::from_inherited`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Listener, Listeners, check_count, check_name, is_socket_path};
use crate::config::ListenConfig;
use crate::supervisor::SupervisorError;
use crate::supervisor::socket::Bound;

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
    /// must be a listening socket bound where the hand-over says. `config` is
    /// the `[[listen]]` of the config file the previous image ran: a socket
    /// whose entry (by name) still describes where it is bound takes that
    /// entry's address, so that a later reload keeps it (a TCP port 0 matches
    /// any port). The hand-over format itself stays as it was, so that an
    /// older build can still take it.
    pub fn from_inherited(
        inherited: Vec<(InheritedListener, OwnedFd)>,
        config: &[ListenConfig],
    ) -> Result<Listeners, SupervisorError> {
        check_count(inherited.len())?;
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
            let address = config
                .iter()
                .find(|l| l.name == listener.name && describes(&l.address, &bound))
                .map_or_else(|| bound.to_string(), |l| l.address.clone());
            sockets.push(Listener {
                name: listener.name,
                address,
                fd,
                bound,
            });
        }
        Ok(Listeners {
            sockets,
            retired: Vec::new(),
        })
    }
}

/// True when the configured `address` names where `bound` is (a TCP port 0
/// matches any port).
fn describes(address: &str, bound: &Bound) -> bool {
    match bound {
        Bound::Unix { path, .. } => is_socket_path(address) && Path::new(address) == path,
        Bound::Tcp(addr) => {
            !is_socket_path(address)
                && address.to_socket_addrs().is_ok_and(|mut all| {
                    all.any(|a| a.ip() == addr.ip() && (a.port() == 0 || a.port() == addr.port()))
                })
        }
    }
}
