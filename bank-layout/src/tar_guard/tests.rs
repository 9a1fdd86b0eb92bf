//! Unit tests of `tar_guard`.

use super::*;

/// A GNU header of `kind` named `name` whose size field is `size_field`, as written.
fn header(name: &str, kind: EntryType, size_field: [u8; 12]) -> [u8; BLOCK] {
    let mut header = Header::new_gnu();
    header.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.as_mut_bytes()[124..136].copy_from_slice(&size_field);
    header.set_cksum();
    *header.as_bytes()
}

/// The 12-byte size field in octal, as tar writes it.
fn octal(size: u64) -> [u8; 12] {
    let mut field = [0u8; 12];
    field[..11].copy_from_slice(format!("{size:011o}").as_bytes());
    field
}

/// The 12-byte size field in GNU base-256: high bit of the first byte set, the
/// value big-endian in the rest.
fn base256(size: u64) -> [u8; 12] {
    let mut field = [0u8; 12];
    field[0] = 0x80;
    field[4..].copy_from_slice(&size.to_be_bytes());
    field
}

/// One pax record: `<len> <key>=<value>\n`, where len counts the whole record.
fn record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// `data` padded with zeros to a whole number of blocks.
fn padded(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    out.resize(data.len().next_multiple_of(BLOCK), 0);
    out
}

/// Reads `tar` through a guard, `step` bytes per read; returns what came out, or the
/// refusal (and how many bytes had come out before it).
fn through(tar: &[u8], step: usize) -> Result<Vec<u8>, (LayoutError, usize)> {
    let mut guard = TarGuard::new(tar);
    let mut out = Vec::new();
    let mut buf = vec![0; step];
    loop {
        match guard.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => return Err((guard.take_refusal().unwrap(), out.len())),
        }
    }
}

/// Names of the entries `tar::Archive` reads through a guard, or the guard's refusal.
fn entries(tar: &[u8]) -> Result<Vec<String>, LayoutError> {
    let mut archive = tar::Archive::new(TarGuard::new(tar));
    let names: Result<Vec<String>, io::Error> = archive.entries().and_then(|entries| {
        entries
            .map(|e| e.map(|e| String::from_utf8_lossy(&e.path_bytes()).into_owned()))
            .collect()
    });
    match archive.into_inner().take_refusal() {
        Some(refusal) => Err(refusal),
        None => Ok(names.unwrap()),
    }
}

