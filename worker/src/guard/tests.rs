//! The guard's rules on a virtual clock: every decision from (policy, row, now).

use super::*;
use crate::definition::sample;

const T0: &str = "2026-03-01T12:00:00Z";

fn t0() -> Timestamp {
    T0.parse().unwrap()
}

fn secs(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s)
}

/// A `*/15 * * * *` activity with open_after 2, budget 4 per hour, cooldown 60 s, retries 3 from 10 s.
fn policy() -> Policy {
    let mut d = sample(Uuid::from_u128(1), "a1", "*/15 * * * *", "http://127.0.0.1:9/x");
    d.guard.open_after = 2;
    d.guard.max_automated_attempts = 6;
    d.guard.cooldown = "60s".parse().unwrap();
    d.guard.open_for = "30m".parse().unwrap();
    d.retry.initial_interval = "10s".parse().unwrap();
    d.retry.max_attempts = 3;
    let schedule = d.parsed_schedule().unwrap();
    Policy::of(&d, &schedule, t0())
}

fn row() -> GuardRow {
    GuardRow {
        definition_id: Uuid::from_u128(1),
        circuit: CLOSED.into(),
        ..GuardRow::default()
    }
}

fn ended(run: u128, attempt: i32, outcome: Outcome, code: Option<ErrorCode>, at: Timestamp) -> Ended {
    Ended {
        run_id: Uuid::from_u128(run),
        trigger: if attempt == 1 {
            Trigger::Schedule
        } else {
            Trigger::Retry
        },
        attempt,
        root: Uuid::from_u128(100),
        scheduled_for: Some(t0()),
        outcome,
        error_code: code,
        finished_at: at,
        next_instant: Some(t0() + secs(900)),
    }
}

fn error(run: u128, attempt: i32, at: Timestamp) -> Ended {
    ended(run, attempt, Outcome::AutomationError, Some(ErrorCode::Http5xx), at)
}

#[test]
fn a_retryable_error_queues_a_retry_after_the_backoff_and_the_cooldown() {
    let p = policy();
    let mut r = row();
    assert_eq!(admit(&p, &mut r, Uuid::from_u128(100), t0()).0, Admission::Run);
    let s = settle(&p, &mut r, &error(100, 1, t0() + secs(2)), t0() + secs(2));
    let q = s.retry.expect("a retry");
    // Backoff 10 s after the end, but the cooldown is 60 s after the attempt's start.
    assert_eq!(q.not_before, t0() + secs(60));
    assert_eq!(
        (q.run.trigger, q.run.attempt, q.run.retry_of),
        (Trigger::Retry, 2, Some(Uuid::from_u128(100)))
    );
    assert_eq!(q.expires_at, Some(t0() + secs(900)));
    assert_eq!(s.audits.iter().map(|a| a.kind).collect::<Vec<_>>(), ["retry_scheduled"]);
}

#[test]
fn backoff_grows_by_the_coefficient_up_to_its_bound() {
    let mut p = policy();
    p.retry.backoff_coefficient = 2.0;
    p.retry.max_interval = "35s".parse().unwrap();
    let got: Vec<i64> = (1..=4).map(|a| backoff(&p.retry, a).as_secs()).collect();
    assert_eq!(got, [10, 20, 35, 35]);
}

#[test]
fn no_retry_for_assessment_failures_a_4xx_or_the_last_attempt() {
    let p = policy();
    let mut r = row();
    let s = settle(&p, &mut r, &ended(1, 1, Outcome::AssessmentFailures, None, t0()), t0());
    assert!(s.retry.is_none() && s.audits.is_empty());
    assert_eq!(r.consecutive_errors, 0);
    let s = settle(
        &p,
        &mut r,
        &ended(2, 1, Outcome::AutomationError, Some(ErrorCode::Http4xx), t0()),
        t0(),
    );
    assert!(s.retry.is_none());
    let s = settle(&p, &mut r, &error(3, 3, t0()), t0());
    assert!(s.retry.is_none());
    assert_eq!(s.audits.last().map(|a| a.kind), Some("retry_exhausted"));
}

#[test]
fn a_retry_that_would_reach_the_next_instant_is_dropped_and_says_why() {
    let p = policy();
    let mut r = row();
    r.last_attempt_at = Some(t0() + secs(880));
    // Backoff alone (10 s) fits before the next instant; the cooldown does not.
    let s = settle(&p, &mut r, &error(1, 1, t0() + secs(885)), t0() + secs(885));
    assert!(s.retry.is_none());
    assert_eq!(s.audits[0].kind, "retry_dropped");
    assert_eq!(s.audits[0].reason.as_deref(), Some("cooldown"));
    let mut r = row();
    let s = settle(&p, &mut r, &error(2, 1, t0() + secs(895)), t0() + secs(895));
    assert_eq!(s.audits[0].reason.as_deref(), Some("next_instant_too_close"));
}

