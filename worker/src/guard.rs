//! Guarded self-healing, pure (CONTRACTS §2 `[retry]`/`[guard]`, seed 001):
//! whether an automated attempt may start (circuit breaker, churn budget),
//! and what follows a run's end (error streak, circuit transitions, the
//! retry and when it may start). Every function takes `now`; the stores
//! apply the decisions to the `activity_guard` row they hold locked, in the
//! same transaction as the run rows, so every replica sees one state.
//!
//! Each decision carries its [`Audit`]: the stores write it as an
//! `activity_events` row and log it with the same fields.

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::audit::Audit;
use crate::definition::{Definition, GuardSpec, RetrySpec};

use crate::run::{ErrorCode, Outcome, Source, State, Trigger};
use crate::store::{GuardRow, Queued};

pub const CLOSED: &str = "closed";
pub const OPEN: &str = "open";
pub const HALF_OPEN: &str = "half_open";

/// What a guarded activity's policy needs, taken from its definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub definition_id: Uuid,
    pub slug: String,
    pub retry: RetrySpec,
    pub guard: GuardSpec,
}

impl Policy {
    /// The definition's policy. The churn budget never blocks the schedule
    /// itself: it is at least the instants per window plus one (estimated
    /// from the gap between the next two instants after `now`), so a
    /// `*/5 * * * * *` activity is not stopped by the default 6 per hour.
    pub fn of(d: &Definition, schedule: &crate::schedule::Schedule, now: Timestamp) -> Policy {
        let mut guard = d.guard.clone();
        let first = schedule.next_after(now);
        let second = first.and_then(|f| schedule.next_after(f));
        if let (Some(a), Some(b)) = (first, second) {
            let gap = b.duration_since(a).as_secs_f64().max(1.0);
            let per_window = (guard.window.signed().as_secs_f64() / gap).ceil().min(1e6) as u32;
            guard.max_automated_attempts = guard.max_automated_attempts.max(per_window.saturating_add(1));
        }
        Policy {
            definition_id: d.id,
            slug: d.slug.clone(),
            retry: d.retry.clone(),
            guard,
        }
    }

    fn audit(&self, kind: &'static str) -> Audit {
        Audit::new(kind, self.definition_id, &self.slug)
    }
}

/// May this automated attempt start?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Run,
    /// The half-open circuit's one probe: its end closes or reopens the circuit.
    Probe,
    /// Not executed: recorded with this outcome (`blocked_circuit_open`, `blocked_budget`).
    Blocked(Outcome),
}

/// Decides one automated attempt (a scheduled instant or a retry) of a
/// guarded activity, updating `row`: circuit first (open blocks; past
/// `half_open_at` one probe passes), then the churn budget (a tumbling
/// `window` of `max_automated_attempts`). An admitted attempt counts
/// against the budget and starts the cooldown.
pub fn admit(p: &Policy, row: &mut GuardRow, run_id: Uuid, now: Timestamp) -> (Admission, Option<Audit>) {
    let g = &p.guard;
    let probe = match row.circuit.as_str() {
        OPEN => match row.half_open_at {
            Some(at) if now >= at => true,
            _ => {
                let a = p
                    .audit("attempt_blocked")
                    .run(run_id)
                    .reason("circuit_open")
                    .with("half_open_at", row.half_open_at.map(|t| t.to_string()))
                    .with("held_by", row.circuit_actor.clone());
                return (Admission::Blocked(Outcome::BlockedCircuitOpen), Some(a));
            }
        },
        HALF_OPEN if row.probe_run_id.is_some() => {
            let a = p
                .audit("attempt_blocked")
                .run(run_id)
                .reason("circuit_half_open_probe_in_flight")
                .with("probe_run_id", row.probe_run_id.map(|u| u.to_string()));
            return (Admission::Blocked(Outcome::BlockedCircuitOpen), Some(a));
        }
        HALF_OPEN => true,
        _ => false,
    };
    let window = g.window.signed();
    if row.window_started_at.is_none_or(|s| now >= s + window) {
        row.window_started_at = Some(now);
        row.window_attempts = 0;
    }
    if row.window_attempts >= g.max_automated_attempts as i32 {
        let until = row.window_started_at.map(|s| s + window);
        let a = p
            .audit("attempt_blocked")
            .run(run_id)
            .reason("budget")
            .with("attempts", row.window_attempts)
            .with("max_automated_attempts", g.max_automated_attempts)
            .with("window_ends_at", until.map(|t| t.to_string()));
        return (Admission::Blocked(Outcome::BlockedBudget), Some(a));
    }
    row.window_attempts += 1;
    row.last_attempt_at = Some(now);
    if probe {
        row.circuit = HALF_OPEN.into();
        row.circuit_since = Some(now);
        row.probe_run_id = Some(run_id);
        let a = p
            .audit("circuit_half_open")
            .run(run_id)
            .with("consecutive_errors", row.consecutive_errors);
        return (Admission::Probe, Some(a));
    }
    (Admission::Run, None)
}

/// A run of a guarded activity that ended.
#[derive(Clone, Debug)]
pub struct Ended {
    pub run_id: Uuid,
    pub trigger: Trigger,
    pub attempt: i32,
    /// The first run of its chain (itself for a first attempt).
    pub root: Uuid,
    pub scheduled_for: Option<Timestamp>,
    pub outcome: Outcome,
    pub error_code: Option<ErrorCode>,
    pub finished_at: Timestamp,
    /// The activity's next scheduled instant after this run's: a retry
    /// that would start at or after it is dropped (the instant is the next try).
    pub next_instant: Option<Timestamp>,
}

/// What follows a run's end: the retry to queue, if any, and the audits.
#[derive(Debug, Default)]
pub struct Settled {
    pub retry: Option<Queued>,
    pub audits: Vec<Audit>,
}

