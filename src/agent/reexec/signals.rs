//! The stop signals across an in-place exec: blocked over the `execve` (their
//! handlers reset to the default there), unblocked by the new image once its
//! own exist, and a stop delivered to this image recorded at once.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing::warn;

/// Signals blocked across the exec: `execve` resets their handlers to the
/// default (terminate), so a `systemctl stop` landing before the new image
/// installs its own would kill the agent (and the payload by its death
/// signal) instead of stopping it. The mask survives the exec; the new image
/// unblocks them once its handlers exist ([`unblock_stop_signals`]).
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Blocks [`STOP_SIGNALS`] on this thread; returns the mask before.
pub(super) fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialize it;
    // pthread_sigmask only changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

/// Puts back a mask saved by [`block_stop_signals`].
pub(super) fn restore_signal_mask(old: &libc::sigset_t) {
    // SAFETY: `old` was filled by pthread_sigmask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
    }
}

/// Set by the stop signals' handler itself, at delivery: the core runs on the
/// one thread that also polls the signal stream, so a stop that came while it
/// decides to exec is not seen there yet, and would be lost with this image.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Records SIGTERM and SIGINT in [`STOP_REQUESTED`] as they are delivered, beside
/// tokio's own handlers (signal-hook-registry chains both). Called once the
/// agent's signal streams exist.
pub fn watch_stop_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the action only stores to an atomic, which is async-signal-safe.
        let registered = unsafe {
            signal_hook_registry::register(sig, || STOP_REQUESTED.store(true, Ordering::SeqCst))
        };
        if let Err(e) = registered {
            warn!(signal = sig, error = %e, "cannot watch a stop signal; a stop during an in-place exec may be lost");
        }
    }
}

/// Whether a stop signal was delivered to this image.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// Unblocks [`STOP_SIGNALS`] (blocked across an in-place exec): called once
/// the agent's own handlers exist; a signal that arrived meanwhile is then
/// delivered and handled. Harmless on a cold start.
pub fn unblock_stop_signals() {
    // SAFETY: as in block_stop_signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}
