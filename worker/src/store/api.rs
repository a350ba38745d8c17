//! What each part of actcore needs from a store, as three narrow
//! interfaces: the worker's hot path and its history retention
//! ([`RunStore`]), the definitions it
//! fires ([`DefinitionSource`]) and the history the CLI reads
//! ([`HistoryStore`]). The worker loop is generic over the first two, so a
//! test wraps a real store in a fault-injecting one and nothing
//! backend-specific leaks into the loop.
//!
//! Every time a store *compares* (lease expiry, `updated_at`) comes from
//! the database's clock, never from the calling machine's: a replica or a
//! laptop with a fast clock must not reap live runs or hide instants.

use std::future::Future;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::queue::{AdmitItem, Dequeued, Expired, Queued, Settle};
use super::{
    Abandoned, ClaimBatch, Claimed, DefinitionsVersion, FinishRun, NewEvent, NewRun, RetentionRule, RunCount,
    RunCountQuery, RunFilter, RunRow, Store, StoredDefinition,
};
use crate::error::Result;
use crate::guard::Admission;
use crate::retention::{Gate, PassOutcome, Plan};
use crate::run::ErrorCode;

/// The worker's hot path: claim, finish, leases, reap, misfires.
pub trait RunStore: Clone + Send + Sync + 'static {
    /// Claims every item of one instant. Returns the rows this worker owns:
    /// those it inserted now and those a previous attempt with the same run
    /// ids inserted (a committed claim whose reply was lost is adopted, not
    /// orphaned). A row another replica inserted first is not returned.
    fn claim(&self, batch: &ClaimBatch<'_>) -> impl Future<Output = Result<Vec<Claimed>>> + Send;

    /// Inserts one finished row (a misfire summary); false when the fence
    /// already holds a row for its instant.
    fn insert_run(&self, run: &NewRun) -> impl Future<Output = Result<bool>> + Send;

    /// Writes finished runs (only rows still `running`); returns how many.
    fn finish_runs(&self, runs: &[FinishRun]) -> impl Future<Output = Result<u64>> + Send;

    /// Extends to `now() + lease` (database clock) the lease of each of
    /// `run_ids` still running whose lease ends within `renew_within`.
    fn renew_leases(
        &self,
        run_ids: &[Uuid],
        lease: SignedDuration,
        renew_within: SignedDuration,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Marks runs whose lease ended (database clock) `abandoned` (`worker_lost`).
    fn reap_expired(&self) -> impl Future<Output = Result<Vec<Abandoned>>> + Send;

    /// Marks this worker's unfinished runs `abandoned` with `code`.
    fn abandon_worker_runs(
        &self,
        worker_id: &str,
        code: ErrorCode,
        message: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<u64>> + Send;

    fn record_events(&self, events: &[NewEvent]) -> impl Future<Output = Result<()>> + Send;

    /// Decides whether won automated attempts of guarded activities may
    /// start (circuit, churn budget), in one transaction with their guard
    /// rows: blocked ones are recorded `skipped` with their outcome.
    fn admit(&self, items: &[AdmitItem], now: Timestamp)
    -> impl Future<Output = Result<Vec<(Uuid, Admission)>>> + Send;

    /// Guard updates and retries for runs that ended outside `finish_runs` (reaped).
    fn settle(&self, items: &[Settle], now: Timestamp) -> impl Future<Output = Result<()>> + Send;

    /// Creates the missing guard rows of the activities `ids` (a fresh
    /// row: circuit closed, no attempt counted) and returns how many. The
    /// worker calls it at start, so that the first instant of a new fleet
    /// takes `admit`'s one-statement path instead of creating and planning
    /// thousands of rows while it is due. A test double need not.
    fn create_guard_rows(&self, ids: &[Uuid]) -> impl Future<Output = Result<u64>> + Send {
        let _ = ids;
        async { Ok(0) }
    }

    /// Opens the store's connections and prepares on each the statements
    /// an instant runs (Postgres: `store/postgres/warm.rs`), so that the
    /// first burst after a start does not pay for new connections and
    /// their first parses while it is due. The worker calls it before
    /// `worker started` and only logs a failure. A store with nothing to
    /// warm (the embedded one: an in-process file; a test double) does nothing.
    fn warm_up(&self) -> impl Future<Output = Result<WarmUp>> + Send {
        async { Ok(WarmUp::default()) }
    }

    /// Claims up to `limit` queued runs due by `now` (one run, with `only`),
    /// `FOR UPDATE SKIP LOCKED`: each runs on exactly one replica.
    fn claim_queued(
        &self,
        worker_id: &str,
        lease: SignedDuration,
        now: Timestamp,
        limit: i64,
        only: Option<Uuid>,
    ) -> impl Future<Output = Result<Vec<Dequeued>>> + Send;

    /// Records the queued runs past their `expires_at` as not run (audited).
    fn expire_queued(&self, now: Timestamp, only: Option<Uuid>) -> impl Future<Output = Result<Vec<Expired>>> + Send;

    /// Queues one run and writes its audit rows, in one transaction; false if its id exists.
    fn enqueue(&self, q: &Queued, events: &[NewEvent]) -> impl Future<Output = Result<bool>> + Send;
    /// Whether this store keeps a history that [`RunStore::prune_runs`]
    /// deletes from (a test double does not: its pruner just waits).
    fn prunes_history(&self) -> bool {
        false
    }

    /// One bounded pass of history retention ([`crate::retention`]):
    /// deletes finished runs past their class's cutoff, `plan.limits.batch`
    /// rows per statement, pausing between statements, until none is left,
    /// `plan.limits.max_rows` is passed or the gate stops it (the gate also
    /// holds each statement back while the worker fires). Postgres holds an
    /// advisory lock for the pass, so one replica prunes at a time
    /// (`LockHeld` when another does); the embedded store is single node.
    fn prune_runs(&self, plan: &Plan, gate: &Gate<'_>) -> impl Future<Output = Result<PassOutcome>> + Send {
        let _ = (plan, gate);
        async { Ok(PassOutcome::Pruned(Default::default())) }
    }
}

/// What [`RunStore::warm_up`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WarmUp {
    /// Connections opened (or found idle) and held at once: distinct ones.
    pub connections: usize,
    /// Statements prepared on each of them.
    pub statements: usize,
}

/// The definitions a worker fires, and where it resumes.
pub trait DefinitionSource: Clone + Send + Sync + 'static {
    /// Every activity, retired ones included.
    fn definitions(&self) -> impl Future<Output = Result<Vec<StoredDefinition>>> + Send;

    /// Each activity's id, slug and `[retention]`, retired ones included:
    /// what a pruning pass plans from. Reads that part of each spec only,
    /// so that a pass does not build (and drop) every definition while
    /// an instant of 10,000 runs may be in flight.
    fn retention_rules(&self) -> impl Future<Output = Result<Vec<RetentionRule>>> + Send;

    /// A cheap fingerprint: unchanged means no re-read is needed.
    fn definitions_version(&self) -> impl Future<Output = Result<DefinitionsVersion>> + Send;

    /// The latest scheduled instant recorded per activity.
    fn last_scheduled(&self) -> impl Future<Output = Result<Vec<(Uuid, Timestamp)>>> + Send;

    /// Wakes `wake` when definitions change, until `stop` (a backend without
    /// notifications just waits for `stop`). An Err means it gave up.
    fn watch(&self, wake: Arc<Notify>, stop: CancellationToken) -> impl Future<Output = Result<()>> + Send;
}

