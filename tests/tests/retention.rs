//! History retention on both stores (`actcore::retention`): what a pass
//! keeps and deletes per class, that queued and running rows never go,
//! that a pass is bounded and audited, that on Postgres a pass skips while
//! another holds the prune lock, and that a worker runs the pruner.
//!
//! Every pass is given its `now`: no test waits for time to pass.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use actcore::definition::{Definition, Loaded, RetentionSpec, sample};
use actcore::duration::Dur;
use actcore::retention::policy::PG_LOCK_KEY;
use actcore::retention::{Gate, PassLimits, PassOutcome, Pruned, pruner};
use actcore::run::{Outcome, Source, State, Trigger};
use actcore::store::{DefinitionSource, HistoryStore, NewRun, RetentionRule, RunFilter, RunStore, Store};
use actcore_tests::{Backend, Worker, activity_id, eventually, fresh_pg_url, fresh_store, run_cli, write_definition};
use jiff::{SignedDuration, Timestamp};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

const NOW: &str = "2030-06-01T12:00:00Z";

fn loaded(definition: Definition) -> Loaded {
    Loaded {
        file: PathBuf::from(format!("definitions/{}.toml", definition.slug)),
        definition,
    }
}

/// A run row of `definition_id` fired at `fired_at`, in `state` with `outcome`.
fn row(definition_id: Uuid, fired_at: Timestamp, state: State, outcome: Option<Outcome>) -> NewRun {
    let ended = !matches!(state, State::Queued | State::Running);
    NewRun {
        run_id: Uuid::now_v7(),
        definition_id,
        fired_at,
        scheduled_for: None,
        trigger: Trigger::Manual,
        source: Source::Manual,
        attempt: 1,
        state,
        outcome,
        automation_error: outcome == Some(Outcome::AutomationError),
        assessment_failures: i32::from(outcome == Some(Outcome::AssessmentFailures)),
        error_code: None,
        error_message: None,
        context_snapshot: serde_json::json!({}),
        worker_id: Some("test".into()),
        lease_expires_at: (state == State::Running).then(|| fired_at + days(1000)),
        started_at: Some(fired_at),
        finished_at: ended.then(|| fired_at + SignedDuration::from_secs(1)),
        spec_hash: None,
        retry_of: None,
        actor: None,
        duplicate_of: None,
    }
}

fn limits(batch: u32, max_rows: u64) -> PassLimits {
    PassLimits {
        batch,
        max_rows,
        pause: Duration::ZERO,
    }
}

async fn pass(store: &Store, now: Timestamp, limits: PassLimits) -> PassOutcome {
    let stop = CancellationToken::new();
    pruner::pass(store, "retention-test", now, limits, &Gate::new(&stop, limits.pause))
        .await
        .expect("prune pass")
}

