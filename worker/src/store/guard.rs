//! What the operator's surfaces read and override: the `activity_guard` row
//! of each activity (circuit, error streak, churn budget), the recent runs
//! that `actcore status`, `/v1/status`, `/metrics` and the page summarise,
//! and the audited overrides (pause, resume, circuit open, circuit reset).
//!
//! Each override writes its state change and its `activity_events` row in
//! one transaction: an override is never applied without its audit row.

use std::future::Future;

use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

use super::{NewEvent, RunRow, Store};
use crate::error::Result;

/// One `activity_guard` row. An activity without one has a closed circuit
/// and no errors (the row is created lazily).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GuardRow {
    pub definition_id: Uuid,
    pub consecutive_errors: i32,
    /// `closed`, `open` or `half_open`.
    pub circuit: String,
    pub circuit_since: Option<Timestamp>,
    /// When an open circuit lets one probe through; None while an operator holds it open.
    pub half_open_at: Option<Timestamp>,
    pub circuit_actor: Option<String>,
    pub circuit_reason: Option<String>,
    pub probe_run_id: Option<Uuid>,
    pub window_started_at: Option<Timestamp>,
    pub window_attempts: i32,
    pub last_attempt_at: Option<Timestamp>,
}

/// Which runs `GET /v1/runs`, the page and `actcore runs` read: every
/// filter applies in SQL, newest first, `limit` after filtering (0: all).
#[derive(Clone, Debug, Default)]
pub struct RunQuery {
    pub definition_id: Option<Uuid>,
    pub since: Option<Timestamp>,
    /// An `activity_runs.outcome` (`run::Outcome`'s text).
    pub outcome: Option<String>,
    /// An `activity_runs.trigger` (`run::Trigger`'s text).
    pub trigger: Option<String>,
    pub limit: i64,
}

/// A circuit override by an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitOverride {
    /// Held open until a reset: `half_open_at` null, no probe.
    Open,
    /// Closed, error streak and churn window cleared.
    Reset,
}

/// The operator's reads and overrides, on both backends.
pub trait GuardStore: Clone + Send + Sync + 'static {
    /// The guard rows of `ids` (only those that exist).
    fn guards(&self, ids: &[Uuid]) -> impl Future<Output = Result<Vec<GuardRow>>> + Send;

    /// The `per_activity` newest runs of each of `ids`, newest first per
    /// activity (queued and running ones included). Their
    /// `context_snapshot` holds only `lateness_ms`: summaries of thousands
    /// of activities need no response bodies (`run_by_id` has the whole).
    fn recent_runs(&self, ids: &[Uuid], per_activity: i64) -> impl Future<Output = Result<Vec<RunRow>>> + Send;

    /// When each of `ids` last succeeded (ok, assessment failures or lock
    /// skipped: the automation worked), from the run's end.
    fn last_successes(&self, ids: &[Uuid]) -> impl Future<Output = Result<Vec<(Uuid, Timestamp)>>> + Send;

    /// One run by id.
    fn run_by_id(&self, run_id: Uuid) -> impl Future<Output = Result<Option<RunRow>>> + Send;

    /// Runs newest first, filtered.
    fn query_runs(&self, q: &RunQuery) -> impl Future<Output = Result<Vec<RunRow>>> + Send;

    /// Sets the pause flag and writes `event`, in one transaction; false if no such activity.
    fn pause_audited(&self, id: Uuid, paused: bool, event: &NewEvent) -> impl Future<Output = Result<bool>> + Send;

    /// Applies a circuit override and writes `event`, in one transaction;
    /// `actor`/`reason` are kept on the guard row.
    fn override_circuit(
        &self,
        id: Uuid,
        what: CircuitOverride,
        actor: &str,
        reason: Option<&str>,
        event: &NewEvent,
    ) -> impl Future<Output = Result<()>> + Send;
}

macro_rules! backend {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Postgres($s) => $e.await,
            Store::Sqlite($s) => $e.await,
        }
    };
}

impl GuardStore for Store {
    async fn guards(&self, ids: &[Uuid]) -> Result<Vec<GuardRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        backend!(self, s => s.guards(ids))
    }

    async fn recent_runs(&self, ids: &[Uuid], per_activity: i64) -> Result<Vec<RunRow>> {
        if ids.is_empty() || per_activity <= 0 {
            return Ok(Vec::new());
        }
        backend!(self, s => s.recent_runs(ids, per_activity))
    }

    async fn last_successes(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, Timestamp)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        backend!(self, s => s.last_successes(ids))
    }

    async fn run_by_id(&self, run_id: Uuid) -> Result<Option<RunRow>> {
        backend!(self, s => s.run_by_id(run_id))
    }

    async fn query_runs(&self, q: &RunQuery) -> Result<Vec<RunRow>> {
        backend!(self, s => s.query_runs(q))
    }

    async fn pause_audited(&self, id: Uuid, paused: bool, event: &NewEvent) -> Result<bool> {
        backend!(self, s => s.pause_audited(id, paused, event))
    }

    async fn override_circuit(
        &self,
        id: Uuid,
        what: CircuitOverride,
        actor: &str,
        reason: Option<&str>,
        event: &NewEvent,
    ) -> Result<()> {
        backend!(self, s => s.override_circuit(id, what, actor, reason, event))
    }
}

/// The outcomes that mean the automation worked.
pub(crate) const SUCCESS_OUTCOMES: &str = "('ok', 'assessment_failures', 'lock_skipped')";

/// The columns of a [`RunRow`] but the snapshot, in every history read.
pub(crate) const RUN_COLUMNS_BUT_SNAPSHOT: &str = "run_id, definition_id, fired_at, scheduled_for, trigger, source, \
    attempt, state, outcome, automation_error, assessment_failures, error_code, error_message, worker_id, \
    lease_expires_at, started_at, finished_at";

/// The columns of a [`RunRow`].
pub(crate) fn run_columns() -> String {
    format!("{RUN_COLUMNS_BUT_SNAPSHOT}, context_snapshot")
}
