//! Keeping the worker's memory bounded across bursts.
//!
//! When 10,000 activities share an instant, the worker allocates their
//! tasks, requests, snapshots and rows at once, from both runtime threads,
//! and frees them a second later. glibc's malloc would give each thread
//! that allocates its own arena (up to eight per core), each keeping its
//! freed pages: two arenas are enough for two runtime threads.
//! Elsewhere (musl, macOS) [`tune`] is a no-op.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the worker drains the metrics' histogram samples, which
/// otherwise pile up (two per run) until a scrape.
pub const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);

/// Call once, before any thread starts: at most two malloc arenas.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before the
    // runtime's threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The worker's housekeeping until `stop`: every [`HOUSEKEEPING_EVERY`],
/// the metrics' upkeep, so that a worker nobody scrapes keeps a bounded
/// memory (10,000 activities on */5 s record 4,000 samples a second).
pub async fn housekeeping(stop: CancellationToken) -> crate::error::Result<()> {
    let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = every.tick() => crate::api::metrics::upkeep(),
        }
    }
}
