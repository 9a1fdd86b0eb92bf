//! Delta staging: a release built from the running bank plus the objects that
//! changed is byte-identical to the full install; every hostile object or
//! index fails with a typed error and leaves both banks and `state.json`
//! untouched.

use std::collections::HashMap;
use std::io::{self, Read};

use bank_layout::{
    ArchiveFormat, BankId, INDEX_SCHEMA, Index, IndexEntry, LayoutError, ObjectSource, Root,
};
use sha2::{Digest, Sha256};

use crate::support::{Artifact, Payload, Untouched, fresh, snapshot};

/// A release tree: the files (path, bytes, mode) below `bin/` and `etc/`.
struct Tree {
    /// Regular files.
    files: Vec<(&'static str, Vec<u8>, u32)>,
}

impl Tree {
    fn v1() -> Tree {
        Tree {
            files: vec![
                ("bin/app", b"#!/bin/sh\necho 1\n".to_vec(), 0o755),
                ("etc/a.conf", b"a = 1\n".to_vec(), 0o644),
                ("etc/b.conf", vec![7u8; 100_000], 0o644),
                ("etc/same.conf", b"twice\n".to_vec(), 0o600),
            ],
        }
    }

    /// v1 with `bin/app` changed and a new file holding bytes v1 already has.
    fn v2() -> Tree {
        let mut tree = Tree::v1();
        tree.files[0].1 = b"#!/bin/sh\necho 2\n".to_vec();
        tree.files.push(("etc/c.conf", vec![7u8; 100_000], 0o644));
        tree.files.push(("etc/new.conf", b"new\n".to_vec(), 0o644));
        tree
    }

    fn payload(&self) -> Payload {
        let mut p = Payload::new().dir("bin/", 0o755).dir("etc/", 0o750);
        for (path, data, mode) in &self.files {
            p = p.file(path, data, *mode);
        }
        p.symlink("app", "bin/app")
    }

    /// The index `publish` would write, and the objects by digest.
    fn index(&self) -> (Index, HashMap<String, Vec<u8>>) {
        let mut entries = vec![
            IndexEntry::Symlink {
                path: "app".into(),
                target: "bin/app".into(),
            },
            IndexEntry::Dir {
                path: "bin".into(),
                mode: 0o755,
            },
            IndexEntry::Dir {
                path: "etc".into(),
                mode: 0o750,
            },
        ];
        let mut objects = HashMap::new();
        for (path, data, mode) in &self.files {
            let sha256 = hex::encode(Sha256::digest(data));
            let object = zstd::encode_all(&data[..], 3).unwrap();
            entries.push(IndexEntry::File {
                path: (*path).into(),
                mode: *mode,
                size: data.len() as u64,
                sha256: sha256.clone(),
                packed: object.len() as u64,
            });
            objects.insert(sha256, object);
        }
        (
            Index {
                schema: INDEX_SCHEMA,
                entries,
            },
            objects,
        )
    }
}

/// Objects from memory, counting what was asked; `edit` may change one on the way.
struct Objects {
    objects: HashMap<String, Vec<u8>>,
    asked: Vec<String>,
}

/// [`Objects`] that never say they are ready: staging copies everything first.
struct Slow(Objects);

impl ObjectSource for Slow {
    fn object(&mut self, sha256: &str, packed: u64) -> io::Result<Box<dyn Read + '_>> {
        self.0.object(sha256, packed)
    }

    fn ready(&mut self) -> bool {
        false
    }
}

impl ObjectSource for Objects {
    fn object(&mut self, sha256: &str, _packed: u64) -> io::Result<Box<dyn Read + '_>> {
        self.asked.push(sha256.to_owned());
        match self.objects.get(sha256) {
            Some(bytes) => Ok(Box::new(&bytes[..])),
            None => Err(io::Error::other("404 Not Found")),
        }
    }
}

/// A root running `tree` (full install, with the index's digests recorded) in Bank1.
fn running(tree: &Tree) -> (tempfile::TempDir, Root) {
    let (dir, mut root) = fresh();
    let artifact = Artifact::new(tree.payload(), ArchiveFormat::TarZst);
    let mut spec = artifact.spec("1.0.0", 1);
    spec.record.files = Some(tree.index().0.digests());
    assert_eq!(
        root.stage(&artifact.bytes[..], spec, &mut |_| {}).unwrap(),
        BankId::Bank1
    );
    root.activate(BankId::Bank1, 10).unwrap();
    root.commit().unwrap();
    (dir, root)
}