/// Applies a run's end to `row` and plans its retry. Only automated
/// attempts (schedule, retry) feed the error streak and the circuit;
/// assessment failures and lock skips count as successes; a manual run
/// changes nothing.
pub fn settle(p: &Policy, row: &mut GuardRow, e: &Ended, now: Timestamp) -> Settled {
    let mut out = Settled::default();
    if !matches!(e.trigger, Trigger::Schedule | Trigger::Retry) {
        return out;
    }
    let was_probe = row.probe_run_id == Some(e.run_id);
    if was_probe {
        row.probe_run_id = None;
    }
    if e.outcome != Outcome::AutomationError {
        if e.outcome.state() == State::Skipped {
            return out;
        }
        row.consecutive_errors = 0;
        // An operator's hold (no half_open_at) stays until `circuit reset`.
        let held = row.circuit == OPEN && row.half_open_at.is_none();
        if row.circuit != CLOSED && !held {
            out.audits.push(
                p.audit("circuit_closed")
                    .run(e.run_id)
                    .with("after", if was_probe { "probe_succeeded" } else { "run_succeeded" })
                    .with("outcome", e.outcome.as_str()),
            );
            close(row, now);
        }
        return out;
    }
    row.consecutive_errors += 1;
    {
        let g = &p.guard;
        let reopen = was_probe && row.circuit == HALF_OPEN;
        let trip = row.circuit == CLOSED && row.consecutive_errors >= g.open_after as i32;
        if reopen || trip {
            row.circuit = OPEN.into();
            row.circuit_since = Some(now);
            row.half_open_at = Some(now + g.open_for.signed());
            row.circuit_actor = None;
            row.circuit_reason = Some(if reopen { "probe_failed" } else { "consecutive_errors" }.into());
            out.audits.push(
                p.audit("circuit_opened")
                    .run(e.run_id)
                    .reason(if reopen { "probe_failed" } else { "consecutive_errors" })
                    .with("consecutive_errors", row.consecutive_errors)
                    .with("error_code", e.error_code.map(|c| c.as_str()))
                    .with("half_open_at", row.half_open_at.map(|t| t.to_string())),
            );
        }
    }
    if let Some(retry) = plan_retry(p, row, e, now, &mut out.audits) {
        out.retry = Some(retry);
    }
    out
}

fn close(row: &mut GuardRow, now: Timestamp) {
    row.circuit = CLOSED.into();
    row.circuit_since = Some(now);
    row.half_open_at = None;
    row.circuit_actor = None;
    row.circuit_reason = None;
    row.probe_run_id = None;
}

/// The delay before attempt `attempt + 1`: `initial × coefficient^(attempt − 1)`, at most `max_interval`.
pub fn backoff(r: &RetrySpec, attempt: i32) -> SignedDuration {
    let initial = r.initial_interval.signed().as_secs_f64();
    let factor = r.backoff_coefficient.max(1.0).powi((attempt - 1).clamp(0, 60));
    let secs = (initial * factor).min(r.max_interval.signed().as_secs_f64());
    SignedDuration::try_from_secs_f64(secs).unwrap_or(r.max_interval.signed())
}

fn plan_retry(p: &Policy, row: &GuardRow, e: &Ended, now: Timestamp, audits: &mut Vec<Audit>) -> Option<Queued> {
    let r = &p.retry;
    if !e.error_code.is_some_and(ErrorCode::retryable) {
        return None;
    }
    if e.attempt >= r.max_attempts as i32 {
        audits.push(
            p.audit("retry_exhausted")
                .run(e.run_id)
                .with("attempt", e.attempt)
                .with("max_attempts", r.max_attempts),
        );
        return None;
    }
    let after_backoff = e.finished_at.max(now) + backoff(r, e.attempt);
    let cooldown_until = row
        .last_attempt_at
        .map_or(after_backoff, |last| last + p.guard.cooldown.signed());
    let not_before = after_backoff.max(cooldown_until);
    let drop = |reason: &str| {
        p.audit("retry_dropped")
            .run(e.run_id)
            .reason(reason)
            .with("attempt", e.attempt + 1)
            .with("would_start_at", not_before.to_string())
            .with("next_instant", e.next_instant.map(|t| t.to_string()))
    };
    if row.circuit == OPEN {
        audits.push(drop("circuit_open"));
        return None;
    }
    if let Some(start) = row.window_started_at {
        let g = &p.guard;
        let window_moves = not_before >= start + g.window.signed();
        if row.window_attempts >= g.max_automated_attempts as i32 && !window_moves {
            audits.push(drop("budget"));
            return None;
        }
    }
    if let Some(next) = e.next_instant
        && not_before >= next
    {
        let reason = if after_backoff < next {
            "cooldown"
        } else {
            "next_instant_too_close"
        };
        audits.push(drop(reason));
        return None;
    }
    let run_id = Uuid::now_v7();
    audits.push(
        p.audit("retry_scheduled")
            .run(run_id)
            .with("retry_of", e.root.to_string())
            .with("after_run", e.run_id.to_string())
            .with("attempt", e.attempt + 1)
            .with("not_before", not_before.to_string())
            .with("error_code", e.error_code.map(|c| c.as_str())),
    );
    let mut q = Queued::new(
        p.definition_id,
        Trigger::Retry,
        Source::ActivityCore,
        e.attempt + 1,
        e.scheduled_for,
        (not_before, e.next_instant),
        serde_json::json!({"trigger": "retry", "retry_of": e.root, "after_run": e.run_id}),
    );
    q.run.run_id = run_id;
    q.run.retry_of = Some(e.root);
    Some(q)
}

#[cfg(test)]
mod tests;
