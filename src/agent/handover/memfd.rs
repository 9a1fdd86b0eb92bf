//! The hand-over in a sealed memfd: serialized and sealed by the writer,
//! read back bounded and parsed (shape and schema only) by the reader.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;

use rustix::fs::{MemfdFlags, SealFlags};
use serde::Deserialize;

use super::{HANDOVER_SCHEMAS, Handover, HandoverError, MAX_HANDOVER_BYTES, refuse};

/// Serializes `handover` into a sealed memfd (close-on-exec until the exec
/// clears it), refusing one larger than [`MAX_HANDOVER_BYTES`].
pub fn write_memfd(handover: &Handover) -> Result<OwnedFd, HandoverError> {
    let bytes = serde_json::to_vec(handover).map_err(|e| refuse("writing", e.to_string()))?;
    if bytes.len() > MAX_HANDOVER_BYTES {
        return Err(refuse(
            "writing",
            format!(
                "{} bytes is over the limit of {MAX_HANDOVER_BYTES}",
                bytes.len()
            ),
        ));
    }
    let io_err = |e: io::Error| refuse("memfd", e.to_string());
    let fd = rustix::fs::memfd_create(
        "bankswap-handover",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| io_err(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&bytes).map_err(io_err)?;
    let fd = OwnedFd::from(file);
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )
    .map_err(|e| io_err(e.into()))?;
    Ok(fd)
}

/// Reads and parses the hand-over JSON from `fd` (bounded; the shape only).
pub fn read_json(fd: &OwnedFd) -> Result<Handover, HandoverError> {
    let stat = rustix::fs::fstat(fd).map_err(|e| refuse("state fd", e.to_string()))?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(refuse("state fd", "not a regular file or memfd"));
    }
    let size = usize::try_from(stat.st_size).unwrap_or(usize::MAX);
    if size > MAX_HANDOVER_BYTES {
        return Err(refuse(
            "state fd",
            format!("{size} bytes is over the limit of {MAX_HANDOVER_BYTES}"),
        ));
    }
    let copy = fd
        .try_clone()
        .map_err(|e| refuse("state fd", e.to_string()))?;
    let mut file = std::fs::File::from(copy);
    file.seek(SeekFrom::Start(0))
        .map_err(|e| refuse("state fd", e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_HANDOVER_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse("state fd", e.to_string()))?;
    if bytes.len() > MAX_HANDOVER_BYTES {
        return Err(refuse("state fd", "grew past the limit while read"));
    }
    parse(&bytes)
}

/// Parses hand-over JSON: unknown fields and unknown schemas are refused.
pub fn parse(bytes: &[u8]) -> Result<Handover, HandoverError> {
    #[derive(Deserialize)]
    struct SchemaOnly {
        schema: u32,
    }
    // The schema first, so an unknown one is named as such rather than as a field error.
    let schema = serde_json::from_slice::<SchemaOnly>(bytes)
        .map_err(|e| refuse("JSON", e.to_string()))?
        .schema;
    if !HANDOVER_SCHEMAS.contains(&schema) {
        return Err(refuse(
            "schema",
            format!("{schema} is not one this build reads ({HANDOVER_SCHEMAS:?})"),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| refuse("JSON", e.to_string()))
}
