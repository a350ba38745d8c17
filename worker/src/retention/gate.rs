//! When the pruner may send its next `delete`: firing goes first.
//!
//! A pass deletes in batches. Between two batches it pauses, and, inside a
//! worker, it also waits for a quiet moment: no claim, run or unwritten
//! result of this process in flight, and the next claim far enough away for
//! a batch to finish before it (twice the last batch's time, at least
//! [`MIN_GAP`]). A batch then competes with Postgres's share of the
//! firing for neither locks nor CPU. Every replica fires the same
//! schedules, so the one that prunes sees the cluster's firing in its own.
//!
//! A worker that is never quiet (its runs back to back) still prunes: after
//! [`MAX_WAIT`] the batch goes anyway, so history cannot grow without bound.
//!
//! [`decide`] is pure (the firing's view and the time waited are
//! arguments); [`Gate`] does the waiting.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The shortest quiet moment a batch is sent into.
pub const MIN_GAP: Duration = Duration::from_millis(250);

/// The longest a batch waits for a quiet moment before it goes anyway.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// How often a waiting batch looks again.
const POLL: Duration = Duration::from_millis(25);

/// What the worker tells the pruner of its firing.
pub trait Firing: Send + Sync {
    /// How long until the worker next claims: `None` while it is busy (a
    /// claim, a run or an unwritten result in flight, or a claim overdue);
    /// `Duration::MAX` when nothing is scheduled.
    fn quiet_for(&self) -> Option<Duration>;
}

/// What the next batch does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send it now.
    Go,
    /// Look again after this long.
    Wait(Duration),
}

/// Whether a batch expected to take about `last` may go, given the firing's
/// `quiet_for` and how long it has `waited` already.
pub fn decide(quiet_for: Option<Duration>, last: Duration, waited: Duration) -> Decision {
    if waited >= MAX_WAIT {
        return Decision::Go;
    }
    let need = last.saturating_mul(2).max(MIN_GAP);
    match quiet_for {
        Some(q) if q >= need => Decision::Go,
        // Busy now: look again soon. Quiet but too briefly: the claim will
        // make it busy; look again once that is under way.
        None => Decision::Wait(POLL),
        Some(q) => Decision::Wait(q.max(POLL).min(MAX_WAIT - waited)),
    }
}

/// The waits between a pass's statements (see the module doc).
pub struct Gate<'a> {
    stop: &'a CancellationToken,
    pause: Duration,
    firing: Option<&'a dyn Firing>,
}

impl<'a> Gate<'a> {
    /// A pass that only pauses `pause` between statements (a command, a test).
    pub fn new(stop: &'a CancellationToken, pause: Duration) -> Gate<'a> {
        Gate {
            stop,
            pause,
            firing: None,
        }
    }

    /// A pass inside a worker: each batch also waits for a quiet moment of its firing.
    pub fn yielding_to(mut self, firing: &'a dyn Firing) -> Gate<'a> {
        self.firing = Some(firing);
        self
    }

    /// Whether the pass must stop now (shutdown).
    pub fn stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Waits before the next batch, which follows one that took `last`
    /// (`None`: the pass's first statement, which does not pause). Returns
    /// false if the pass must stop.
    pub async fn ready(&self, last: Option<Duration>) -> bool {
        if last.is_some() && !self.pause.is_zero() {
            tokio::select! {
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep(self.pause) => {}
            }
        }
        let Some(firing) = self.firing else {
            return !self.stopped();
        };
        let start = tokio::time::Instant::now();
        loop {
            match decide(firing.quiet_for(), last.unwrap_or_default(), start.elapsed()) {
                Decision::Go => return !self.stopped(),
                Decision::Wait(d) => {
                    tokio::select! {
                        _ = self.stop.cancelled() => return false,
                        _ = tokio::time::sleep(d) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_batch_goes_only_into_a_quiet_moment_long_enough() {
        let last = 200 * MS;
        assert_eq!(
            decide(Some(Duration::MAX), last, Duration::ZERO),
            Decision::Go,
            "nothing scheduled"
        );
        assert_eq!(
            decide(Some(400 * MS), last, Duration::ZERO),
            Decision::Go,
            "twice the last batch"
        );
        assert_eq!(
            decide(None, last, Duration::ZERO),
            Decision::Wait(POLL),
            "busy: look again soon"
        );
        assert_eq!(
            decide(Some(399 * MS), last, Duration::ZERO),
            Decision::Wait(399 * MS),
            "too short: wait for the claim to start"
        );
        assert_eq!(
            decide(Some(MS), last, Duration::ZERO),
            Decision::Wait(POLL),
            "never spins"
        );
        // A fast batch still needs MIN_GAP.
        assert_eq!(
            decide(Some(MIN_GAP - MS), MS, Duration::ZERO),
            Decision::Wait(MIN_GAP - MS)
        );
        assert_eq!(decide(Some(MIN_GAP), MS, Duration::ZERO), Decision::Go);
    }

    #[test]
    fn a_worker_never_quiet_still_prunes_after_the_longest_wait() {
        assert_eq!(decide(None, MS, MAX_WAIT - MS), Decision::Wait(POLL));
        assert_eq!(decide(None, MS, MAX_WAIT), Decision::Go);
        assert_eq!(
            decide(
                Some(Duration::from_secs(3600) - MS),
                Duration::from_secs(1800),
                MAX_WAIT - 10 * MS
            ),
            Decision::Wait(10 * MS),
            "a wait never runs past MAX_WAIT"
        );
    }

    /// A firing that is busy for its first `busy` looks, then quiet for an hour.
    struct Scripted {
        busy: Mutex<u32>,
    }

    impl Firing for Scripted {
        fn quiet_for(&self) -> Option<Duration> {
            let mut left = self.busy.lock().unwrap();
            if *left == 0 {
                return Some(Duration::from_secs(3600));
            }
            *left -= 1;
            None
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_waits_out_the_firing_then_lets_the_batch_go() {
        let stop = CancellationToken::new();
        let firing = Scripted { busy: Mutex::new(4) };
        let gate = Gate::new(&stop, 50 * MS).yielding_to(&firing);
        let t0 = tokio::time::Instant::now();
        assert!(gate.ready(Some(10 * MS)).await);
        // The pause, then four busy looks POLL apart (virtual time).
        assert_eq!(t0.elapsed(), 50 * MS + 4 * POLL);
        assert_eq!(*firing.busy.lock().unwrap(), 0);

        // The first statement neither pauses nor waits on a quiet firing.
        let t1 = tokio::time::Instant::now();
        assert!(gate.ready(None).await);
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait() {
        let stop = CancellationToken::new();
        let firing = Scripted {
            busy: Mutex::new(u32::MAX),
        };
        let gate = Gate::new(&stop, Duration::ZERO).yielding_to(&firing);
        let stopper = stop.clone();
        let waiting = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stopper.cancel();
        });
        assert!(!gate.ready(Some(MS)).await, "stopped while the firing was busy");
        waiting.await.unwrap();
        assert!(!Gate::new(&stop, Duration::ZERO).ready(None).await);
    }
}
