//! The agent's identity (SPEC §10): its own key pair and the client
//! certificate the console's agent CA signed, in `ROOT/identity/`.
//!
//! - [`enroll`](enrollment::enroll): make a key (0600, never logged) and a
//!   CSR, send them with a one-time token to `POST /v1/enroll`, store the
//!   certificate.
//! - [`renewal_due`]: the pure rule: renew once two thirds of the lifetime passed.
//! - [`renew`]: a new key and CSR over mTLS to `POST /v1/renew`; the new
//!   certificate replaces the old one only after it was accepted by
//!   `GET /v1/identity` (the old one stays until then).
//! - [`client_identity`]: what `reqwest::ClientBuilder::identity` takes.
//!
//! **Crash safety** (SPEC §13): a new key and certificate (enrolled or renewed) are
//! each written whole (`write_secret`, `write_atomic`) as `key.new.pem` and
//! `cert.new.pem`, then installed by two renames — key first — and an fsync of the
//! folder. A cut between the renames leaves `key.pem` new and `cert.new.pem` the
//! matching certificate: [`load`] pairs them, and the next [`ensure`] or [`renew`]
//! finishes the install. A cut before the renames leaves the old pair (or, at a first
//! enrollment, only the new files, which are then the identity).
//!
//! - [`standing`]: the certificate's expiry as `status` and `doctor` show it,
//!   with what to do when it expired and the agent cannot fix it itself.
//!
//! **Wiring into `bankswap run`** (`agent/mod.rs`): at start-up, after the
//! agent id is known, [`ensure`] with the config's `enrollment_token_file`;
//! the agent's one HTTPS client (`agent/clients.rs`) presents
//! [`client_identity`]; when [`Stored::is_renewal_due`] holds, [`renew`], and
//! the client is rebuilt for every user (checker, reporter, staging, probes).
//!
//! Files: `store.rs` (the key and certificate on disk and their install),
//! `enrollment.rs`, `renewal.rs`, `requests.rs` (the calls to the console)
//! and `commands.rs` (`bankswap console enroll|renew`). This file holds the
//! renewal rule and the certificate's standing.

mod commands;
mod enrollment;
mod renewal;
mod requests;
mod store;

use std::path::Path;
use std::time::SystemTime;

use crate::clock;
use crate::report::CertificateReport;

pub use self::commands::{enroll_command, renew_command};
pub use self::enrollment::ensure;
pub use self::renewal::renew;
pub use self::store::{Stored, client_identity, dir, load};

/// Renew once two thirds of the lifetime `[not_before, not_after]` passed:
/// a third of the lifetime is left to retry in (ten days of a 30-day
/// certificate), and an agent off for less than that never lapses.
pub fn renewal_due(not_before: u64, not_after: u64, now: u64) -> bool {
    let lifetime = not_after.saturating_sub(not_before);
    now >= not_before.saturating_add(lifetime / 3 * 2 + (lifetime % 3) * 2 / 3)
}

/// The certificate at `now`, for `status` and `doctor`. `token_file` is the
/// config's `enrollment_token_file`, when known: it decides the fix for an
/// expired certificate (SPEC §10: re-enroll only with a valid token).
pub fn standing(stored: &Stored, now: SystemTime, token_file: Option<&Path>) -> CertificateReport {
    let not_after = clock::rfc3339(clock::from_unix(stored.not_after));
    let (state, hint) = if stored.is_expired(now) {
        let hint = match token_file {
            Some(file) => format!(
                "the agent was off past its renewal: restart the agent \
                 (systemctl restart bankswap) to enroll again with the token in {}; if the console \
                 refuses that token (used or expired), make a new one on the console \
                 (`bankswap console token create`) and write it into that file first",
                file.display()
            ),
            None => "the agent was off past its renewal and cannot renew an expired \
                     certificate; it enrolls again only with a valid enrollment token: on the \
                     console run `bankswap console token create`, write the token into the file \
                     enrollment_token_file names in the agent config (set it if missing), and \
                     restart the agent (systemctl restart bankswap)"
                .to_string(),
        };
        ("expired", Some(hint))
    } else if stored.is_renewal_due(now) {
        ("renewal due", None)
    } else {
        ("valid", None)
    };
    CertificateReport {
        not_after,
        state: state.to_string(),
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_after_two_thirds_of_the_lifetime() {
        assert!(!renewal_due(1000, 1300, 1000));
        assert!(!renewal_due(1000, 1300, 1199));
        assert!(renewal_due(1000, 1300, 1200));
        assert!(renewal_due(1000, 1300, 5000));
        // 30 days: due after 20.
        let day = 86_400;
        assert!(!renewal_due(0, 30 * day, 20 * day - 1));
        assert!(renewal_due(0, 30 * day, 20 * day));
        // A degenerate certificate is always due.
        assert!(renewal_due(1000, 1000, 1000));
    }
}
