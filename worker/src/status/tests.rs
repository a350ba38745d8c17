//! The recommendation over the situations an operator meets, one row each.

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use super::*;
use crate::definition::sample;

const SLUG: &str = "state-hub-consistency-sweep";

fn now() -> Timestamp {
    "2026-11-30T12:00:00Z".parse().unwrap()
}

fn def(paused: bool, enabled: bool) -> StoredDefinition {
    StoredDefinition {
        definition: sample(Uuid::from_u128(1), SLUG, "*/15 * * * *", "http://127.0.0.1:1/sweep"),
        spec_hash: "h".into(),
        enabled,
        paused,
        retired_at: None,
        updated_at: now(),
    }
}

fn run(minutes_ago: i64, outcome: &str, code: Option<&str>) -> RunRow {
    RunRow {
        run_id: Uuid::new_v4(),
        definition_id: Uuid::from_u128(1),
        fired_at: now() - SignedDuration::from_mins(minutes_ago),
        scheduled_for: Some(now() - SignedDuration::from_mins(minutes_ago)),
        trigger: "schedule".into(),
        source: "activity-core".into(),
        attempt: 1,
        state: "succeeded".into(),
        outcome: Some(outcome.into()),
        automation_error: outcome == "automation_error",
        assessment_failures: if outcome == "assessment_failures" { 3 } else { 0 },
        error_code: code.map(str::to_string),
        error_message: None,
        context_snapshot: serde_json::json!({"lateness_ms": 12}),
        worker_id: None,
        lease_expires_at: None,
        started_at: None,
        finished_at: None,
    }
}

fn errors(n: usize, code: &str) -> Vec<RunRow> {
    (0..n)
        .map(|i| run(i as i64 * 15, "automation_error", Some(code)))
        .collect()
}

fn guard(f: impl FnOnce(&mut GuardRow)) -> GuardRow {
    let mut g = GuardRow {
        definition_id: Uuid::from_u128(1),
        circuit: "closed".into(),
        ..GuardRow::default()
    };
    f(&mut g);
    g
}

struct Case {
    name: &'static str,
    paused: bool,
    enabled: bool,
    guard: Option<GuardRow>,
    recent: Vec<RunRow>,
    severity: Severity,
    /// Words the action must contain.
    says: &'static [&'static str],
}

