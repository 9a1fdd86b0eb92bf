//! Tar headers the `tar` reader holds whole in memory (GNU long names and long links,
//! pax headers): one claiming more than 64 KiB is refused before its data is read,
//! decompression bombs included, and the refusal leaves the active bank and
//! `state.json` untouched and the idle bank empty. GNU sparse entries are refused too.

use std::fs;
use std::io::Write;

use bank_layout::{ArchiveFormat, LayoutError};
use flate2::Compression;
use flate2::write::GzEncoder;
use tar::EntryType;

use crate::support::{
    Artifact, FORMATS, Payload, Untouched, app, compress, fresh, pax_record, refused, running,
    stage,
};

/// What a hostile header claims: 1 GiB.
const GIB: u64 = 1 << 30;

/// The bound on those headers (`MAX_META_HEADER`), as the README states it.
const LIMIT: u64 = 64 * 1024;

/// Peak RSS growth allowed while a bomb is refused: the agent's budget is 32 MiB in all,
/// and reading the bomb's header would take a GiB. Generous, since tests in this binary
/// run side by side and share the process.
const MAX_GROWTH: u64 = 64 << 20;

/// The header kinds `tar` holds in memory, with the name the error gives each.
const KINDS: [(EntryType, &str); 4] = [
    (EntryType::GNULongName, "GNU long name header"),
    (EntryType::GNULongLink, "GNU long link header"),
    (EntryType::XHeader, "pax extended header"),
    (EntryType::XGlobalHeader, "pax global header"),
];

/// `payload` compressed in `format`, followed by `zeros` bytes of zeros compressed one
/// MiB per gzip member or zstd frame: about 1 KiB (gzip) or 40 bytes (zstd) per MiB.
fn bomb(payload: Payload, format: ArchiveFormat, zeros: u64) -> Artifact {
    let mut bytes = compress(&payload.tar(), format);
    let zero_mib = vec![0; 1 << 20];
    let mib = match format {
        ArchiveFormat::TarGz => {
            let mut gz = GzEncoder::new(Vec::new(), Compression::best());
            gz.write_all(&zero_mib).unwrap();
            gz.finish().unwrap()
        }
        _ => compress(&zero_mib, format),
    };
    for _ in 0..zeros >> 20 {
        bytes.extend_from_slice(&mib);
    }
    Artifact::signed(format, bytes)
}

