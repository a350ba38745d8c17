//! `actcore runs` and `actcore runs summary` as an operator runs them: the
//! built binary against a real store (Postgres and the embedded SQLite)
//! holding runs of distinct activities, times, triggers, sources and
//! outcomes; each filter must narrow the rows to exactly the expected ones.
//!
//! Postgres tests need `ACTCORE_TEST_PG_URL` (set by `scripts/test`).

use actcore::definition::{Loaded, sample};
use actcore::run::{ErrorCode, Outcome, Source, State, Trigger};
use actcore::store::{NewRun, RunStore};
use actcore_tests::{Backend, fresh_store, run_cli};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use uuid::Uuid;

/// One run `minutes_ago` of `def`; `outcome` None leaves it running.
fn run(def: Uuid, minutes_ago: i64, trigger: Trigger, source: Source, outcome: Option<Outcome>) -> NewRun {
    let at = Timestamp::now() - SignedDuration::from_mins(minutes_ago);
    let error_code = (outcome == Some(Outcome::AutomationError)).then_some(ErrorCode::Transport);
    NewRun {
        run_id: Uuid::now_v7(),
        definition_id: def,
        fired_at: at,
        scheduled_for: (trigger != Trigger::Manual).then_some(at),
        trigger,
        source,
        attempt: if trigger == Trigger::Retry { 2 } else { 1 },
        state: outcome.map_or(State::Running, Outcome::state),
        outcome,
        automation_error: error_code.is_some(),
        assessment_failures: i32::from(outcome == Some(Outcome::AssessmentFailures)),
        error_code,
        error_message: error_code.map(|c| format!("{c} failure")),
        context_snapshot: json!({"lateness_ms": 3}),
        worker_id: Some("w1".into()),
        lease_expires_at: outcome
            .is_none()
            .then(|| Timestamp::now() + SignedDuration::from_mins(5)),
        started_at: Some(at),
        finished_at: outcome.map(|_| at + SignedDuration::from_secs(1)),
        spec_hash: None,
        retry_of: None,
        actor: None,
        duplicate_of: None,
    }
}

/// The runs every test reads, by name; newest first:
/// running 1m, manual 5m (`other`), ok 10m, ok 20m, retry error 100m,
/// fallback ok 30h, blocked 3d.
struct Seeded {
    url: String,
    _dir: Option<tempfile::TempDir>,
    ids: Vec<(&'static str, Uuid)>,
}

impl Seeded {
    async fn new(backend: Backend) -> Seeded {
        let (store, dir, url) = fresh_store(backend).await;
        let sweep = Uuid::new_v4();
        let other = Uuid::new_v4();
        let files: Vec<Loaded> = [(sweep, "sweep"), (other, "other")]
            .into_iter()
            .map(|(id, slug)| Loaded {
                file: format!("{slug}.toml").into(),
                definition: sample(id, slug, "*/15 * * * *", "http://127.0.0.1:9/x"),
            })
            .collect();
        store.sync(&files, Timestamp::now(), false).await.expect("sync");
        let (sched, core) = (Trigger::Schedule, Source::ActivityCore);
        let rows = [
            ("running", run(sweep, 1, sched, core, None)),
            (
                "manual",
                run(
                    other,
                    5,
                    Trigger::Manual,
                    Source::Manual,
                    Some(Outcome::AssessmentFailures),
                ),
            ),
            ("ok10", run(sweep, 10, sched, core, Some(Outcome::Ok))),
            ("ok20", run(sweep, 20, sched, core, Some(Outcome::Ok))),
            (
                "retry",
                run(sweep, 100, Trigger::Retry, core, Some(Outcome::AutomationError)),
            ),
            (
                "fallback",
                run(
                    sweep,
                    30 * 60,
                    Trigger::Fallback,
                    Source::LocalFallback,
                    Some(Outcome::Ok),
                ),
            ),
            (
                "blocked",
                run(sweep, 3 * 24 * 60, sched, core, Some(Outcome::BlockedCircuitOpen)),
            ),
        ];
        let mut ids = Vec::new();
        for (name, r) in rows {
            assert!(store.insert_run(&r).await.expect("insert"), "{name} was fenced off");
            ids.push((name, r.run_id));
        }
        Seeded { url, _dir: dir, ids }
    }

    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run_cli(args, &[("DATABASE_URL", &self.url)])
    }

