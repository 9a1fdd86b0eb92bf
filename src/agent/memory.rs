//! The agent's memory, kept small while it idles: one allocator arena, freed heap
//! memory handed back after each staging (glibc only), and the pages of its own
//! code handed back after start-up and after each staging (Linux only).
//! Elsewhere these do nothing.

/// One malloc arena for the whole process, set before any thread starts. glibc
/// gives each thread that contends for the heap an arena of its own, and what a
/// staging thread leaves in its arena stays mapped. The agent runs a handful of
/// threads (one async, the staging and writer threads), so contention is no cost.
/// `scripts/bench/stage.sh`, 11 stagings of 256 MiB: idle growth over a fresh agent
/// 1.1 -> 0.2 MiB, idle RSS 11.6 -> 10.7 MiB, staging peak 16.7 -> 16.4 MiB, staging
/// time within the run's noise.
pub(super) fn use_one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no pointer is touched.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Staging frees megabytes of buffers that glibc's allocator would otherwise keep:
/// an idle agent went from 9.7 to 16.5 MiB RSS after its first update. Hands them
/// back to the kernel (all arenas) once, after each staging.
pub(super) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the kernel; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How long after its start the agent hands its start-up code back
/// ([`release_cold_code`]): by then it has loaded its config, opened the root,
/// adopted or started the payload and made its first request.
pub(super) const COLD_CODE_AFTER_START: std::time::Duration = std::time::Duration::from_secs(5);

/// The agent's own code is most of an idle agent's memory: one binary carries
/// the console, the CLI and the agent, and the pages of it that starting and
/// staging touched (most of its text, in 64 KiB fault-around windows) stay
/// resident, 9.3 of an idle agent's 10.7 MiB. Asks the kernel to reclaim the
/// pages of the binary's read-only mappings that no other process maps
/// (`MADV_PAGEOUT`); what the idle agent runs next comes back on its first touch,
/// from the page cache or the binary. Called after start-up and after each
/// staging. Only a hint: nothing fails if the kernel declines (before Linux 5.4).
pub(super) fn release_cold_code() {
    #[cfg(target_os = "linux")]
    for (start, len) in own_code_mappings() {
        // SAFETY: the range is one whole mapping of this process, read-only and
        // backed by its binary; MADV_PAGEOUT only drops resident pages, which the
        // next access reads back unchanged. Nothing is unmapped.
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT);
        }
    }
}

/// This process's read-only mappings of its own binary (`/proc/self/exe`, by
/// device and inode, so a replaced binary still counts): none if either cannot
/// be read.
#[cfg(target_os = "linux")]
fn own_code_mappings() -> Vec<(usize, usize)> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(exe), Ok(maps)) = (
        std::fs::metadata("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/maps"),
    ) else {
        return Vec::new();
    };
    let device = format!(
        "{:02x}:{:02x}",
        libc::major(exe.dev()),
        libc::minor(exe.dev())
    );
    code_mappings(&maps, &device, exe.ino())
}

/// The read-only mappings of the file `device` (`major:minor`, hex, as
/// `/proc/PID/maps` writes it) and `inode` in `maps`: (start, length) each.
fn code_mappings(maps: &str, device: &str, inode: u64) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let (range, perms, _offset, dev, ino) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            if dev != device
                || ino.parse::<u64>().ok()? != inode
                || perms.as_bytes().get(1) != Some(&b'-')
            {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            Some((start, end.checked_sub(start)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c8a00000-55d0c8b2a000 r--p 00000000 fd:01 1234567    /usr/bin/bankswap
55d0c8b2a000-55d0c9400000 r-xp 0012a000 fd:01 1234567    /usr/bin/bankswap (deleted)
55d0c9400000-55d0c9420000 rw-p 00a00000 fd:01 1234567    /usr/bin/bankswap
55d0c9420000-55d0c9430000 r--p 00000000 fd:02 1234567    /other/device
7f0000000000-7f0000100000 r-xp 00000000 fd:01 7654321    /usr/lib/libc.so.6
7f0000200000-7f0000300000 rw-p 00000000 00:00 0          [heap]
garbage line
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]
";

    #[test]
    fn only_the_read_only_mappings_of_the_binary_are_chosen() {
        assert_eq!(
            code_mappings(MAPS, "fd:01", 1234567),
            vec![(0x55d0c8a00000, 0x12a000), (0x55d0c8b2a000, 0x8d6000)]
        );
        assert!(code_mappings(MAPS, "fd:01", 42).is_empty());
        assert!(code_mappings("", "fd:01", 1234567).is_empty());
    }

    /// Resident KiB of the mappings [`release_cold_code`] acts on (smaps).
    #[cfg(target_os = "linux")]
    fn resident_code_kib() -> u64 {
        let starts: Vec<usize> = own_code_mappings()
            .iter()
            .map(|&(start, _)| start)
            .collect();
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut ours = false;
        let mut kib = 0;
        for line in smaps.lines() {
            let mut fields = line.split_ascii_whitespace();
            match fields.next() {
                Some("Rss:") if ours => {
                    kib += fields
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                }
                Some(field) if field.ends_with(':') => {}
                Some(range) => {
                    ours = range
                        .split_once('-')
                        .and_then(|(start, _)| usize::from_str_radix(start, 16).ok())
                        .is_some_and(|start| starts.contains(&start));
                }
                None => {}
            }
        }
        kib
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_binary_s_pages_are_handed_back() {
        let before = resident_code_kib();
        release_cold_code();
        let after = resident_code_kib();
        assert!(
            before > 0,
            "no resident pages of the test binary were found"
        );
        assert!(
            after * 2 < before,
            "resident code went from {before} KiB to {after} KiB, not below half"
        );
    }
}
