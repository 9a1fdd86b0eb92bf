//! Making one listening socket: TCP on `host:port`, or a Unix stream socket
//! on a path (a stale socket file is replaced, a live one or a non-socket is
//! refused, the configured mode is set before `listen`, and our socket file is
//! removed when the socket goes).

use std::fmt;
use std::fs;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::SupervisorError;

/// `listen(2)` backlog: connections that may queue while no payload accepts,
/// e.g. during a restart. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 1024;

/// The local end of a listener.
#[derive(Debug)]
pub(super) enum Bound {
    /// A TCP socket and its actual address (the port is known even for `:0`).
    Tcp(SocketAddr),
    /// A Unix stream socket; device and inode tell our socket file from a later one.
    Unix {
        /// The socket file.
        path: PathBuf,
        /// `st_dev` of the file we created.
        dev: u64,
        /// `st_ino` of the file we created.
        ino: u64,
    },
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Tcp(addr) => write!(f, "{addr}"),
            Bound::Unix { path, .. } => write!(f, "{}", path.display()),
        }
    }
}

impl Drop for Bound {
    /// Removes our Unix socket file, unless someone has replaced it since.
    fn drop(&mut self) {
        if let Bound::Unix { path, dev, ino } = self {
            let ours =
                fs::symlink_metadata(&*path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino);
            if ours && let Err(err) = fs::remove_file(&*path) {
                tracing::debug!(path = %path.display(), %err, "cannot remove socket file");
            }
        }
    }
}

/// Binds and listens on a TCP address (the first the name resolves to).
pub(super) fn bind_tcp(address: &str) -> Result<(OwnedFd, Bound), SupervisorError> {
    let resolve_error = |source| SupervisorError::Resolve {
        address: address.to_owned(),
        source,
    };
    let addr = address
        .to_socket_addrs()
        .map_err(resolve_error)?
        .next()
        .ok_or(SupervisorError::InvalidAddress {
            address: address.to_owned(),
            reason: "resolves to nothing",
        })?;
    let bind_error = |source: io::Error| SupervisorError::Bind {
        address: address.to_owned(),
        source,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = stream_socket(family, SocketFlags::empty()).map_err(|e| bind_error(e.into()))?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true).map_err(|e| bind_error(e.into()))?;
    rustix::net::bind(&fd, &addr).map_err(|e| bind_error(e.into()))?;
    rustix::net::listen(&fd, LISTEN_BACKLOG).map_err(|e| bind_error(e.into()))?;
    let listener = std::net::TcpListener::from(fd);
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((OwnedFd::from(listener), Bound::Tcp(local)))
}

/// Binds and listens on a Unix stream socket at `path`.
pub(super) fn bind_unix(
    path: &Path,
    mode: Option<u32>,
) -> Result<(OwnedFd, Bound), SupervisorError> {
    let bind_error = |source: io::Error| SupervisorError::Bind {
        address: path.display().to_string(),
        source,
    };
    let addr = SocketAddrUnix::new(path).map_err(|_| SupervisorError::InvalidAddress {
        address: path.display().to_string(),
        reason: "too long for a socket path",
    })?;
    remove_stale_socket(path, &addr)?;
    let fd = stream_socket(AddressFamily::UNIX, SocketFlags::empty())
        .map_err(|e| bind_error(e.into()))?;
    rustix::net::bind(&fd, &addr).map_err(|e| bind_error(e.into()))?;
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
            SupervisorError::Chmod {
                path: path.to_owned(),
                mode,
                source,
            }
        })?;
    }
    rustix::net::listen(&fd, LISTEN_BACKLOG).map_err(|e| bind_error(e.into()))?;
    let meta = fs::symlink_metadata(path).map_err(bind_error)?;
    Ok((
        fd,
        Bound::Unix {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        },
    ))
}

/// Removes a socket file nobody listens on; refuses a live socket or a non-socket.
fn remove_stale_socket(path: &Path, addr: &SocketAddrUnix) -> Result<(), SupervisorError> {
    let bind_error = |source: io::Error| SupervisorError::Bind {
        address: path.display().to_string(),
        source,
    };
    match fs::symlink_metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(bind_error(err)),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(SupervisorError::NotASocket {
                path: path.to_owned(),
            });
        }
        Ok(_) => {}
    }
    // A non-blocking connect: a live listener with a full backlog answers
    // EAGAIN at once instead of hanging the agent's start.
    let probe = stream_socket(AddressFamily::UNIX, SocketFlags::NONBLOCK)
        .map_err(|e| bind_error(e.into()))?;
    match rustix::net::connect(&probe, addr) {
        Ok(()) | Err(Errno::AGAIN | Errno::INPROGRESS) => Err(SupervisorError::SocketInUse {
            path: path.to_owned(),
        }),
        Err(Errno::CONNREFUSED) => {
            tracing::debug!(path = %path.display(), "removing stale socket file");
            fs::remove_file(path).map_err(bind_error)
        }
        Err(errno) => Err(bind_error(errno.into())),
    }
}

/// A new stream socket: close-on-exec, plus `extra` flags.
fn stream_socket(family: AddressFamily, extra: SocketFlags) -> rustix::io::Result<OwnedFd> {
    rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | extra,
        None,
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::{UnixListener, UnixStream};

    use super::*;

    #[test]
    fn ipv6_listener_binds_when_the_host_has_ipv6() {
        match bind_tcp("[::1]:0") {
            Ok((_, bound)) => assert!(matches!(bound, Bound::Tcp(addr) if addr.is_ipv6())),
            // A host without IPv6 loopback cannot show more than the error's address.
            Err(SupervisorError::Bind { address, source }) => {
                assert_eq!(address, "[::1]:0");
                assert_eq!(source.kind(), io::ErrorKind::AddrNotAvailable);
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }

    #[test]
    fn taken_address_is_an_error_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        let err = bind_tcp(&address).unwrap_err();
        assert!(err.to_string().contains(&address), "{err}");
        assert!(matches!(
            err,
            SupervisorError::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse
        ));
        let err = bind_tcp("no-port").unwrap_err();
        assert!(matches!(err, SupervisorError::Resolve { address, .. } if address == "no-port"));
    }

    #[test]
    fn unix_socket_gets_its_mode_replaces_a_stale_file_and_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        // A socket file left behind by a dead agent.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());

        let socket = bind_unix(&path, Some(0o660)).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(socket.1.to_string(), path.display().to_string());
        UnixStream::connect(&path).unwrap();

        drop(socket);
        assert!(!path.exists());
    }

    #[test]
    fn unix_path_in_use_or_not_a_socket_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live.sock");
        let _other = UnixListener::bind(&live).unwrap();
        let err = bind_unix(&live, None).unwrap_err();
        assert!(matches!(err, SupervisorError::SocketInUse { path } if path == live));
        UnixStream::connect(&live).unwrap();

        let file = dir.path().join("data");
        fs::write(&file, "keep me").unwrap();
        let err = bind_unix(&file, None).unwrap_err();
        assert!(matches!(err, SupervisorError::NotASocket { path } if path == file));
        assert_eq!(fs::read_to_string(&file).unwrap(), "keep me");
    }
}