    /// `runs ARGS --json`, as the names of the rows returned, in order.
    fn names(&self, args: &[&str]) -> Vec<&'static str> {
        let mut argv = vec!["runs"];
        argv.extend_from_slice(args);
        argv.push("--json");
        let (code, out, err) = self.cli(&argv);
        assert_eq!(code, 0, "{argv:?}: {out}{err}");
        let rows: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{argv:?}: not JSON ({e}): {out}"));
        rows.as_array()
            .unwrap_or_else(|| panic!("{argv:?}: not an array: {out}"))
            .iter()
            .map(|r| {
                let id: Uuid = r["run_id"].as_str().unwrap().parse().unwrap();
                self.ids.iter().find(|(_, i)| *i == id).expect("a seeded run").0
            })
            .collect()
    }

    fn summary(&self, args: &[&str]) -> Value {
        let mut argv = vec!["runs", "summary"];
        argv.extend_from_slice(args);
        argv.push("--json");
        let (code, out, err) = self.cli(&argv);
        assert_eq!(code, 0, "{argv:?}: {out}{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{argv:?}: not JSON ({e}): {out}"))
    }
}

/// Asserts a usage error (exit 2) whose message holds every one of `words`.
fn refused(out: (i32, String, String), words: &[&str]) {
    let (code, stdout, stderr) = out;
    assert_eq!(code, 2, "a usage error: {stdout}{stderr}");
    for w in words {
        assert!(stderr.contains(w), "`{w}` not in: {stderr}");
    }
}

async fn each_filter_narrows_the_rows(backend: Backend) {
    let db = Seeded::new(backend).await;
    let all = ["running", "manual", "ok10", "ok20", "retry", "fallback", "blocked"];
    assert_eq!(db.names(&[]), all, "every run, newest first");
    assert_eq!(
        db.names(&["--slug", "sweep"]),
        ["running", "ok10", "ok20", "retry", "fallback", "blocked"]
    );

    // --since as a duration, as a time, and its alias --since-hours.
    assert_eq!(db.names(&["--since", "90m"]), ["running", "manual", "ok10", "ok20"]);
    let last_day = ["running", "manual", "ok10", "ok20", "retry"];
    assert_eq!(db.names(&["--since", "24h"]), last_day);
    assert_eq!(db.names(&["--since-hours", "24"]), last_day);
    let two_days_ago = (Timestamp::now() - SignedDuration::from_hours(48)).to_string();
    assert_eq!(
        db.names(&["--since", &two_days_ago]),
        ["running", "manual", "ok10", "ok20", "retry", "fallback"]
    );
    assert_eq!(db.names(&["--since", "7d"]), all);

    // --outcome and --trigger, alone and together; --limit counts matches only.
    assert_eq!(db.names(&["--outcome", "ok"]), ["ok10", "ok20", "fallback"]);
    assert_eq!(db.names(&["--outcome", "ok", "--limit", "2"]), ["ok10", "ok20"]);
    assert_eq!(db.names(&["--limit", "2"]), ["running", "manual"]);
    assert_eq!(db.names(&["--outcome", "automation_error"]), ["retry"]);
    assert_eq!(db.names(&["--trigger", "retry"]), ["retry"]);
    assert_eq!(db.names(&["--trigger", "manual"]), ["manual"]);
    assert_eq!(db.names(&["--trigger", "fallback", "--outcome", "ok"]), ["fallback"]);
    assert_eq!(
        db.names(&["--trigger", "schedule", "--slug", "sweep", "--since", "7d"]),
        ["running", "ok10", "ok20", "blocked"]
    );
    assert!(
        db.names(&["--outcome", "blocked_circuit_open", "--since", "24h"])
            .is_empty()
    );

    // The table shows where each run came from and which attempt it was.
    let (code, table, err) = db.cli(&["runs", "--slug", "sweep", "--since", "7d"]);
    assert_eq!(code, 0, "{err}");
    let header = table.lines().next().unwrap();
    assert!(header.contains("source") && header.contains("attempt"), "{table}");
    let fallback = table.lines().find(|l| l.contains("local-fallback")).expect(&table);
    assert!(fallback.contains("fallback") && fallback.contains(" ok"), "{fallback}");
    let retry = table.lines().find(|l| l.contains("retry")).expect(&table);
    assert!(retry.contains("  2  ") && retry.contains("transport"), "{retry}");

    // Usage errors name what is accepted.
    let mut outcomes = vec!["--outcome"];
    outcomes.extend(Outcome::ALL.iter().map(|o| o.as_str()));
    refused(db.cli(&["runs", "--outcome", "fine"]), &outcomes);
    refused(
        db.cli(&["runs", "--trigger", "cron"]),
        &["--trigger", "schedule", "manual", "retry", "fallback"],
    );
    refused(
        db.cli(&["runs", "--since", "2h", "--since-hours", "2"]),
        &["--since", "--since-hours", "cannot be used with"],
    );
    refused(db.cli(&["runs", "--since", "yesterday"]), &["--since", "--since 24h"]);
    refused(db.cli(&["runs", "--since", "0s"]), &["--since", "from 1s to 3650d"]);
    refused(db.cli(&["runs", "--slug", "nope"]), &["known: ", "sweep"]);
}

