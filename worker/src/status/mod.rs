//! Per-activity status and the recommended action: one function
//! ([`collect`]) feeds `actcore status`, `GET /v1/status` and the page, so
//! an operator reads the same words wherever they look.
//!
//! [`collect`] reads the store (definitions, guard rows, recent runs, last
//! successes) in a few batched queries; [`summarise`] and
//! [`recommend::recommend`] are pure and take the time as an argument.

pub mod recommend;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use uuid::Uuid;

pub use self::recommend::{Recommendation, Severity, recommend};
use crate::error::Result;
use crate::store::{GuardRow, GuardStore, RunRow, StoredDefinition};

/// How many recent runs per activity [`collect`] reads: enough to count a
/// streak of errors or lock skips that the recommendation names.
pub const RECENT: i64 = 10;

/// The last run of an activity, as the status shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LastRun {
    pub run_id: Uuid,
    pub fired_at: Timestamp,
    pub scheduled_for: Option<Timestamp>,
    pub trigger: String,
    pub state: String,
    pub outcome: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub assessment_failures: i32,
    /// From the snapshot: how late the request left after its fire time.
    pub lateness_ms: Option<i64>,
}

/// The circuit as the status shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Circuit {
    /// `closed`, `open` or `half_open`.
    pub state: String,
    pub since: Option<Timestamp>,
    /// When the next probe is let through; None while an operator holds it open.
    pub half_open_at: Option<Timestamp>,
    /// Opened by an operator (`circuit open`): holds until `circuit reset`.
    pub held_by_operator: bool,
    pub actor: Option<String>,
    pub reason: Option<String>,
}

/// One activity's state and what to do about it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActivityStatus {
    pub slug: String,
    pub definition_id: Uuid,
    pub name: String,
    /// `active`, `paused`, `disabled` or `retired`.
    pub state: String,
    pub paused: bool,
    pub cron: String,
    pub timezone: String,
    /// The next scheduled instant in UTC (None when it does not fire).
    pub next_instant: Option<Timestamp>,
    /// The same instant in the definition's time zone.
    pub next_instant_local: Option<String>,
    pub last_run: Option<LastRun>,
    /// The end of the last run that was ok, had assessment failures or was lock-skipped.
    pub last_success_at: Option<Timestamp>,
    pub consecutive_automation_errors: u32,
    /// The error code of the newest automation error of the streak.
    pub last_error_code: Option<String>,
    /// Lock skips in a row among the newest runs.
    pub consecutive_lock_skips: u32,
    pub attempts_in_window: u32,
    pub max_automated_attempts: u32,
    /// When the churn window ends (None when no window is running).
    pub window_ends_at: Option<Timestamp>,
    pub cooldown_until: Option<Timestamp>,
    pub circuit: Circuit,
    pub recommendation: Recommendation,
}

impl ActivityStatus {
    pub fn budget_exhausted(&self) -> bool {
        self.max_automated_attempts > 0
            && self.window_ends_at.is_some()
            && self.attempts_in_window >= self.max_automated_attempts
    }
}

/// The status of each of `defs` at `now`, in the order given.
pub async fn collect<S: GuardStore>(
    store: &S,
    defs: &[StoredDefinition],
    now: Timestamp,
) -> Result<Vec<ActivityStatus>> {
    let ids: Vec<Uuid> = defs.iter().map(|d| d.definition.id).collect();
    let guards: HashMap<Uuid, GuardRow> = store
        .guards(&ids)
        .await?
        .into_iter()
        .map(|g| (g.definition_id, g))
        .collect();
    let mut recent: HashMap<Uuid, Vec<RunRow>> = HashMap::new();
    for r in store.recent_runs(&ids, RECENT).await? {
        recent.entry(r.definition_id).or_default().push(r);
    }
    // The last success is usually among the recent runs; only the
    // activities without one there need the longer walk of their history.
    let mut successes: HashMap<Uuid, Timestamp> = recent
        .iter()
        .filter_map(|(id, runs)| Some((*id, last_success_in(runs)?)))
        .collect();
    let missing: Vec<Uuid> = ids.iter().filter(|id| !successes.contains_key(id)).copied().collect();
    if !missing.is_empty() {
        successes.extend(store.last_successes(&missing).await?);
    }
    Ok(defs
        .iter()
        .map(|d| {
            let id = d.definition.id;
            summarise(
                d,
                guards.get(&id),
                recent.get(&id).map(Vec::as_slice).unwrap_or_default(),
                successes.get(&id).copied(),
                now,
            )
        })
        .collect())
}