fn stage_delta(
    root: &mut Root,
    index: &Index,
    objects: &mut Objects,
) -> Result<BankId, LayoutError> {
    let artifact = Artifact::new(Tree::v2().payload(), ArchiveFormat::TarZst);
    let spec = artifact.spec("2.0.0", 2);
    root.stage_delta(index, spec, objects, &mut |_| {})
}

#[test]
fn a_delta_fetches_only_changed_objects_and_equals_the_full_install() {
    let (_dir, mut root) = running(&Tree::v1());
    let (index, all) = Tree::v2().index();
    let plan = root.delta_plan(&index).unwrap();
    // bin/app and etc/new.conf; etc/c.conf has the bytes of etc/b.conf.
    assert_eq!(plan.fetch.len(), 2);
    assert_eq!(plan.reused_files, 4);
    let mut objects = Objects {
        objects: all,
        asked: Vec::new(),
    };
    let bank = stage_delta(&mut root, &index, &mut objects).unwrap();
    assert_eq!(bank, BankId::Bank2);
    assert_eq!(objects.asked.len(), 2);
    let record = root.bank_record(bank).unwrap();
    assert_eq!(record.version, "2.0.0");
    // The digests are on disk, for the next delta; not in memory.
    assert_eq!(record.files, None);
    let on_disk: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.bank_dir(bank).join(bank_layout::RECORD_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk["files"].as_array().unwrap().len(), 6);

    // The same release installed in full, in another root: the same tree.
    let (_full_dir, mut full) = fresh();
    let artifact = Artifact::new(Tree::v2().payload(), ArchiveFormat::TarZst);
    full.stage(&artifact.bytes[..], artifact.spec("2.0.0", 2), &mut |_| {})
        .unwrap();
    let mut delta_tree = snapshot(&root.bank_dir(bank));
    let mut full_tree = snapshot(&full.bank_dir(BankId::Bank1));
    delta_tree.remove(std::path::Path::new(bank_layout::RECORD_FILE));
    full_tree.remove(std::path::Path::new(bank_layout::RECORD_FILE));
    assert_eq!(delta_tree, full_tree);
}

#[test]
fn objects_that_come_late_are_written_after_the_copies() {
    let (_dir, mut root) = running(&Tree::v1());
    let (index, all) = Tree::v2().index();
    let mut objects = Slow(Objects {
        objects: all,
        asked: Vec::new(),
    });
    let artifact = Artifact::new(Tree::v2().payload(), ArchiveFormat::TarZst);
    let bank = root
        .stage_delta(&index, artifact.spec("2.0.0", 2), &mut objects, &mut |_| {})
        .unwrap();
    assert_eq!(objects.0.asked.len(), 2);
    let (_full_dir, mut full) = fresh();
    full.stage(&artifact.bytes[..], artifact.spec("2.0.0", 2), &mut |_| {})
        .unwrap();
    let mut delta_tree = snapshot(&root.bank_dir(bank));
    let mut full_tree = snapshot(&full.bank_dir(BankId::Bank1));
    delta_tree.remove(std::path::Path::new(bank_layout::RECORD_FILE));
    full_tree.remove(std::path::Path::new(bank_layout::RECORD_FILE));
    assert_eq!(delta_tree, full_tree);
}

#[test]
fn no_delta_without_per_file_digests() {
    let (_dir, root) = crate::support::running();
    let (index, _) = Tree::v2().index();
    assert_eq!(root.delta_plan(&index), None);
}

/// Runs a delta staging with `objects` changed by `edit`, checks that it
/// failed leaving everything untouched, and returns the error.
fn refused(edit: impl FnOnce(&mut HashMap<String, Vec<u8>>, &Index)) -> LayoutError {
    let (_dir, mut root) = running(&Tree::v1());
    let before = Untouched::record(&root);
    let (index, mut all) = Tree::v2().index();
    edit(&mut all, &index);
    let mut objects = Objects {
        objects: all,
        asked: Vec::new(),
    };
    let error = stage_delta(&mut root, &index, &mut objects).unwrap_err();
    before.check(&root);
    error
}