fn case(name: &'static str, recent: Vec<RunRow>, severity: Severity, says: &'static [&'static str]) -> Case {
    Case {
        name,
        paused: false,
        enabled: true,
        guard: None,
        recent,
        severity,
        says,
    }
}

#[test]
fn the_recommendation_names_the_cause_and_the_command() {
    let opened = now() - SignedDuration::from_mins(20);
    let cases = vec![
        case("healthy", vec![run(5, "ok", None)], Severity::Ok, &["healthy"]),
        Case {
            paused: true,
            ..case(
                "paused",
                vec![run(5, "ok", None)],
                Severity::Warning,
                &["paused", "actcore resume state-hub-consistency-sweep"],
            )
        },
        Case {
            enabled: false,
            ..case("disabled", vec![], Severity::Info, &["enabled = true", "actcore sync"])
        },
        Case {
            guard: Some(guard(|g| {
                g.circuit = "open".into();
                g.consecutive_errors = 4;
                g.circuit_since = Some(opened);
                g.half_open_at = Some(opened + SignedDuration::from_mins(30));
            })),
            ..case(
                "circuit open automatically",
                errors(4, "transport"),
                Severity::Critical,
                &[
                    "bridge unreachable 4 times running",
                    "ops-bridge tunnel",
                    "`actcore circuit reset state-hub-consistency-sweep`",
                    "2026-11-30T12:10:00Z",
                ],
            )
        },
        Case {
            guard: Some(guard(|g| {
                g.circuit = "open".into();
                g.circuit_since = Some(opened);
                g.circuit_actor = Some("alice".into());
                g.circuit_reason = Some("State Hub maintenance".into());
            })),
            ..case(
                "circuit held open by an operator",
                vec![run(5, "ok", None)],
                Severity::Warning,
                &[
                    "held open by alice",
                    "State Hub maintenance",
                    "`actcore circuit reset state-hub-consistency-sweep`",
                ],
            )
        },
        Case {
            guard: Some(guard(|g| {
                g.circuit = "half_open".into();
                g.consecutive_errors = 3;
            })),
            ..case(
                "half-open",
                errors(3, "timeout"),
                Severity::Warning,
                &["half-open", "probe", "--force"],
            )
        },
        case(
            "transport errors",
            errors(2, "transport"),
            Severity::Warning,
            &[
                "bridge unreachable twice",
                "ops-bridge tunnel",
                "actcore trigger state-hub-consistency-sweep --wait",
            ],
        ),
        case(
            "timeouts",
            errors(3, "timeout"),
            Severity::Critical,
            &["bridge unreachable 3 times running"],
        ),
        case(
            "502s",
            errors(1, "http_5xx"),
            Severity::Warning,
            &["bridge unreachable once"],
        ),
        case(
            "C-00",
            errors(2, "remote"),
            Severity::Warning,
            &["C-00", "State Hub's sweep logs"],
        ),
        case(
            "4xx",
            errors(1, "http_4xx"),
            Severity::Critical,
            &["refused", "no retry will help", "definitions check --env"],
        ),
        case(
            "config",
            errors(1, "config"),
            Severity::Critical,
            &["unset ${VAR}", "no retry will help"],
        ),
        case(
            "bad response",
            errors(1, "bad_response"),
            Severity::Critical,
            &["not the JSON", "no retry will help"],
        ),
        case(
            "worker lost",
            errors(1, "worker_lost"),
            Severity::Warning,
            &["worker running it was lost"],
        ),
        Case {
            guard: Some(guard(|g| {
                g.window_started_at = Some(now() - SignedDuration::from_mins(10));
                g.window_attempts = 6;
            })),
            ..case(
                "budget exhausted",
                vec![run(5, "blocked_budget", None)],
                Severity::Warning,
                &["churn budget used (6 of 6", "blocked_budget until 2026-11-30T12:50:00Z"],
            )
        },
        Case {
            guard: Some(guard(|g| {
                g.window_started_at = Some(now() - SignedDuration::from_hours(2));
                g.window_attempts = 6;
            })),
            ..case(
                "a budget window that has moved on",
                vec![run(5, "ok", None)],
                Severity::Ok,
                &["healthy"],
            )
        },
        Case {
            guard: Some(guard(|g| {
                g.last_attempt_at = Some(now() - SignedDuration::from_secs(30))
            })),
            ..case(
                "cooldown",
                vec![run(1, "ok", None)],
                Severity::Info,
                &["cooling down", "2026-11-30T12:01:30Z"],
            )
        },
        case(
            "never run",
            vec![],
            Severity::Info,
            &[
                "never run yet",
                "2026-11-30T12:15:00Z",
                "actcore trigger state-hub-consistency-sweep --wait",
            ],
        ),
        case(
            "assessment failures",
            vec![run(5, "assessment_failures", None)],
            Severity::Info,
            &[
                "3 assessment failures",
                "follow up the repositories",
                "nothing is wrong with the automation",
            ],
        ),
        case(
            "lock skipped repeatedly",
            (0..3).map(|i| run(i * 15, "lock_skipped", None)).collect(),
            Severity::Warning,
            &["3 times running", "lock", "stuck sweep"],
        ),
        case(
            "lock skipped once",
            vec![run(5, "lock_skipped", None), run(20, "ok", None)],
            Severity::Ok,
            &["healthy"],
        ),
        Case {
            guard: Some(guard(|g| g.consecutive_errors = 0)),
            ..case(
                "a reset clears the streak the runs still show",
                errors(3, "transport"),
                Severity::Ok,
                &["healthy"],
            )
        },
    ];
    for c in cases {
        let d = def(c.paused, c.enabled);
        let s = summarise(&d, c.guard.as_ref(), &c.recent, None, now());
        assert_eq!(
            s.recommendation.severity, c.severity,
            "{}: {}",
            c.name, s.recommendation.action
        );
        for w in c.says {
            assert!(
                s.recommendation.action.contains(w),
                "{}: `{}` does not say `{w}`",
                c.name,
                s.recommendation.action
            );
        }
    }
}

#[test]
fn the_status_carries_next_instant_in_utc_and_local_and_the_last_runs_lateness() {
    let mut d = def(false, true);
    d.definition.schedule.timezone = "Europe/Amsterdam".into();
    let s = summarise(&d, None, &[run(5, "ok", None)], Some(now()), now());
    assert_eq!(s.next_instant, Some("2026-11-30T12:15:00Z".parse().unwrap()));
    assert_eq!(s.next_instant_local.as_deref(), Some("2026-11-30 13:15:00 CET"));
    assert_eq!(s.last_run.as_ref().and_then(|r| r.lateness_ms), Some(12));
    assert_eq!((s.state.as_str(), s.circuit.state.as_str()), ("active", "closed"));
    let paused = summarise(&def(true, true), None, &[], None, now());
    assert_eq!((paused.next_instant, paused.state.as_str()), (None, "paused"));
}

/// `status` takes the last success from the recent runs when one is there
/// (the store's longer walk only for the others): the newest success, not
/// an error or a skip after it, at its finish or else its fire time.
#[test]
fn the_last_success_is_read_from_the_recent_runs_when_one_is_there() {
    let mut recent = vec![
        run(1, "automation_error", Some("timeout")),
        run(2, "skipped_overlap", None),
        run(3, "assessment_failures", None),
        run(4, "ok", None),
    ];
    let finished = now() - SignedDuration::from_secs(150);
    recent[2].finished_at = Some(finished);
    assert_eq!(last_success_in(&recent), Some(finished));
    assert_eq!(last_success_in(&recent[3..]), Some(recent[3].fired_at));
    assert_eq!(last_success_in(&recent[..2]), None);
    assert_eq!(last_success_in(&[]), None);
}
