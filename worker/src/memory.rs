//! Keeping the worker's memory bounded across bursts.
//!
//! When 10,000 activities share an instant, the worker allocates their
//! tasks, requests, snapshots and rows at once, from both runtime threads,
//! and frees them a second later. glibc's malloc would give each thread
//! that allocates its own arena (up to eight per core), each keeping its
//! freed pages: two arenas are enough for two runtime threads.
//! Elsewhere (musl, macOS) [`tune`] is a no-op.

/// Call once, before any thread starts: at most two malloc arenas.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before the
    // runtime's threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
