//! The Debian package (SPEC §12): built once from the binary under test with
//! `scripts/package.sh --no-build`, unpacked with `dpkg-deb -x`, and checked
//! path by path; its unit passes `systemd-analyze verify` and scores at most
//! 5.0 in `systemd-analyze security --offline=yes`; and it installs,
//! reinstalls, upgrades to a bumped version (repacked with `dpkg-deb`), removes
//! and purges in a scratch root with `dpkg --root`, as a non-root-capable user
//! would (`--force-not-root --force-script-chrootless`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tempfile::TempDir;

/// The highest `systemd-analyze security` exposure the unit may have (SPEC §12).
const MAX_EXPOSURE: f64 = 5.0;

/// The package, built once for every test here; `None` (with the reason printed)
/// only when cargo-deb is missing and cannot be installed.
struct Built {
    /// Holds the .deb and the unpacked tree.
    _dir: TempDir,
    /// The .deb file.
    deb: PathBuf,
    /// `dpkg-deb -x` of it.
    tree: PathBuf,
}

fn built() -> Option<&'static Built> {
    static BUILT: OnceLock<Option<Built>> = OnceLock::new();
    BUILT.get_or_init(build).as_ref()
}

fn build() -> Option<Built> {
    let has_cargo_deb = |()| {
        Command::new("cargo")
            .args(["deb", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has_cargo_deb(()) {
        let installed = Command::new("cargo")
            .args(["install", "--locked", "--quiet", "cargo-deb"])
            .status()
            .is_ok_and(|s| s.success());
        if !installed || !has_cargo_deb(()) {
            println!(
                "SKIPPED package tests: cargo-deb is not installed and `cargo install cargo-deb` failed"
            );
            return None;
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("deb");
    let binary = Path::new(env!("CARGO_BIN_EXE_bankswap"));
    // target/debug/bankswap: package the binary under test, not a release build.
    let target_dir = binary.parent().and_then(Path::parent).expect("target dir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(repo.join("scripts/package.sh"))
        .args(["--profile", "dev", "--no-build", "--output"])
        .arg(&out)
        .args(["--", "--fast", "--quiet"])
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .expect("package.sh runs");
    assert!(status.success(), "scripts/package.sh failed");
    let deb = fs::read_dir(&out)
        .expect("output dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    let tree = dir.path().join("tree");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tree)
        .status()
        .expect("dpkg-deb runs");
    assert!(status.success(), "dpkg-deb -x failed");
    Some(Built {
        _dir: dir,
        deb,
        tree,
    })
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn output(command: &mut Command) -> (bool, String) {
    let out = command.output().expect("command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn package_ships_every_path_with_its_mode_and_the_conffile() {
    let Some(built) = built() else { return };
    let t = &built.tree;
    let want = [
        ("usr/bin/bankswap", 0o755),
        ("lib/systemd/system/bankswap.service", 0o644),
        ("etc/bankswap/agent.toml.example", 0o644),
        ("usr/share/man/man1/bankswap.1.gz", 0o644),
        ("usr/share/man/man1/bankswap-run.1.gz", 0o644),
        ("usr/share/man/man1/bankswap-doctor.1.gz", 0o644),
        ("usr/share/bash-completion/completions/bankswap", 0o644),
        ("usr/share/zsh/vendor-completions/_bankswap", 0o644),
        ("usr/share/fish/vendor_completions.d/bankswap.fish", 0o644),
        ("usr/share/doc/bankswap/changelog.Debian.gz", 0o644),
        ("usr/share/doc/bankswap/copyright", 0o644),
    ];
    for (path, expected) in want {
        assert_eq!(mode(&t.join(path)), expected, "{path}");
    }
    // The hidden generator has no man page; every user command has one.
    let pages: Vec<String> = fs::read_dir(t.join("usr/share/man/man1"))
        .expect("man1")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!pages.iter().any(|p| p.contains("generate")), "{pages:?}");
    for command in [
        "init",
        "apply",
        "status",
        "rollback",
        "publish",
        "check",
        "console-serve",
    ] {
        assert!(
            pages.contains(&format!("bankswap-{command}.1.gz")),
            "no man page for {command}: {pages:?}"
        );
    }
    // The packaged binary is the one under test and runs.
    let (ok, version) = output(Command::new(t.join("usr/bin/bankswap")).arg("--version"));
    assert!(ok && version.contains("commit "), "{version}");

    let (ok, name) = output(
        Command::new("dpkg-deb")
            .arg("-f")
            .arg(&built.deb)
            .arg("Package"),
    );
    assert!(ok && name.trim() == "bankswap", "{name}");
    let control = tempfile::tempdir().expect("tempdir");
    let (ok, text) = output(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(&built.deb)
            .arg(control.path()),
    );
    assert!(ok, "{text}");
    let conffiles = fs::read_to_string(control.path().join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/bankswap/agent.toml.example");
    for script in ["postinst", "prerm", "postrm"] {
        assert_eq!(mode(&control.path().join(script)), 0o755, "{script}");
    }
}

#[test]
fn shipped_unit_verifies_and_scores_at_most_five() {
    let Some(built) = built() else { return };
    let unit =
        fs::read_to_string(built.tree.join("lib/systemd/system/bankswap.service")).expect("unit");
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=always",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/bankswap",
        "ExecStart=/usr/bin/bankswap run --config /etc/bankswap/agent.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(line), "the unit lacks {line}");
    }
    // verify checks that ExecStart is executable and that man:bankswap(1) exists:
    // point both at the unpacked package.
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = built.tree.join("usr/bin/bankswap");
    let local = dir.path().join("bankswap.service");
    fs::write(
        &local,
        unit.replace("/usr/bin/bankswap", &binary.display().to_string()),
    )
    .expect("unit copy");
    let (ok, text) = output(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(&local)
            .env("MANPATH", built.tree.join("usr/share/man")),
    );
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );

    let (_, text) = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(built.tree.join("lib/systemd/system/bankswap.service")),
    );
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for bankswap.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    println!("systemd-analyze security: {exposure}");
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} > {MAX_EXPOSURE}:\n{text}"
    );
}

/// The built package repacked as `version` (uncompressed: only dpkg reads it),
/// into `dir`: an upgrade without a second build.
fn bumped_version(built: &Built, dir: &Path, version: &str) -> PathBuf {
    let tree = dir.join("bumped");
    let (ok, text) = output(
        Command::new("dpkg-deb")
            .arg("-R")
            .arg(&built.deb)
            .arg(&tree),
    );
    assert!(ok, "dpkg-deb -R: {text}");
    let control = tree.join("DEBIAN/control");
    let text = fs::read_to_string(&control).expect("control");
    let old = text
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .expect("a Version field")
        .to_string();
    fs::write(
        &control,
        text.replace(&format!("Version: {old}"), &format!("Version: {version}")),
    )
    .expect("control");
    let deb = dir.join(format!("bankswap_{version}.deb"));
    let (ok, text) = output(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Znone", "-b"])
            .arg(&tree)
            .arg(&deb),
    );
    assert!(ok, "dpkg-deb -b: {text}");
    fs::remove_dir_all(&tree).expect("clean up");
    deb
}

/// `dpkg --root=R` with chrootless maintainer scripts (R has no shell of its own).
fn dpkg(root: &Path, args: &[&str], deb: Option<&Path>) -> String {
    let mut command = Command::new("dpkg");
    command
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            "--log=/dev/null",
        ])
        .args(args);
    if let Some(deb) = deb {
        command.arg(deb);
    }
    let (ok, text) = output(&mut command);
    assert!(ok, "dpkg {args:?}: {text}");
    text
}

#[test]
fn installs_upgrades_removes_and_purges_in_a_scratch_root_keeping_config_and_root() {
    let Some(built) = built() else { return };
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path();
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        fs::create_dir_all(root.join(dir)).expect("dpkg dirs");
    }
    fs::write(root.join("var/lib/dpkg/status"), "").expect("status");

    dpkg(root, &["--install"], Some(&built.deb));
    assert!(root.join("usr/bin/bankswap").is_file());
    assert_eq!(mode(&root.join("var/lib/bankswap")), 0o700, "the data root");
    assert_eq!(mode(&root.join("etc/bankswap")), 0o750);

    // An operator's config and an agent's data.
    let config = root.join("etc/bankswap/agent.toml");
    fs::write(&config, "console = \"https://console.example.com\"\n").expect("config");
    let data = root.join("var/lib/bankswap/state.json");
    fs::write(&data, "{}").expect("data");

    // The operator edits the shipped conffile too.
    let example = root.join("etc/bankswap/agent.toml.example");
    let edited = format!(
        "{}# edited by the operator\n",
        fs::read_to_string(&example).expect("example")
    );
    fs::write(&example, &edited).expect("edit the conffile");

    // Reinstall (the same version again runs the upgrade paths of the scripts).
    dpkg(root, &["--install"], Some(&built.deb));
    assert!(
        config.is_file() && data.is_file(),
        "the reinstall lost config or data"
    );

    // A real upgrade, to a bumped version: no prompt, the edited conffile,
    // the config and the root all stay.
    let bumped = bumped_version(built, scratch.path(), "99.0.0-1");
    dpkg(root, &["--install"], Some(&bumped));
    let status = fs::read_to_string(root.join("var/lib/dpkg/status")).expect("dpkg status");
    assert!(
        status.contains("Version: 99.0.0-1"),
        "not upgraded:\n{status}"
    );
    assert_eq!(
        fs::read_to_string(&example).expect("example"),
        edited,
        "the upgrade replaced the edited conffile"
    );
    assert!(
        config.is_file() && data.is_file(),
        "the upgrade lost config or data"
    );
    assert!(root.join("usr/bin/bankswap").is_file());

    dpkg(root, &["--remove", "bankswap"], None);
    assert!(
        !root.join("usr/bin/bankswap").exists(),
        "remove left the binary"
    );
    assert!(
        config.is_file() && data.is_file(),
        "remove lost config or data"
    );
    assert!(
        root.join("etc/bankswap/agent.toml.example").is_file(),
        "remove drops no conffile"
    );

    dpkg(root, &["--purge", "bankswap"], None);
    assert!(
        !root.join("var/lib/bankswap").exists(),
        "purge keeps the root"
    );
    assert!(!config.exists(), "purge keeps the config");
}
