//! Test TLS material: a throw-away CA and a server certificate it signed for
//! `localhost` and `127.0.0.1`, made by `bankswap console cert`, so tests run
//! the console over real HTTPS.

use std::path::{Path, PathBuf};

use crate::support::run_ok;

/// PEM files of a test CA and of a server certificate signed by it.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate: what clients trust (`[tls] ca_certs`, `--ca-cert`).
    pub ca_pem: PathBuf,
    /// The server certificate for `localhost` and `127.0.0.1` (`--tls-cert`).
    pub cert_pem: PathBuf,
    /// The server certificate's private key (`--tls-key`).
    pub key_pem: PathBuf,
}

/// Writes `ca.pem`, `server.pem` and `server.key` into `dir` (created if needed).
pub fn make_test_ca(dir: &Path) -> TestCa {
    run_ok(["console", "cert", "--out", &dir.display().to_string()]);
    TestCa {
        ca_pem: dir.join("ca.pem"),
        cert_pem: dir.join("server.pem"),
        key_pem: dir.join("server.key"),
    }
}