/// The peak resident set size of this process so far (`VmHWM`), in bytes.
fn peak_rss() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Asserts `error` is the refusal of a `kind` header claiming `size` bytes.
fn assert_too_large(error: &LayoutError, kind: &str, size: u64, case: &str) {
    match error {
        LayoutError::HeaderTooLarge {
            kind: k,
            size: s,
            limit,
            ..
        } => assert_eq!((*k, *s, *limit), (kind, size, LIMIT), "{case}"),
        other => panic!("{case}: expected HeaderTooLarge, got {other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains(kind) && text.contains(&size.to_string()) && !text.contains('\n'),
        "{text}"
    );
}

#[test]
fn a_header_claiming_a_gibibyte_is_refused_before_its_data() {
    for format in FORMATS {
        for (kind, name) in KINDS {
            let error = refused(app("x").claim(b"././@LongLink", kind, GIB), format);
            assert_too_large(&error, name, GIB, &format!("{format} {name}"));
        }
    }
}

#[test]
fn a_gzip_or_zstd_bomb_behind_a_long_name_or_pax_header_stays_small() {
    for format in [ArchiveFormat::TarGz, ArchiveFormat::TarZst] {
        for (kind, name) in [KINDS[0], KINDS[2]] {
            // A GiB of zeros right behind the header: without the guard `tar` would
            // read all of it into one buffer.
            let artifact = bomb(app("x").claim(b"././@LongLink", kind, GIB), format, GIB);
            assert!(artifact.bytes.len() < 2 << 20, "{}", artifact.bytes.len());
            let (_dir, mut root) = running();
            let before = Untouched::record(&root);
            let peak = peak_rss();
            let error = stage(&mut root, &artifact, "6.6.6", 66).unwrap_err();
            let grown = peak_rss().zip(peak).map(|(after, before)| after - before);
            if let Some(grown) = grown {
                assert!(
                    grown < MAX_GROWTH,
                    "{format} {name}: peak RSS grew by {grown} bytes ({error})"
                );
            }
            before.check(&root);
            assert_too_large(&error, name, GIB, &format!("{format} {name}"));
        }
    }
}

#[test]
fn a_tampered_or_truncated_bomb_reports_the_stream_first() {
    for format in [ArchiveFormat::TarGz, ArchiveFormat::TarZst] {
        let artifact = bomb(
            app("x").claim(b"././@LongLink", EntryType::GNULongName, GIB),
            format,
            GIB,
        );
        // Announced with another digest: the mismatch wins over the refused header.
        let (_dir, mut root) = running();
        let before = Untouched::record(&root);
        let wrong = "ab".repeat(32);
        let mut spec = artifact.spec("6.6.6", 66);
        spec.sha256 = &wrong;
        let error = root
            .stage(artifact.bytes.as_slice(), spec, &mut |_| {})
            .unwrap_err();
        before.check(&root);
        assert!(
            matches!(&error, LayoutError::HashMismatch { expected, .. } if *expected == wrong),
            "{format}: {error:?}"
        );
        // Cut short: the truncation wins.
        let half = &artifact.bytes[..artifact.bytes.len() / 2];
        let error = root
            .stage(half, artifact.spec("6.6.6", 66), &mut |_| {})
            .unwrap_err();
        before.check(&root);
        assert!(
            matches!(error, LayoutError::Truncated { .. }),
            "{format}: {error:?}"
        );
    }
}

/// Pax records of exactly `len` bytes: a `path` record for `name`, padded with a
/// `comment` record (which `tar` ignores).
fn pax_records(name: &str, len: usize) -> Vec<u8> {
    let mut records = pax_record("path", name);
    let room = len - records.len();
    let mut fill = room.saturating_sub(20);
    let comment = loop {
        let comment = pax_record("comment", &"c".repeat(fill));
        if comment.len() >= room {
            break comment;
        }
        fill += 1;
    };
    records.extend(comment);
    assert_eq!(records.len(), len, "no comment record fits exactly");
    records
}

#[test]
fn a_pax_header_at_the_bound_extracts_and_one_byte_more_is_refused() {
    let at_limit = pax_records("bounded/pax-file", LIMIT as usize);
    for format in FORMATS {
        let (_dir, mut root) = fresh();
        let payload = app("1").pax_file_with(&at_limit, b"pax");
        let bank = stage(&mut root, &Artifact::new(payload, format), "1", 1).unwrap();
        let b = root.bank_dir(bank);
        assert_eq!(fs::read(b.join("bounded/pax-file")).unwrap(), b"pax");
        assert!(!b.join("short-name").exists());
    }
    let over = pax_records("bounded/pax-file", LIMIT as usize + 1);
    for format in FORMATS {
        let error = refused(app("x").pax_file_with(&over, b"pax"), format);
        assert_too_large(
            &error,
            "pax extended header",
            LIMIT + 1,
            &format!("{format}"),
        );
    }
}

#[test]
fn gnu_sparse_entries_are_refused() {
    // Old GNU (`S`), and pax format 1.0 as `tar --format=posix --sparse` writes it.
    let pax_sparse = [
        pax_record("GNU.sparse.major", "1"),
        pax_record("GNU.sparse.minor", "0"),
        pax_record("GNU.sparse.name", "holes.img"),
        pax_record("GNU.sparse.realsize", "67108864"),
        pax_record("path", "./GNUSparseFile.7/holes.img"),
    ]
    .concat();
    for format in FORMATS {
        let payloads = [
            app("x").raw(b"holes.img", EntryType::GNUSparse, 0o644, b"data", b""),
            app("x").pax_file_with(&pax_sparse, b"1\n0\n4\ndata"),
        ];
        for payload in payloads {
            match refused(payload, format) {
                LayoutError::UnsupportedEntry { entry, kind } => {
                    assert_eq!(
                        (entry.as_str(), kind.as_str()),
                        ("holes.img", "GNU sparse file")
                    );
                }
                other => panic!("{format}: expected UnsupportedEntry, got {other:?}"),
            }
        }
    }
}
