//! The `NOTIFY_SOCKET` of one payload generation: an abstract-namespace Unix
//! datagram socket with `SO_PASSCRED`, so every datagram carries its sender's
//! pid, and the parser for the `sd_notify` messages the supervisor acts on.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SocketAddrUnix, SocketFlags, SocketType,
};
use rustix::process::Pid;
use tokio::io::Interest;
use tokio::net::UnixDatagram;

use super::SupervisorError;

/// The largest datagram read (systemd's `NOTIFY_BUFFER_MAX`, one pipe buffer);
/// a longer one is dropped whole.
const MAX_DATAGRAM: usize = 4096;

/// File descriptors a datagram may carry (`FDSTORE=1`, `BARRIER=1`): room is
/// made for this many so they can be closed at once; the kernel drops more.
const MAX_PASSED_FDS: usize = 16;

/// Counts notify sockets made by this agent, so every generation has its own name.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// One generation's notify socket.
#[derive(Debug)]
pub(super) struct NotifySocket {
    /// The value of `NOTIFY_SOCKET`: `@` and the abstract name.
    env_value: String,
    /// The bound, non-blocking datagram socket, registered with the runtime.
    socket: UnixDatagram,
}

/// Continues the generation count of the previous agent image, so names stay
/// unique in this process across an in-place exec.
pub fn set_next_generation(next: u64) {
    GENERATION.fetch_max(next, Ordering::Relaxed);
}

/// The next generation number (handed over).
pub fn next_generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// One datagram and who sent it.
#[derive(Debug)]
pub(super) struct Datagram {
    /// The message text.
    pub(super) text: Vec<u8>,
    /// The sender's pid from `SCM_CREDENTIALS` (None when not visible to us).
    pub(super) sender: Option<Pid>,
}

/// An `sd_notify` message the supervisor acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Message {
    /// `READY=1`.
    Ready,
    /// `STATUS=<text>`.
    Status(String),
    /// `STOPPING=1`.
    Stopping,
    /// `WATCHDOG=1`: the payload is alive.
    Watchdog,
    /// `WATCHDOG=trigger`: the payload asks to be treated as hung.
    WatchdogTrigger,
}

impl NotifySocket {
    /// Creates and binds a socket named
    /// `bankswap-notify-<agent pid>-<generation>-<random>` in the abstract namespace.
    pub(super) fn bind() -> Result<NotifySocket, SupervisorError> {
        let name = format!(
            "bankswap-notify-{}-{}-{:016x}",
            std::process::id(),
            GENERATION.fetch_add(1, Ordering::Relaxed),
            rand::random::<u64>()
        );
        let env_value = format!("@{name}");
        let error = |source: io::Error| SupervisorError::NotifySocket {
            name: env_value.clone(),
            source,
        };
        let addr =
            SocketAddrUnix::new_abstract_name(name.as_bytes()).map_err(|e| error(e.into()))?;
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| error(e.into()))?;
        rustix::net::sockopt::set_socket_passcred(&fd, true).map_err(|e| error(e.into()))?;
        rustix::net::bind(&fd, &addr).map_err(|e| error(e.into()))?;
        let socket =
            UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(fd)).map_err(error)?;
        Ok(NotifySocket { env_value, socket })
    }

    /// Takes over a notify socket handed over by the previous agent image
    /// (its name checked against `env_value` by the hand-over reader).
    pub(super) fn from_inherited(
        fd: OwnedFd,
        env_value: String,
    ) -> Result<NotifySocket, SupervisorError> {
        let error = |source: io::Error| SupervisorError::NotifySocket {
            name: env_value.clone(),
            source,
        };
        let std_socket = std::os::unix::net::UnixDatagram::from(fd);
        std_socket.set_nonblocking(true).map_err(error)?;
        let socket = UnixDatagram::from_std(std_socket).map_err(error)?;
        Ok(NotifySocket { env_value, socket })
    }

    /// The socket's fd number (for the hand-over).
    pub(super) fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// The value to give the payload as `NOTIFY_SOCKET`.
    pub(super) fn env_value(&self) -> &str {
        &self.env_value
    }

    /// Waits for the next datagram. Cancel-safe: a datagram is taken from the
    /// socket only in a step that does not await.
    pub(super) async fn recv(&self) -> io::Result<Datagram> {
        loop {
            self.socket.readable().await?;
            match self
                .socket
                .try_io(Interest::READABLE, || receive_one(&self.socket))
            {
                Ok(Some(datagram)) => return Ok(datagram),
                // Too long: dropped whole, as systemd does.
                Ok(None) => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
        }
    }
}