/// `refusal` is the refusal of `holes.img` as a GNU sparse file.
fn assert_sparse_refused(refusal: LayoutError) {
    match refusal {
        LayoutError::UnsupportedEntry { entry, kind } => {
            assert_eq!(
                (entry.as_str(), kind.as_str()),
                ("holes.img", "GNU sparse file")
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Entries of every kind of header the guard follows, without the end blocks.
fn mixed_entries() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    builder.append_data(&mut h, "a.txt", &b"hello"[..]).unwrap();
    let mut h = Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    let long = format!("{}/b.txt", "d".repeat(200));
    builder.append_data(&mut h, long, &b"abc"[..]).unwrap();
    let mut h = Header::new_ustar();
    h.set_size(0);
    h.set_mode(0o644);
    builder.append_data(&mut h, "empty", &b""[..]).unwrap();
    // Not `into_inner`: that would write the end blocks.
    let mut tar = std::mem::take(builder.get_mut());
    // A pax header with a `size` record moves the next header; then a file whose
    // size is in base-256.
    let records = b"12 size=700\n";
    tar.extend(header("PaxHeader", EntryType::XHeader, octal(12)));
    tar.extend(padded(records));
    tar.extend(header("c.bin", EntryType::Regular, octal(0)));
    tar.extend(padded(&[7; 700]));
    tar.extend(header("d.bin", EntryType::Regular, base256(513)));
    tar.extend(padded(&[9; 513]));
    tar
}

/// [`mixed_entries`], the end blocks, and trailing bytes.
fn mixed() -> Vec<u8> {
    let mut tar = mixed_entries();
    tar.extend([0; 2 * BLOCK]);
    tar.extend(b"trailing bytes after the end pass as they are");
    tar
}

#[test]
fn every_byte_passes_unchanged_whatever_the_read_size() {
    let tar = mixed();
    for step in [1, 7, 511, 512, 513, 4096, 1 << 20] {
        assert_eq!(through(&tar, step).unwrap(), tar, "step {step}");
    }
    assert_eq!(
        entries(&tar).unwrap(),
        [
            "a.txt",
            &format!("{}/b.txt", "d".repeat(200)),
            "empty",
            "c.bin",
            "d.bin",
        ]
    );
}

#[test]
fn base_256_sizes_are_read_like_octal_ones() {
    let mut field = [0u8; 12];
    field[0] = 0x80;
    field[11] = 0x01;
    field[10] = 0x02; // 0x0201 = 513
    assert_eq!(field, base256(513));
    let h = header("x", EntryType::Regular, base256(513));
    assert_eq!(Header::from_byte_slice(&h).entry_size().unwrap(), 513);

    // A long name claiming 1 TiB in base-256 is refused at its header.
    let mut tar = header("././@LongLink", EntryType::GNULongName, base256(1 << 40)).to_vec();
    tar.extend([0; 2 * BLOCK]);
    let (refusal, passed) = through(&tar, 4096).unwrap_err();
    assert_eq!(passed, 0, "nothing of a refused header is handed on");
    assert!(
        matches!(
            refusal,
            LayoutError::HeaderTooLarge { size, offset: 0, limit: MAX_META_HEADER, .. }
                if size == 1 << 40
        ),
        "{refusal:?}"
    );
    // The same claim in octal.
    let mut tar = header("././@LongLink", EntryType::GNULongName, octal(1 << 30)).to_vec();
    tar.extend([0; 2 * BLOCK]);
    let (refusal, _) = through(&tar, 4096).unwrap_err();
    assert!(
        matches!(
            refusal,
            LayoutError::HeaderTooLarge {
                size: 1_073_741_824,
                ..
            }
        ),
        "{refusal:?}"
    );
}

#[test]
fn every_in_memory_header_kind_is_bounded_and_named() {
    for (kind, name) in [
        (EntryType::GNULongName, "GNU long name header"),
        (EntryType::GNULongLink, "GNU long link header"),
        (EntryType::XHeader, "pax extended header"),
        (EntryType::XGlobalHeader, "pax global header"),
    ] {
        let mut tar = mixed_entries();
        let at = tar.len() as u64;
        tar.extend(header("meta", kind, octal(MAX_META_HEADER + 1)));
        let (refusal, passed) = through(&tar, 1 << 16).unwrap_err();
        assert_eq!(passed as u64, at);
        match refusal {
            LayoutError::HeaderTooLarge {
                kind,
                offset,
                size,
                limit,
            } => {
                assert_eq!((kind, offset, size, limit), (name, at, 65_537, 65_536));
            }
            other => panic!("{name}: {other:?}"),
        }
        // At the bound, the header passes the guard.
        let mut tar = header("meta", kind, octal(MAX_META_HEADER)).to_vec();
        tar.extend(vec![0; MAX_META_HEADER as usize]);
        assert!(through(&tar, 4096).is_ok(), "{name}");
    }
}

#[test]
fn the_same_refusal_on_every_read_after_it() {
    let tar = header("L", EntryType::GNULongName, octal(1 << 20));
    let mut guard = TarGuard::new(&tar[..]);
    let mut buf = [0; 64];
    let first = guard.read(&mut buf).unwrap_err();
    let second = guard.read(&mut buf).unwrap_err();
    assert_eq!(first.to_string(), second.to_string());
    assert_eq!(first.kind(), io::ErrorKind::InvalidData);
    assert!(matches!(
        guard.take_refusal(),
        Some(LayoutError::HeaderTooLarge { .. })
    ));
}

#[test]
fn a_pax_size_record_moves_the_next_header_as_in_tar() {
    // The size field says 0 but the pax record says 1024: the bytes after the header
    // are data, even though they look like a hostile long-name header.
    let fake = header("././@LongLink", EntryType::GNULongName, octal(1 << 30));
    let mut tar = header("PaxHeader", EntryType::XHeader, octal(13)).to_vec();
    tar.extend(padded(b"13 size=1024\n"));
    tar.extend(header("carrier", EntryType::Regular, octal(0)));
    tar.extend(fake);
    tar.extend([b'x'; BLOCK]);
    tar.extend([0; 2 * BLOCK]);
    assert_eq!(entries(&tar).unwrap(), ["carrier"]);

    // The size field says 512 but the pax record says 0: what follows the header is
    // the next header, and `tar` reads it as one.
    let mut tar = header("PaxHeader", EntryType::XHeader, octal(10)).to_vec();
    tar.extend(padded(b"10 size=0\n"));
    tar.extend(header("carrier", EntryType::Regular, octal(512)));
    tar.extend(fake);
    tar.extend([0; 2 * BLOCK]);
    assert!(matches!(
        entries(&tar),
        Err(LayoutError::HeaderTooLarge {
            size: 1_073_741_824,
            ..
        })
    ));
}

#[test]
fn a_pax_size_record_skips_long_names_and_ends_with_its_member() {
    // x, then L (its own size field counts), then the member (pax size counts), then
    // plain entries (their own size fields count again). The sizes differ in blocks,
    // so a guard applying a size to the wrong header would lose its way.
    let long = format!("{}/f\0", "n".repeat(150));
    let mut tar = header("PaxHeader", EntryType::XHeader, octal(12)).to_vec();
    tar.extend(padded(b"12 size=700\n"));
    tar.extend(header(
        "././@LongLink",
        EntryType::GNULongName,
        octal(long.len() as u64),
    ));
    tar.extend(padded(long.as_bytes()));
    tar.extend(header("short", EntryType::Regular, octal(0)));
    tar.extend(padded(&[1; 700]));
    tar.extend(header("next", EntryType::Regular, octal(3)));
    tar.extend(padded(b"abc"));
    tar.extend(header("last", EntryType::Regular, octal(5)));
    tar.extend(padded(b"hello"));
    tar.extend([0; 2 * BLOCK]);
    assert_eq!(
        entries(&tar).unwrap(),
        [
            format!("{}/f", "n".repeat(150)),
            "next".into(),
            "last".into()
        ]
    );

    // A long-name header without ustar or GNU magic is a member of its own for `tar`:
    // the pax size does not apply to it (it is of a long-name type), and ends with it.
    let mut old = Header::new_old();
    old.as_mut_bytes()[..4].copy_from_slice(b"oldL");
    old.set_entry_type(EntryType::GNULongName);
    old.set_size(3);
    old.set_cksum();
    let mut tar = header("PaxHeader", EntryType::XHeader, octal(12)).to_vec();
    tar.extend(padded(b"12 size=700\n"));
    tar.extend(old.as_bytes());
    tar.extend(padded(b"abc"));
    tar.extend(header("plain", EntryType::Regular, octal(5)));
    tar.extend(padded(b"hello"));
    tar.extend(header("after", EntryType::Regular, octal(5)));
    tar.extend(padded(b"hello"));
    tar.extend([0; 2 * BLOCK]);
    assert_eq!(entries(&tar).unwrap(), ["oldL", "plain", "after"]);

    // A malformed or non-numeric size record is ignored, as `tar` ignores it.
    assert_eq!(pax_size(b"11 size=20\n"), Some(20));
    assert_eq!(pax_size(b"12 size=abc\n"), None);
    assert_eq!(pax_size(b"9 bad=1\n11 size=20\n"), None);
    assert_eq!(pax_size(b"10 path=a\n11 size=20\n"), Some(20));
}

#[test]
fn gnu_sparse_entries_are_refused() {
    let mut sparse = Header::new_gnu();
    sparse.set_path("holes.img").unwrap();
    sparse.set_entry_type(EntryType::GNUSparse);
    sparse.set_size(512);
    sparse.as_gnu_mut().unwrap().set_is_extended(true);
    sparse.set_cksum();
    let mut tar = sparse.as_bytes().to_vec();
    tar.extend([0; 4 * BLOCK]);
    let (refusal, passed) = through(&tar, 4096).unwrap_err();
    assert_eq!(passed, 0);
    assert_sparse_refused(refusal);
}

#[test]
fn pax_sparse_files_are_refused_before_their_header() {
    let records: Vec<u8> = [
        record("GNU.sparse.major", "1"),
        record("GNU.sparse.minor", "0"),
        record("GNU.sparse.name", "holes.img"),
        record("path", "./GNUSparseFile.1/holes.img"),
    ]
    .concat();
    let mut tar = header("PaxHeader", EntryType::XHeader, octal(records.len() as u64)).to_vec();
    tar.extend(padded(&records));
    let member_at = tar.len();
    tar.extend(header(
        "GNUSparseFile.1/holes.img",
        EntryType::Regular,
        octal(0),
    ));
    tar.extend([0; 2 * BLOCK]);
    let (refusal, passed) = through(&tar, 4096).unwrap_err();
    assert_eq!(passed, member_at);
    assert_sparse_refused(refusal);
    assert_eq!(
        pax_sparse_name(b"22 GNU.sparse.size=10\n12 path=a/b\n").as_deref(),
        Some("a/b")
    );
    assert_eq!(pax_sparse_name(b"12 path=a/b\n"), None);
}

#[test]
fn a_bad_size_field_and_a_truncated_header() {
    let mut tar = header("x", EntryType::Regular, *b"12345678901z").to_vec();
    tar.extend([0; 2 * BLOCK]);
    let (refusal, _) = through(&tar, 4096).unwrap_err();
    assert!(
        matches!(&refusal, LayoutError::Archive { reason } if reason.starts_with("tar header at byte 0: ")),
        "{refusal:?}"
    );
    // A stream that ends inside a header: handed on as is, for `tar` to report.
    let partial = &header("x", EntryType::Regular, octal(0))[..100];
    assert_eq!(through(partial, 7).unwrap(), partial);
    // An empty stream is an empty stream.
    assert_eq!(through(&[], 7).unwrap(), b"");
}