#[test]
fn the_budget_blocks_attempts_until_the_window_moves() {
    let p = policy();
    let mut r = row();
    for i in 0..6 {
        assert_eq!(
            admit(&p, &mut r, Uuid::from_u128(i), t0() + secs(i as i64)).0,
            Admission::Run
        );
    }
    let (a, audit) = admit(&p, &mut r, Uuid::from_u128(7), t0() + secs(10));
    assert_eq!(a, Admission::Blocked(Outcome::BlockedBudget));
    assert_eq!(audit.unwrap().reason.as_deref(), Some("budget"));
    // A retry planned inside the exhausted window is dropped for the budget.
    let s = settle(&p, &mut r, &error(5, 1, t0() + secs(11)), t0() + secs(11));
    assert_eq!(s.audits.last().unwrap().reason.as_deref(), Some("budget"));
    // The window (1 h) moves: attempts are admitted again.
    assert_eq!(
        admit(&p, &mut r, Uuid::from_u128(8), t0() + secs(3600)).0,
        Admission::Run
    );
    assert_eq!(r.window_attempts, 1);
}

#[test]
fn the_budget_never_blocks_a_frequent_schedule_by_default() {
    let d = sample(Uuid::from_u128(2), "fast", "*/5 * * * * *", "http://127.0.0.1:9/x");
    let p = Policy::of(&d, &d.parsed_schedule().unwrap(), t0());
    assert!(
        p.guard.max_automated_attempts > 720,
        "{}",
        p.guard.max_automated_attempts
    );
}

#[test]
fn the_circuit_opens_blocks_half_opens_and_closes_on_a_good_probe() {
    let p = policy();
    let mut r = row();
    settle(&p, &mut r, &error(1, 1, t0()), t0());
    assert_eq!(r.circuit, CLOSED);
    let s = settle(&p, &mut r, &error(2, 1, t0() + secs(1)), t0() + secs(1));
    assert_eq!(r.circuit, OPEN);
    assert!(s.audits.iter().any(|a| a.kind == "circuit_opened"));
    assert!(s.retry.is_none(), "no retry into an open circuit");
    assert_eq!(r.half_open_at, Some(t0() + secs(1) + secs(1800)));
    let (a, _) = admit(&p, &mut r, Uuid::from_u128(3), t0() + secs(900));
    assert_eq!(a, Admission::Blocked(Outcome::BlockedCircuitOpen));
    let (a, audit) = admit(&p, &mut r, Uuid::from_u128(4), t0() + secs(1801));
    assert_eq!(a, Admission::Probe);
    assert_eq!(audit.unwrap().kind, "circuit_half_open");
    // While the probe runs, other attempts are blocked.
    let (a, _) = admit(&p, &mut r, Uuid::from_u128(5), t0() + secs(1802));
    assert_eq!(a, Admission::Blocked(Outcome::BlockedCircuitOpen));
    let s = settle(
        &p,
        &mut r,
        &ended(4, 1, Outcome::LockSkipped, None, t0() + secs(1810)),
        t0() + secs(1810),
    );
    assert_eq!((r.circuit.as_str(), r.consecutive_errors), (CLOSED, 0));
    assert_eq!(s.audits[0].kind, "circuit_closed");
}

#[test]
fn a_failed_probe_reopens_the_circuit() {
    let p = policy();
    let mut r = row();
    r.circuit = OPEN.into();
    r.consecutive_errors = 2;
    r.half_open_at = Some(t0());
    assert_eq!(admit(&p, &mut r, Uuid::from_u128(9), t0()).0, Admission::Probe);
    let s = settle(&p, &mut r, &error(9, 1, t0() + secs(5)), t0() + secs(5));
    assert_eq!(r.circuit, OPEN);
    assert_eq!(r.half_open_at, Some(t0() + secs(5) + secs(1800)));
    assert_eq!(s.audits[0].reason.as_deref(), Some("probe_failed"));
}

#[test]
fn an_operators_hold_blocks_until_reset_and_a_success_does_not_lift_it() {
    let p = policy();
    let mut r = row();
    r.circuit = OPEN.into();
    r.half_open_at = None;
    r.circuit_actor = Some("alice".into());
    let (a, audit) = admit(&p, &mut r, Uuid::from_u128(1), t0() + secs(86_400));
    assert_eq!(a, Admission::Blocked(Outcome::BlockedCircuitOpen));
    assert!(audit.unwrap().detail.get("held_by").is_some());
    settle(&p, &mut r, &ended(2, 1, Outcome::Ok, None, t0()), t0());
    assert_eq!(r.circuit, OPEN);
}

#[test]
fn manual_runs_and_skipped_rows_change_nothing() {
    let p = policy();
    let mut r = row();
    let mut manual = error(1, 1, t0());
    manual.trigger = Trigger::Manual;
    for _ in 0..5 {
        assert!(settle(&p, &mut r, &manual, t0()).retry.is_none());
    }
    assert_eq!(r.consecutive_errors, 0);
    r.consecutive_errors = 1;
    settle(&p, &mut r, &ended(2, 1, Outcome::BlockedBudget, None, t0()), t0());
    assert_eq!(r.consecutive_errors, 1);
}