/// The history operators read (`actcore runs`, `status`, tests).
pub trait HistoryStore: Clone + Send + Sync + 'static {
    fn runs(&self, filter: &RunFilter) -> impl Future<Output = Result<Vec<RunRow>>> + Send;
    fn event_kinds(&self, definition_id: Option<Uuid>) -> impl Future<Output = Result<Vec<(String, i64)>>> + Send;

    /// How many runs each (source, trigger, outcome) has in the window, in
    /// one GROUP BY; ordered by source, trigger, then outcome (runs without
    /// one last). `actcore runs summary`: the cluster against the fallback.
    fn run_counts(&self, q: &RunCountQuery) -> impl Future<Output = Result<Vec<RunCount>>> + Send;

    /// Every run of one instant of an activity (all triggers and attempts), first attempt first.
    fn slot_runs(
        &self,
        definition_id: Uuid,
        scheduled_for: Timestamp,
    ) -> impl Future<Output = Result<Vec<RunRow>>> + Send;

    /// The activity's runs that are running, or ended healthy (ok, assessment
    /// failures, lock skipped) at or after `since`: the fallback's cluster guard.
    fn live_or_healthy_since(
        &self,
        definition_id: Uuid,
        since: Timestamp,
    ) -> impl Future<Output = Result<Vec<RunRow>>> + Send;
}

macro_rules! backend {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Postgres($s) => $e.await,
            Store::Sqlite($s) => $e.await,
        }
    };
}

impl RunStore for Store {
    async fn claim(&self, batch: &ClaimBatch<'_>) -> Result<Vec<Claimed>> {
        backend!(self, s => s.claim(batch))
    }

    async fn insert_run(&self, run: &NewRun) -> Result<bool> {
        backend!(self, s => s.insert_run(run))
    }