/// When the newest success of `recent` (newest first) ended, as
/// `GuardStore::last_successes` answers it: its finish, or its fire time.
pub fn last_success_in(recent: &[RunRow]) -> Option<Timestamp> {
    recent
        .iter()
        .find(|r| {
            r.outcome
                .as_deref()
                .and_then(|o| o.parse::<crate::run::Outcome>().ok())
                .is_some_and(|o| matches!(o.state(), crate::run::State::Succeeded))
        })
        .map(|r| r.finished_at.unwrap_or(r.fired_at))
}

/// Pure: one activity's status from what the store holds. `recent` is
/// newest first.
pub fn summarise(
    d: &StoredDefinition,
    guard: Option<&GuardRow>,
    recent: &[RunRow],
    last_success_at: Option<Timestamp>,
    now: Timestamp,
) -> ActivityStatus {
    let def = &d.definition;
    let state = if d.retired_at.is_some() {
        "retired"
    } else if d.paused {
        "paused"
    } else if !d.enabled {
        "disabled"
    } else {
        "active"
    };
    let schedule = def.parsed_schedule().ok();
    let next_instant = if d.is_active() {
        schedule.as_ref().and_then(|s| s.next_after(now))
    } else {
        None
    };
    // The budget the worker applies (raised to the schedule's instants per window + 1).
    let budget = schedule.as_ref().map_or(def.guard.max_automated_attempts, |s| {
        crate::guard::Policy::of(def, s, now).guard.max_automated_attempts
    });
    let next_instant_local = next_instant.and_then(|t| {
        let tz = TimeZone::get(&def.schedule.timezone).ok()?;
        Some(t.to_zoned(tz).strftime("%Y-%m-%d %H:%M:%S %Z").to_string())
    });
    // Finished runs only: a queued or running row has no outcome yet.
    let finished: Vec<&RunRow> = recent.iter().filter(|r| r.outcome.is_some()).collect();
    let last_run = recent.first().map(|r| LastRun {
        run_id: r.run_id,
        fired_at: r.fired_at,
        scheduled_for: r.scheduled_for,
        trigger: r.trigger.clone(),
        state: r.state.clone(),
        outcome: r.outcome.clone(),
        error_code: r.error_code.clone(),
        error_message: r.error_message.clone(),
        assessment_failures: r.assessment_failures,
        lateness_ms: r.context_snapshot.get("lateness_ms").and_then(|v| v.as_i64()),
    });
    let streak = |outcome: &str| {
        finished
            .iter()
            .take_while(|r| r.outcome.as_deref() == Some(outcome))
            .count() as u32
    };
    // The guard row counts automated attempts across the whole history and
    // is cleared by a reset; without one (nothing recorded by the guard
    // yet) the streak is read from the recent runs.
    let consecutive_automation_errors = match guard {
        Some(g) => g.consecutive_errors.max(0) as u32,
        None => streak("automation_error"),
    };
    let last_error_code = if consecutive_automation_errors > 0 {
        finished
            .iter()
            .find(|r| r.outcome.as_deref() == Some("automation_error"))
            .and_then(|r| r.error_code.clone())
    } else {
        None
    };
    let spec = &def.guard;
    let window_ends_at = guard
        .and_then(|g| g.window_started_at)
        .map(|s| s + spec.window.signed())
        .filter(|end| *end > now);
    let attempts_in_window = if window_ends_at.is_some() {
        guard.map_or(0, |g| g.window_attempts.max(0) as u32)
    } else {
        0
    };
    let cooldown_until = guard
        .and_then(|g| g.last_attempt_at)
        .map(|t| t + spec.cooldown.signed())
        .filter(|t| *t > now && spec.cooldown.signed() > SignedDuration::ZERO);
    let circuit = match guard {
        Some(g) => Circuit {
            state: g.circuit.clone(),
            since: g.circuit_since,
            half_open_at: g.half_open_at,
            held_by_operator: g.circuit == "open" && g.half_open_at.is_none(),
            actor: g.circuit_actor.clone(),
            reason: g.circuit_reason.clone(),
        },
        None => Circuit {
            state: "closed".into(),
            since: None,
            half_open_at: None,
            held_by_operator: false,
            actor: None,
            reason: None,
        },
    };
    let mut status = ActivityStatus {
        slug: def.slug.clone(),
        definition_id: def.id,
        name: def.name.clone(),
        state: state.into(),
        paused: d.paused,
        cron: def.schedule.cron.clone(),
        timezone: def.schedule.timezone.clone(),
        next_instant,
        next_instant_local,
        last_run,
        last_success_at,
        consecutive_automation_errors,
        last_error_code,
        consecutive_lock_skips: streak("lock_skipped"),
        attempts_in_window,
        max_automated_attempts: budget,
        window_ends_at,
        cooldown_until,
        circuit,
        recommendation: Recommendation::default(),
    };
    status.recommendation = recommend(&status);
    status
}
