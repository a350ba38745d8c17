//! The durable queue (retries, manual triggers, buffered instants) and the
//! guard decisions taken in the same transactions as run rows.
//!
//! A queued row is an `activity_runs` row in state `queued` with a
//! `not_before` and an optional `expires_at`; any replica claims it with
//! `FOR UPDATE SKIP LOCKED`, so a retry scheduled by a replica that then
//! dies runs once on another. The guard planning here is shared by both
//! backends: each locks the `activity_guard` rows, calls [`plan_admit`] or
//! [`plan_settle`] (pure, [`crate::guard`]), and writes what they return.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use uuid::Uuid;

use super::{GuardRow, NewEvent, NewRun};
use crate::audit::Audit;
use crate::guard::{self, Admission, Ended, Policy};
use crate::run::{Outcome, Source, Trigger};

/// A run to put in the queue.
#[derive(Clone, Debug)]
pub struct Queued {
    pub run: NewRun,
    pub not_before: Timestamp,
    /// Past it the run is recorded as not run (`expired`, or `skipped_misfire`
    /// for a buffered instant) and never starts.
    pub expires_at: Option<Timestamp>,
}

impl Queued {
    /// A queued first attempt or retry: the one place its row is shaped
    /// (callers set `retry_of` / `actor` on `run`).
    pub fn new(
        definition_id: Uuid,
        trigger: Trigger,
        source: Source,
        attempt: i32,
        scheduled_for: Option<Timestamp>,
        window: (Timestamp, Option<Timestamp>),
        snapshot: serde_json::Value,
    ) -> Queued {
        let (not_before, expires_at) = window;
        Queued {
            run: NewRun {
                run_id: Uuid::now_v7(),
                definition_id,
                fired_at: not_before,
                scheduled_for,
                trigger,
                source,
                attempt,
                state: crate::run::State::Queued,
                outcome: None,
                automation_error: false,
                assessment_failures: 0,
                error_code: None,
                error_message: None,
                context_snapshot: snapshot,
                worker_id: None,
                lease_expires_at: None,
                started_at: None,
                finished_at: None,
                spec_hash: None,
                retry_of: None,
                actor: None,
                duplicate_of: None,
            },
            not_before,
            expires_at,
        }
    }
}

/// A queued run this worker claimed: it is `running` under this worker's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dequeued {
    pub run_id: Uuid,
    pub definition_id: Uuid,
    pub trigger: Trigger,
    pub source: Source,
    pub attempt: i32,
    pub retry_of: Option<Uuid>,
    pub scheduled_for: Option<Timestamp>,
}

/// A queued run nobody claimed before its `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    pub run_id: Uuid,
    pub definition_id: Uuid,
    pub trigger: Trigger,
}

/// An automated attempt of a guarded activity, won, not started yet.
#[derive(Clone, Debug)]
pub struct AdmitItem {
    pub run_id: Uuid,
    pub policy: Arc<Policy>,
}

/// A guarded activity's run that ended: its guard update and retry are
/// written with its result.
#[derive(Clone, Debug)]
pub struct Settle {
    pub policy: Arc<Policy>,
    pub ended: Ended,
}

/// What a guard transaction writes.
#[derive(Debug, Default)]
pub(crate) struct GuardPlan {
    pub guards: Vec<GuardRow>,
    pub admitted: Vec<(Uuid, Admission)>,
    /// Won runs not to execute, with their outcome.
    pub blocked: Vec<(Uuid, Outcome)>,
    pub queued: Vec<Queued>,
    pub audits: Vec<Audit>,
}

impl GuardPlan {
    pub fn events(&self, at: Timestamp) -> Vec<NewEvent> {
        self.audits.iter().map(|a| a.event(at)).collect()
    }

    /// The log lines, once the transaction committed.
    pub fn log(&self) {
        for a in &self.audits {
            a.log();
        }
    }
}

/// The activities to lock, in one order (definition id) for every replica.
pub(crate) fn ids_of<'a>(policies: impl Iterator<Item = &'a Policy>) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = policies.map(|p| p.definition_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Admissions of `items`, in order, on the locked `rows`.
pub(crate) fn plan_admit(mut rows: HashMap<Uuid, GuardRow>, items: &[AdmitItem], now: Timestamp) -> GuardPlan {
    let before = rows.clone();
    let mut plan = GuardPlan::default();
    for i in items {
        let row = rows
            .entry(i.policy.definition_id)
            .or_insert_with(|| fresh(i.policy.definition_id));
        let (admission, audit) = guard::admit(&i.policy, row, i.run_id, now);
        if let Admission::Blocked(outcome) = admission {
            plan.blocked.push((i.run_id, outcome));
        }
        plan.admitted.push((i.run_id, admission));
        plan.audits.extend(audit);
    }
    plan.guards = changed(before, rows);
    plan
}

/// The rows a plan changed: only those are written back.
fn changed(before: HashMap<Uuid, GuardRow>, after: HashMap<Uuid, GuardRow>) -> Vec<GuardRow> {
    after
        .into_values()
        .filter(|g| before.get(&g.definition_id) != Some(g))
        .collect()
}

/// Guard updates and retries for the runs that ended, on the locked `rows`.
pub(crate) fn plan_settle(mut rows: HashMap<Uuid, GuardRow>, items: &[&Settle], now: Timestamp) -> GuardPlan {
    let before = rows.clone();
    let mut plan = GuardPlan::default();
    for s in items {
        let row = rows
            .entry(s.policy.definition_id)
            .or_insert_with(|| fresh(s.policy.definition_id));
        let settled = guard::settle(&s.policy, row, &s.ended, s.ended.finished_at.max(now));
        plan.queued.extend(settled.retry);
        plan.audits.extend(settled.audits);
    }
    plan.guards = changed(before, rows);
    plan
}

fn fresh(definition_id: Uuid) -> GuardRow {
    GuardRow {
        definition_id,
        circuit: guard::CLOSED.into(),
        ..GuardRow::default()
    }
}

/// The message of a run that was never started because it expired in the queue.
pub(crate) fn expired_message(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Schedule => "buffered behind a running run past its grace; not started",
        _ => "no worker claimed it before it expired; it will never start",
    }
}

/// The message of a blocked attempt.
pub(crate) fn blocked_message(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::BlockedBudget => "the churn budget of automated attempts is used up for this window",
        _ => "the circuit breaker is open",
    }
}

/// The audit rows of runs that expired in the queue (logged here too).
pub(crate) fn expired_events(expired: &[Expired], now: Timestamp) -> Vec<NewEvent> {
    expired
        .iter()
        .map(|x| {
            tracing::warn!(run_id = %x.run_id, definition_id = %x.definition_id, trigger = %x.trigger, "{}", expired_message(x.trigger));
            NewEvent {
                at: now,
                definition_id: Some(x.definition_id),
                run_id: Some(x.run_id),
                kind: "run_expired".into(),
                detail: serde_json::json!({"trigger": x.trigger.as_str(), "reason": expired_message(x.trigger)}),
            }
        })
        .collect()
}
