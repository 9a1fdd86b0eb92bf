//! What `--version` prints: the package version, the git commit and the target
//! triple, as build.rs found them.

/// `0.1.0 (commit 0123456789ab, x86_64-unknown-linux-gnu)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BANKSWAP_GIT_COMMIT"),
    ", ",
    env!("BANKSWAP_BUILD_TARGET"),
    ")"
);
