//! Hostile archives (SPEC §4): every way out of the bank is refused, in every format,
//! and the refusal leaves the active bank and `state.json` untouched, the idle bank empty.

use std::fs;

use bank_layout::{ArchiveFormat, LayoutError};
use tar::EntryType;

use crate::support::{FORMATS, Payload, app, refused};

/// Asserts `payload` is refused as a path escape whose reason contains `why`.
fn escapes(payload: impl Fn() -> Payload, entry: &str, why: &str) {
    for format in FORMATS {
        let error = refused(payload(), format);
        match &error {
            LayoutError::PathEscape { entry: e, reason } => {
                assert_eq!(e, entry, "{format}");
                assert!(reason.contains(why), "{format}: {error}");
            }
            other => panic!("{format}: expected PathEscape, got {other:?}"),
        }
        let text = error.to_string();
        assert!(text.contains(entry) && !text.contains('\n'), "{text}");
    }
}

#[test]
fn absolute_paths() {
    escapes(
        || app("x").file("/etc/evil", b"x", 0o644),
        "/etc/evil",
        "absolute path",
    );
    escapes(|| Payload::new().dir("/", 0o755), "/", "absolute path");
}

#[test]
fn parent_directory_components() {
    escapes(
        || app("x").file("../evil", b"x", 0o644),
        "../evil",
        "parent directory",
    );
    escapes(
        || app("x").file("a/../../evil", b"x", 0o644),
        "a/../../evil",
        "parent directory",
    );
    escapes(|| Payload::new().dir("..", 0o755), "..", "parent directory");
    // Long names go through the same rules.
    let long_evil = format!("{}/../../../evil", "d".repeat(120));
    escapes(
        || app("x").gnu_long_raw(&long_evil, b"x"),
        &long_evil,
        "parent directory",
    );
    escapes(
        || app("x").pax_file("../pax-evil", b"x"),
        "../pax-evil",
        "parent directory",
    );
    escapes(
        || app("x").pax_file("/pax-abs", b"x"),
        "/pax-abs",
        "absolute path",
    );
    let shown = "../etc/passwd";
    let text = refused(app("x").file(shown, b"x", 0o644), ArchiveFormat::Tar).to_string();
    assert_eq!(
        text,
        "archive entry `../etc/passwd` escapes the bank: parent directory component"
    );
}

#[test]
fn empty_names_and_the_bank_itself() {
    escapes(|| Payload::new().file("", b"x", 0o644), "", "empty path");
    escapes(
        || Payload::new().file("./", b"x", 0o644),
        "./",
        "bank folder itself",
    );
}

#[test]
fn the_record_name_is_reserved() {
    escapes(
        || app("x").file(".bankswap-record.json", b"{}", 0o644),
        ".bankswap-record.json",
        "reserved",
    );
    escapes(
        || app("x").file("./.bankswap-record.json", b"{}", 0o644),
        "./.bankswap-record.json",
        "reserved",
    );
    escapes(
        || app("x").symlink(".bankswap-record.json", "bin/app"),
        ".bankswap-record.json",
        "reserved",
    );
}

#[test]
fn symlink_to_an_absolute_path() {
    escapes(
        || app("x").symlink("etc-link", "/etc"),
        "etc-link",
        "absolute path",
    );
    escapes(
        || app("x").symlink("bin/sh", "/bin/sh"),
        "bin/sh",
        "absolute path",
    );
}

#[test]
fn symlink_upwards() {
    escapes(
        || app("x").symlink("bin/up", "../.."),
        "bin/up",
        "above the bank",
    );
    escapes(
        || app("x").symlink("up", "../Bank1/bin/app"),
        "up",
        "above the bank",
    );
}

#[test]
fn symlink_chain_through_a_dot_link() {
    escapes(
        || app("x").symlink("s", ".").symlink("t", "s/.."),
        "t",
        "above the bank",
    );
    // Order does not matter: links are checked once all exist.
    escapes(
        || app("x").symlink("t", "s/../x").symlink("s", "."),
        "t",
        "above the bank",
    );
}

#[test]
fn symlink_cycles_are_refused() {
    escapes(
        || app("x").symlink("a", "b").symlink("b", "a"),
        "a",
        "levels of links",
    );
}

#[test]
fn nothing_is_written_through_a_symlink() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_owned();
    for format in FORMATS {
        let payload = app("x")
            .symlink("d", &target)
            .file("d/planted", b"x", 0o644);
        let error = refused(payload, format);
        assert!(
            matches!(error, LayoutError::Archive { .. }),
            "{format}: {error}"
        );
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0, "{format}");
        let payload = app("x").symlink("d", &target).symlink("d/planted", "x");
        let error = refused(payload, format);
        assert!(
            matches!(error, LayoutError::Archive { .. }),
            "{format}: {error}"
        );
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0, "{format}");
    }
}

#[test]
fn hard_links_outside_or_to_nothing() {
    escapes(
        || app("x").hard_link("pw", "/etc/passwd"),
        "pw",
        "absolute path",
    );
    escapes(
        || app("x").hard_link("pw", "../../etc/passwd"),
        "pw",
        "parent directory",
    );
    for format in FORMATS {
        let error = refused(
            app("x")
                .hard_link("early", "bin/later")
                .file("bin/later", b"", 0o644),
            format,
        );
        assert!(
            matches!(error, LayoutError::Archive { ref reason } if reason.contains("early")),
            "{error}"
        );
        let error = refused(app("x").dir("d/", 0o755).hard_link("to-dir", "d"), format);
        assert!(matches!(error, LayoutError::Archive { .. }), "{error}");
        let error = refused(
            app("x")
                .symlink("s", "bin/app")
                .hard_link("via-symlink", "s"),
            format,
        );
        assert!(matches!(error, LayoutError::Archive { .. }), "{error}");
    }
}

/// Asserts `payload` is refused as an unsupported entry of `kind`.
fn unsupported(payload: impl Fn() -> Payload, kind: &str) {
    for format in FORMATS {
        let error = refused(payload(), format);
        assert!(
            matches!(&error, LayoutError::UnsupportedEntry { kind: k, .. } if k == kind),
            "{format}: {error:?}"
        );
    }
}

#[test]
fn devices_and_fifos() {
    unsupported(
        || app("x").raw(b"fifo", EntryType::Fifo, 0o644, b"", b""),
        "fifo",
    );
    unsupported(
        || app("x").raw(b"null", EntryType::Char, 0o666, b"", b""),
        "character device",
    );
    unsupported(
        || app("x").raw(b"sda", EntryType::Block, 0o660, b"", b""),
        "block device",
    );
    unsupported(
        || app("x").raw(b"vol", EntryType::new(b'V'), 0o644, b"", b""),
        "tar entry of type `V`",
    );
}

#[test]
fn a_path_listed_as_two_kinds() {
    for format in FORMATS {
        for payload in [
            app("x").file("p", b"x", 0o644).dir("p/", 0o755),
            app("x").dir("p/", 0o755).file("p", b"x", 0o644),
            app("x").file("p", b"x", 0o644).file("p/q", b"x", 0o644),
            app("x").dir("p/", 0o755).symlink("p", "bin"),
            app("x").dir("p/", 0o755).hard_link("p", "bin/app"),
        ] {
            let error = refused(payload, format);
            assert!(
                matches!(error, LayoutError::Archive { .. }),
                "{format}: {error:?}"
            );
        }
    }
}
