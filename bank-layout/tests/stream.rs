//! The artifact stream: size cap, truncation, digest, source errors, and which error
//! wins when a damaged stream also breaks decompression.

use std::io::{self, Read};

use bank_layout::{ArchiveFormat, LayoutError, Root, StageSpec};

use crate::support::{Artifact, FORMATS, Payload, Untouched, app, record, running};

/// A payload big enough that damage lands inside compressed file data.
fn payload() -> Payload {
    let text: Vec<u8> = (0..50_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    Payload::new()
        .file("bin/app", b"#!/bin/sh\n", 0o755)
        .file("a.txt", &text, 0o644)
        .file("b.txt", b"tail", 0o644)
}

/// Stages `source` with `spec` into a running root; checks the failure left the
/// active bank and `state.json` untouched and the idle bank empty.
fn fails(source: impl Read + Send, spec: StageSpec<'_>) -> LayoutError {
    let (_dir, mut root) = running();
    let before = Untouched::record(&root);
    let format = spec.format;
    let error = match root.stage(source, spec, &mut |_| {}) {
        Ok(bank) => panic!("{format}: staged into {bank}, expected a failure"),
        Err(error) => error,
    };
    before.check(&root);
    // Still usable afterwards.
    let fine = Artifact::new(app("2"), ArchiveFormat::Tar);
    root.stage(fine.bytes.as_slice(), fine.spec("2", 2), &mut |_| {})
        .unwrap();
    error
}

#[test]
fn truncated_streams() {
    for format in FORMATS {
        let artifact = Artifact::new(payload(), format);
        let size = artifact.bytes.len() as u64;
        for cut in [0, 1, artifact.bytes.len() / 2, artifact.bytes.len() - 1] {
            let error = fails(&artifact.bytes[..cut], artifact.spec("2", 2));
            assert!(
                matches!(error, LayoutError::Truncated { size: s, received } if s == size && received == cut as u64),
                "{format} cut at {cut}: {error:?}"
            );
        }
    }
}

#[test]
fn streams_larger_than_announced() {
    for format in FORMATS {
        let artifact = Artifact::new(payload(), format);
        let mut spec = artifact.spec("2", 2);
        spec.size -= 1;
        let size = spec.size;
        let error = fails(artifact.bytes.as_slice(), spec);
        assert!(
            matches!(error, LayoutError::TooLarge { size: s } if s == size),
            "{format}: {error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("artifact is larger than the {size} bytes announced")
        );

        // A valid artifact followed by junk.
        let mut padded = artifact.bytes.clone();
        padded.extend_from_slice(b"junk");
        let error = fails(padded.as_slice(), artifact.spec("2", 2));
        assert!(
            matches!(error, LayoutError::TooLarge { .. }),
            "{format}: {error:?}"
        );
    }
}

#[test]
fn an_endless_stream_is_cut_at_the_announced_size() {
    let sha = "00".repeat(32);
    let spec = StageSpec {
        format: ArchiveFormat::TarZst,
        size: 1 << 20,
        sha256: &sha,
        record: record("2", 2),
        unpacked_size: None,
        entries: None,
        allow_in_place: false,
    };
    let error = fails(io::repeat(0x28), spec);
    assert!(
        matches!(error, LayoutError::TooLarge { size: 1_048_576 }),
        "{error:?}"
    );
}

#[test]
fn a_flipped_byte_is_a_hash_mismatch_even_when_decompression_fails() {
    for format in FORMATS {
        let artifact = Artifact::new(payload(), format);
        for at in [0, 5, artifact.bytes.len() / 3, artifact.bytes.len() - 2] {
            let mut bytes = artifact.bytes.clone();
            bytes[at] ^= 0x40;
            let error = fails(bytes.as_slice(), artifact.spec("2", 2));
            match &error {
                LayoutError::HashMismatch { expected, actual } => {
                    assert_eq!(expected, &artifact.sha256);
                    assert_ne!(actual, &artifact.sha256);
                }
                other => panic!("{format} flipped at {at}: {other:?}"),
            }
        }
    }
}

#[test]
fn an_intact_artifact_with_a_wrong_digest() {
    let artifact = Artifact::new(payload(), ArchiveFormat::TarGz);
    let wrong = "ab".repeat(32);
    let mut spec = artifact.spec("2", 2);
    spec.sha256 = &wrong;
    let error = fails(artifact.bytes.as_slice(), spec);
    assert_eq!(
        error.to_string(),
        format!("sha256 mismatch: expected {wrong}, got {}", artifact.sha256)
    );
    // The digest is compared without regard to case.
    let (_dir, mut root) = running();
    let upper = artifact.sha256.to_uppercase();
    let mut spec = artifact.spec("2", 2);
    spec.sha256 = &upper;
    root.stage(artifact.bytes.as_slice(), spec, &mut |_| {})
        .unwrap();
}

#[test]
fn signed_garbage_is_a_malformed_archive() {
    let tar = Artifact::new(payload(), ArchiveFormat::Tar).bytes;
    let gz = Artifact::new(payload(), ArchiveFormat::TarGz).bytes;
    let zst = Artifact::new(payload(), ArchiveFormat::TarZst).bytes;
    let flipped = |mut bytes: Vec<u8>, at: usize| {
        bytes[at] ^= 0xff;
        bytes
    };
    let cases = [
        // The gzip CRC after the tar end marker is checked.
        Artifact::signed(ArchiveFormat::TarGz, flipped(gz.clone(), gz.len() / 2)),
        Artifact::signed(ArchiveFormat::TarGz, gz[..gz.len() - 4].to_vec()),
        // An incomplete zstd frame.
        Artifact::signed(ArchiveFormat::TarZst, zst[..zst.len() - 3].to_vec()),
        // A tar cut inside a file's data.
        Artifact::signed(ArchiveFormat::Tar, tar[..1000].to_vec()),
        // A damaged tar header (checksum).
        Artifact::signed(ArchiveFormat::Tar, flipped(tar.clone(), 10)),
    ];
    for artifact in cases {
        let error = fails(artifact.bytes.as_slice(), artifact.spec("2", 2));
        assert!(
            matches!(error, LayoutError::Archive { .. }),
            "{}: {error:?}",
            artifact.format
        );
    }
    // Not an archive at all, in each format.
    for format in FORMATS {
        let artifact = Artifact::signed(format, vec![b'x'; 2048]);
        let error = fails(artifact.bytes.as_slice(), artifact.spec("2", 2));
        assert!(
            matches!(error, LayoutError::Archive { .. }),
            "{format}: {error:?}"
        );
        assert!(
            error.to_string().starts_with("malformed archive: "),
            "{error}"
        );
    }
}

/// A source that fails after `ok` bytes, like a dropped connection.
struct Failing<'a> {
    data: &'a [u8],
    ok: usize,
}

