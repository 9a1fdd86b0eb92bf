//! Shared test fixtures: a world with keys, payloads, bundles and roots, and
//! helpers that run the real binary and snapshot a root.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// The binary under test.
pub fn bankswap() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bankswap"));
    cmd.env_remove("BANKSWAP_LOG");
    cmd
}

/// What one run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs the binary with `args`.
pub fn run<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    bankswap()
        .args(args)
        .output()
        .expect("bankswap runs")
        .into()
}

/// Runs the binary and asserts exit code 0.
pub fn run_ok<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = run(args);
    assert_eq!(
        out.code, 0,
        "expected success:\nstdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    out
}

/// Asserts a failure with exit code 1 and a one-line `error:` naming `needle`.
pub fn assert_fails_with(out: &Run, needle: &str) {
    assert_eq!(
        out.code, 1,
        "expected exit 1:\nstdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let first = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| {
            panic!("no `error:` line on stderr: {}", out.stderr);
        });
    assert!(
        first.to_lowercase().contains(&needle.to_lowercase()),
        "error line `{first}` does not mention `{needle}`"
    );
}

/// A temporary world: a key pair and folders for payloads, bundles and roots.
pub struct World {
    /// Everything lives here and goes away with the test.
    pub dir: TempDir,
}

impl World {
    /// A world with a fresh key pair at `keys/release.{key,pub}`.
    pub fn new() -> World {
        let world = World {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        fs::create_dir_all(world.path("keys")).expect("keys dir");
        run_ok(
            ["keygen", "--out"]
                .map(String::from)
                .into_iter()
                .chain([world.keys("release")]),
        );
        world
    }

    /// A path inside the world.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn keys(&self, name: &str) -> String {
        self.path(&format!("keys/{name}")).display().to_string()
    }

    /// The secret key file of key pair `name`.
    pub fn secret(&self, name: &str) -> String {
        format!("{}.key", self.keys(name))
    }

    /// The public key file of key pair `name`.
    pub fn public(&self, name: &str) -> String {
        format!("{}.pub", self.keys(name))
    }

    /// Signs `file` with key pair `key` (writes `file.minisig`), as `bankswap sign` does.
    pub fn sign(&self, key: &str, file: &Path) {
        run_ok([
            "sign".to_string(),
            "--key".into(),
            self.secret(key),
            file.display().to_string(),
        ]);
    }

    /// Makes another key pair.
    pub fn keygen(&self, name: &str) {
        run_ok(["keygen".to_string(), "--out".into(), self.keys(name)]);
    }

    /// A payload folder for `version` whose entrypoint `bin/app` runs `script` (sh).
    pub fn script_payload(&self, version: &str, script: &str) -> PathBuf {
        let dir = self.path(&format!("payloads/{version}"));
        fs::create_dir_all(dir.join("bin")).expect("payload dir");
        fs::write(dir.join("bin/app"), format!("#!/bin/sh\n{script}\n")).expect("script");
        fs::set_permissions(dir.join("bin/app"), fs::Permissions::from_mode(0o755)).expect("chmod");
        dir
    }

    /// A payload folder for `version`: an entrypoint script and `files` data files of `size` bytes.
    pub fn payload(&self, version: &str, files: usize, size: usize) -> PathBuf {
        let dir = self.script_payload(
            version,
            &format!("echo \"hello from {version} in $BANKSWAP_BANK\"\nexec sleep 1000"),
        );
        fs::create_dir_all(dir.join("data")).expect("payload dir");
        fs::write(dir.join("VERSION"), format!("{version}\n")).expect("version file");
        for i in 0..files {
            let byte = (i as u8).wrapping_add(version.len() as u8);
            let content: Vec<u8> = (0..size)
                .map(|j| byte.wrapping_mul(31).wrapping_add(j as u8))
                .collect();
            fs::write(dir.join(format!("data/file-{i:04}.bin")), content).expect("data file");
        }
        dir
    }

    /// Publishes `payload` as `version` into the console data folder `data`.
    pub fn publish(&self, data: &Path, payload: &Path, version: &str, extra: &[&str]) -> Run {
        self.publish_with(data, payload, version, "bin/app --serve", extra)
    }

