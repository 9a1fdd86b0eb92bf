//! The two systemd protocols a bankswap payload speaks, in a form to copy into
//! any service: take the listening socket from `LISTEN_FDS` (socket
//! activation), and send `READY=1`/`STOPPING=1` to `NOTIFY_SOCKET`.

use std::env;
use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};

/// The first handed-over fd (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// A listening socket handed over by the supervisor.
#[derive(Debug)]
pub enum Inherited {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix stream listener.
    Unix(UnixListener),
}

/// `sd_listen_fds(1)` for the first socket: fd 3, when `LISTEN_FDS` ≥ 1 and
/// `LISTEN_PID` is this process (not a parent that forgot to unset them).
/// The variables are removed, so child processes do not take them for theirs.
///
/// # Safety
///
/// Call before any other thread exists (it changes the environment), and only
/// once: it takes ownership of fd 3.
pub unsafe fn take_listener() -> io::Result<Option<Inherited>> {
    let count = env::var("LISTEN_FDS").ok();
    let for_us = env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        // SAFETY: the caller guarantees no other thread reads the environment.
        unsafe { env::remove_var(var) };
    }
    let Some(count) = count else { return Ok(None) };
    let count: u32 = count
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "LISTEN_FDS is not a number"))?;
    if !for_us || count == 0 {
        return Ok(None);
    }
    if count > 1 {
        eprintln!("hello-payload: {count} sockets handed over; serving on the first");
    }
    // SAFETY: by the protocol, fd 3 is an open listening socket handed to this
    // process, and nothing else in it owns fd 3 (the caller calls this once).
    let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
    // getsockname on a Unix socket gives no IP address: that tells the kinds apart.
    let tcp = TcpListener::from(fd);
    if tcp.local_addr().is_ok() {
        Ok(Some(Inherited::Tcp(tcp)))
    } else {
        Ok(Some(Inherited::Unix(UnixListener::from(OwnedFd::from(
            tcp,
        )))))
    }
}

/// `sd_notify`: sends `state` (e.g. `READY=1`) to `NOTIFY_SOCKET`, a path or
/// `@name` in the abstract namespace. Without `NOTIFY_SOCKET` it does nothing.
pub fn notify(state: &str) -> io::Result<()> {
    let Some(target) = env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let target = target.as_bytes();
    let address = match target.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(target))?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &address)?;
    Ok(())
}
