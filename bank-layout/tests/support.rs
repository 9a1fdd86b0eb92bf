//! Test helpers: in-memory archives (hostile ones too, written header byte by byte),
//! compression in every format, roots with a committed release, and snapshots that
//! prove a failure left the active bank and `state.json` byte-for-byte unchanged.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bank_layout::{ArchiveFormat, BankId, BankRecord, LayoutError, RECORD_FILE, Root, StageSpec};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// Every artifact format.
pub const FORMATS: [ArchiveFormat; 3] = [
    ArchiveFormat::Tar,
    ArchiveFormat::TarGz,
    ArchiveFormat::TarZst,
];

/// A tar archive being built. Names are written into the header as raw bytes, so
/// hostile names (`..`, absolute) that `Header::set_path` refuses can be built too.
pub struct Payload {
    /// The archive so far.
    builder: tar::Builder<Vec<u8>>,
}

impl Payload {
    pub fn new() -> Payload {
        Payload {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    /// Any entry: raw name, type, mode, data, link target.
    pub fn raw(
        mut self,
        name: &[u8],
        kind: EntryType,
        mode: u32,
        data: &[u8],
        link: &[u8],
    ) -> Self {
        let mut header = Header::new_gnu();
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name = [0; 100];
        gnu.name[..name.len()].copy_from_slice(name);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(1_700_000_000);
        if !link.is_empty() {
            header.set_link_name_literal(link).unwrap();
        }
        if matches!(kind, EntryType::Char | EntryType::Block) {
            header.set_device_major(1).unwrap();
            header.set_device_minor(3).unwrap();
        }
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    pub fn file(self, name: &str, data: &[u8], mode: u32) -> Self {
        self.raw(name.as_bytes(), EntryType::Regular, mode, data, b"")
    }

    pub fn dir(self, name: &str, mode: u32) -> Self {
        self.raw(name.as_bytes(), EntryType::Directory, mode, b"", b"")
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.raw(
            name.as_bytes(),
            EntryType::Symlink,
            0o777,
            b"",
            target.as_bytes(),
        )
    }

    pub fn hard_link(self, name: &str, target: &str) -> Self {
        self.raw(
            name.as_bytes(),
            EntryType::Link,
            0o644,
            b"",
            target.as_bytes(),
        )
    }

    /// A file whose name needs a GNU long-name header (the tar crate writes one).
    pub fn long_file(mut self, name: &str, data: &[u8]) -> Self {
        let mut header = Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        self.builder.append_data(&mut header, name, data).unwrap();
        self
    }

    /// A file whose name is given by a GNU long-name (`L`) entry, written by hand so
    /// that hostile names can be built too.
    pub fn gnu_long_raw(self, name: &str, data: &[u8]) -> Self {
        let mut long = name.as_bytes().to_vec();
        long.push(0);
        self.raw(b"././@LongLink", EntryType::GNULongName, 0o644, &long, b"")
            .raw(b"truncated", EntryType::Regular, 0o644, data, b"")
    }

    /// A file whose name is given by a pax `path` record.
    pub fn pax_file(self, name: &str, data: &[u8]) -> Self {
        self.pax_file_with(&pax_record("path", name), data)
    }

    /// A file named `short-name` in its header, after a pax header holding `records`.
    pub fn pax_file_with(mut self, records: &[u8], data: &[u8]) -> Self {
        let mut pax = Header::new_ustar();
        pax.set_path("PaxHeader").unwrap();
        pax.set_entry_type(EntryType::XHeader);
        pax.set_size(records.len() as u64);
        pax.set_cksum();
        self.builder.append(&pax, records).unwrap();
        let mut header = Header::new_ustar();
        header.set_path("short-name").unwrap();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    /// A header of `kind` whose size field claims `size` bytes, and no data: what
    /// follows is whatever comes next (the end blocks, or the rest of a bomb).
    pub fn claim(mut self, name: &[u8], kind: EntryType, size: u64) -> Self {
        let mut header = Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(size);
        header.set_cksum();
        self.builder.append(&header, &[][..]).unwrap();
        self
    }

    pub fn tar(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// One pax record: `<len> <key>=<value>\n`, where len counts the whole record.
pub fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// Compresses a tar archive into `format`.
pub fn compress(tar: &[u8], format: ArchiveFormat) -> Vec<u8> {
    match format {
        ArchiveFormat::Tar => tar.to_vec(),
        ArchiveFormat::TarGz => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(tar).unwrap();
            encoder.finish().unwrap()
        }
        ArchiveFormat::TarZst => zstd::encode_all(tar, 3).unwrap(),
    }
}

/// An artifact as announced by a manifest.
pub struct Artifact {
    /// The artifact bytes as served.
    pub bytes: Vec<u8>,
    /// Their format.
    pub format: ArchiveFormat,
    /// Their SHA-256, lower-case hex, as a manifest would announce it.
    pub sha256: String,
}

impl Artifact {
    pub fn new(payload: Payload, format: ArchiveFormat) -> Artifact {
        Artifact::signed(format, compress(&payload.tar(), format))
    }

    /// An artifact of `bytes` as served, announced with their true digest: what a
    /// compromised or buggy publisher would sign.
    pub fn signed(format: ArchiveFormat, bytes: Vec<u8>) -> Artifact {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Artifact {
            bytes,
            format,
            sha256,
        }
    }

    pub fn spec(&self, version: &str, sequence: u64) -> StageSpec<'_> {
        StageSpec {
            format: self.format,
            size: self.bytes.len() as u64,
            sha256: &self.sha256,
            record: record(version, sequence),
            unpacked_size: None,
            entries: None,
            allow_in_place: false,
        }
    }
}

/// A bank record as the updater would pass it.
pub fn record(version: &str, sequence: u64) -> BankRecord {
    BankRecord {
        version: version.to_owned(),
        sequence,
        sha256: String::new(),
        staged_at: 1_700_000_000,
        product: "acme-connector".to_owned(),
        channel: "stable".to_owned(),
        command: "bin/app".to_owned(),
        args: vec!["--serve".to_owned()],
        manifest: "{}".to_owned(),
        signature: "sig".to_owned(),
        files: None,
    }
}

/// Stages `artifact` as `version`/`sequence`, with no interest in progress.
pub fn stage(
    root: &mut Root,
    artifact: &Artifact,
    version: &str,
    sequence: u64,
) -> Result<BankId, LayoutError> {
    root.stage(
        artifact.bytes.as_slice(),
        artifact.spec(version, sequence),
        &mut |_| {},
    )
}

/// A small, ordinary payload.
pub fn app(version: &str) -> Payload {
    Payload::new()
        .dir("bin/", 0o755)
        .file(
            "bin/app",
            format!("#!/bin/sh\necho {version}\n").as_bytes(),
            0o755,
        )
        .file("etc/app.conf", b"port = 8080\n", 0o644)
}

/// A fresh root in a temp folder.
pub fn fresh() -> (tempfile::TempDir, Root) {
    let dir = tempfile::tempdir().unwrap();
    let (root, notes) = Root::open(dir.path()).unwrap();
    assert_eq!(notes, vec![], "a fresh root needs no repair");
    (dir, root)
}

/// A root running `1.0.0` (sequence 1) committed in Bank1 (an empty root fills Bank1
/// first); Bank2 idle and empty.
pub fn running() -> (tempfile::TempDir, Root) {
    let (dir, mut root) = fresh();
    let artifact = Artifact::new(app("1.0.0"), ArchiveFormat::TarZst);
    assert_eq!(
        stage(&mut root, &artifact, "1.0.0", 1).unwrap(),
        BankId::Bank1
    );
    root.activate(BankId::Bank1, 10).unwrap();
    root.commit().unwrap();
    (dir, root)
}

/// One node of a folder snapshot.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    /// A regular file: content and permission bits.
    File { data: Vec<u8>, mode: u32 },
    /// A folder and its permission bits.
    Dir { mode: u32 },
    /// A symlink and its target.
    Symlink { target: PathBuf },
}

/// Every node below `dir`, by relative path.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Node> {
    let mut nodes = BTreeMap::new();
    walk(dir, Path::new(""), &mut nodes);
    nodes
}

fn walk(base: &Path, rel: &Path, nodes: &mut BTreeMap<PathBuf, Node>) {
    for entry in fs::read_dir(base.join(rel)).unwrap() {
        let entry = entry.unwrap();
        let rel = rel.join(entry.file_name());
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            nodes.insert(
                rel,
                Node::Symlink {
                    target: fs::read_link(entry.path()).unwrap(),
                },
            );
        } else if meta.is_dir() {
            nodes.insert(rel.clone(), Node::Dir { mode });
            walk(base, &rel, nodes);
        } else {
            nodes.insert(
                rel,
                Node::File {
                    data: fs::read(entry.path()).unwrap(),
                    mode,
                },
            );
        }
    }
}

/// What must survive a failed stage: the active bank and `state.json`.
pub struct Untouched {
    /// The active bank before.
    active: BankId,
    /// Its content before.
    bank: BTreeMap<PathBuf, Node>,
    /// The bytes of `state.json` before.
    state: Vec<u8>,
}

impl Untouched {
    pub fn record(root: &Root) -> Untouched {
        let active = root.active_bank();
        Untouched {
            active,
            bank: snapshot(&root.bank_dir(active)),
            state: fs::read(root.dir().join("state.json")).unwrap(),
        }
    }

