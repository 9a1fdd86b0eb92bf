//! The offline story of the README: keys, publish two versions, init,
//! apply, status, rollback — through the real binary.

use crate::support::{World, bank_files, run, run_ok, status, tree};

#[test]
fn publish_init_apply_status_rollback() {
    let w = World::new();
    let data = w.path("console-data");
    let root = w.path("root");
    let v1 = w.payload("1.0.0", 5, 1000);
    let v2 = w.payload("1.1.0", 5, 2000);

    w.publish(&data, &v1, "1.0.0", &[]);
    w.init(&root, &data);
    let s = status(&root);
    assert_eq!(s["active_bank"], "Bank1");
    assert_eq!(s["active_version"], "1.0.0");
    assert_eq!(s["phase"], "committed");
    assert_eq!(s["sequence"], 1);
    assert!(s["previous_version"].is_null());
    assert!(
        s["agent_id"].as_str().is_some_and(|id| id.len() == 32),
        "{s}"
    );
    assert_eq!(
        bank_files(&root, "Bank1"),
        tree(&v1),
        "Bank1 holds exactly the v1 payload"
    );

    w.publish(&data, &v2, "1.1.0", &[]);
    let out = w.apply(&root, &data);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("1.1.0"), "{}", out.stdout);
    let s = status(&root);
    assert_eq!(s["active_bank"], "Bank2");
    assert_eq!(s["active_version"], "1.1.0");
    assert_eq!(s["previous_version"], "1.0.0");
    assert_eq!(s["sequence"], 2);
    assert_eq!(bank_files(&root, "Bank2"), tree(&v2));
    assert_eq!(
        bank_files(&root, "Bank1"),
        tree(&v1),
        "the previous version stays intact"
    );

    let out = run_ok(["rollback", "--root", &root.display().to_string()]);
    assert!(out.stdout.contains("1.0.0"), "{}", out.stdout);
    let s = status(&root);
    assert_eq!(s["active_bank"], "Bank1");
    assert_eq!(s["active_version"], "1.0.0");
    assert_eq!(s["previous_version"], "1.1.0");
    assert_eq!(s["bad_versions"][0]["version"], "1.1.0");

    // The rolled-back release is not re-installed until a higher sequence re-publishes it.
    let again = w.apply(&root, &data);
    crate::support::assert_fails_with(&again, "1.1.0");
    w.publish(&data, &v2, "1.1.0", &[]);
    run_ok(w_apply_args(&w, &root, &data));
    assert_eq!(status(&root)["active_version"], "1.1.0");
}

fn w_apply_args(w: &World, root: &std::path::Path, data: &std::path::Path) -> Vec<String> {
    vec![
        "apply".into(),
        "--root".into(),
        root.display().to_string(),
        "--bundle".into(),
        data.display().to_string(),
        "--trust".into(),
        w.public("release"),
    ]
}

#[test]
fn applying_the_running_release_again_changes_nothing() {
    let w = World::new();
    let data = w.path("data");
    let root = w.path("root");
    w.publish(&data, &w.payload("1.0.0", 1, 10), "1.0.0", &[]);
    w.init(&root, &data);
    let before = std::fs::read(root.join("state.json")).expect("state");
    let out = w.apply(&root, &data);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("nothing to do"), "{}", out.stdout);
    assert_eq!(
        std::fs::read(root.join("state.json")).expect("state"),
        before
    );
}

#[test]
fn config_file_sets_root_channel_and_keys() {
    let w = World::new();
    let data = w.path("data");
    let root = w.path("root");
    w.publish(
        &data,
        &w.payload("2.0.0", 1, 10),
        "2.0.0",
        &["--channel", "beta"],
    );
    let config = w.path("agent.toml");
    std::fs::write(
        &config,
        format!(
            "channel = \"beta\"\nroot = \"{}\"\ntrusted_keys = [\"{}\"]\n",
            root.display(),
            w.public("release")
        ),
    )
    .expect("config");
    run_ok([
        "init",
        "--config",
        &config.display().to_string(),
        "--bundle",
        &data.display().to_string(),
    ]);
    let out = run_ok(["status", "--config", &config.display().to_string()]);
    assert!(out.stdout.contains("2.0.0 in Bank1"), "{}", out.stdout);
}

