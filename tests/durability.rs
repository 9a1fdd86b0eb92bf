//! Durability (SPEC §3, §13; issues 9.1, 9.2, 8.3, 8.7, 8.8, 8.10, 8.11): whatever goes
//! wrong while `apply` stages a release — a truncated, oversized or tampered artifact,
//! a hostile archive entry, a full disk, a SIGKILL, a zstd bomb, a missing entrypoint —
//! both banks stay byte-identical and `state.json` untouched, so `bankswap rollback`
//! still returns to the previous version without the network. Plus: modes under
//! `umask 000`, and `status` that neither locks nor writes.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::live::Live;
use crate::support::tmpfs::on_small_tmpfs;
use crate::support::{self, World, assert_fails_with, bankswap, run, run_ok, status, tree, wait};

/// Longest wait for a condition (a scratch folder appearing, a lock being held):
/// generous, since the machine may be loaded; the tests wait for the condition, not
/// for this time.
const CONDITION_DEADLINE: Duration = Duration::from_secs(120);

/// Pause between two looks for a staging in progress: short, so the mid-staging
/// moment is not missed.
const MID_STAGING_STEP: Duration = Duration::from_millis(1);

/// A root with 1.0.0 in Bank1 (idle, the rollback target) and 1.1.0 active in Bank2,
/// and the next release 1.2.0 published in `data` for each test to break.
struct Setup {
    w: World,
    data: PathBuf,
    root: PathBuf,
}

fn setup() -> Setup {
    setup_with(&[])
}

/// [`setup`], publishing 1.2.0 with `extra` publish arguments.
fn setup_with(extra: &[&str]) -> Setup {
    let w = World::new();
    let data = w.path("data");
    let root = w.path("root");
    w.publish(&data, &w.payload("1.0.0", 3, 100), "1.0.0", &[]);
    w.init(&root, &data);
    w.publish(&data, &w.payload("1.1.0", 3, 100), "1.1.0", &[]);
    assert_eq!(w.apply(&root, &data).code, 0, "apply 1.1.0");
    w.publish(&data, &w.payload("1.2.0", 3, 100), "1.2.0", extra);
    Setup { w, data, root }
}

/// Both banks (every file, the records included) and `state.json`.
#[derive(Debug, PartialEq)]
struct Banks {
    bank1: BTreeMap<String, String>,
    bank2: BTreeMap<String, String>,
    state: Vec<u8>,
}

impl Banks {
    fn of(root: &Path) -> Banks {
        Banks {
            bank1: tree(&root.join("Bank1")),
            bank2: tree(&root.join("Bank2")),
            state: fs::read(root.join("state.json")).expect("state.json"),
        }
    }
}

impl Setup {
    fn artifact_path(&self) -> PathBuf {
        support::artifact_path(&self.data)
    }

    /// Rewrites the manifest and signs it with the trusted key.
    fn resign(&self, edit: impl FnOnce(&mut Value)) {
        self.w.resign(&self.data, edit);
    }

    /// Publishes `artifact` (tar.zst bytes) as 1.2.0's artifact, signed.
    fn publish_artifact(&self, artifact: &[u8]) {
        let sha = hex::encode(Sha256::digest(artifact));
        fs::write(
            self.data.join(format!("v1/artifacts/{sha}.tar.zst")),
            artifact,
        )
        .expect("artifact");
        self.resign(|m| {
            m["artifact"]["path"] = format!("artifacts/{sha}.tar.zst").into();
            m["artifact"]["sha256"] = sha.clone().into();
            m["artifact"]["size"] = artifact.len().into();
        });
    }

    /// `apply` fails naming `needle`; both banks and state.json are as before, no
    /// scratch folder is left, and `rollback` then returns to 1.0.0.
    fn apply_fails_and_rollback_works(&self, needle: &str) {
        let before = Banks::of(&self.root);
        let out = self.w.apply(&self.root, &self.data);
        assert_fails_with(&out, needle);
        assert_eq!(
            Banks::of(&self.root),
            before,
            "a failed apply changed a bank"
        );
        assert!(!self.root.join(".staging").exists(), "scratch folder left");
        self.rollback_returns_to_1_0_0();
    }

