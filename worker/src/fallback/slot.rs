//! Pure: which instant a fallback call stands for, whether it came too late,
//! and what the cluster's own rows for that instant leave to the fallback.
//! No I/O and no clock: every function takes the time it reasons about.

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::run::Source;
use crate::schedule::{Schedule, last_at_or_before};
use crate::store::RunRow;

/// The instant a call falls in: the latest instant not after the call, and
/// the one before it (the schedule's interval there, for the cluster guard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub instant: Timestamp,
    pub previous: Option<Timestamp>,
}

/// How far back a slot is looked for: a schedule with no instant in eight
/// years (`0 0 29 2 *` has two) has no slot.
const HORIZON: SignedDuration = SignedDuration::from_hours(24 * 366 * 8);

/// The slot `now` falls in, or None when the schedule had no instant in the horizon.
pub fn slot_at(schedule: &Schedule, now: Timestamp) -> Option<Slot> {
    let instant = last_not_after(schedule, now)?;
    let previous = instant
        .checked_sub(SignedDuration::from_nanos(1))
        .ok()
        .and_then(|before| last_not_after(schedule, before));
    Some(Slot { instant, previous })
}

/// The latest instant `<= upto`: gallops back until one is found, then bisects.
fn last_not_after(schedule: &Schedule, upto: Timestamp) -> Option<Timestamp> {
    let floor = upto.checked_sub(HORIZON).ok()?;
    let mut back = SignedDuration::from_secs(1);
    loop {
        let probe = upto.checked_sub(back).ok()?.max(floor);
        if let Some(known) = schedule.next_after(probe).filter(|t| *t <= upto) {
            return Some(last_at_or_before(schedule, known, upto));
        }
        if probe == floor {
            return None;
        }
        back = back.checked_mul(2)?;
    }
}

/// A call later than the grace after its slot is a misfire: skipped, as the
/// cluster skips an instant noticed too late (`misfire = "skip"`).
pub fn is_misfire(slot: &Slot, now: Timestamp, grace: SignedDuration) -> bool {
    now.duration_since(slot.instant) > grace
}

/// Where the cluster guard starts looking: two schedule intervals before
/// the slot (a cluster that swept either of the last two instants is
/// healthy). With no earlier instant, the slot itself.
pub fn guard_since(slot: &Slot) -> Timestamp {
    match slot.previous {
        Some(prev) => {
            let interval = slot.instant.duration_since(prev);
            slot.instant.checked_sub(interval * 2).unwrap_or(prev)
        }
        None => slot.instant,
    }
}

/// A run that shows a working cluster: in flight, or ended ok, with
/// assessment failures, or lock skipped. Automation errors and blocked or
/// skipped instants do not count: they are what the fallback is for.
pub fn is_live_or_healthy(run: &RunRow) -> bool {
    run.state == "running"
        || matches!(
            run.outcome.as_deref(),
            Some("ok" | "assessment_failures" | "lock_skipped")
        )
}

/// The first of `runs` (running, or ended healthy) that shows the *cluster*
/// working: the fallback's own runs of earlier slots do not, or a fallback
/// that swept the last slot would stand down at the next one.
pub fn cluster_evidence(runs: &[RunRow]) -> Option<&RunRow> {
    runs.iter()
        .find(|r| r.source != Source::LocalFallback.as_str() && is_live_or_healthy(r))
}

/// What the rows already recorded for the fallback's slot leave to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotClaim {
    /// Nothing holds the slot's first attempt: claim it (attempt 1).
    Free,
    /// A run of the slot is in flight or ended healthy: the slot is done, by `run_id`.
    Taken { run_id: Uuid },
    /// Every run of the slot failed or never ran: run as the next attempt of
    /// the chain that `retry_of` started.
    NextAttempt { attempt: i32, retry_of: Uuid },
}

