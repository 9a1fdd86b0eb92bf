//! End-to-end tests: every test runs the real `bankswap` binary, as a user
//! would, on real files in a temporary folder.

mod admin;
mod agent;
mod clock;
mod config_validation;
mod console;
mod crash;
mod demo;
mod doctor;
mod drip;
mod durability;
mod hostile;
mod identity;
mod idle_push;
mod install;
mod interop;
mod latest_time;
mod logs;
mod notify;
mod offline;
mod package;
mod powercut;
mod proxy;
mod publish_bounds;
mod publish_upload;
mod reexec;
mod rotation;
mod selfupdate_stage;
mod static_host;
mod support;
mod swap;