    fn rollback_returns_to_1_0_0(&self) {
        // status shows what is on disk: 1.0.0 is still there to go back to.
        let s = status(&self.root);
        assert_eq!(s["active_version"], "1.1.0");
        let bank1 = tree(&self.root.join("Bank1"));
        let out = run_ok(["rollback", "--root", &self.root.display().to_string()]);
        assert!(
            out.stdout.contains("rolled back to 1.0.0"),
            "{}",
            out.stdout
        );
        let s = status(&self.root);
        assert_eq!(s["active_version"], "1.0.0");
        assert_eq!(s["active_bank"], "Bank1");
        assert_eq!(tree(&self.root.join("Bank1")), bank1);
    }
}

#[test]
fn truncated_artifact_keeps_the_rollback_target() {
    let s = setup();
    let bytes = fs::read(s.artifact_path()).expect("artifact");
    fs::write(s.artifact_path(), &bytes[..bytes.len() / 2]).expect("write");
    s.apply_fails_and_rollback_works("truncated");
}

#[test]
fn oversized_artifact_keeps_the_rollback_target() {
    let s = setup();
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(s.artifact_path())
        .expect("open");
    file.write_all(&[0u8; 4096]).expect("append");
    s.apply_fails_and_rollback_works("larger");
}

#[test]
fn digest_mismatch_keeps_the_rollback_target() {
    let s = setup();
    let mut bytes = fs::read(s.artifact_path()).expect("artifact");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(s.artifact_path(), bytes).expect("write");
    s.apply_fails_and_rollback_works("sha256 mismatch");
}

/// A tar.zst of `bin/app` and then `rest` (raw tar bytes; `rest` brings the end blocks
/// if it wants them).
fn program_then(rest: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut app = tar::Header::new_gnu();
    app.set_path("bin/app").expect("path");
    app.set_size(10);
    app.set_mode(0o755);
    app.set_cksum();
    builder.append(&app, &b"#!/bin/sh\n"[..]).expect("append");
    let mut tar = builder.into_inner().expect("tar");
    tar.truncate(tar.len() - 1024); // the builder's two end blocks
    tar.extend_from_slice(rest);
    zstd::encode_all(&tar[..], 3).expect("zstd")
}

/// A raw tar header named `name` of `kind` claiming `size` bytes.
fn header(name: &str, kind: tar::EntryType, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h.as_bytes().to_vec()
}

#[test]
fn hostile_archive_entry_keeps_the_rollback_target() {
    let s = setup();
    let mut rest = header("../../escaped", tar::EntryType::Regular, 5);
    rest.extend(b"pwned");
    rest.resize(rest.len() + 512 - 5 + 1024, 0);
    s.publish_artifact(&program_then(&rest));
    s.apply_fails_and_rollback_works("escapes the bank");
    assert!(!s.w.path("escaped").exists());
}

#[test]
fn zstd_bomb_stops_at_the_unpacked_bound() {
    // A signed artifact whose one file claims 8 GiB of zeros: what a console without
    // the key can serve in place of the honest artifact. The signed manifest announces
    // the honest unpacked size (`artifact.unpacked_size`), so the entry is refused at
    // its header, before a byte of it is written.
    let s = setup();
    let mut bomb = program_then(&header("zeros", tar::EntryType::Regular, 8 << 30));
    // The claimed entry's data: the frames that follow, 1 MiB of zeros each.
    let frame = zstd::encode_all(&vec![0u8; 1 << 20][..], 19).expect("zstd");
    for _ in 0..64 {
        bomb.extend_from_slice(&frame);
    }
    s.publish_artifact(&bomb);
    let before = Banks::of(&s.root);
    let started = Instant::now();
    let out = s.w.apply(&s.root, &s.data);
    assert_fails_with(&out, "unpacks to more than");
    assert!(out.stderr.contains("bytes announced"), "{}", out.stderr);
    assert_eq!(Banks::of(&s.root), before);
    assert!(!s.root.join(".staging").exists());
    // Nothing near 8 GiB was written or read: it stopped at the header.
    assert!(started.elapsed() < CONDITION_DEADLINE);
    s.rollback_returns_to_1_0_0();
}

