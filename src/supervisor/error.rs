//! The supervisor's error type: each variant names the address, path, user or
//! command it is about, so the one-line report says what to fix.

use std::io;
use std::path::PathBuf;

/// Why a listener could not be bound or a payload could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A `[[listen]]` address is neither `host:port` nor a socket path.
    #[error("listen address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as configured.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `[[listen]]` name cannot be passed in `LISTEN_FDNAMES`.
    #[error("listen name {name:?}: {reason}")]
    InvalidName {
        /// The name as configured.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More `[[listen]]` sockets than the supervisor hands over.
    #[error("{count} [[listen]] sockets configured; at most {max} are supported")]
    TooManyListeners {
        /// How many were configured.
        count: usize,
        /// The bound ([`super::listeners::MAX_LISTENERS`]).
        max: usize,
    },
    /// A `host:port` address did not resolve.
    #[error("cannot resolve listen address {address}: {source}")]
    Resolve {
        /// The address as configured.
        address: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The socket could not be created or bound: the address is taken
    /// (`AddrInUse`), not permitted (`PermissionDenied`), or not local.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address as configured.
        address: String,
        /// The system's error; its kind tells taken from not permitted.
        source: io::Error,
    },
    /// A live process already listens on this Unix socket path.
    #[error("cannot listen on {path}: another process is listening there", path = path.display())]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket path exists and is not a socket, so it is not removed.
    #[error("cannot listen on {path}: it exists and is not a socket", path = path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The configured mode could not be set on a Unix socket.
    #[error("cannot set mode {mode:o} on {path}: {source}", path = path.display())]
    Chmod {
        /// The socket path.
        path: PathBuf,
        /// The mode asked for.
        mode: u32,
        /// The system's error.
        source: io::Error,
    },
    /// The per-generation notify socket could not be created.
    #[error("cannot create the notify socket {name}: {source}")]
    NotifySocket {
        /// The socket's `NOTIFY_SOCKET` value.
        name: String,
        /// The system's error.
        source: io::Error,
    },
    /// The payload command is missing or unreadable.
    #[error("payload command {command}: {source}", command = command.display())]
    Command {
        /// The command path.
        command: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// The payload command exists but is not an executable file.
    #[error("payload command {command} is not an executable file", command = command.display())]
    NotExecutable {
        /// The command path.
        command: PathBuf,
    },
    /// The process could not be spawned (fork, exec, chdir or the set-up in the child failed).
    #[error("cannot start {command}: {source}", command = command.display())]
    Spawn {
        /// The command path.
        command: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// `start` was called outside a Tokio runtime.
    #[error("cannot start {command}: not called within a Tokio runtime", command = command.display())]
    NoRuntime {
        /// The command path.
        command: PathBuf,
    },
    /// `[payload] user` names no user.
    #[error("payload user {user:?} does not exist")]
    UnknownUser {
        /// The user name.
        user: String,
    },
    /// The user database could not be read.
    #[error("cannot look up payload user {user:?}: {source}")]
    UserLookup {
        /// The user name.
        user: String,
        /// The system's error.
        source: io::Error,
    },
    /// Switching to another user needs root.
    #[error("running the payload as {user:?} needs root (the agent runs as uid {uid})")]
    NeedsRoot {
        /// The user name.
        user: String,
        /// The agent's effective uid.
        uid: u32,
    },
    /// A handed-over payload process could not be adopted.
    #[error("cannot adopt the payload: {0}")]
    Adopt(#[from] super::adopt::AdoptError),
}
