//! The agent's heap, kept small while it idles: one allocator arena, and freed
//! memory handed back after each staging. glibc only; elsewhere these do nothing.

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
