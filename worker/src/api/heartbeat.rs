//! The worker loop's heartbeat, for `/healthz`: the loop stamps it each
//! time it wakes (at least every [`LOOP_EVERY`], even with no instant due);
//! a heartbeat older than three periods means the loop is stalled.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest the worker loop sleeps without waking (and stamping).
pub const LOOP_EVERY: Duration = Duration::from_secs(5);

/// The loop of this process's worker.
pub static LOOP: LazyLock<Heartbeat> = LazyLock::new(|| Heartbeat::new(LOOP_EVERY));

/// When something that should wake every `every` last did.
#[derive(Debug)]
pub struct Heartbeat {
    every: Duration,
    origin: Instant,
    /// Milliseconds after `origin` of the last stamp, plus one (0: never).
    last: AtomicU64,
}

impl Heartbeat {
    pub fn new(every: Duration) -> Heartbeat {
        Heartbeat {
            every,
            origin: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// The loop is awake now.
    pub fn stamp(&self) {
        let ms = self.origin.elapsed().as_millis() as u64 + 1;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// How long ago the last stamp was (None: never stamped).
    pub fn age(&self) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.origin.elapsed().saturating_sub(Duration::from_millis(ms - 1))),
        }
    }

    /// The period the loop promises.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Alive: stamped within three periods.
    pub fn alive(&self) -> bool {
        self.age().is_some_and(|a| a <= self.every * 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_stamped_is_not_alive_and_a_fresh_stamp_is() {
        let h = Heartbeat::new(Duration::from_secs(60));
        assert!(!h.alive() && h.age().is_none());
        h.stamp();
        assert!(h.alive() && h.age().unwrap() < Duration::from_secs(1));
        let stale = Heartbeat::new(Duration::ZERO);
        stale.stamp();
        std::thread::yield_now();
        // Three periods of zero: alive only within the same millisecond.
        assert_eq!(stale.alive(), stale.age().unwrap().is_zero());
    }
}
