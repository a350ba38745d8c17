//! Pure retention policy: no I/O, `now` is an argument.
//!
//! A finished run is in one of two classes. **Succeeded** rows (outcome
//! `ok`, `lock_skipped`, the skipped ones `skipped_*` and the blocked ones
//! `blocked_*`) are kept for `retention.succeeded` (14 days by default);
//! everything else that ended (`assessment_failures`, `automation_error`,
//! `abandoned` runs, a row without an outcome) is **failed** and kept for
//! `retention.failed` (90 days). A row still `queued` or `running` is in no
//! class and is never pruned. Age is counted from `fired_at` (indexed:
//! `activity_runs_fired`, `activity_runs_history`).

use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use uuid::Uuid;

use crate::definition::RetentionSpec;
use crate::run::{Outcome, State};
use crate::store::NewEvent;

/// The key of the Postgres advisory lock a pruning pass holds: one replica
/// prunes at a time (the bytes of "actprune").
pub const PG_LOCK_KEY: i64 = 0x6163_7470_7275_6e65;

/// The `activity_events.kind` of a pass's audit row.
pub const EVENT_KIND: &str = "runs_pruned";

/// How long a finished run is kept depends on its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// `ok`, `lock_skipped`, `skipped_*`, `blocked_*`: kept for `retention.succeeded`.
    Succeeded,
    /// Everything else that ended: kept for `retention.failed`.
    Failed,
}

impl Class {
    pub const ALL: [Class; 2] = [Class::Succeeded, Class::Failed];

    pub const fn as_str(self) -> &'static str {
        match self {
            Class::Succeeded => "succeeded",
            Class::Failed => "failed",
        }
    }

    /// The SQL condition (same text on both stores) selecting this class's
    /// finished rows of `activity_runs`.
    pub fn sql(self) -> String {
        let kept = SUCCEEDED_OUTCOMES
            .iter()
            .map(|o| format!("'{}'", o.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let live = LIVE_STATES
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        match self {
            Class::Succeeded => format!("state not in ({live}) and outcome in ({kept})"),
            Class::Failed => format!("state not in ({live}) and (outcome is null or outcome not in ({kept}))"),
        }
    }
}

/// Outcomes of the succeeded class: healthy runs and instants that were
/// deliberately not run (skipped or blocked).
pub const SUCCEEDED_OUTCOMES: &[Outcome] = &[
    Outcome::Ok,
    Outcome::LockSkipped,
    Outcome::SkippedMisfire,
    Outcome::SkippedOverlap,
    Outcome::SkippedPaused,
    Outcome::BlockedCircuitOpen,
    Outcome::BlockedBudget,
];

/// States of runs not yet ended: never pruned.
pub const LIVE_STATES: &[State] = &[State::Queued, State::Running];

/// The class of a row, from its `state` and `outcome` columns; None for a
/// run still queued or running (never pruned).
pub fn class_of(state: &str, outcome: Option<&str>) -> Option<Class> {
    if LIVE_STATES.iter().any(|s| s.as_str() == state) {
        return None;
    }
    match outcome {
        Some(o) if SUCCEEDED_OUTCOMES.iter().any(|k| k.as_str() == o) => Some(Class::Succeeded),
        _ => Some(Class::Failed),
    }
}

/// Rows fired before these instants are past their retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cutoffs {
    pub succeeded_before: Timestamp,
    pub failed_before: Timestamp,
}

impl Cutoffs {
    /// The cutoffs of `spec` at `now` (durations are bounded by validation,
    /// so this cannot overflow; it saturates if one ever did).
    pub fn at(spec: RetentionSpec, now: Timestamp) -> Cutoffs {
        let before = |keep: crate::duration::Dur| now.checked_sub(keep.signed()).unwrap_or(Timestamp::MIN);
        Cutoffs {
            succeeded_before: before(spec.succeeded),
            failed_before: before(spec.failed),
        }
    }

    pub fn of(&self, class: Class) -> Timestamp {
        match class {
            Class::Succeeded => self.succeeded_before,
            Class::Failed => self.failed_before,
        }
    }

    /// Whether a run of `class` fired at `fired_at` is past retention.
    pub fn expired(&self, class: Class, fired_at: Timestamp) -> bool {
        fired_at < self.of(class)
    }
}

