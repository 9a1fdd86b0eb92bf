//! Helpers of the self-update and in-place exec tests (tests/reexec.rs,
//! tests/selfupdate*.rs): which process runs which image, the payload's pid,
//! and an agent restarted with extra environment (a test switch, or the same
//! environment a supervisor would restart it with).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Stdio;

use crate::support::live::AgentProcess;
use crate::support::{World, bankswap};

/// The agent's pid.
pub fn agent_pid(agent: &AgentProcess) -> u32 {
    agent.child.as_ref().expect("agent running").id()
}

/// The inode of `/proc/PID/exe`: which file the process image was exec'd from.
pub fn exe_inode(pid: u32) -> u64 {
    fs::metadata(format!("/proc/{pid}/exe"))
        .expect("/proc/PID/exe")
        .ino()
}

/// `/proc/PID/stat` field 4, the parent pid.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The pid of the last `running version=<version>` line.
pub fn payload_pid(agent: &AgentProcess, version: &str) -> u32 {
    let needle = format!("running version={version} ");
    agent.wait_log(&needle);
    let log = agent.log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(&needle))
        .expect("running line");
    line.split("pid=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in `{line}`"))
}

/// A copy of the test binary: the same program as a different file, so the
/// exec is visible in `/proc/PID/exe`.
pub fn binary_copy(w: &World, name: &str) -> PathBuf {
    let copy = w.path(name);
    fs::copy(env!("CARGO_BIN_EXE_bankswap"), &copy).expect("copy the binary");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

/// Restarts `agent` with extra environment variables.
pub fn start_with_env(agent: &mut AgentProcess, env: &[(&str, &str)]) {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&agent.log)
        .expect("log");
    let mut command = bankswap();
    command
        .args(["run", "--config"])
        .arg(&agent.config)
        .env("BANKSWAP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        command.env(k, v);
    }
    agent.child = Some(command.spawn().expect("agent starts"));
}

/// The port of the `listening name=http` line logged after byte `from`.
pub fn bound_port_after(agent: &AgentProcess, from: usize) -> u16 {
    agent.wait_until("a listening line", || {
        agent.log()[from..].contains("listening name=http")
    });
    let log = agent.log()[from..].to_string();
    let line = log
        .lines()
        .find(|l| l.contains("listening name=http"))
        .expect("listening line")
        .to_string();
    line.split("bound=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no bound port in `{line}`"))
}
