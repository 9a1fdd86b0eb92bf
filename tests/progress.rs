//! Staging progress operators can use (issue 13.5): on a slowed download the
//! agent's progress lines carry done, total, percent, rate and ETA as logfmt
//! with quoted values, and `status --json` shows `pending.progress` while the
//! release is staged. The slow server is the drip module's, pacing the artifact.

use std::fs;
use std::fs::OpenOptions;
use std::process::Stdio;

use crate::drip::{Artifact, Hostile, noise};
use crate::support::live::AgentProcess;
use crate::support::tls::make_test_ca;
use crate::support::{World, bankswap};

/// Progress lines every 200 ms instead of every 5 s, so that a download of a
/// few seconds shows several (`BANKSWAP_PROGRESS_EVERY`, read by src/progress.rs).
const PROGRESS_EVERY: &str = "200ms";

/// Incompressible payload bytes: about 3 s at the paced server's 80 KiB/s.
const NOISE_BYTES: usize = 256 * 1024;

#[test]
fn a_slow_download_shows_rate_and_eta_in_the_log_and_in_status() {
    let w = World::new();
    let data = w.path("console-data");
    fs::create_dir_all(&data).expect("data");
    let ca = make_test_ca(&w.path("tls"));
    let v1 = w.script_payload("1.0.0", "exec sleep 1000");
    w.publish(&data, &v1, "1.0.0", &[]);
    let server = Hostile::start(&data, &ca, Artifact::Normal);

    let root = w.path("root");
    let config = w.path("root.toml");
    fs::write(
        &config,
        format!(
            "console = \"{}\"\nroot = \"{}\"\ntrusted_keys = [\"{}\"]\npoll_interval = \"1s\"\n\
             max_delay = \"0s\"\n[health]\ngrace = \"1s\"\n[tls]\nca_certs = [\"{}\"]\n",
            server.url,
            root.display(),
            w.public("release"),
            ca.ca_pem.display()
        ),
    )
    .expect("config");
    let log = w.path("root.log");
    let child = bankswap()
        .args(["run", "--config"])
        .arg(&config)
        .env("BANKSWAP_LOG", "info")
        .env("BANKSWAP_PROGRESS_EVERY", PROGRESS_EVERY)
        .stdout(Stdio::null())
        .stderr(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("log"),
        )
        .spawn()
        .expect("agent starts");
    let agent = AgentProcess {
        child: Some(child),
        config,
        root,
        log,
    };
    agent.wait_committed("1.0.0");

    server.plan().artifact = Artifact::Paced;
    let v2 = w.script_payload("2.0.0", "exec sleep 1000");
    fs::write(v2.join("noise.bin"), noise(NOISE_BYTES)).expect("noise");
    w.publish(&data, &v2, "2.0.0", &[]);

    let mut progress = serde_json::Value::Null;
    agent.wait_until("pending.progress with a rate and an ETA", || {
        progress = agent.status()["pending"]["progress"].clone();
        progress["bytes_per_second"].as_u64().is_some_and(|r| r > 0)
            && progress["eta_seconds"].is_u64()
            && progress["done"].as_u64() < progress["total"].as_u64()
    });
    let total = progress["total"].as_u64().expect("total");
    assert!(total as usize >= NOISE_BYTES, "{progress}");
    assert!(progress["percent"].as_u64() < Some(100), "{progress}");

    agent.wait_committed("2.0.0");
    let text = agent.log();
    let line = text
        .lines()
        .find(|l| l.contains(" progress ") && l.contains("what=\"staging 2.0.0\""))
        .unwrap_or_else(|| panic!("no progress line for 2.0.0:\n{text}"));
    for field in [
        "done=",
        &format!("total={total}"),
        "percent=",
        "rate=\"",
        "eta=\"",
    ] {
        assert!(line.contains(field), "`{field}` missing in: {line}");
    }
    assert!(line.contains("/s\""), "the rate has a unit: {line}");
    // After the staging, status shows no progress (and no pending release).
    assert!(agent.status()["pending"].is_null());
}