async fn summary_counts_by_source_trigger_and_outcome(backend: Backend) {
    let db = Seeded::new(backend).await;
    let row = |source: &str, trigger: &str, outcome: Option<&str>, count: i64| json!({"source": source, "trigger": trigger, "outcome": outcome, "count": count});

    // The default window is the last 24 hours, as --since-hours 24.
    let day = db.summary(&[]);
    let expected_day = json!([
        row("activity-core", "retry", Some("automation_error"), 1),
        row("activity-core", "schedule", Some("ok"), 2),
        row("activity-core", "schedule", None, 1),
        row("manual", "manual", Some("assessment_failures"), 1),
    ]);
    assert_eq!(day["rows"], expected_day, "{day}");
    assert_eq!(day["by_source"], json!({"activity-core": 4, "manual": 1}), "{day}");
    assert_eq!(day["total"], 5, "{day}");
    let since: Timestamp = day["since"].as_str().unwrap().parse().unwrap();
    let until: Timestamp = day["until"].as_str().unwrap().parse().unwrap();
    assert_eq!(until.duration_since(since), SignedDuration::from_hours(24), "{day}");
    assert_eq!(db.summary(&["--since-hours", "24"])["rows"], expected_day);
    assert_eq!(db.summary(&["--since", "24h"])["rows"], expected_day);

    // A week of one activity: the cluster against the local fallback.
    let week = db.summary(&["--since", "7d", "--slug", "sweep"]);
    assert_eq!(
        week["rows"],
        json!([
            row("activity-core", "retry", Some("automation_error"), 1),
            row("activity-core", "schedule", Some("blocked_circuit_open"), 1),
            row("activity-core", "schedule", Some("ok"), 2),
            row("activity-core", "schedule", None, 1),
            row("local-fallback", "fallback", Some("ok"), 1),
        ]),
        "{week}"
    );
    assert_eq!(
        week["by_source"],
        json!({"activity-core": 5, "local-fallback": 1}),
        "{week}"
    );
    assert_eq!(
        (week["slug"].as_str(), week["total"].as_i64()),
        (Some("sweep"), Some(6))
    );
    let two_days_ago = (Timestamp::now() - SignedDuration::from_hours(48)).to_string();
    assert_eq!(
        db.summary(&["--since", &two_days_ago, "--slug", "sweep"])["by_source"],
        json!({"activity-core": 4, "local-fallback": 1})
    );
    let empty = db.summary(&["--since", "30s", "--slug", "other"]);
    assert_eq!((empty["rows"].clone(), empty["total"].as_i64()), (json!([]), Some(0)));

    // The table: one line per group, then the totals per source.
    let (code, table, err) = db.cli(&["runs", "summary", "--since-hours", "24"]);
    assert_eq!(code, 0, "{err}");
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let lines: Vec<Vec<String>> = table.lines().map(words).collect();
    for expected in [
        "activity-core schedule ok 2",
        "activity-core schedule - 1",
        "manual manual assessment_failures 1",
        "activity-core 4",
        "manual 1",
        "all 5",
    ] {
        assert!(lines.contains(&words(expected)), "`{expected}` not in:\n{table}");
    }

    refused(
        db.cli(&["runs", "summary", "--since", "1h", "--since-hours", "1"]),
        &["cannot be used with"],
    );
    refused(db.cli(&["runs", "--slug", "sweep", "summary"]), &["summary"]);
    refused(db.cli(&["runs", "summary", "--outcome", "ok"]), &["--outcome"]);
}

actcore_tests::both_backends!(
    each_filter_narrows_the_rows,
    summary_counts_by_source_trigger_and_outcome
);
