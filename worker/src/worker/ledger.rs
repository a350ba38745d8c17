//! Records the instants that were not fired, off the firing path: the
//! misfire policy's summaries, and the instants whose claim could not be
//! written within the grace (the database was away). Each becomes a
//! `skipped_misfire` row as soon as the database takes it, so that after
//! an outage every instant is one run row or part of a recorded misfire.
//!
//! While writes fail, consecutive lost instants of one activity are merged
//! into one summary; the rows go through the same fence as claims, so an
//! instant another replica fired is never also recorded as missed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use jiff::SignedDuration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};
use uuid::Uuid;

use super::clock::Clock;
use super::retry::{Backoff, is_transient};
use super::timers::Fireable;
use crate::error::Result;
use crate::misfire::MissedRange;
use crate::run::{Outcome, Source, State, Trigger};
use crate::snapshot::MisfireReason;
use crate::store::{NewEvent, NewRun, RunStore};

/// Instants of one activity not fired, and why.
pub(crate) struct Unfired {
    pub spec: Arc<Fireable>,
    pub range: MissedRange,
    pub reason: MisfireReason,
}

pub(crate) struct Ledger<S> {
    pub store: S,
    pub clock: Clock,
    pub worker_id: String,
    pub give_up: CancellationToken,
}

impl<S: RunStore> Ledger<S> {
    /// Runs until `stop`, then writes what is pending while the grace lasts.
    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<Unfired>, stop: CancellationToken) -> Result<()> {
        let mut pending = Pending::default();
        let mut incoming = Vec::new();
        let mut backoff = Backoff::new(SignedDuration::from_millis(100), SignedDuration::from_secs(5));
        loop {
            let retry_in = backoff.peek();
            tokio::select! {
                biased;
                n = rx.recv_many(&mut incoming, 1024) => {
                    if n == 0 { break; }
                    for u in incoming.drain(..) { merge(&mut pending, u); }
                }
                _ = stop.cancelled() => {
                    rx.close();
                    while let Ok(u) = rx.try_recv() { merge(&mut pending, u); }
                    break;
                }
                // Real time: the back-off paces a database, not a schedule.
                _ = tokio::time::sleep(retry_in.unsigned_abs()), if !pending.is_empty() => {}
            }
            match self.write(&mut pending).await {
                Ok(()) => backoff = Backoff::new(SignedDuration::from_millis(100), SignedDuration::from_secs(5)),
                Err(e) => {
                    let d = backoff.step();
                    warn!(error = %e, pending = pending.len(), retry_in_ms = d.as_millis(), "could not record missed instants; keeping them");
                }
            }
        }
        // Shutting down: keep trying until the grace is over.
        while !pending.is_empty() {
            if let Err(e) = self.write(&mut pending).await {
                if self.give_up.is_cancelled() {
                    error!(error = %e, rows = pending.len(), "shutdown grace over: missed instants not recorded (a restart counts them from the last recorded instant)");
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    _ = self.give_up.cancelled() => {}
                }
            }
        }
        Ok(())
    }

    /// Writes and removes the pending entries, oldest first; stops at the
    /// first transient error (the rest stay pending). A row the database
    /// refuses is logged and dropped.
    async fn write(&self, pending: &mut Pending) -> Result<()> {
        for list in pending.by_activity.values_mut() {
            while let Some(u) = list.front() {
                match self.record(u).await {
                    Ok(()) => {}
                    Err(e) if is_transient(&e) => return Err(e),
                    Err(e) => {
                        error!(error = %e, activity = %u.spec.definition.slug, "could not record a misfire; dropped")
                    }
                }
                list.pop_front();
            }
        }
        pending.by_activity.retain(|_, l| !l.is_empty());
        Ok(())
    }

    async fn record(&self, u: &Unfired) -> Result<()> {
        let Some(m) = u.range.count(&u.spec.schedule) else {
            return Ok(());
        };
        let def = &u.spec.definition;
        let now = self.clock.now();
        warn!(activity = %def.slug, missed = m.count, first = %m.first, last = %m.last, reason = ?u.reason,
              "instants not fired: recorded as skipped_misfire, not fired late");
        let snapshot = crate::snapshot::misfire(def, &u.spec.spec_hash, &m, u.reason, now);
        let row = NewRun {
            run_id: Uuid::now_v7(),
            definition_id: def.id,
            fired_at: now,
            scheduled_for: Some(m.last),
            trigger: Trigger::Schedule,
            source: Source::ActivityCore,
            attempt: 1,
            state: State::Skipped,
            outcome: Some(Outcome::SkippedMisfire),
            automation_error: false,
            assessment_failures: 0,
            error_code: None,
            error_message: None,
            worker_id: Some(self.worker_id.clone()),
            lease_expires_at: None,
            started_at: None,
            finished_at: Some(now),
            spec_hash: Some(u.spec.spec_hash.clone()),
            context_snapshot: snapshot,
            retry_of: None,
            actor: None,
            duplicate_of: None,
        };
        if self.store.insert_run(&row).await? {
            crate::api::metrics::instant_skipped(&def.slug, crate::api::metrics::SkipReason::Misfire);
            let event = NewEvent {
                at: now,
                definition_id: Some(def.id),
                run_id: Some(row.run_id),
                kind: "misfire".into(),
                detail: row.context_snapshot["misfire"].clone(),
            };
            if let Err(e) = self.store.record_events(&[event]).await {
                warn!(error = %e, "could not record a misfire event (the row is written)");
            }
        }
        Ok(())
    }
}

/// Unfired instants waiting to be written, per activity in order.
#[derive(Default)]
struct Pending {
    by_activity: HashMap<Uuid, VecDeque<Unfired>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.by_activity.is_empty()
    }

    fn len(&self) -> usize {
        self.by_activity.values().map(VecDeque::len).sum()
    }
}

/// Adds `u` to `pending`, merged into the activity's last entry when it
/// continues it (consecutive lost instants while the database is away).
fn merge(pending: &mut Pending, u: Unfired) {
    let list = pending.by_activity.entry(u.spec.definition.id).or_default();
    if let Some(last) = list.back_mut()
        && last.reason == u.reason
        && let Some(joined) = last.range.join(&u.range)
    {
        last.range = joined;
        return;
    }
    list.push_back(u);
}
