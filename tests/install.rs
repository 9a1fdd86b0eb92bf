//! `scripts/install.sh` writes a systemd unit that runs the agent, a config
//! example the agent accepts, and the data root, under a prefix.

use std::fs;
use std::process::Command;

use crate::support::World;

#[test]
fn install_script_writes_the_service() {
    let w = World::new();
    let prefix = w.path("sysroot");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh");
    let out = Command::new(script)
        .args([
            "--prefix",
            &prefix.display().to_string(),
            "--binary",
            env!("CARGO_BIN_EXE_bankswap"),
        ])
        .output()
        .expect("install.sh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit =
        fs::read_to_string(prefix.join("etc/systemd/system/bankswap.service")).expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/bankswap run --config /etc/bankswap/agent.toml"),
        "{unit}"
    );
    assert!(unit.contains("KillMode=mixed"), "{unit}");
    assert!(prefix.join("usr/local/bin/bankswap").is_file());
    assert!(prefix.join("var/lib/bankswap").is_dir());
    // The example config is valid for the agent (only its key file is missing).
    let example =
        fs::read_to_string(prefix.join("etc/bankswap/agent.toml.example")).expect("example");
    let key = w.public("release");
    let config = w.path("agent.toml");
    fs::write(&config, example.replace("/etc/bankswap/release.pub", &key)).expect("config");
    let status = crate::support::run(["status", "--config", &config.display().to_string()]);
    assert_ne!(
        status.code, 2,
        "the example config is accepted: {}",
        status.stderr
    );
}
