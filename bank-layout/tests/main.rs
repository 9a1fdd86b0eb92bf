//! Integration tests of the bank layout, one module per story; archives are built in
//! memory by `support`, in all three formats.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod delta;
mod durable;
mod escapes;
mod happy;
mod headers;
mod memory;
mod recovery;
mod stream;
mod support;
