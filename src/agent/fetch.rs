//! Talking to the console over HTTPS: the client (system roots plus
//! `[tls] ca_certs`, `[proxy]`, timeouts), the manifest check with
//! `If-None-Match` and the push `wait` (with the channel's key rotation
//! record, SPEC §13), and the artifact stream that resumes with `Range`
//! after a broken connection.
//!
//! `client.rs` builds the client, `manifest.rs` checks the manifest,
//! `stream.rs` is the reader handed to staging over the resumable ranged
//! download of `ranged.rs`, and `response.rs` holds the checks and limits on
//! every answer.

mod client;
mod manifest;
mod ranged;
mod response;
mod stream;

pub use self::client::{ClientSetup, client};
pub use self::manifest::{Checked, Rotation, check};
pub(super) use self::response::read_capped;
pub use self::response::{describe, describe_cut};
pub use self::stream::{ArtifactStream, Cancel};

/// A `{base}/v1/...` URL.
pub fn url(base: &str, rest: &str) -> String {
    format!("{}/v1/{rest}", base.trim_end_matches('/'))
}
