//! Unit tests of `error`.

use super::*;

#[test]
fn messages_are_one_line_and_name_input_and_reason() {
    let cases = [
        (
            LayoutError::TooLarge { size: 1_048_576 },
            "artifact is larger than the 1048576 bytes announced",
        ),
        (
            LayoutError::PathEscape {
                entry: "../etc/passwd".into(),
                reason: "parent directory component".into(),
            },
            "archive entry `../etc/passwd` escapes the bank: parent directory component",
        ),
        (
            LayoutError::HashMismatch {
                expected: "ab12".into(),
                actual: "cd34".into(),
            },
            "sha256 mismatch: expected ab12, got cd34",
        ),
        (
            LayoutError::Locked {
                root: "/var/lib/bankswap".into(),
                holder: None,
            },
            "root /var/lib/bankswap is locked by another bankswap process",
        ),
        (
            LayoutError::Locked {
                root: "/r".into(),
                holder: Some("pid 42: bankswap run".into()),
            },
            "root /r is locked by another bankswap process (pid 42: bankswap run)",
        ),
        (
            LayoutError::NoRoom {
                root: "/r".into(),
                needed: 300 << 20,
                free: 10 << 20,
                needed_inodes: 12,
                free_inodes: 1000,
            },
            "not enough space in /r: staging needs 300 MiB, 10 MiB free (12 inodes needed, 1000 free)",
        ),
        (
            LayoutError::Truncated {
                size: 10,
                received: 4,
            },
            "artifact is truncated: it ended after 4 of the 10 bytes announced",
        ),
        (
            LayoutError::UnsupportedEntry {
                entry: "dev/null".into(),
                kind: "fifo".into(),
            },
            "archive entry `dev/null` is a fifo, which a bank may not hold",
        ),
        (
            LayoutError::HeaderTooLarge {
                kind: "GNU long name header",
                offset: 1536,
                size: 1 << 30,
                limit: 65_536,
            },
            "archive GNU long name header at byte 1536 of the tar stream claims 1073741824 bytes, more than the 65536 allowed",
        ),
        (
            LayoutError::NoRecord {
                bank: BankId::Bank2,
            },
            "Bank2 holds no release",
        ),
    ];
    for (error, expected) in cases {
        assert_eq!(error.to_string(), expected);
    }
}

#[test]
fn io_errors_name_the_path_and_the_os_error_once() {
    let error = LayoutError::io(
        Path::new("/r/Bank2/big.bin"),
        io::Error::from_raw_os_error(libc::ENOSPC),
    );
    let text = error.to_string();
    assert!(
        text.starts_with("/r/Bank2/big.bin: No space left on device"),
        "{text}"
    );
    // Not a source too: a chain printer (anyhow's `{:#}`) would print it twice.
    assert!(std::error::Error::source(&error).is_none());
}
