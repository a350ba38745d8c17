//! The worker's sense of time, injectable: production reads the system
//! clock and sleeps to within microseconds of an instant; tests drive a
//! manual clock whose sleeps return at once, having moved time forward, so
//! a claim that retries for seconds or a grace that runs out is tested
//! without waiting for it.

use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock that only moves when a sleep or the test moves it.
    Manual(Arc<Mutex<Timestamp>>),
}

impl Clock {
    /// A manual clock starting at `at`.
    pub fn manual(at: Timestamp) -> Clock {
        Clock::Manual(Arc::new(Mutex::new(at)))
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Manual(t) => *t.lock().expect("clock lock"),
        }
    }

    /// Moves a manual clock forward to `at` (never back); no-op on the system clock.
    pub fn advance_to(&self, at: Timestamp) {
        if let Clock::Manual(t) = self {
            let mut now = t.lock().expect("clock lock");
            *now = (*now).max(at);
        }
    }

    /// Sleeps until `at`. On the system clock: to within a few
    /// microseconds (tokio's timer has a 1 ms resolution and wakes up to a
    /// millisecond late, so it sleeps to just before and yields for the
    /// rest, other tasks running meanwhile).
    pub async fn sleep_until(&self, at: Timestamp) {
        match self {
            Clock::System => {
                const SPIN: SignedDuration = SignedDuration::from_millis(2);
                let left = at.duration_since(Timestamp::now());
                if left > SPIN {
                    tokio::time::sleep((left - SPIN).unsigned_abs()).await;
                }
                while Timestamp::now() < at {
                    tokio::task::yield_now().await;
                }
            }
            Clock::Manual(_) => {
                self.advance_to(at);
                tokio::task::yield_now().await;
            }
        }
    }

    /// Sleeps for `d` (a retry's back-off).
    pub async fn sleep(&self, d: SignedDuration) {
        self.sleep_until(self.now() + d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_system_clock_never_wakes_early() {
        let clock = Clock::System;
        for ms in [0, 1, 3, 7] {
            let at = Timestamp::now() + SignedDuration::from_millis(ms);
            clock.sleep_until(at).await;
            assert!(Timestamp::now() >= at);
        }
    }

    #[tokio::test]
    async fn a_manual_clock_moves_only_forward_and_only_when_told() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = Clock::manual(t0);
        clock.sleep(SignedDuration::from_secs(5)).await;
        assert_eq!(clock.now(), t0 + SignedDuration::from_secs(5));
        clock.advance_to(t0);
        assert_eq!(clock.now(), t0 + SignedDuration::from_secs(5), "never back");
    }
}