/// Judges the slot's runs (every trigger and attempt of the instant),
/// ignoring `except` (the row being imported, when it is already there).
pub fn claim_of(slot_runs: &[RunRow], except: Option<Uuid>) -> SlotClaim {
    let runs: Vec<&RunRow> = slot_runs.iter().filter(|r| Some(r.run_id) != except).collect();
    if let Some(done) = runs.iter().find(|r| is_live_or_healthy(r)) {
        return SlotClaim::Taken { run_id: done.run_id };
    }
    let first = runs
        .iter()
        .find(|r| r.attempt == 1 && matches!(r.trigger.as_str(), "schedule" | "fallback"));
    match first {
        None => SlotClaim::Free,
        Some(first) => SlotClaim::NextAttempt {
            attempt: runs.iter().map(|r| r.attempt).max().unwrap_or(1) + 1,
            retry_of: first.run_id,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn every_15() -> Schedule {
        Schedule::new("*/15 * * * *", "UTC").unwrap()
    }

    fn row(attempt: i32, trigger: &str, state: &str, outcome: Option<&str>) -> RunRow {
        RunRow {
            run_id: Uuid::new_v4(),
            definition_id: Uuid::nil(),
            fired_at: t("2026-11-30T12:00:00Z"),
            scheduled_for: Some(t("2026-11-30T12:00:00Z")),
            trigger: trigger.into(),
            source: "activity-core".into(),
            attempt,
            state: state.into(),
            outcome: outcome.map(str::to_string),
            automation_error: outcome == Some("automation_error"),
            assessment_failures: 0,
            error_code: None,
            error_message: None,
            context_snapshot: serde_json::json!({}),
            worker_id: None,
            lease_expires_at: None,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn the_slot_is_the_latest_instant_not_after_the_call() {
        let s = every_15();
        let slot = slot_at(&s, t("2026-11-30T12:07:30Z")).unwrap();
        assert_eq!(slot.instant, t("2026-11-30T12:00:00Z"));
        assert_eq!(slot.previous, Some(t("2026-11-30T11:45:00Z")));
        // Exactly on an instant: that instant.
        let on = slot_at(&s, t("2026-11-30T12:15:00Z")).unwrap();
        assert_eq!(on.instant, t("2026-11-30T12:15:00Z"));
        // A daily schedule looks back a day.
        let daily = Schedule::new("30 2 * * *", "UTC").unwrap();
        let d = slot_at(&daily, t("2026-11-30T01:00:00Z")).unwrap();
        assert_eq!(d.instant, t("2026-11-29T02:30:00Z"));
        assert_eq!(d.previous, Some(t("2026-11-28T02:30:00Z")));
    }

    #[test]
    fn a_call_past_the_grace_is_a_misfire() {
        let slot = slot_at(&every_15(), t("2026-11-30T12:01:00Z")).unwrap();
        let grace = SignedDuration::from_secs(60);
        assert!(
            !is_misfire(&slot, t("2026-11-30T12:01:00Z"), grace),
            "exactly at the grace fires"
        );
        assert!(is_misfire(&slot, t("2026-11-30T12:01:00.001Z"), grace));
        assert!(!is_misfire(&slot, t("2026-11-30T12:00:00.2Z"), grace));
    }

    #[test]
    fn the_guard_looks_back_two_intervals() {
        let slot = slot_at(&every_15(), t("2026-11-30T12:00:10Z")).unwrap();
        assert_eq!(guard_since(&slot), t("2026-11-30T11:30:00Z"));
        let lone = Slot {
            instant: t("2026-11-30T12:00:00Z"),
            previous: None,
        };
        assert_eq!(guard_since(&lone), lone.instant);
    }

    #[test]
    fn only_running_or_healthy_runs_show_a_working_cluster() {
        for (state, outcome, healthy) in [
            ("running", None, true),
            ("succeeded", Some("ok"), true),
            ("succeeded", Some("assessment_failures"), true),
            ("succeeded", Some("lock_skipped"), true),
            ("failed", Some("automation_error"), false),
            ("abandoned", Some("automation_error"), false),
            ("skipped", Some("blocked_circuit_open"), false),
            ("skipped", Some("blocked_budget"), false),
            ("skipped", Some("skipped_misfire"), false),
        ] {
            assert_eq!(
                is_live_or_healthy(&row(1, "schedule", state, outcome)),
                healthy,
                "{state} {outcome:?}"
            );
        }
    }

    #[test]
    fn the_fallbacks_own_runs_are_no_evidence_of_a_working_cluster() {
        let mut own = row(1, "fallback", "succeeded", Some("ok"));
        own.source = "local-fallback".into();
        assert!(cluster_evidence(std::slice::from_ref(&own)).is_none());
        let failed = row(1, "schedule", "failed", Some("automation_error"));
        let cluster_ok = row(1, "schedule", "succeeded", Some("lock_skipped"));
        assert_eq!(
            cluster_evidence(&[own, failed, cluster_ok.clone()]).map(|r| r.run_id),
            Some(cluster_ok.run_id)
        );
    }

    #[test]
    fn a_failed_cluster_slot_leaves_the_next_attempt_a_healthy_one_nothing() {
        assert_eq!(claim_of(&[], None), SlotClaim::Free);
        let failed = row(1, "schedule", "failed", Some("automation_error"));
        let retried = row(2, "retry", "failed", Some("automation_error"));
        assert_eq!(
            claim_of(&[failed.clone(), retried.clone()], None),
            SlotClaim::NextAttempt {
                attempt: 3,
                retry_of: failed.run_id
            }
        );
        let ok = row(2, "retry", "succeeded", Some("ok"));
        assert_eq!(
            claim_of(&[failed.clone(), ok.clone()], None),
            SlotClaim::Taken { run_id: ok.run_id }
        );
        let running = row(1, "schedule", "running", None);
        assert_eq!(
            claim_of(std::slice::from_ref(&running), None),
            SlotClaim::Taken { run_id: running.run_id }
        );
        // The row being imported does not judge itself.
        assert_eq!(
            claim_of(std::slice::from_ref(&running), Some(running.run_id)),
            SlotClaim::Free
        );
        // A blocked instant is not a run: the fallback follows it.
        let blocked = row(1, "schedule", "skipped", Some("blocked_circuit_open"));
        assert_eq!(
            claim_of(std::slice::from_ref(&blocked), None),
            SlotClaim::NextAttempt {
                attempt: 2,
                retry_of: blocked.run_id
            }
        );
    }
}
