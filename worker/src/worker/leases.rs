//! Which runs this process owns, and keeping their leases alive.
//!
//! A run is owned from the claim that won it until its row is written:
//! executing, queued for a request slot, or finished with its result
//! waiting in the recorder. Only owned runs are renewed (by run id): a row
//! whose claim committed but whose reply was lost has no execution behind
//! it, so its lease runs out and the reaper records it, instead of it
//! staying `running` (and blocking `overlap = "skip"`) until a restart.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::SignedDuration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use super::Core;
use crate::error::Result;
use crate::guard::Ended;
use crate::run::{ErrorCode, Outcome, Trigger};
use crate::store::{Abandoned, RunStore, Settle};

#[derive(Default)]
struct Runs {
    /// Claimed, not finished yet: run id → definition id.
    running: HashMap<Uuid, Uuid>,
    /// Finished, the row not written yet: run id → definition id.
    finished: HashMap<Uuid, Uuid>,
}

/// The runs this process owns (see the module doc).
#[derive(Default)]
pub(crate) struct Owned {
    runs: Mutex<Runs>,
    emptied: Notify,
}

impl Owned {
    /// Runs won by a claim, as (run id, definition id).
    pub fn claimed(&self, ids: impl IntoIterator<Item = (Uuid, Uuid)>) {
        self.runs.lock().expect("owned lock").running.extend(ids);
    }

    /// The run's result was handed to the recorder.
    pub fn finished(&self, id: Uuid) {
        let mut runs = self.runs.lock().expect("owned lock");
        if let Some(definition) = runs.running.remove(&id) {
            runs.finished.insert(id, definition);
        }
    }

    /// The rows were written (or given up on): no longer this process's.
    pub fn released(&self, ids: impl IntoIterator<Item = Uuid>) {
        let mut runs = self.runs.lock().expect("owned lock");
        for id in ids {
            runs.running.remove(&id);
            runs.finished.remove(&id);
        }
        if runs.running.is_empty() && runs.finished.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    pub fn all(&self) -> Vec<Uuid> {
        let runs = self.runs.lock().expect("owned lock");
        runs.running.keys().chain(runs.finished.keys()).copied().collect()
    }

    /// Finished runs of the activities `of` accepts whose rows still say
    /// `running`: not an overlap. A claim passes only its own activities'.
    pub fn finished_unwritten(&self, of: impl Fn(Uuid) -> bool) -> Vec<Uuid> {
        let runs = self.runs.lock().expect("owned lock");
        runs.finished
            .iter()
            .filter(|(_, definition)| of(**definition))
            .map(|(run, _)| *run)
            .collect()
    }

    pub fn len(&self) -> usize {
        let runs = self.runs.lock().expect("owned lock");
        runs.running.len() + runs.finished.len()
    }

    /// Returns once no run is owned.
    pub async fn until_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            emptied.await;
        }
    }
}

/// Renews the owned runs' leases every third of a lease and reaps the
/// runs of workers that died. Errors are logged and retried next tick.
pub(super) async fn keep<S: RunStore>(core: std::sync::Arc<Core<S>>, stop: CancellationToken) -> Result<()> {
    let every = (core.config.lease / 3).max(std::time::Duration::from_millis(200));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        renew_and_reap(&core).await;
    }
}

/// One tick: renew first, and reap only after a renewal went through, so
/// that after an outage this worker's own runs are never reaped before
/// their leases could be extended.
pub(super) async fn renew_and_reap<S: RunStore>(core: &Core<S>) {
    let lease = SignedDuration::try_from(core.config.lease).unwrap_or(SignedDuration::from_secs(30));
    let ids = core.owned.all();
    // Only leases ending within two thirds of a lease are extended (the
    // store filters), so every lease keeps at least a third to run and a
    // burst of short runs costs no row write at all.
    if let Err(e) = core.store.renew_leases(&ids, lease, lease * 2 / 3).await {
        warn!(error = %e, runs = ids.len(), "could not renew leases; retrying next tick");
        return;
    }
    match core.store.reap_expired().await {
        Ok(lost) if !lost.is_empty() => {
            warn!(
                runs = lost.len(),
                "runs whose worker stopped renewing their lease marked abandoned (worker_lost)"
            );
            settle_lost(core, &lost).await;
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "could not reap expired leases"),
    }
}

/// A lost run of a guarded activity feeds its error streak and retry
/// policy like any automation error (`worker_lost` is retryable).
async fn settle_lost<S: RunStore>(core: &Core<S>, lost: &[Abandoned]) {
    let specs = core.specs();
    let items: Vec<Settle> = lost
        .iter()
        .filter(|a| matches!(a.trigger, Trigger::Schedule | Trigger::Retry))
        .filter_map(|a| {
            let (spec, _) = specs.get(&a.definition_id)?;
            Some(Settle {
                policy: spec.policy.clone(),
                ended: Ended {
                    run_id: a.run_id,
                    trigger: a.trigger,
                    attempt: a.attempt,
                    root: a.retry_of.unwrap_or(a.run_id),
                    scheduled_for: a.scheduled_for,
                    outcome: Outcome::AutomationError,
                    error_code: Some(ErrorCode::WorkerLost),
                    finished_at: a.finished_at,
                    next_instant: a.scheduled_for.and_then(|i| spec.schedule.next_after(i)),
                },
            })
        })
        .collect();
    if let Err(e) = core.store.settle(&items, core.clock.now()).await {
        warn!(error = %e, runs = items.len(), "could not apply the retry policy to lost runs; they stay recorded as worker_lost");
    }
}