    async fn finish_runs(&self, runs: &[FinishRun]) -> Result<u64> {
        backend!(self, s => s.finish_runs(runs))
    }

    async fn renew_leases(&self, run_ids: &[Uuid], lease: SignedDuration, renew_within: SignedDuration) -> Result<u64> {
        if run_ids.is_empty() {
            return Ok(0);
        }
        backend!(self, s => s.renew_leases(run_ids, lease, renew_within))
    }

    async fn reap_expired(&self) -> Result<Vec<Abandoned>> {
        backend!(self, s => s.reap_expired())
    }

    async fn abandon_worker_runs(
        &self,
        worker_id: &str,
        code: ErrorCode,
        message: &str,
        now: Timestamp,
    ) -> Result<u64> {
        backend!(self, s => s.abandon_worker_runs(worker_id, code, message, now))
    }

    async fn record_events(&self, events: &[NewEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        backend!(self, s => s.record_events(events))
    }

    async fn admit(&self, items: &[AdmitItem], now: Timestamp) -> Result<Vec<(Uuid, Admission)>> {
        backend!(self, s => s.admit(items, now))
    }

    async fn create_guard_rows(&self, ids: &[Uuid]) -> Result<u64> {
        backend!(self, s => s.create_guard_rows(ids))
    }

    async fn settle(&self, items: &[Settle], now: Timestamp) -> Result<()> {
        backend!(self, s => s.settle(items, now))
    }

    async fn warm_up(&self) -> Result<WarmUp> {
        match self {
            Store::Postgres(pg) => pg.warm_up().await,
            // One process on a local file: no connection to open, and
            // preparing a statement costs microseconds.
            Store::Sqlite(_) => Ok(WarmUp::default()),
        }
    }

    async fn claim_queued(
        &self,
        worker_id: &str,
        lease: SignedDuration,
        now: Timestamp,
        limit: i64,
        only: Option<Uuid>,
    ) -> Result<Vec<Dequeued>> {
        backend!(self, s => s.claim_queued(worker_id, lease, now, limit, only))
    }

    async fn expire_queued(&self, now: Timestamp, only: Option<Uuid>) -> Result<Vec<Expired>> {
        backend!(self, s => s.expire_queued(now, only))
    }

    async fn enqueue(&self, q: &Queued, events: &[NewEvent]) -> Result<bool> {
        backend!(self, s => s.enqueue(q, events))
    }

    fn prunes_history(&self) -> bool {
        true
    }

    async fn prune_runs(&self, plan: &Plan, gate: &Gate<'_>) -> Result<PassOutcome> {
        backend!(self, s => s.prune_runs(plan, gate))
    }
}

impl DefinitionSource for Store {
    async fn definitions(&self) -> Result<Vec<StoredDefinition>> {
        backend!(self, s => s.definitions())
    }

    async fn retention_rules(&self) -> Result<Vec<RetentionRule>> {
        backend!(self, s => s.retention_rules())
    }

    async fn definitions_version(&self) -> Result<DefinitionsVersion> {
        backend!(self, s => s.definitions_version())
    }

    async fn last_scheduled(&self) -> Result<Vec<(Uuid, Timestamp)>> {
        backend!(self, s => s.last_scheduled())
    }

    async fn watch(&self, wake: Arc<Notify>, stop: CancellationToken) -> Result<()> {
        match self {
            Store::Postgres(pg) => super::pg_listen::listen(pg, wake, stop).await,
            // No notifications: `sync` on the embedded store is picked up by
            // the periodic re-read. Waits, so that the worker's supervisor
            // does not take a return for a dead listener.
            Store::Sqlite(_) => {
                stop.cancelled().await;
                Ok(())
            }
        }
    }
}

impl HistoryStore for Store {
    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>> {
        backend!(self, s => s.runs(filter))
    }

    async fn event_kinds(&self, definition_id: Option<Uuid>) -> Result<Vec<(String, i64)>> {
        backend!(self, s => s.event_kinds(definition_id))
    }

    async fn run_counts(&self, q: &RunCountQuery) -> Result<Vec<RunCount>> {
        backend!(self, s => s.run_counts(q))
    }

    async fn slot_runs(&self, definition_id: Uuid, scheduled_for: Timestamp) -> Result<Vec<RunRow>> {
        backend!(self, s => s.slot_runs(definition_id, scheduled_for))
    }

    async fn live_or_healthy_since(&self, definition_id: Uuid, since: Timestamp) -> Result<Vec<RunRow>> {
        backend!(self, s => s.live_or_healthy_since(definition_id, since))
    }
}
