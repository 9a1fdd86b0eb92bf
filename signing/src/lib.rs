//! Signed releases for bankswap: minisign-compatible ed25519 keys and
//! signatures, the release manifest, and [`verify_release`], the one function
//! that decides whether a downloaded release may be installed.
//!
//! **Architecture Invariant:** bytes in, verdict out. This crate never
//! touches the network or the file system and never reads the clock: the
//! caller passes the manifest and signature bytes, the trusted keys and
//! `now`. The only outside input is the OS random source, and only for
//! [`SecretKey::generate`].
//!
//! Keys and signatures are read and written in minisign's own formats, so
//! `minisign -V` checks what `bankswap publish` signs, and a key made with
//! `minisign -G -W` can sign releases.
//!
//! Code map: `keys.rs` ([`KeyId`], [`PublicKey`]), `secret_key.rs`
//! ([`SecretKey`]), `signature.rs` ([`Signature`], [`prehash`]),
//! `manifest.rs` ([`Manifest`] and its parts), `wire_time.rs` (RFC 3339 and
//! duration wire formats), `policy.rs` ([`verify_release`] and its
//! [`Expectations`]), `keyring.rs` ([`KeyRing`]: configured, endorsed and
//! revoked keys), `rotation.rs` ([`RotationRecord`], [`verify_rotation`]),
//! `error.rs` ([`SigningError`], [`ReleaseError`], [`RotationError`]).

#![deny(missing_docs)]
// Unit tests may unwrap (STYLE: `unwrap_used` is allowed in tests); the
// non-test build of this crate is still linted.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
mod keyring;
mod keys;
mod manifest;
mod policy;
mod rotation;
mod secret_key;
mod signature;
mod wire_time;

pub use error::{ReleaseError, RotationError, SigningError};
pub use keyring::KeyRing;
pub use keys::{KeyId, PublicKey};
pub use manifest::{
    Artifact, ArtifactFormat, Entrypoint, MANIFEST_SCHEMA, Manifest, ReleaseKind, Rollout,
};
pub use policy::{
    BadVersion, Expectations, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, VerifiedRelease,
    check_kind_and_platform, verify_release,
};
pub use rotation::{
    MAX_ROTATION_BYTES, ROTATION_SCHEMA, RotationRecord, VerifiedRotation, verify_rotation,
};
pub use secret_key::SecretKey;
pub use signature::{Signature, prehash};
pub use wire_time::{
    EARLIEST_TIME_SECS, LATEST_TIME_SECS, MAX_DURATION, check_duration, check_time, format_rfc3339,
    parse_duration, parse_rfc3339,
};
