//! The durable queue's consumer: every [`POLL_EVERY`] each replica records
//! the queued runs that expired, claims the due ones (retries, manual
//! triggers, buffered instants; `FOR UPDATE SKIP LOCKED`, so each runs on
//! one replica even when the one that queued it died) and executes them
//! like a scheduled run: owned, leased, recorded, settled.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Core;
use super::execute::{self, RunTask, not_executed};
use super::fire;
use crate::error::Result;
use crate::run::{ErrorCode, Outcome, State, Trigger};
use crate::store::{Dequeued, RunStore};

/// How often a worker looks at the queue: a retry or a manual trigger
/// starts within this of its `not_before`.
pub(crate) const POLL_EVERY: Duration = Duration::from_secs(1);

/// Most queued runs one poll claims (the rest wait a poll).
const CLAIM_LIMIT: i64 = 64;

/// The queue's service: polls until `stop`, or until the worker is stopping.
pub(super) async fn run<S: RunStore>(core: Arc<Core<S>>, stop: CancellationToken) -> Result<()> {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if core.stopping.is_cancelled() {
            return Ok(());
        }
        poll(&core).await;
    }
}

/// One poll at the worker's `now`: expire, claim, start. Returns how many
/// runs it started. Errors are logged; the next poll tries again.
pub(crate) async fn poll<S: RunStore>(core: &Arc<Core<S>>) -> usize {
    let now = core.clock.now();
    if let Err(e) = core.store.expire_queued(now, None).await {
        warn!(error = %e, "could not expire queued runs; retrying next poll");
    }
    let claimed = match core
        .store
        .claim_queued(&core.config.worker_id, core.lease(), now, CLAIM_LIMIT, None)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "could not claim queued runs; retrying next poll");
            return 0;
        }
    };
    if claimed.is_empty() {
        return 0;
    }
    debug!(runs = claimed.len(), "claimed queued runs");
    start(core, claimed, now).await
}

/// Executes dequeued runs: automated ones of guarded activities are
/// admitted first; one whose activity is paused (automated) or no longer
/// loaded is recorded as not run.
async fn start<S: RunStore>(core: &Arc<Core<S>>, claimed: Vec<Dequeued>, now: Timestamp) -> usize {
    let specs = core.specs();
    let mut tasks = Vec::with_capacity(claimed.len());
    for d in claimed {
        let automated = d.trigger != Trigger::Manual;
        match specs.get(&d.definition_id) {
            None => core.finish(not_executed(
                d.run_id,
                State::Abandoned,
                Outcome::AutomationError,
                Some(ErrorCode::Config),
                "its activity is retired, disabled or cannot be loaded by this worker".into(),
                "not_loaded",
                now,
            )),
            Some((_, false)) if automated => core.finish(not_executed(
                d.run_id,
                State::Skipped,
                Outcome::SkippedPaused,
                None,
                "the activity is paused".into(),
                "paused",
                now,
            )),
            Some((spec, _)) => tasks.push(RunTask {
                run_id: d.run_id,
                spec: spec.clone(),
                instant: d.scheduled_for,
                // Queued runs start when claimed: their deadline was `expires_at`.
                fire: now,
                trigger: d.trigger,
                source: d.source,
                attempt: d.attempt,
                retry_of: d.retry_of,
            }),
        }
    }
    core.owned
        .claimed(tasks.iter().map(|t| (t.run_id, t.spec.definition.id)));
    let (automated, manual): (Vec<RunTask>, Vec<RunTask>) =
        tasks.into_iter().partition(|t| t.trigger != Trigger::Manual);
    let mut started = 0;
    for t in fire::admit(core, automated, now).await.into_iter().chain(manual) {
        execute::spawn(core, t);
        started += 1;
    }
    started
}
