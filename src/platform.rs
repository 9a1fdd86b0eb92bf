//! The platform name of a build (`linux-x86_64`): what this agent runs on, and
//! what an ELF file was built for (`publish --agent-binary`).

/// The platform this build runs on: `<os>-<arch>` of the build target.
pub const PLATFORM: &str = concat_platform();

/// `std::env::consts::{OS, ARCH}` joined, at compile time.
const fn concat_platform() -> &'static str {
    // const string concatenation of two consts needs a macro; the targets we build
    // are listed, anything else gets the generic name.
    if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        "linux-x86_64"
    } else if cfg!(all(target_os = "linux", target_arch = "aarch64")) {
        "linux-aarch64"
    } else if cfg!(all(target_os = "linux", target_arch = "arm")) {
        "linux-arm"
    } else if cfg!(all(target_os = "linux", target_arch = "riscv64")) {
        "linux-riscv64"
    } else {
        "unknown-unknown"
    }
}

/// Bytes of an ELF header read to learn its machine (`e_machine` is at 18..20).
pub const ELF_HEADER_BYTES: usize = 20;

/// The platform an ELF executable was built for, from its header: `None` when
/// `header` is not an ELF header or names a machine we do not build for.
pub fn from_elf(header: &[u8]) -> Option<&'static str> {
    if header.len() < ELF_HEADER_BYTES || header[..4] != *b"\x7fELF" {
        return None;
    }
    // EI_DATA: 1 little-endian, 2 big-endian.
    let machine = match header[5] {
        1 => u16::from_le_bytes([header[18], header[19]]),
        2 => u16::from_be_bytes([header[18], header[19]]),
        _ => return None,
    };
    // EI_CLASS: 1 = 32-bit, 2 = 64-bit.
    match (header[4], machine) {
        (2, 62) => Some("linux-x86_64"),
        (2, 183) => Some("linux-aarch64"),
        (1, 40) => Some("linux-arm"),
        (2, 243) => Some("linux-riscv64"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_machine_names() {
        let mut header = [0u8; ELF_HEADER_BYTES];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2;
        header[5] = 1;
        header[18] = 62;
        assert_eq!(from_elf(&header), Some("linux-x86_64"));
        header[18] = 183;
        assert_eq!(from_elf(&header), Some("linux-aarch64"));
        header[18] = 3; // i386
        assert_eq!(from_elf(&header), None);
        assert_eq!(from_elf(b"#!/bin/sh\nexit 0\n"), None);
        assert_eq!(from_elf(b"\x7fELF"), None);
    }

    #[test]
    fn this_build_names_its_own_platform() {
        let exe = std::fs::read("/proc/self/exe").expect("own exe");
        assert_eq!(from_elf(&exe[..ELF_HEADER_BYTES]), Some(PLATFORM));
    }
}
