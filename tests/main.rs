//! End-to-end tests: every test runs the real `bankswap` binary, as a user
//! would, on real files in a temporary folder.

mod agent;
mod console;
mod crash;
mod demo;
mod durability;
mod hostile;
mod install;
mod interop;
mod offline;
mod powercut;
mod proxy;
mod publish_upload;
mod static_host;
mod support;
mod swap;