#[test]
fn missing_entrypoint_is_refused_before_activation() {
    let s = setup();
    s.resign(|m| m["entrypoint"]["command"] = "bin/not-there".into());
    s.apply_fails_and_rollback_works("entrypoint `bin/not-there` does not exist");
}

#[test]
fn entrypoint_that_is_not_executable_is_refused() {
    let s = setup();
    s.resign(|m| m["entrypoint"]["command"] = "VERSION".into());
    s.apply_fails_and_rollback_works("entrypoint `VERSION` is not executable");
}

#[test]
fn sigkill_mid_staging_keeps_the_rollback_target() {
    let w = World::new();
    let data = w.path("data");
    let root = w.path("root");
    w.publish(&data, &w.payload("1.0.0", 3, 100), "1.0.0", &[]);
    w.init(&root, &data);
    w.publish(&data, &w.payload("1.1.0", 3, 100), "1.1.0", &[]);
    assert_eq!(w.apply(&root, &data).code, 0);
    // Big enough that staging takes a while: many files.
    w.publish(&data, &w.payload("1.2.0", 4000, 4096), "1.2.0", &[]);
    let before = Banks::of(&root);
    let mut child = bankswap()
        .args(["apply", "--root", &root.display().to_string()])
        .args(["--bundle", &data.display().to_string()])
        .args(["--trust", &w.public("release")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn apply");
    // Kill it once the scratch folder holds files: mid-staging.
    let scratch = root.join(".staging");
    let killed_mid_staging = wait::until_every(MID_STAGING_STEP, CONDITION_DEADLINE, || {
        if fs::read_dir(scratch.join("data")).is_ok_and(|mut d| d.next().is_some()) {
            let _ = child.kill();
            return Some(true);
        }
        child.try_wait().expect("wait").map(|_| false)
    }) == Some(true);
    let _ = child.kill();
    let _ = child.wait();
    assert!(killed_mid_staging, "apply ended before staging was seen");
    assert_eq!(Banks::of(&root), before, "a killed staging changed a bank");
    // status is read-only: it shows the versions on disk and leaves the scratch folder.
    let s = status(&root);
    assert_eq!(s["active_version"], "1.1.0");
    assert!(scratch.exists());
    let out = run_ok(["rollback", "--root", &root.display().to_string()]);
    assert!(
        out.stdout.contains("rolled back to 1.0.0"),
        "{}",
        out.stdout
    );
    assert!(!scratch.exists(), "open removes the scratch folder");
    assert_eq!(tree(&root.join("Bank1")), before.bank1);
}

/// Publishes `version` (`files` files of `size` bytes) into a copy of the bundle
/// `from` named `to`: bundles of successive releases, each as `publish` leaves it.
fn publish_copy(
    w: &World,
    from: Option<&Path>,
    to: &str,
    version: &str,
    files: usize,
    size: usize,
) -> PathBuf {
    let to = w.path(to);
    if let Some(from) = from {
        let ok = Command::new("cp").arg("-a").arg(from).arg(&to).status();
        assert!(ok.expect("cp").success());
    }
    w.publish(&to, &w.payload(version, files, size), version, &[]);
    to
}

/// A full disk: the script records the banks before and after the failed apply,
/// and rolls back.
#[test]
fn disk_full_keeps_the_rollback_target() {
    let w = World::new();
    let data1 = publish_copy(&w, None, "data1", "1.0.0", 1, 1000);
    let data2 = publish_copy(&w, Some(&data1), "data2", "1.1.0", 1, 1000);
    // 6 MiB of payload in a small artifact: does not fit the 3 MiB tmpfs.
    let data3 = publish_copy(&w, Some(&data2), "data3", "1.2.0", 6, 1024 * 1024);
    let read = on_small_tmpfs(
        &w,
        "3m",
        &[("D1", &data1), ("D2", &data2), ("D3", &data3)],
        r#"
"$B" init --root "$R" --bundle "$D1" --trust "$K" > /dev/null
"$B" apply --root "$R" --bundle "$D2" --trust "$K" > /dev/null
list > "$O/before.txt"
set +e
"$B" apply --root "$R" --bundle "$D3" --trust "$K" 2> "$O/apply-stderr.txt"
echo $? > "$O/apply-code.txt"
set -e
list > "$O/after.txt"
ls -A "$R" > "$O/root-after.txt"
"$B" rollback --root "$R" > "$O/rollback.txt"
"$B" status --root "$R" --json > "$O/status.json"
"#,
    );
    assert_eq!(read("apply-code.txt").trim(), "1");
    let stderr = read("apply-stderr.txt");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // Space first: the announced unpacked size does not fit, so staging is refused
    // before it writes anything.
    assert!(stderr.contains("not enough space"), "{stderr}");
    assert!(
        stderr.contains("needs") && stderr.contains("free"),
        "{stderr}"
    );
    assert_eq!(read("before.txt"), read("after.txt"), "a bank changed");
    assert!(!read("root-after.txt").contains(".staging"));
    assert!(read("rollback.txt").contains("rolled back to 1.0.0"));
    let s: Value = serde_json::from_str(&read("status.json")).expect("json");
    assert_eq!(s["active_version"], "1.0.0");
}

/// Room only for an in-place staging (issue 9.2): on a 12 MiB tmpfs holding two
/// 4 MiB banks, a third 4 MiB release fits only over the idle bank. Without
/// `[update] allow_in_place` `apply` refuses, saying so, and touches nothing; with
/// it, `apply` first says that the rollback target goes, then stages in place. A
/// release that does not fit even in place is refused with "needs X MiB, Y MiB
/// free" and changes nothing, allowed or not.
#[test]
fn in_place_staging_only_when_allowed() {
    const MIB: usize = 1024 * 1024;
    let w = World::new();
    let data1 = publish_copy(&w, None, "data1", "1.0.0", 4, MIB);
    let data2 = publish_copy(&w, Some(&data1), "data2", "1.1.0", 4, MIB);
    let fits_in_place = publish_copy(&w, Some(&data2), "data3", "1.2.0", 4, MIB);
    let too_big = publish_copy(&w, Some(&data2), "data4", "1.2.0", 10, MIB);
    let config = w.path("allow-in-place.toml");
    fs::write(
        &config,
        format!(
            "trusted_keys = [\"{}\"]\n[update]\nallow_in_place = true\n",
            w.public("release")
        ),
    )
    .expect("config");
    let read = on_small_tmpfs(
        &w,
        "12m",
        &[
            ("D1", &data1),
            ("D2", &data2),
            ("D3", &fits_in_place),
            ("D4", &too_big),
            ("C", &config),
        ],
        r#"
"$B" init --root "$R" --bundle "$D1" --trust "$K" > /dev/null
"$B" apply --root "$R" --bundle "$D2" --trust "$K" > /dev/null
list > "$O/before.txt"
set +e
"$B" apply --root "$R" --bundle "$D3" --trust "$K" 2> "$O/refused.txt"
echo $? > "$O/refused-code.txt"
list > "$O/after-refused.txt"
"$B" apply --config "$C" --root "$R" --bundle "$D4" 2> "$O/no-room.txt"
echo $? > "$O/no-room-code.txt"
list > "$O/after-no-room.txt"
"$B" apply --config "$C" --root "$R" --bundle "$D3" > "$O/in-place-out.txt" 2> "$O/in-place.txt"
echo $? > "$O/in-place-code.txt"
set -e
ls -A "$R" > "$O/root-after.txt"
"$B" status --root "$R" --json > "$O/status.json"
"$B" rollback --root "$R" > "$O/rollback.txt"
"#,
    );
    // Refused by default, with the reason and the way out, before anything is written.
    assert_eq!(read("refused-code.txt").trim(), "1");
    let refused = read("refused.txt");
    assert!(refused.starts_with("error: "), "{refused}");
    assert_eq!(refused.lines().count(), 1, "{refused}");
    assert!(
        refused.contains("only in place") && refused.contains("allow_in_place"),
        "{refused}"
    );
    assert_eq!(
        read("before.txt"),
        read("after-refused.txt"),
        "a bank changed"
    );
    // No room even in place: refused with the numbers, allowed or not.
    assert_eq!(read("no-room-code.txt").trim(), "1");
    let no_room = read("no-room.txt");
    assert!(no_room.starts_with("error: "), "{no_room}");
    assert_eq!(no_room.lines().count(), 1, "{no_room}");
    assert!(
        no_room.contains("staging needs 12 MiB, ") && no_room.contains(" MiB free ("),
        "{no_room}"
    );
    assert_eq!(
        read("before.txt"),
        read("after-no-room.txt"),
        "a bank changed"
    );
    // Allowed: said first (what is needed, what is free, what is lost), then done.
    let in_place = read("in-place.txt");
    assert_eq!(read("in-place-code.txt").trim(), "0", "{in_place}");
    assert!(
        in_place.contains("staging 1.2.0 in place")
            && in_place.contains("1.0.0 in the idle bank (the rollback target) is removed first"),
        "{in_place}"
    );
    assert!(!read("root-after.txt").contains(".staging"));
    let s: Value = serde_json::from_str(&read("status.json")).expect("json");
    assert_eq!(s["active_version"], "1.2.0");
    assert_eq!(s["previous_version"], "1.1.0");
    assert!(read("rollback.txt").contains("rolled back to 1.1.0"));
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn modes_are_explicit_under_umask_000() {
    assert_modes_under_umask("000");
}

/// A umask that narrows the archive's modes: extraction creates each file with its
/// mode and must set it again where the umask took bits away (issue 14's speed-up
/// skips that `fchmod` only when the umask leaves the mode whole).
#[test]
fn modes_are_explicit_under_umask_077() {
    assert_modes_under_umask("077");
}

/// Installs a release with `init` under `umask` and checks every mode it made.
fn assert_modes_under_umask(umask: &str) {
    let w = World::new();
    let data = w.path("data");
    let root = w.path("root");
    let payload = w.payload("1.0.0", 1, 10);
    fs::set_permissions(payload.join("VERSION"), fs::Permissions::from_mode(0o666)).expect("chmod");
    w.publish(&data, &payload, "1.0.0", &[]);
    let out = Command::new("sh")
        .args(["-c", &format!("umask {umask}; exec \"$@\""), "sh"])
        .arg(env!("CARGO_BIN_EXE_bankswap"))
        .args(["init", "--root", &root.display().to_string()])
        .args(["--bundle", &data.display().to_string()])
        .args(["--trust", &w.public("release")])
        .output()
        .expect("init runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (rel, want) in [
        ("", 0o755),
        ("lock", 0o600),
        ("state.json", 0o600),
        ("Bank1", 0o755),
        ("Bank2", 0o755),
        ("Bank1/.bankswap-record.json", 0o600),
        ("Bank1/bin", 0o755),
        ("Bank1/bin/app", 0o755),
        ("Bank1/data", 0o755),
        // Published 0666: a bank is writable by the agent alone.
        ("Bank1/VERSION", 0o644),
    ] {
        assert_eq!(mode(&root.join(rel)), want, "{rel} under umask {umask}");
    }
}

/// Every name and the bytes of every file below `dir`, to prove nothing was written.
fn listing(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            let name = path
                .strip_prefix(dir)
                .expect("inside")
                .display()
                .to_string();
            if path.is_dir() {
                pending.push(path);
                out.push((name, None));
            } else {
                out.push((name, fs::read(&path).ok()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn status_on_an_uninitialised_root_creates_nothing() {
    let w = World::new();
    let root = w.path("empty-root");
    fs::create_dir(&root).expect("mkdir");
    let out = run(["status", "--root", &root.display().to_string(), "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(listing(&root), vec![], "status created something");
}

#[test]
fn status_on_a_locked_root_without_state_takes_no_lock_and_writes_nothing() {
    let s = setup();
    fs::remove_file(s.root.join("state.json")).expect("remove state.json");
    // Another holder has the lock (a `run` starting), for as long as this test needs:
    // this test process itself, through its own open file (flock locks conflict
    // between open files, whatever the process).
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(s.root.join("lock"))
        .expect("open lock");
    lock.try_lock().expect("the lock is free before");
    let before = listing(&s.root);
    let out = run(["status", "--root", &s.root.display().to_string(), "--json"]);
    // And it is still ours: status did not take or break it.
    let again = fs::File::open(s.root.join("lock")).expect("open lock");
    assert!(again.try_lock().is_err(), "the lock was released");
    drop(lock);
    assert_eq!(out.code, 0, "status must not need the lock: {}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("json");
    // Derived from the records: the newest sequence is active.
    assert_eq!(v["active_version"], "1.1.0");
    assert_eq!(listing(&s.root), before, "status wrote into the root");
}

#[test]
fn published_artifacts_are_0644_under_umask_000() {
    let w = World::new();
    let data = w.path("data");
    let payload = w.payload("1.0.0", 1, 10);
    let out = Command::new("sh")
        .args(["-c", "umask 000; exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_bankswap"))
        .args(["publish", "--key", &w.secret("release")])
        .args(["--payload", &payload.display().to_string()])
        .args(["--version", "1.0.0", "--entrypoint", "bin/app"])
        .args(["--to", &data.display().to_string()])
        .output()
        .expect("publish runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let artifacts: Vec<PathBuf> = fs::read_dir(data.join("v1/artifacts"))
        .expect("artifacts")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(artifacts.len(), 1, "no temp file left: {artifacts:?}");
    assert_eq!(mode(&artifacts[0]), 0o644);
}

/// A live agent whose root is on a tmpfs of `size` in its own user and mount
/// namespace (as [`on_small_tmpfs`]): two runs of `bankswap run --config CONFIG`
/// one after the other (the test edits the config, then stops the first), their
/// pids in `OUT/pid1`, `OUT/pid2`. The test reaches the root from outside
/// through `/proc/PID/root`. Dropping it stops both runs.
struct AgentOnTmpfs {
    /// The `sh` that mounted the tmpfs and runs the agents.
    shell: std::process::Child,
    /// Where the pids and the log are.
    out: PathBuf,
    /// The root's path inside the namespace.
    root_inside: PathBuf,
}

impl AgentOnTmpfs {
    fn start(w: &World, size: &str, config: &Path) -> AgentOnTmpfs {
        let mnt = w.path("agent-mnt");
        let out = w.path("agent-out");
        fs::create_dir_all(&mnt).expect("mnt");
        fs::create_dir_all(&out).expect("out");
        let script = format!(
            r#"set -e
mount -t tmpfs -o size={size} tmpfs "{mnt}"
for run in 1 2; do
  BANKSWAP_LOG=info "{bin}" run --config "{config}" 2>> "{out}/agent.log" &
  echo $! > "{out}/pid$run"
  wait $! || true
done
"#,
            mnt = mnt.display(),
            bin = env!("CARGO_BIN_EXE_bankswap"),
            config = config.display(),
            out = out.display(),
        );
        let shell = Command::new("unshare")
            .args(["-Urm", "sh", "-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .expect("unshare runs");
        AgentOnTmpfs {
            shell,
            out,
            root_inside: mnt.join("root"),
        }
    }

    /// The pid of run `n` once it started.
    fn pid(&self, n: u32) -> i32 {
        let file = self.out.join(format!("pid{n}"));
        wait::until(CONDITION_DEADLINE, || {
            fs::read_to_string(&file).ok()?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("agent run {n} did not start: {}", self.log()))
    }

    /// The root as seen from outside the namespace, through agent run `n`.
    fn root(&self, n: u32) -> PathBuf {
        let inside = self.root_inside.strip_prefix("/").expect("absolute");
        Path::new(&format!("/proc/{}/root", self.pid(n))).join(inside)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.out.join("agent.log")).unwrap_or_default()
    }

    /// `status --json` of run `n` (Null while it does not answer).
    fn status(&self, n: u32) -> Value {
        let out = run([
            "status",
            "--root",
            &self.root(n).display().to_string(),
            "--json",
        ]);
        serde_json::from_str(&out.stdout).unwrap_or(Value::Null)
    }

    /// Waits until run `n`'s status satisfies `done`.
    fn wait_status(&self, n: u32, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait::until(CONDITION_DEADLINE, || {
            let s = self.status(n);
            done(&s).then_some(s)
        })
        .unwrap_or_else(|| {
            panic!(
                "timed out waiting for {what}: {}\n{}",
                self.status(n),
                self.log()
            )
        })
    }

    /// SIGTERM to run `n`, if it started.
    fn stop(&self, n: u32) {
        if let Some(pid) = fs::read_to_string(self.out.join(format!("pid{n}")))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) of an agent this test started (its pid from its shell).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

impl Drop for AgentOnTmpfs {
    fn drop(&mut self) {
        self.stop(1);
        self.stop(2);
        if wait::exit_of(&mut self.shell, CONDITION_DEADLINE).is_none() {
            let _ = self.shell.kill();
            let _ = self.shell.wait();
        }
    }
}

/// The agent's side of [`in_place_staging_only_when_allowed`]: on a 12 MiB tmpfs
/// holding 1.0.0 and 1.1.0 (4 MiB each), an agent refuses to stage 1.2.0 over
/// the rollback target and says why in `status`; restarted with `[update]
/// allow_in_place = true`, it logs that the rollback target goes, then installs.
#[test]
fn the_agent_stages_in_place_only_when_allowed() {
    const MIB: usize = 1024 * 1024;
    let live = Live::new();
    let publish = |version: &str| {
        let payload = live.w.payload(version, 4, MIB);
        live.w.publish(&live.data, &payload, version, &[]);
    };
    publish("1.0.0");
    let config = live.w.path("agent.toml");
    let write_config = |allow: bool| {
        let text = format!(
            "console = \"{console}\"\nroot = \"{root}\"\ntrusted_keys = [\"{key}\"]\npoll_interval = \"1s\"\nmax_delay = \"0s\"\n[health]\ngrace = \"1s\"\n[tls]\nca_certs = [\"{ca}\"]\n[update]\nallow_in_place = {allow}\n",
            console = live.console.url,
            root = live.w.path("agent-mnt/root").display(),
            key = live.w.public("release"),
            ca = live.ca.ca_pem.display(),
        );
        fs::write(&config, text).expect("config");
    };
    write_config(false);
    let agent = AgentOnTmpfs::start(&live.w, "12m", &config);
    let committed =
        |v: &'static str| move |s: &Value| s["active_version"] == v && s["phase"] == "committed";
    agent.wait_status(1, "1.0.0 committed", committed("1.0.0"));
    publish("1.1.0");
    agent.wait_status(1, "1.1.0 committed", committed("1.1.0"));
    publish("1.2.0");
    let refused = agent.wait_status(1, "the in-place refusal in status", |s| {
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("only in place"))
    });
    assert_eq!(refused["last_error_kind"], "staging", "{refused}");
    assert!(
        refused["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("allow_in_place"),
        "{refused}"
    );
    assert_eq!(refused["active_version"], "1.1.0");
    assert_eq!(
        refused["previous_version"], "1.0.0",
        "the rollback target stays"
    );
    assert!(agent.log().contains("only in place"), "{}", agent.log());

    write_config(true);
    agent.stop(1);
    agent.wait_status(2, "1.2.0 committed", committed("1.2.0"));
    let s = agent.status(2);
    assert_eq!(s["previous_version"], "1.1.0", "{s}");
    assert!(
        agent
            .log()
            .contains("1.0.0 in the idle bank (the rollback target) is removed first"),
        "{}",
        agent.log()
    );
}