impl Read for Failing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset",
            ));
        }
        let n = buf.len().min(self.ok).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.ok -= n;
        Ok(n)
    }
}

#[test]
fn a_failing_source_is_reported_as_such() {
    for format in FORMATS {
        let artifact = Artifact::new(payload(), format);
        let source = Failing {
            data: &artifact.bytes,
            ok: artifact.bytes.len() / 2,
        };
        let error = fails(source, artifact.spec("2", 2));
        assert!(
            matches!(&error, LayoutError::Source { source } if source.kind() == io::ErrorKind::ConnectionReset),
            "{format}: {error:?}"
        );
        // The message says what failed; the source's own error is next in the chain.
        let mut chain = error.to_string();
        let mut next = std::error::Error::source(&error);
        while let Some(cause) = next {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            next = cause.source();
        }
        assert!(chain.contains("connection reset"), "{chain}");
    }
}

#[test]
fn a_failed_stage_keeps_the_previous_idle_release() {
    // SPEC §3, §13: the previous version stays until a newer one is completely staged.
    let (_dir, mut root) = running();
    let v2 = Artifact::new(payload(), ArchiveFormat::Tar);
    let idle = root
        .stage(v2.bytes.as_slice(), v2.spec("2", 2), &mut |_| {})
        .unwrap();
    assert!(root.bank_record(idle).is_some());
    let before = crate::support::snapshot(&root.bank_dir(idle));
    let state = std::fs::read(root.dir().join("state.json")).unwrap();
    let error = root
        .stage(&v2.bytes[..10], v2.spec("3", 3), &mut |_| {})
        .unwrap_err();
    assert!(matches!(error, LayoutError::Truncated { .. }));
    assert_eq!(
        root.bank_record(idle).map(|r| r.version.as_str()),
        Some("2")
    );
    assert_eq!(crate::support::snapshot(&root.bank_dir(idle)), before);
    assert_eq!(std::fs::read(root.dir().join("state.json")).unwrap(), state);
    assert!(!root.dir().join(bank_layout::SCRATCH_DIR).exists());
    // And the next open finds nothing to repair.
    let dir = root.dir().to_path_buf();
    drop(root);
    let (root, notes) = Root::open(&dir).unwrap();
    assert_eq!(root.state().version_of(idle), Some("2"));
    assert_eq!(notes, vec![]);
}
