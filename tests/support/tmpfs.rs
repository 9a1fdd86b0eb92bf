//! A small tmpfs in a user and mount namespace (`unshare -Urm`): a file system
//! that really runs out of space, for tests without root.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::World;

/// Runs the shell `body` in a new user and mount namespace (`unshare -Urm`, as
/// tests/hostile.rs does) on a tmpfs of `size` (e.g. `3m`): a file system that
/// really runs out of space, without root. The script sees `$B` (the binary), `$R`
/// (a root on the tmpfs), `$K` (the trusted key), `$O` (an output folder outside
/// it), each `(name, path)` of `vars`, and `list` (the sha256 of every bank file and
/// of state.json). Returns a reader of the files the script wrote into `$O`.
pub fn on_small_tmpfs(
    w: &World,
    size: &str,
    vars: &[(&str, &Path)],
    body: &str,
) -> impl Fn(&str) -> String + use<> {
    let mnt = w.path("mnt");
    let out_dir = w.path("out");
    fs::create_dir_all(&mnt).expect("mnt");
    fs::create_dir_all(&out_dir).expect("out");
    let mut script = format!(
        r#"set -e
mount -t tmpfs -o size={size} tmpfs "{mnt}"
B="{bin}"; R="{mnt}/root"; O="{out}"; K="{key}"
list() {{ (cd "$R" && find Bank1 Bank2 -type f | sort | xargs sha256sum; sha256sum state.json); }}
"#,
        mnt = mnt.display(),
        bin = env!("CARGO_BIN_EXE_bankswap"),
        out = out_dir.display(),
        key = w.public("release"),
    );
    for (name, path) in vars {
        script.push_str(&format!("{name}=\"{}\"\n", path.display()));
    }
    script.push_str(body);
    let result = Command::new("unshare")
        .args(["-Urm", "sh", "-c", &script])
        .output()
        .expect("unshare runs");
    assert!(
        result.status.success(),
        "the small-disk tests need user namespaces (unshare -Urm): {}",
        String::from_utf8_lossy(&result.stderr)
    );
    move |name: &str| {
        fs::read_to_string(out_dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}
