//! Integration tests of the signing crate, through its public API only: one
//! module per story.

// Tests may unwrap (STYLE: `unwrap_used` is allowed in tests).
#![allow(clippy::unwrap_used)]

mod minisign_vectors;
mod release_fixture;
mod release_order;
mod release_rules;