/// Which activities a group covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// These activities (those with the group's non-default retention).
    Only(Vec<Uuid>),
    /// Every activity but these (the default group: also covers activities
    /// whose stored spec this binary cannot read).
    AllExcept(Vec<Uuid>),
}

impl Scope {
    /// The ids the scope names (taken or left out, by [`Scope::only`]).
    pub fn ids(&self) -> &[Uuid] {
        match self {
            Scope::Only(ids) | Scope::AllExcept(ids) => ids,
        }
    }

    /// True when the scope is its ids; false when it is everything else.
    pub fn only(&self) -> bool {
        matches!(self, Scope::Only(_))
    }
}

/// Activities sharing one retention, with its cutoffs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub retention: RetentionSpec,
    pub scope: Scope,
    pub cutoffs: Cutoffs,
    /// The slugs of an `Only` group, for the audit row.
    pub slugs: Vec<String>,
}

/// How much one pass may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassLimits {
    /// Rows per `delete` statement.
    pub batch: u32,
    /// Rows per pass, at most (the pass stops at the first batch past it).
    pub max_rows: u64,
    /// The pause between two statements: firing and finishing go first.
    pub pause: Duration,
}

impl Default for PassLimits {
    fn default() -> Self {
        PassLimits {
            batch: 1000,
            max_rows: 100_000,
            pause: Duration::from_millis(50),
        }
    }
}

/// One pass: every group's cutoffs, computed at one `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub now: Timestamp,
    pub groups: Vec<Group>,
    pub limits: PassLimits,
}

/// Groups the activities (id, slug, retention) by retention. The default
/// group always comes first and covers every activity not in another.
pub fn plan(
    activities: impl IntoIterator<Item = (Uuid, String, RetentionSpec)>,
    now: Timestamp,
    limits: PassLimits,
) -> Plan {
    let mut others: Vec<Group> = Vec::new();
    let mut special = Vec::new();
    for (id, slug, retention) in activities {
        if retention == RetentionSpec::default() {
            continue;
        }
        special.push(id);
        match others.iter_mut().find(|g| g.retention == retention) {
            Some(g) => {
                if let Scope::Only(ids) = &mut g.scope {
                    ids.push(id);
                }
                g.slugs.push(slug);
            }
            None => others.push(Group {
                retention,
                scope: Scope::Only(vec![id]),
                cutoffs: Cutoffs::at(retention, now),
                slugs: vec![slug],
            }),
        }
    }
    let default = RetentionSpec::default();
    let mut groups = vec![Group {
        retention: default,
        scope: Scope::AllExcept(special),
        cutoffs: Cutoffs::at(default, now),
        slugs: Vec::new(),
    }];
    groups.extend(others);
    Plan { now, groups, limits }
}

/// What a pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub succeeded: u64,
    pub failed: u64,
    /// Delete statements run.
    pub statements: u32,
    /// The pass stopped at its bound (or at shutdown) with rows perhaps left.
    pub bounded: bool,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.succeeded + self.failed
    }

    pub fn add(&mut self, class: Class, n: u64) {
        match class {
            Class::Succeeded => self.succeeded += n,
            Class::Failed => self.failed += n,
        }
    }
}

/// How a pass ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassOutcome {
    Pruned(Pruned),
    /// Another replica holds the prune lock: this pass did nothing.
    LockHeld,
}