/// Reads one datagram; `None` when it was longer than [`MAX_DATAGRAM`].
fn receive_one(socket: impl AsFd) -> io::Result<Option<Datagram>> {
    let mut text = vec![0; MAX_DATAGRAM];
    let mut space =
        [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1), ScmRights(MAX_PASSED_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut text)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    )?;
    let mut sender = None;
    for message in control.drain() {
        // Passed fds are dropped here, which closes them (and releases a BARRIER=1).
        if let RecvAncillaryMessage::ScmCredentials(credentials) = message {
            sender = Some(credentials.pid);
        }
    }
    if received.flags.contains(ReturnFlags::TRUNC) {
        tracing::debug!(
            bytes = received.bytes,
            "dropping an oversized notify datagram"
        );
        return Ok(None);
    }
    text.truncate(received.bytes);
    Ok(Some(Datagram { text, sender }))
}

/// Parses newline-separated `KEY=VALUE` lines; unknown keys (`MAINPID`,
/// `RELOADING`, `EXTEND_TIMEOUT_USEC`, …) and malformed lines are ignored.
pub(super) fn parse(text: &[u8]) -> Vec<Message> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let eq = line.iter().position(|&b| b == b'=')?;
            let (key, value) = (&line[..eq], &line[eq + 1..]);
            match (key, value) {
                (b"READY", b"1") => Some(Message::Ready),
                (b"STOPPING", b"1") => Some(Message::Stopping),
                (b"WATCHDOG", b"1") => Some(Message::Watchdog),
                (b"WATCHDOG", b"trigger") => Some(Message::WatchdogTrigger),
                (b"STATUS", _) => {
                    Some(Message::Status(String::from_utf8_lossy(value).into_owned()))
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    use std::time::Duration;

    use super::*;

    fn send(to: &NotifySocket, text: &[u8]) {
        let name = to.env_value().strip_prefix('@').unwrap();
        let addr = SocketAddr::from_abstract_name(name).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(text, &addr)
            .unwrap();
    }

    #[test]
    fn parses_the_messages_acted_on_and_ignores_the_rest() {
        let text = b"READY=1\nSTATUS=warming up: 3/4\nMAINPID=42\nSTOPPING=1\nWATCHDOG=1\n\
                     WATCHDOG=trigger\nREADY=0\nFOO=bar\nnonsense\n\nSTATUS=";
        assert_eq!(
            parse(text),
            vec![
                Message::Ready,
                Message::Status("warming up: 3/4".to_owned()),
                Message::Stopping,
                Message::Watchdog,
                Message::WatchdogTrigger,
                Message::Status(String::new()),
            ]
        );
        assert_eq!(parse(b""), vec![]);
        assert_eq!(
            parse(b"STATUS=caf\xc3\xa9 \xff"),
            vec![Message::Status("café \u{fffd}".into())]
        );
    }

    #[tokio::test]
    async fn names_differ_per_generation_and_datagrams_carry_the_sender_pid() {
        let first = NotifySocket::bind().unwrap();
        let second = NotifySocket::bind().unwrap();
        assert!(first.env_value().starts_with("@bankswap-notify-"));
        assert_ne!(first.env_value(), second.env_value());

        send(&first, &[b'x'; MAX_DATAGRAM + 1]);
        send(&first, b"READY=1");
        let datagram = tokio::time::timeout(Duration::from_secs(5), first.recv()).await;
        let datagram = datagram.unwrap().unwrap();
        assert_eq!(datagram.text, b"READY=1");
        let own = Pid::from_raw(i32::try_from(std::process::id()).unwrap());
        assert_eq!(datagram.sender, own);
    }
}