    /// Publishes with a given entrypoint.
    pub fn publish_with(
        &self,
        data: &Path,
        payload: &Path,
        version: &str,
        entrypoint: &str,
        extra: &[&str],
    ) -> Run {
        let mut args = vec![
            "publish".to_string(),
            "--key".into(),
            self.secret("release"),
            "--payload".into(),
            payload.display().to_string(),
            "--version".into(),
            version.into(),
            "--entrypoint".into(),
            entrypoint.into(),
            "--to".into(),
            data.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run_ok(args)
    }

    /// `init --root ROOT --bundle DATA --trust release.pub`.
    pub fn init(&self, root: &Path, bundle: &Path) -> Run {
        run_ok(self.with_trust([
            "init",
            "--root",
            &root.display().to_string(),
            "--bundle",
            &bundle.display().to_string(),
        ]))
    }

    /// `apply --root ROOT --bundle DATA --trust release.pub` (any outcome).
    pub fn apply(&self, root: &Path, bundle: &Path) -> Run {
        run(self.with_trust([
            "apply",
            "--root",
            &root.display().to_string(),
            "--bundle",
            &bundle.display().to_string(),
        ]))
    }

    fn with_trust<const N: usize>(&self, args: [&str; N]) -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(["--trust".to_string(), self.public("release")]);
        v
    }
}

/// Serves history entry `sequence` of `channel` as the current release again: a replay.
pub fn serve_history(data: &Path, channel: &str, sequence: u64) {
    let dir = data.join("v1/channels").join(channel);
    let entry = dir.join(format!("history/{sequence:010}.json"));
    fs::copy(&entry, dir.join("release.json")).expect("copy manifest");
    fs::copy(
        entry.with_extension("json.minisig"),
        dir.join("release.json.minisig"),
    )
    .expect("copy signature");
}

/// The mode bits of `path` (permissions, setuid/setgid/sticky; not the type).
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// `status --json` of a root, parsed.
pub fn status(root: &Path) -> serde_json::Value {
    let out = run_ok(["status", "--root", &root.display().to_string(), "--json"]);
    serde_json::from_str(&out.stdout).expect("status --json prints JSON")
}

/// Every file under `dir` (relative path → sha256), symlinks as their targets.
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.expect("dir entry");
        let path = entry.path();
        let rel = path
            .strip_prefix(base)
            .expect("inside")
            .display()
            .to_string();
        let meta = fs::symlink_metadata(&path).expect("metadata");
        if meta.file_type().is_symlink() {
            out.insert(
                rel,
                format!("-> {}", fs::read_link(&path).expect("link").display()),
            );
        } else if meta.is_dir() {
            out.insert(rel.clone() + "/", String::new());
            walk(base, &path, out);
        } else {
            out.insert(
                rel,
                hex::encode(Sha256::digest(fs::read(&path).expect("read"))),
            );
        }
    }
}

/// The payload files of a bank, without the bank record.
pub fn bank_files(root: &Path, bank: &str) -> BTreeMap<String, String> {
    let mut files = tree(&root.join(bank));
    files.remove(".bankswap-record.json");
    files
}

/// state.json and the active bank's files, to prove a failure changed nothing.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    state: Vec<u8>,
    active: String,
    files: BTreeMap<String, String>,
}

impl Snapshot {
    /// Takes the snapshot.
    pub fn of(root: &Path) -> Snapshot {
        let state = fs::read(root.join("state.json")).expect("state.json");
        let active = status(root)["active_bank"]
            .as_str()
            .expect("active_bank")
            .to_string();
        let files = tree(&root.join(&active));
        Snapshot {
            state,
            active,
            files,
        }
    }
}
pub mod campaign;
pub mod console;
pub mod https;
pub mod live;
pub mod proxy;
pub mod selfupdate;
pub mod tls;
pub mod tmpfs;
pub mod wait;

/// The signed manifest of the `stable` channel in the data folder `data`.
pub fn manifest_path(data: &Path) -> PathBuf {
    data.join("v1/channels/stable/release.json")
}

/// The manifest of the `stable` channel in `data`, parsed.
pub fn manifest(data: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(manifest_path(data)).expect("manifest")).expect("json")
}

/// The artifact file the manifest of `data` points at.
pub fn artifact_path(data: &Path) -> PathBuf {
    let rel = manifest(data)["artifact"]["path"]
        .as_str()
        .expect("path")
        .to_string();
    data.join("v1").join(rel)
}

impl World {
    /// Rewrites the manifest of `data` with `edit` and signs it with the trusted
    /// key: what a compromised pipeline could not do, so only the checks after
    /// the signature stand between it and the root.
    pub fn resign(&self, data: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = manifest_path(data);
        let mut m = manifest(data);
        edit(&mut m);
        fs::write(&path, serde_json::to_vec_pretty(&m).expect("json")).expect("write");
        self.sign("release", &path);
    }
}