async fn run_ids(store: &Store) -> BTreeSet<Uuid> {
    store
        .runs(&RunFilter {
            limit: 10_000,
            ..RunFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect()
}

async fn pruned_events(store: &Store) -> i64 {
    store
        .event_kinds(None)
        .await
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "runs_pruned")
        .map_or(0, |(_, n)| n)
}

/// Two activities: `a` at the defaults (14 d / 90 d), `b` with `[retention]`
/// succeeded = 2 d, failed = 5 d.
async fn two_activities(backend: Backend) -> (Store, Option<tempfile::TempDir>, Uuid, Uuid) {
    let (store, guard, _) = fresh_store(backend).await;
    let a = sample(Uuid::new_v4(), "keeps-defaults", "*/5 * * * *", "http://127.0.0.1:9/a");
    let mut b = sample(Uuid::new_v4(), "keeps-less", "*/5 * * * *", "http://127.0.0.1:9/b");
    b.retention = RetentionSpec {
        succeeded: Dur::from_days(2),
        failed: Dur::from_days(5),
    };
    let (ia, ib) = (a.id, b.id);
    store
        .sync(&[loaded(a), loaded(b)], t("2030-01-01T00:00:00Z"), false)
        .await
        .unwrap();
    (store, guard, ia, ib)
}

async fn each_class_is_kept_for_its_retention_and_live_runs_never_go(backend: Backend) {
    let (store, _guard, a, b) = two_activities(backend).await;
    let now = t(NOW);
    use Outcome::*;
    use State::*;
    // (activity, age in days, state, outcome, kept)
    let rows = [
        (a, 13, Succeeded, Some(Ok), true),
        (a, 15, Succeeded, Some(Ok), false),
        (a, 15, Succeeded, Some(LockSkipped), false),
        (a, 15, Skipped, Some(SkippedMisfire), false),
        (a, 15, Skipped, Some(SkippedOverlap), false),
        (a, 15, Skipped, Some(SkippedPaused), false),
        (a, 15, Skipped, Some(BlockedCircuitOpen), false),
        (a, 15, Skipped, Some(BlockedBudget), false),
        (a, 15, Succeeded, Some(AssessmentFailures), true),
        (a, 15, Failed, Some(AutomationError), true),
        (a, 89, Abandoned, Some(AutomationError), true),
        (a, 91, Failed, Some(AutomationError), false),
        (a, 91, Succeeded, Some(AssessmentFailures), false),
        (a, 91, Abandoned, Some(AutomationError), false),
        // Never pruned, however old: not ended.
        (a, 400, Running, None, true),
        (a, 400, Queued, None, true),
        (b, 1, Succeeded, Some(Ok), true),
        (b, 3, Succeeded, Some(Ok), false),
        (b, 3, Skipped, Some(SkippedMisfire), false),
        (b, 4, Failed, Some(AutomationError), true),
        (b, 6, Failed, Some(AutomationError), false),
        (b, 400, Running, None, true),
    ];
    let mut kept = BTreeSet::new();
    for (def, age, state, outcome, keep) in rows {
        let r = row(def, now - days(age), state, outcome);
        assert!(store.insert_run(&r).await.unwrap());
        if keep {
            kept.insert(r.run_id);
        }
    }
    // Batches of 2: several statements per class, the last one partial.
    let outcome = pass(&store, now, limits(2, 1000)).await;
    let PassOutcome::Pruned(p) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!((p.succeeded, p.failed, p.bounded), (9, 4, false), "{p:?}");
    assert_eq!(run_ids(&store).await, kept);
    assert_eq!(pruned_events(&store).await, 1, "one audit row for the pass");

    // Nothing left to prune: no statement deletes, no audit row.
    let again = pass(&store, now, limits(2, 1000)).await;
    assert!(
        matches!(
            again,
            PassOutcome::Pruned(Pruned {
                succeeded: 0,
                failed: 0,
                ..
            })
        ),
        "{again:?}"
    );
    assert_eq!(pruned_events(&store).await, 1);
    assert_eq!(run_ids(&store).await, kept);
}

async fn a_pass_is_bounded_and_the_next_one_carries_on(backend: Backend) {
    let (store, _guard, a, _) = two_activities(backend).await;
    let now = t(NOW);
    for i in 0..25 {
        let r = row(
            a,
            now - days(20) - SignedDuration::from_secs(i),
            State::Succeeded,
            Some(Outcome::Ok),
        );
        store.insert_run(&r).await.unwrap();
    }
    let mut total = 0;
    let mut passes = 0;
    loop {
        let PassOutcome::Pruned(p) = pass(&store, now, limits(4, 10)).await else {
            panic!("no lock on this store")
        };
        passes += 1;
        assert!(
            p.total() <= 12,
            "at most max_rows plus the batch that crossed it: {p:?}"
        );
        total += p.total();
        if !p.bounded {
            break;
        }
    }
    assert_eq!(total, 25);
    assert_eq!(passes, 3);
    assert!(run_ids(&store).await.is_empty());
    assert_eq!(pruned_events(&store).await, 3);
}

/// A pass plans from `retention_rules`, which reads only the `retention`
/// part of each stored spec: it must say what the whole definition says.
async fn retention_rules_read_what_the_definitions_say(backend: Backend) {
    let (store, _guard, a, b) = two_activities(backend).await;
    let rules = store.retention_rules().await.unwrap();
    let from_definitions: Vec<RetentionRule> = store
        .definitions()
        .await
        .unwrap()
        .into_iter()
        .map(|d| RetentionRule {
            definition_id: d.definition.id,
            slug: d.definition.slug,
            retention: d.definition.retention,
        })
        .collect();
    assert_eq!(rules, from_definitions);
    let of = |id: Uuid| rules.iter().find(|r| r.definition_id == id).map(|r| r.retention);
    assert_eq!(of(a), Some(RetentionSpec::default()));
    assert_eq!(
        of(b),
        Some(RetentionSpec {
            succeeded: Dur::from_days(2),
            failed: Dur::from_days(5),
        })
    );
}

actcore_tests::both_backends!(
    each_class_is_kept_for_its_retention_and_live_runs_never_go,
    a_pass_is_bounded_and_the_next_one_carries_on,
    retention_rules_read_what_the_definitions_say,
);

/// Two replicas never prune at once: while one session holds the prune
/// lock, another's pass deletes nothing and says so; once it is released,
/// the pass runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_pass_skips_while_another_holds_the_prune_lock() {
    let (store, _guard, a, _) = two_activities(Backend::Postgres).await;
    let now = t(NOW);
    let old = row(a, now - days(30), State::Succeeded, Some(Outcome::Ok));
    store.insert_run(&old).await.unwrap();
    let Store::Postgres(pg) = &store else { unreachable!() };
    let mut other = sqlx::PgConnection::connect(pg.url()).await.unwrap();
    let held: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(PG_LOCK_KEY)
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert!(held);

    assert_eq!(pass(&store, now, limits(1000, 100_000)).await, PassOutcome::LockHeld);
    assert_eq!(run_ids(&store).await.len(), 1, "nothing deleted while the lock is held");
    assert_eq!(pruned_events(&store).await, 0);

    let released: bool = sqlx::query_scalar("select pg_advisory_unlock($1)")
        .bind(PG_LOCK_KEY)
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert!(released);
    let PassOutcome::Pruned(p) = pass(&store, now, limits(1000, 100_000)).await else {
        panic!("the lock is free")
    };
    assert_eq!(p.succeeded, 1);
    // The pass let go of the lock: another session takes it at once.
    let free: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(PG_LOCK_KEY)
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert!(free, "the pass released the prune lock");
}