/// The audit row of a pass that deleted something: counts per class and
/// every group's cutoffs.
pub fn audit_event(plan: &Plan, pruned: &Pruned, worker_id: &str) -> NewEvent {
    let groups: Vec<serde_json::Value> = plan
        .groups
        .iter()
        .map(|g| {
            json!({
                "activities": match g.scope {
                    Scope::AllExcept(_) => json!("default"),
                    Scope::Only(_) => json!(g.slugs),
                },
                "succeeded": g.retention.succeeded.to_string(),
                "failed": g.retention.failed.to_string(),
                "succeeded_before": g.cutoffs.succeeded_before.to_string(),
                "failed_before": g.cutoffs.failed_before.to_string(),
            })
        })
        .collect();
    NewEvent {
        at: plan.now,
        definition_id: None,
        run_id: None,
        kind: EVENT_KIND.into(),
        detail: json!({
            "deleted": { "succeeded": pruned.succeeded, "failed": pruned.failed },
            "cutoffs": groups,
            "statements": pruned.statements,
            "bounded": pruned.bounded,
            "worker_id": worker_id,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Dur;

    fn now() -> Timestamp {
        "2026-12-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn each_outcome_has_its_class_and_live_rows_have_none() {
        for (state, outcome, class) in [
            ("succeeded", Some("ok"), Some(Class::Succeeded)),
            ("succeeded", Some("lock_skipped"), Some(Class::Succeeded)),
            ("skipped", Some("skipped_misfire"), Some(Class::Succeeded)),
            ("skipped", Some("skipped_overlap"), Some(Class::Succeeded)),
            ("skipped", Some("skipped_paused"), Some(Class::Succeeded)),
            ("skipped", Some("blocked_circuit_open"), Some(Class::Succeeded)),
            ("skipped", Some("blocked_budget"), Some(Class::Succeeded)),
            ("succeeded", Some("assessment_failures"), Some(Class::Failed)),
            ("failed", Some("automation_error"), Some(Class::Failed)),
            ("abandoned", Some("automation_error"), Some(Class::Failed)),
            ("abandoned", None, Some(Class::Failed)),
            ("queued", None, None),
            ("running", None, None),
            ("running", Some("ok"), None),
        ] {
            assert_eq!(class_of(state, outcome), class, "{state} {outcome:?}");
        }
        // Every outcome is in exactly one class.
        for o in Outcome::ALL {
            let c = class_of("succeeded", Some(o.as_str())).unwrap();
            assert_eq!(c == Class::Succeeded, SUCCEEDED_OUTCOMES.contains(o), "{o}");
        }
    }

    #[test]
    fn the_defaults_keep_successes_14_days_and_failures_90() {
        let c = Cutoffs::at(RetentionSpec::default(), now());
        let day = jiff::SignedDuration::from_hours(24);
        assert_eq!(c.succeeded_before, now() - day * 14);
        assert_eq!(c.failed_before, now() - day * 90);
        let fifteen_days_ago = now() - day * 15;
        assert!(c.expired(Class::Succeeded, fifteen_days_ago));
        assert!(!c.expired(Class::Failed, fifteen_days_ago));
        assert!(!c.expired(Class::Succeeded, now() - day * 13));
        assert!(c.expired(Class::Failed, now() - day * 91));
        // The cutoff itself is kept: strictly older goes.
        assert!(!c.expired(Class::Succeeded, c.succeeded_before));
    }

    #[test]
    fn activities_are_grouped_by_retention_behind_the_default_group() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let short = RetentionSpec {
            succeeded: Dur::from_days(2),
            failed: Dur::from_days(30),
        };
        let p = plan(
            [
                (a, "a".to_string(), RetentionSpec::default()),
                (b, "b".to_string(), short),
                (c, "c".to_string(), short),
            ],
            now(),
            PassLimits::default(),
        );
        assert_eq!(p.groups.len(), 2);
        assert_eq!(p.groups[0].scope, Scope::AllExcept(vec![b, c]));
        assert_eq!(p.groups[1].scope, Scope::Only(vec![b, c]));
        assert_eq!(p.groups[1].slugs, ["b", "c"]);
        assert_eq!(
            p.groups[1].cutoffs.succeeded_before,
            now() - jiff::SignedDuration::from_hours(48)
        );
        let e = audit_event(
            &p,
            &Pruned {
                succeeded: 5,
                failed: 1,
                statements: 3,
                bounded: false,
            },
            "w1",
        );
        assert_eq!(e.kind, "runs_pruned");
        assert_eq!(e.detail["deleted"], json!({"succeeded": 5, "failed": 1}));
        assert_eq!(e.detail["cutoffs"][0]["activities"], "default");
        assert_eq!(e.detail["cutoffs"][0]["succeeded_before"], "2026-11-17T00:00:00Z");
        assert_eq!(e.detail["cutoffs"][1]["activities"], json!(["b", "c"]));
    }

    #[test]
    fn the_class_conditions_name_every_outcome_of_the_succeeded_class() {
        let s = Class::Succeeded.sql();
        assert!(s.starts_with("state not in ('queued', 'running') and outcome in ('ok', 'lock_skipped'"));
        assert!(Class::Failed.sql().contains("outcome is null or outcome not in ("));
    }
}