    /// Asserts the active bank and `state.json` are unchanged and the idle bank is empty.
    pub fn check(&self, root: &Root) {
        assert_eq!(root.active_bank(), self.active);
        assert_eq!(
            snapshot(&root.bank_dir(self.active)),
            self.bank,
            "active bank changed"
        );
        assert!(self.bank.contains_key(Path::new(RECORD_FILE)));
        let state = fs::read(root.dir().join("state.json")).unwrap();
        assert_eq!(state, self.state, "state.json changed");
        let idle = root.bank_dir(self.active.other());
        assert_eq!(
            fs::read_dir(&idle).unwrap().count(),
            0,
            "idle bank not empty"
        );
        assert!(root.bank_record(self.active.other()).is_none());
        assert!(
            !root.dir().join(bank_layout::SCRATCH_DIR).exists(),
            "scratch folder left"
        );
    }
}

/// Stages `payload` in `format` into a running root, expects an error, checks that the
/// failure left everything that matters untouched, and returns the error.
pub fn refused(payload: Payload, format: ArchiveFormat) -> LayoutError {
    let (_dir, mut root) = running();
    let before = Untouched::record(&root);
    let artifact = Artifact::new(payload, format);
    let error = stage(&mut root, &artifact, "6.6.6", 66).unwrap_err();
    before.check(&root);
    error
}