#[test]
fn config_typo_is_a_usage_error() {
    let w = World::new();
    let config = w.path("agent.toml");
    std::fs::write(
        &config,
        format!(
            "trusted_keys = [\"{}\"]\nchanel = \"beta\"\n",
            w.public("release")
        ),
    )
    .expect("config");
    let out = run([
        "apply",
        "--config",
        &config.display().to_string(),
        "--bundle",
        "/nonexistent",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.starts_with("error: config "), "{}", out.stderr);
    assert!(out.stderr.contains("chanel"), "{}", out.stderr);
}

#[test]
fn missing_trust_is_a_usage_error() {
    let w = World::new();
    let out = run([
        "apply",
        "--root",
        &w.path("root").display().to_string(),
        "--bundle",
        "/x",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--trust"), "{}", out.stderr);
}

#[test]
fn fleet_rollback_by_republishing_an_old_version() {
    let w = World::new();
    let data = w.path("data");
    let root = w.path("root");
    w.publish(&data, &w.payload("1.0.0", 1, 10), "1.0.0", &[]);
    w.init(&root, &data);
    w.publish(&data, &w.payload("1.1.0", 1, 10), "1.1.0", &[]);
    assert_eq!(w.apply(&root, &data).code, 0);
    run_ok([
        "publish".to_string(),
        "--key".into(),
        w.secret("release"),
        "--to".into(),
        data.display().to_string(),
        "--rollback-to".into(),
        "1.0.0".into(),
    ]);
    let out = w.apply(&root, &data);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = status(&root);
    assert_eq!(s["active_version"], "1.0.0");
    assert_eq!(s["sequence"], 3);
}

/// Regression: `status --json | grep -q` closed the pipe early and bankswap panicked
/// ("failed printing to stdout: Broken pipe"); found by scripts/bench/apply.sh.
#[test]
fn status_into_a_closed_pipe_ends_quietly() {
    let w = World::new();
    let data = w.path("data");
    let root = w.path("root");
    w.publish(&data, &w.payload("1.0.0", 1, 10), "1.0.0", &[]);
    w.init(&root, &data);
    let script = format!(
        "{{ sleep 0.3; exec {} status --root {} --json; }} | true",
        env!("CARGO_BIN_EXE_bankswap"),
        root.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// SPEC §3: a bank folder deleted by hand is detected and repaired; if it was the
/// active one, bankswap falls back to the other bank and says so.
#[test]
fn a_bank_deleted_by_hand_is_detected_and_repaired() {
    let w = World::new();
    let data = w.path("data");
    let root = w.path("root");
    let v1 = w.payload("1.0.0", 2, 100);
    w.publish(&data, &v1, "1.0.0", &[]);
    w.init(&root, &data);
    w.publish(&data, &w.payload("1.1.0", 2, 100), "1.1.0", &[]);
    assert_eq!(w.apply(&root, &data).code, 0);
    assert_eq!(status(&root)["active_bank"], "Bank2");

    std::fs::remove_dir_all(root.join("Bank2")).expect("delete the active bank");
    let out = run(["rollback", "--root", &root.display().to_string()]);
    assert!(
        out.stderr.contains("fell back"),
        "the fallback is said: {}",
        out.stderr
    );
    let s = status(&root);
    assert_eq!(s["active_bank"], "Bank1");
    assert_eq!(s["active_version"], "1.0.0");
    assert_eq!(
        bank_files(&root, "Bank1"),
        tree(&v1),
        "the fallback runs whole"
    );
    assert!(
        root.join("Bank2").is_dir(),
        "the deleted bank was re-created"
    );

    // Updating still works: the release goes into the re-created bank.
    let out = w.apply(&root, &data);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(status(&root)["active_version"], "1.1.0");
}