/// The digest of v2's `bin/app` (a fetched object).
fn app_digest(index: &Index) -> String {
    index
        .files()
        .find(|(path, ..)| *path == "bin/app")
        .map(|(_, _, sha, _)| sha.to_owned())
        .unwrap()
}

#[test]
fn an_object_with_other_bytes_is_refused() {
    let error = refused(|all, index| {
        let other = zstd::encode_all(&b"#!/bin/sh\necho 3\n"[..], 3).unwrap();
        all.insert(app_digest(index), other);
    });
    assert!(
        matches!(&error, LayoutError::ObjectMismatch { path, reason } if path == "bin/app" && reason.contains("sha256 mismatch")),
        "{error}"
    );
}

#[test]
fn an_object_longer_than_announced_is_refused() {
    let error = refused(|all, index| {
        all.get_mut(&app_digest(index))
            .unwrap()
            .extend_from_slice(&[0; 64]);
    });
    assert!(
        matches!(error, LayoutError::ObjectTooLarge { .. }),
        "{error}"
    );
}

#[test]
fn a_missing_object_is_refused() {
    let error = refused(|all, index| {
        all.remove(&app_digest(index));
    });
    assert!(
        matches!(&error, LayoutError::ObjectSource { source, .. } if source.to_string().contains("404")),
        "{error}"
    );
}

#[test]
fn an_object_that_is_not_zstd_is_refused() {
    let error = refused(|all, index| {
        let packed = all[&app_digest(index)].len();
        all.insert(app_digest(index), vec![b'x'; packed]);
    });
    assert!(
        matches!(error, LayoutError::ObjectMismatch { .. }),
        "{error}"
    );
}

#[test]
fn a_running_file_changed_by_hand_is_refused() {
    let (_dir, mut root) = running(&Tree::v1());
    std::fs::write(root.bank_dir(BankId::Bank1).join("etc/a.conf"), "a = 9\n").unwrap();
    let before = Untouched::record(&root);
    let (index, all) = Tree::v2().index();
    let mut objects = Objects {
        objects: all,
        asked: Vec::new(),
    };
    let error = stage_delta(&mut root, &index, &mut objects).unwrap_err();
    before.check(&root);
    assert!(
        matches!(&error, LayoutError::ActiveFileChanged { path } if path == "etc/a.conf"),
        "{error}"
    );
}

#[test]
fn a_link_out_of_the_bank_is_refused_after_building() {
    let (_dir, mut root) = running(&Tree::v1());
    let before = Untouched::record(&root);
    let (mut index, all) = Tree::v2().index();
    index.entries[0] = IndexEntry::Symlink {
        path: "app".into(),
        target: "../../etc/passwd".into(),
    };
    let mut objects = Objects {
        objects: all,
        asked: Vec::new(),
    };
    let error = stage_delta(&mut root, &index, &mut objects).unwrap_err();
    before.check(&root);
    assert!(matches!(error, LayoutError::PathEscape { .. }), "{error}");
}

#[test]
fn unsafe_indexes_are_refused_before_anything_is_built() {
    for (edit, needle) in [
        ("../x", "escapes"),
        ("/etc/x", "escapes"),
        ("etc/../../x", "escapes"),
        ("etc/a.conf", "listed twice"),
    ] {
        let (mut index, _) = Tree::v2().index();
        index.entries.push(IndexEntry::File {
            path: edit.into(),
            mode: 0o644,
            size: 1,
            sha256: "ab".repeat(32),
            packed: 1,
        });
        let error = Index::from_json(&index.to_json()).unwrap_err();
        assert!(
            matches!(&error, LayoutError::BadIndex { reason } if reason.contains(needle)),
            "{edit}: {error}"
        );
        // And a built-in-code index meets the same gate when staged.
        let (_dir, mut root) = running(&Tree::v1());
        let before = Untouched::record(&root);
        let mut objects = Objects {
            objects: HashMap::new(),
            asked: Vec::new(),
        };
        let error = stage_delta(&mut root, &index, &mut objects).unwrap_err();
        before.check(&root);
        assert!(matches!(error, LayoutError::BadIndex { .. }), "{error}");
    }
}