/// The worker runs the pruner: a run past retention is deleted after the
/// first pass (set to 1 s after start) and the pass is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_prunes_expired_runs_and_audits_the_pass() {
    let url = fresh_pg_url().await;
    let dir = tempfile::tempdir().unwrap();
    let id = activity_id(1300);
    // Once a year: nothing fires during the test.
    write_definition(
        dir.path(),
        "pruned",
        id,
        "0 0 1 1 *",
        "http://127.0.0.1:9/never",
        "[retention]\nsucceeded = \"1d\"\n",
    );
    let (code, out, err) = run_cli(
        &["sync", "--definitions", dir.path().to_str().unwrap()],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(code, 0, "sync: {out}{err}");
    let store = Store::open(Some(&url)).await.unwrap();
    let now = Timestamp::now();
    let old = row(id, now - days(2), State::Succeeded, Some(Outcome::Ok));
    let young = row(
        id,
        now - SignedDuration::from_hours(1),
        State::Succeeded,
        Some(Outcome::Ok),
    );
    store.insert_run(&old).await.unwrap();
    store.insert_run(&young).await.unwrap();

    let logs = tempfile::tempdir().unwrap();
    let mut worker = Worker::spawn(
        &["worker"],
        &url,
        &[("ACTCORE_RETENTION_FIRST", "1s")],
        logs.path(),
        "pruning-worker",
    );
    let s = store.clone();
    eventually(Duration::from_secs(30), "the runs_pruned audit row", || {
        let s = s.clone();
        async move { (pruned_events(&s).await == 1).then_some(()) }
    })
    .await;
    assert_eq!(run_ids(&store).await, BTreeSet::from([young.run_id]));
    worker.signal(15);
    let status = tokio::time::timeout(Duration::from_secs(20), worker.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "worker: {}", worker.log_text());
    let log = worker.log_text();
    assert!(
        log.contains("pruned expired runs from activity_runs") && log.contains("succeeded=1"),
        "the pass's log line: {log}"
    );
}
