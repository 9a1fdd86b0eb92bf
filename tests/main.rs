//! End-to-end tests: every test runs the real `bankswap` binary, as a user
//! would, on real files in a temporary folder.

mod agent;
mod clock;
mod config_validation;
mod console;
mod crash;
mod demo;
mod drip;
mod hostile;
mod idle_push;
mod install;
mod interop;
mod offline;
mod proxy;
mod publish_upload;
mod static_host;
mod support;
mod swap;
