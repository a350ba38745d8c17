//! One store contract, two backends: every test body here takes a
//! [`Backend`] and runs once on Postgres and once on the embedded SQLite
//! store (see the `conformance!` list at the bottom).
//!
//! Postgres tests need `ACTCORE_TEST_PG_URL` (set by `scripts/test`).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use actcore::definition::{Definition, Loaded, sample};
use actcore::run::{ErrorCode, Outcome, Source, State, Trigger};
use actcore::store::{
    CircuitOverride, ClaimBatch, ClaimItem, Claimed, DefinitionSource, FinishRun, GuardStore, HistoryStore, NewRun,
    RunFilter, RunQuery, RunRow, RunStore, Store,
};
use actcore_tests::{Backend, fresh_store};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use sqlx::{Row, ValueRef};
use uuid::Uuid;

/// The flagship activity's id (docs/reference/tables.md).
const FLAGSHIP_ID: &str = "7c4e9a12-8f3b-4d5e-9c6a-1b2d3e4f5a6b";

/// The runbook query (docs/reference/tables.md), byte for byte.
const RUNBOOK_SQL: &str = "select run_id, fired_at, scheduled_for,
       context_snapshot->'consistency_sweep_remote_all' as sweep_result
from activity_runs
where definition_id = '7c4e9a12-8f3b-4d5e-9c6a-1b2d3e4f5a6b'
order by fired_at desc limit 5;";

fn t(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("bad test timestamp {s}: {e}"))
}

/// Written by the store's own clock just now (not the caller's `now`).
fn is_recent(t: Option<Timestamp>) -> bool {
    t.is_some_and(|t| t <= Timestamp::now() && t > Timestamp::now() - secs(60))
}

fn secs(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n)
}

/// `n` valid definitions `act-0` … `act-{n-1}` with fresh ids, as sync takes them.
fn defs(n: usize) -> Vec<Loaded> {
    (0..n)
        .map(|i| {
            loaded(sample(
                Uuid::new_v4(),
                &format!("act-{i}"),
                "*/5 * * * *",
                "http://127.0.0.1:9/x",
            ))
        })
        .collect()
}

fn loaded(definition: Definition) -> Loaded {
    Loaded {
        file: PathBuf::from(format!("definitions/{}.toml", definition.slug)),
        definition,
    }
}

/// A store with `n` synced definitions; keep the guard alive.
async fn store_with(backend: Backend, n: usize) -> (Store, Option<tempfile::TempDir>, Vec<Loaded>) {
    let (store, guard, _url) = fresh_store(backend).await;
    let files = defs(n);
    let report = store
        .sync(&files, t("2030-01-01T00:00:00Z"), false)
        .await
        .expect("sync");
    assert_eq!(report.added.len(), n, "{report:?}");
    (store, guard, files)
}

fn spec_hash(l: &Loaded) -> String {
    l.definition.spec_hash()
}

fn item(l: &Loaded, skip_if_running: bool) -> ClaimItem {
    ClaimItem {
        run_id: Uuid::now_v7(),
        definition_id: l.definition.id,
        spec_hash: spec_hash(l),
        skip_if_running,
        buffer_until: None,
        snapshot: actcore::snapshot::claimed(&spec_hash(l), "2030-01-01T00:00:00Z", 0),
    }
}

fn items(files: &[Loaded], skip_if_running: bool) -> Vec<ClaimItem> {
    let mut v: Vec<ClaimItem> = files.iter().map(|l| item(l, skip_if_running)).collect();
    v.sort_by_key(|i| i.definition_id);
    v
}

async fn claim(store: &Store, at: Timestamp, worker: &str, items: &[ClaimItem]) -> Vec<Claimed> {
    claim_with(store, at, worker, items, secs(30), &[]).await
}

/// A claim with its lease (counted on the database's clock; negative: already
/// expired) and the runs the worker has finished but not yet written.
async fn claim_with(
    store: &Store,
    at: Timestamp,
    worker: &str,
    items: &[ClaimItem],
    lease: SignedDuration,
    finished_unwritten: &[Uuid],
) -> Vec<Claimed> {
    store
        .claim(&ClaimBatch {
            scheduled_for: at,
            fired_at: at,
            worker_id: worker,
            lease,
            items,
            finished_unwritten,
        })
        .await
        .expect("claim")
}

async fn all_runs(store: &Store) -> Vec<RunRow> {
    store.runs(&RunFilter::default()).await.expect("runs")
}

async fn run_by_id(store: &Store, id: Uuid) -> RunRow {
    all_runs(store)
        .await
        .into_iter()
        .find(|r| r.run_id == id)
        .unwrap_or_else(|| panic!("run {id} not in activity_runs"))
}

async fn event_count(store: &Store, kind: &str) -> i64 {
    store
        .event_kinds(None)
        .await
        .expect("event kinds")
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, n)| n)
        .unwrap_or(0)
}

fn manual_run(definition_id: Uuid, fired_at: Timestamp, snapshot: Value) -> NewRun {
    NewRun {
        run_id: Uuid::now_v7(),
        definition_id,
        fired_at,
        scheduled_for: None,
        trigger: Trigger::Manual,
        source: Source::Manual,
        attempt: 1,
        state: State::Succeeded,
        outcome: Some(Outcome::Ok),
        automation_error: false,
        assessment_failures: 0,
        error_code: None,
        error_message: None,
        context_snapshot: snapshot,
        worker_id: Some("operator".into()),
        lease_expires_at: None,
        started_at: Some(fired_at),
        finished_at: Some(fired_at + secs(1)),
        spec_hash: None,
        retry_of: None,
        actor: None,
        duplicate_of: None,
    }
}

fn finish(run_id: Uuid, outcome: Outcome, snapshot: Value, at: Timestamp) -> FinishRun {
    FinishRun {
        run_id,
        state: outcome.state(),
        outcome,
        automation_error: outcome == Outcome::AutomationError,
        assessment_failures: if outcome == Outcome::AssessmentFailures { 3 } else { 0 },
        error_code: (outcome == Outcome::AutomationError).then_some(ErrorCode::Http5xx),
        error_message: (outcome == Outcome::AutomationError).then(|| "HTTP 502".to_string()),
        snapshot: actcore::snapshot::to_stored(&snapshot),
        finished_at: at,
        settle: None,
    }
}

// ---------------------------------------------------------------- claims

/// Claiming an instant twice (new run ids, another worker) yields nothing the
/// second time; the fence also refuses a plain insert of the same instant.
async fn claim_is_exactly_once(backend: Backend) {
    let (store, _g, files) = store_with(backend, 3).await;
    let at = t("2030-01-01T00:15:00Z");

    let first_items = items(&files, false);
    let first = claim(&store, at, "w1", &first_items).await;
    assert_eq!(first.len(), 3, "every activity is claimed once: {first:?}");
    assert!(first.iter().all(|c| c.state == State::Running), "{first:?}");
    let claimed_ids: BTreeSet<Uuid> = first.iter().map(|c| c.run_id).collect();
    let offered_ids: BTreeSet<Uuid> = first_items.iter().map(|i| i.run_id).collect();
    assert_eq!(claimed_ids, offered_ids, "the winner's own run ids are returned");

    let second = claim(&store, at, "w2", &items(&files, false)).await;
    assert!(second.is_empty(), "the same instant was claimed again: {second:?}");
    let second_skip = claim(&store, at, "w2", &items(&files, true)).await;
    assert!(
        second_skip.is_empty(),
        "the same instant was claimed again: {second_skip:?}"
    );

    // A plain insert of a first scheduled attempt for the same instant hits the fence too.
    let mut dup = manual_run(files[0].definition.id, at, json!({}));
    dup.scheduled_for = Some(at);
    dup.trigger = Trigger::Schedule;
    dup.source = Source::ActivityCore;
    assert!(
        !store.insert_run(&dup).await.expect("insert_run"),
        "the fence let a second first attempt in"
    );
    // A retry (attempt 2) of the same instant is not a first attempt.
    dup.run_id = Uuid::now_v7();
    dup.trigger = Trigger::Retry;
    dup.attempt = 2;
    assert!(
        store.insert_run(&dup).await.expect("insert_run"),
        "a retry row is allowed"
    );

    let runs = all_runs(&store).await;
    assert_eq!(runs.len(), 4, "{runs:#?}");
    let rows: Vec<&RunRow> = runs.iter().filter(|r| claimed_ids.contains(&r.run_id)).collect();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r.state, "running");
        assert_eq!(r.trigger, "schedule");
        assert_eq!(r.source, "activity-core");
        assert_eq!(r.attempt, 1);
        assert_eq!(r.scheduled_for, Some(at));
        assert_eq!(r.worker_id.as_deref(), Some("w1"));
        let lease = r.lease_expires_at.expect("a lease");
        assert!(
            lease > Timestamp::now() + secs(25) && lease <= Timestamp::now() + secs(30),
            "30 s on the database's clock: {lease}"
        );
        assert_eq!(r.started_at, Some(at));
        assert_eq!(r.finished_at, None);
        assert_eq!(r.outcome, None);
        assert_eq!(r.context_snapshot["trigger"], "schedule", "claim snapshot kept: {r:?}");
    }

    // The next instant is a new slot.
    let next = claim(&store, at + secs(300), "w2", &items(&files, false)).await;
    assert_eq!(next.len(), 3);
}

/// Two replicas racing on the same instants: every activity ends up with
/// exactly one row per instant, and the two answers partition the rows.
async fn concurrent_claims_partition(backend: Backend) {
    let (store, _g, files) = store_with(backend, 12).await;
    let files = std::sync::Arc::new(files);
    for (round, skip) in [(0i64, false), (1, true), (2, false), (3, true)] {
        let at = t("2030-01-01T01:00:00Z") + secs(300 * round);
        let spawn = |worker: &'static str| {
            let store = store.clone();
            let files = files.clone();
            tokio::spawn(async move {
                let items = items(&files, skip);
                let got = claim(&store, at, worker, &items).await;
                let mine: BTreeSet<Uuid> = items.iter().map(|i| i.run_id).collect();
                assert!(
                    got.iter().all(|c| mine.contains(&c.run_id)),
                    "{worker} got a run id it did not offer"
                );
                got
            })
        };
        let (a, b) = tokio::join!(spawn("w-a"), spawn("w-b"));
        let (a, b) = (a.expect("task a"), b.expect("task b"));
        let mut per_def: HashMap<Uuid, usize> = HashMap::new();
        for c in a.iter().chain(&b) {
            assert_eq!(c.state, State::Running, "round {round}: {c:?}");
            *per_def.entry(c.definition_id).or_default() += 1;
        }
        assert_eq!(
            per_def.len(),
            files.len(),
            "round {round}: some activity was not claimed: a={a:?} b={b:?}"
        );
        assert!(
            per_def.values().all(|&n| n == 1),
            "round {round}: double claim: {per_def:?}"
        );

        let rows: Vec<RunRow> = all_runs(&store)
            .await
            .into_iter()
            .filter(|r| r.scheduled_for == Some(at))
            .collect();
        assert_eq!(rows.len(), files.len(), "round {round}: one row per activity");
        let won: BTreeSet<Uuid> = a.iter().chain(&b).map(|c| c.run_id).collect();
        assert_eq!(rows.iter().map(|r| r.run_id).collect::<BTreeSet<_>>(), won);
        // Finish this round so that the skip_if_running rounds see no run in flight.
        let done: Vec<FinishRun> = rows
            .iter()
            .map(|r| finish(r.run_id, Outcome::Ok, json!({}), at + secs(1)))
            .collect();
        assert_eq!(store.finish_runs(&done).await.expect("finish"), files.len() as u64);
    }
}

/// `skip_if_running`: an instant due while the activity has a run in flight
/// is recorded as `skipped_overlap` (and not executed); without the flag, or
/// with nothing running, it is claimed normally.
async fn skip_if_running_records_overlap(backend: Backend) {
    let (store, _g, files) = store_with(backend, 3).await;
    let (busy, allow, idle) = (&files[0], &files[1], &files[2]);
    let t1 = t("2030-01-01T02:00:00Z");
    let t2 = t1 + secs(300);

    let first = claim(&store, t1, "w1", &items(&files[..2], true)).await;
    assert_eq!(first.len(), 2);

    let mut batch = vec![item(busy, true), item(allow, false), item(idle, true)];
    batch.sort_by_key(|i| i.definition_id);
    let second = claim(&store, t2, "w1", &batch).await;
    let state_of = |id: Uuid| second.iter().find(|c| c.definition_id == id).map(|c| c.state);
    assert_eq!(state_of(busy.definition.id), Some(State::Skipped), "{second:?}");
    assert_eq!(
        state_of(allow.definition.id),
        Some(State::Running),
        "overlap allowed: {second:?}"
    );
    assert_eq!(
        state_of(idle.definition.id),
        Some(State::Running),
        "nothing in flight: {second:?}"
    );

    let skipped = second.iter().find(|c| c.definition_id == busy.definition.id).unwrap();
    let row = run_by_id(&store, skipped.run_id).await;
    assert_eq!(row.state, "skipped");
    assert_eq!(row.outcome.as_deref(), Some("skipped_overlap"));
    assert_eq!(row.scheduled_for, Some(t2));
    assert_eq!(row.lease_expires_at, None, "a skipped row holds no lease");
    assert_eq!(row.finished_at, Some(t2), "a skipped row is finished when recorded");
    assert!(!row.automation_error);

    // The skipped row is not `running`: it is neither renewed nor reaped.
    let every: Vec<Uuid> = first.iter().chain(&second).map(|c| c.run_id).collect();
    assert_eq!(
        store.renew_leases(&every, secs(-1), secs(3600)).await.expect("renew"),
        4
    );
    let reaped = store.reap_expired().await.expect("reap");
    assert_eq!(
        reaped.len(),
        4,
        "the four running rows expire, the skipped one does not"
    );
    assert!(reaped.iter().all(|a| a.run_id != skipped.run_id));
    assert_eq!(run_by_id(&store, skipped.run_id).await.state, "skipped");
}

// ---------------------------------------------------------------- finishing

/// `finish_runs` sets state and outcome, merges the result into the claim
/// snapshot, drops the lease, and only touches rows still `running`.
async fn finish_runs_merges_snapshot(backend: Backend) {
    let (store, _g, files) = store_with(backend, 3).await;
    let at = t("2030-01-01T03:00:00Z");
    let claimed = claim(&store, at, "w1", &items(&files, false)).await;
    assert_eq!(claimed.len(), 3);
    let id_for = |l: &Loaded| {
        claimed
            .iter()
            .find(|c| c.definition_id == l.definition.id)
            .unwrap()
            .run_id
    };
    let (ok, failed, untouched) = (id_for(&files[0]), id_for(&files[1]), id_for(&files[2]));

    let result = json!({
        "http_status": 200,
        "duration_ms": 1234,
        "consistency_sweep_remote_all": {"exit_code": 0, "assessment_failures": 0, "checks": [1, 2, 3]},
    });
    let fin = at + secs(42);
    let n = store
        .finish_runs(&[
            finish(ok, Outcome::Ok, result.clone(), fin),
            finish(failed, Outcome::AutomationError, json!({"http_status": 502}), fin),
        ])
        .await
        .expect("finish");
    assert_eq!(n, 2);

    let row = run_by_id(&store, ok).await;
    assert_eq!(row.state, "succeeded");
    assert_eq!(row.outcome.as_deref(), Some("ok"));
    assert!(!row.automation_error);
    assert_eq!(row.finished_at, Some(fin));
    assert_eq!(row.lease_expires_at, None);
    assert_eq!(
        row.context_snapshot["trigger"], "schedule",
        "claim-time keys kept: {}",
        row.context_snapshot
    );
    assert_eq!(row.context_snapshot["spec_hash"], spec_hash(&files[0]));
    for (k, v) in result.as_object().unwrap() {
        assert_eq!(
            &row.context_snapshot[k], v,
            "result key {k} merged: {}",
            row.context_snapshot
        );
    }

    let row = run_by_id(&store, failed).await;
    assert_eq!(row.state, "failed");
    assert_eq!(row.outcome.as_deref(), Some("automation_error"));
    assert!(row.automation_error);
    assert_eq!(row.error_code.as_deref(), Some("http_5xx"));
    assert_eq!(row.error_message.as_deref(), Some("HTTP 502"));
    assert_eq!(row.context_snapshot["http_status"], 502);
    assert_eq!(row.context_snapshot["trigger"], "schedule");

    assert_eq!(
        run_by_id(&store, untouched).await.state,
        "running",
        "an unlisted run is untouched"
    );

    // A finished run is not finished again (a late duplicate from a lost worker).
    let again = store
        .finish_runs(&[finish(
            ok,
            Outcome::AutomationError,
            json!({"late": true}),
            fin + secs(9),
        )])
        .await
        .expect("finish again");
    assert_eq!(again, 0);
    let row = run_by_id(&store, ok).await;
    assert_eq!(row.outcome.as_deref(), Some("ok"));
    assert!(row.context_snapshot.get("late").is_none());
    assert_eq!(store.finish_runs(&[]).await.expect("empty finish"), 0);
}

/// The snapshot keeps the response body as it came back: a JSON `null`
/// (`http_status` of a transport error, a null field in the body) is a value,
/// not a deletion, and a key written at finish replaces the claim-time one.
async fn finish_runs_keeps_nulls_in_snapshot(backend: Backend) {
    let (store, _g, files) = store_with(backend, 1).await;
    let at = t("2030-01-01T03:30:00Z");
    let mut it = item(&files[0], false);
    it.snapshot = actcore::snapshot::to_stored(
        &json!({"trigger": "schedule", "request": {"method": "POST", "url": "http://x/", "body": {"a": 1}}}),
    );
    let claimed = claim(&store, at, "w1", std::slice::from_ref(&it)).await;
    assert_eq!(claimed.len(), 1);

    let result = json!({
        "http_status": null,
        "request": {"method": "POST"},
        "consistency_sweep_remote_all": {"automation_error": false, "error": null, "exit_code": 0},
    });
    assert_eq!(
        store
            .finish_runs(&[finish(it.run_id, Outcome::Ok, result.clone(), at + secs(1))])
            .await
            .expect("finish"),
        1
    );
    let snap = run_by_id(&store, it.run_id).await.context_snapshot;
    assert_eq!(snap["trigger"], "schedule");
    for (k, v) in result.as_object().unwrap() {
        assert_eq!(
            snap.get(k),
            Some(v),
            "{backend:?}: snapshot key `{k}` should be stored as written at finish; snapshot is {snap}"
        );
    }
}

/// `sync`, `pause` and the lease are stamped by the store's clock: a caller
/// whose clock runs 10 minutes fast moves nothing into the future.
async fn fault5_a_callers_clock_ahead_moves_neither_updated_at_nor_leases(backend: Backend) {
    // `store_with` syncs with a caller's clock in 2030.
    let (store, _g, files) = store_with(backend, 2).await;
    let fast = Timestamp::now() + secs(600);
    store
        .set_paused(files[0].definition.id, true, fast)
        .await
        .expect("pause");
    let stored = store.definitions().await.expect("defs");
    assert!(stored.iter().all(|d| d.updated_at <= Timestamp::now()), "{stored:?}");
    let run = claim(&store, fast, "w-fast", &items(&files[1..], false)).await[0];
    let lease = run_by_id(&store, run.run_id).await.lease_expires_at.unwrap();
    assert!(
        lease <= Timestamp::now() + secs(30),
        "the lease counts from the database's now: {lease}"
    );
}

/// A retry of a claim (same run ids, same worker) returns the rows an
/// attempt whose reply was lost committed: the worker adopts and executes
/// them. Another worker's claim of the same instant gets nothing.
async fn claim_adopts_the_rows_of_an_attempt_whose_reply_was_lost(backend: Backend) {
    let (store, _g, files) = store_with(backend, 3).await;
    let at = t("2030-01-01T05:00:00Z");
    let batch = items(&files, false);
    let first = claim(&store, at, "w1", &batch).await;
    assert_eq!(first.len(), 3);
    let mut again = claim(&store, at, "w1", &batch).await;
    let mut first = first;
    first.sort_by_key(|c| c.run_id);
    again.sort_by_key(|c| c.run_id);
    assert_eq!(again, first, "the retry adopts exactly the committed rows");
    assert_eq!(all_runs(&store).await.len(), 3, "and inserts none");
    let mut other = items(&files, false);
    for i in &mut other {
        i.run_id = Uuid::now_v7();
    }
    assert!(claim(&store, at, "w2", &other).await.is_empty(), "the fence holds");
}

/// With `skip_if_running`, a run this worker finished but has not written
/// yet (its row still says `running`) is not an overlap.
async fn finished_but_unwritten_runs_are_not_overlaps(backend: Backend) {
    let (store, _g, files) = store_with(backend, 1).await;
    let t1 = t("2030-01-01T06:00:00Z");
    let first = claim(&store, t1, "w1", &items(&files, true)).await;
    assert_eq!(first[0].state, State::Running);
    let finished = [first[0].run_id];
    let second = claim_with(&store, t1 + secs(60), "w1", &items(&files, true), secs(30), &finished).await;
    assert_eq!(second[0].state, State::Running, "{second:?}");
    let third = claim(&store, t1 + secs(120), "w1", &items(&files, true)).await;
    assert_eq!(third[0].state, State::Skipped, "still running as far as anyone knows");
}

/// Postgres refuses a NUL character in `jsonb`; the worker's
/// `snapshot::make_storable` escapes it, and that is stored on both backends.
async fn fault2_a_nul_is_refused_raw_and_stored_escaped(backend: Backend) {
    let (store, _g, files) = store_with(backend, 1).await;
    let at = t("2030-01-01T07:00:00Z");
    let run = claim(&store, at, "w1", &items(&files, false)).await[0];
    let raw = json!({"body_text": "a\u{0}b"});
    let refused = store
        .finish_runs(&[finish(run.run_id, Outcome::Ok, raw.clone(), at)])
        .await;
    if backend == Backend::Postgres {
        assert!(refused.is_err(), "Postgres cannot hold NUL in jsonb");
    }
    let mut escaped = raw;
    assert_eq!(actcore::snapshot::make_storable(&mut escaped), 1);
    if backend == Backend::Postgres {
        let n = store
            .finish_runs(&[finish(run.run_id, Outcome::Ok, escaped, at)])
            .await
            .expect("escaped, it is stored");
        assert_eq!(n, 1);
    }
    let row = run_by_id(&store, run.run_id).await;
    assert_eq!(row.state, "succeeded");
    if backend == Backend::Postgres {
        assert_eq!(row.context_snapshot["body_text"], "a\\u0000b");
        assert_eq!(row.context_snapshot["sanitized"]["nul_characters_escaped"], 1);
    }
}

// ---------------------------------------------------------------- leases

/// Renewed leases survive the reaper; expired ones become `abandoned`
/// (`worker_lost`, an automation error) with a `run_abandoned` event.
async fn renew_and_reap_expired_leases(backend: Backend) {
    let (store, _g, files) = store_with(backend, 2).await;
    let at = t("2030-01-01T04:00:00Z");
    let alive = claim(&store, at, "w-alive", &items(&files[..1], false)).await;
    // The dead worker's lease is counted on the database's clock and already over.
    let dead = claim_with(&store, at, "w-dead", &items(&files[1..], false), secs(-1), &[]).await;
    assert_eq!((alive.len(), dead.len()), (1, 1));
    let (alive, dead) = (alive[0], dead[0]);
    let lease_of = |row: RunRow| row.lease_expires_at.expect("a running row holds a lease");

    // Only leases expiring within the window are touched: a fresh one is not rewritten.
    assert_eq!(
        store
            .renew_leases(&[alive.run_id], secs(120), secs(10))
            .await
            .expect("renew"),
        0,
        "a lease with 30 s left is not renewed when only those under 10 s are due"
    );
    let before_renewal = lease_of(run_by_id(&store, alive.run_id).await);
    assert_eq!(
        store
            .renew_leases(&[alive.run_id], secs(120), secs(120))
            .await
            .expect("renew"),
        1
    );
    assert_eq!(
        store
            .renew_leases(&[Uuid::now_v7()], secs(120), secs(120))
            .await
            .expect("renew"),
        0,
        "renewal is by run id: an unknown id renews nothing"
    );
    let renewed = lease_of(run_by_id(&store, alive.run_id).await);
    assert!(
        renewed >= before_renewal + secs(85),
        "renewed to now + 120 s: {before_renewal} -> {renewed}"
    );

    let before = event_count(&store, "run_abandoned").await;
    let reaped = store.reap_expired().await.expect("reap");
    assert_eq!(reaped.len(), 1, "only the expired lease is reaped: {reaped:?}");
    assert_eq!(reaped[0].run_id, dead.run_id);
    assert_eq!(reaped[0].definition_id, dead.definition_id);

    let row = run_by_id(&store, dead.run_id).await;
    assert_eq!(row.state, "abandoned");
    assert_eq!(row.outcome.as_deref(), Some("automation_error"));
    assert!(row.automation_error);
    assert_eq!(row.error_code.as_deref(), Some("worker_lost"));
    assert!(
        row.error_message.as_deref().unwrap_or_default().contains("w-dead"),
        "{row:?}"
    );
    assert!(row.finished_at.is_some());
    assert_eq!(row.lease_expires_at, None);
    assert_eq!(
        run_by_id(&store, alive.run_id).await.state,
        "running",
        "the renewed run is kept"
    );

    assert_eq!(event_count(&store, "run_abandoned").await, before + 1);
    let per_def = store.event_kinds(Some(dead.definition_id)).await.expect("event kinds");
    assert!(per_def.contains(&("run_abandoned".to_string(), 1)), "{per_def:?}");

    // Reaping is idempotent, and a reaped run cannot be finished late.
    assert!(store.reap_expired().await.expect("reap").is_empty());
    assert_eq!(event_count(&store, "run_abandoned").await, before + 1);
    let late = store
        .finish_runs(&[finish(dead.run_id, Outcome::Ok, json!({}), at + secs(70))])
        .await
        .expect("finish");
    assert_eq!(late, 0);
    assert_eq!(run_by_id(&store, dead.run_id).await.state, "abandoned");
}

/// A worker stopping past its grace abandons exactly its own running runs.
async fn abandon_worker_runs_only_own_running(backend: Backend) {
    let (store, _g, files) = store_with(backend, 3).await;
    let at = t("2030-01-01T05:00:00Z");
    let mine = claim(&store, at, "w1", &items(&files[..2], false)).await;
    let theirs = claim(&store, at, "w2", &items(&files[2..], false)).await;
    assert_eq!((mine.len(), theirs.len()), (2, 1));
    // One of w1's runs already finished: it stays as it was.
    assert_eq!(
        store
            .finish_runs(&[finish(mine[0].run_id, Outcome::Ok, json!({}), at + secs(1))])
            .await
            .expect("finish"),
        1
    );

    let stop = at + secs(5);
    let n = store
        .abandon_worker_runs("w1", ErrorCode::Shutdown, "stopped past the shutdown grace", stop)
        .await
        .expect("abandon");
    assert_eq!(n, 1);

    let row = run_by_id(&store, mine[1].run_id).await;
    assert_eq!(row.state, "abandoned");
    assert_eq!(row.outcome.as_deref(), Some("automation_error"));
    assert!(row.automation_error);
    assert_eq!(row.error_code.as_deref(), Some("shutdown"));
    assert_eq!(row.error_message.as_deref(), Some("stopped past the shutdown grace"));
    assert_eq!(row.finished_at, Some(stop));
    assert_eq!(row.lease_expires_at, None);
    assert_eq!(run_by_id(&store, mine[0].run_id).await.state, "succeeded");
    assert_eq!(
        run_by_id(&store, theirs[0].run_id).await.state,
        "running",
        "another worker's run"
    );
    assert_eq!(
        store
            .abandon_worker_runs("w1", ErrorCode::Shutdown, "again", stop)
            .await
            .expect("abandon"),
        0
    );
}

// ---------------------------------------------------------------- reading

/// The latest scheduled instant per activity: only `schedule` rows count
/// (not manual runs, not retries), whatever their state.
async fn last_scheduled_per_activity(backend: Backend) {
    let (store, _g, files) = store_with(backend, 3).await;
    assert!(store.last_scheduled().await.expect("last").is_empty());
    let (a, b) = (&files[0], &files[1]);
    let t1 = t("2030-01-01T06:00:00Z");
    let t2 = t1 + secs(300);

    assert_eq!(claim(&store, t1, "w1", &items(&files[..2], false)).await.len(), 2);
    // A's second instant is recorded as an overlap skip: it still counts as scheduled.
    assert_eq!(claim(&store, t2, "w1", &[item(a, true)]).await[0].state, State::Skipped);
    // A later manual run and a later retry row do not move the schedule.
    let mut m = manual_run(a.definition.id, t2 + secs(600), json!({}));
    assert!(store.insert_run(&m).await.expect("insert"));
    m.run_id = Uuid::now_v7();
    m.trigger = Trigger::Retry;
    m.attempt = 2;
    m.scheduled_for = Some(t2 + secs(900));
    assert!(store.insert_run(&m).await.expect("insert"));
    // Nor does a later instant the workstation's fallback ran.
    m.run_id = Uuid::now_v7();
    m.trigger = Trigger::Fallback;
    m.source = Source::LocalFallback;
    m.attempt = 1;
    m.scheduled_for = Some(t2 + secs(1200));
    assert!(store.insert_run(&m).await.expect("insert"));

    let last: HashMap<Uuid, Timestamp> = store.last_scheduled().await.expect("last").into_iter().collect();
    assert_eq!(last.len(), 2, "{last:?}");
    assert_eq!(last.get(&a.definition.id), Some(&t2));
    assert_eq!(last.get(&b.definition.id), Some(&t1));
    assert_eq!(last.get(&files[2].definition.id), None);
}

/// `runs()`: newest first, filtered by activity and by `fired_at >= since`, limited.
async fn runs_filter_and_order(backend: Backend) {
    let (store, _g, files) = store_with(backend, 2).await;
    let (a, b) = (files[0].definition.id, files[1].definition.id);
    let base = t("2030-01-01T07:00:00Z");
    let mut ids = HashMap::new();
    for (def, minute) in [(a, 0), (b, 1), (a, 2), (b, 3), (a, 4)] {
        let r = manual_run(def, base + secs(60 * minute), json!({ "minute": minute }));
        assert!(store.insert_run(&r).await.expect("insert"));
        ids.insert(r.run_id, (def, minute));
    }
    let minutes = |rows: &[RunRow]| rows.iter().map(|r| ids[&r.run_id].1).collect::<Vec<_>>();

    let all = store.runs(&RunFilter::default()).await.expect("runs");
    assert_eq!(minutes(&all), [4, 3, 2, 1, 0], "newest first, limit 0 = all");

    let only_a = store
        .runs(&RunFilter {
            definition_id: Some(a),
            ..Default::default()
        })
        .await
        .expect("runs");
    assert_eq!(minutes(&only_a), [4, 2, 0]);
    assert!(only_a.iter().all(|r| r.definition_id == a));

    let since = store
        .runs(&RunFilter {
            since: Some(base + secs(120)),
            ..Default::default()
        })
        .await
        .expect("runs");
    assert_eq!(minutes(&since), [4, 3, 2], "since is inclusive");

    let combined = store
        .runs(&RunFilter {
            definition_id: Some(b),
            since: Some(base + secs(60)),
            limit: 1,
        })
        .await
        .expect("runs");
    assert_eq!(minutes(&combined), [3]);

    let row = &only_a[0];
    assert_eq!(row.trigger, "manual");
    assert_eq!(row.source, "manual");
    assert_eq!(row.scheduled_for, None);
    assert_eq!(row.context_snapshot, json!({"minute": 4}));
    assert_eq!(row.started_at, Some(base + secs(240)));
    assert_eq!(row.finished_at, Some(base + secs(241)));

    let nobody = store
        .runs(&RunFilter {
            definition_id: Some(Uuid::new_v4()),
            ..Default::default()
        })
        .await
        .expect("runs");
    assert!(nobody.is_empty());
}

// ---------------------------------------------------------------- definitions

/// The definitions fingerprint moves with every real change (add, change,
/// pause, retire) and stays put across a no-op sync and a dry run.
async fn definitions_version_tracks_changes(backend: Backend) {
    let (store, _g, _url) = fresh_store(backend).await;
    let v0 = store.definitions_version().await.expect("version");
    assert_eq!(v0.count, 0);
    assert_eq!(v0.max_updated_at, None);

    let mut files = defs(2);
    let t1 = t("2030-01-01T08:00:00Z");
    store.sync(&files, t1, false).await.expect("sync");
    let v1 = store.definitions_version().await.expect("version");
    assert_ne!(v1, v0);
    assert_eq!(v1.count, 2);
    assert!(is_recent(v1.max_updated_at), "the store's clock: {v1:?}");

    // A no-op sync (later clock, same files) writes nothing.
    let r = store.sync(&files, t1 + secs(60), false).await.expect("sync");
    assert_eq!(
        (r.added.len(), r.changed.len(), r.retired.len(), r.unchanged),
        (0, 0, 0, 2)
    );
    assert_eq!(store.definitions_version().await.expect("version"), v1);

    // A dry run of a change writes nothing either.
    files[0].definition.schedule.cron = "0 * * * *".into();
    let r = store.sync(&files, t1 + secs(120), true).await.expect("dry run");
    assert_eq!(r.changed, [files[0].definition.slug.clone()]);
    assert!(r.dry_run);
    assert_eq!(store.definitions_version().await.expect("version"), v1);

    let t2 = t1 + secs(180);
    store.sync(&files, t2, false).await.expect("sync");
    let v2 = store.definitions_version().await.expect("version");
    assert_ne!(v2, v1);
    assert!(v2.max_updated_at > v1.max_updated_at);

    let t3 = t2 + secs(60);
    assert!(store.set_paused(files[1].definition.id, true, t3).await.expect("pause"));
    let v3 = store.definitions_version().await.expect("version");
    assert_ne!(v3, v2, "a pause must wake the workers' re-read");

    let t4 = t3 + secs(60);
    store.sync(&files[..1], t4, false).await.expect("sync");
    let v4 = store.definitions_version().await.expect("version");
    assert_ne!(v4, v3, "a retire must wake the workers' re-read");
    assert_eq!(v4.count, 2, "a retired activity is kept");
}

/// Slugs may move between live activities in one sync (a swap), since
/// identity is the id; the unique slug index holds before and after.
async fn slugs_can_swap_in_one_sync(backend: Backend) {
    let (store, _g, _url) = fresh_store(backend).await;
    let mut files = defs(2);
    store
        .sync(&files, t("2030-01-01T09:00:00Z"), false)
        .await
        .expect("first sync");
    let (a, b) = (files[0].definition.slug.clone(), files[1].definition.slug.clone());
    files[0].definition.slug = b.clone();
    files[1].definition.slug = a.clone();
    let r = store
        .sync(&files, t("2030-01-01T09:01:00Z"), false)
        .await
        .expect("swap sync");
    assert_eq!(r.changed.len(), 2, "{r:?}");
    let stored = store.definitions().await.expect("definitions");
    let slug_of = |id: Uuid| {
        stored
            .iter()
            .find(|d| d.definition.id == id)
            .unwrap()
            .definition
            .slug
            .clone()
    };
    assert_eq!(slug_of(files[0].definition.id), b);
    assert_eq!(slug_of(files[1].definition.id), a);
}

/// Sync through the store API: a no-op sync writes no event and no row,
/// `paused` survives a change, a retire keeps the row and its runs, and a
/// returning file revives the activity.
async fn sync_keeps_operator_state_and_history(backend: Backend) {
    let (store, _g, _url) = fresh_store(backend).await;
    let mut files = defs(2);
    let (a, b) = (files[0].definition.id, files[1].definition.id);
    let t1 = t("2030-01-01T09:00:00Z");
    store.sync(&files, t1, false).await.expect("sync");
    assert_eq!(event_count(&store, "definition_added").await, 2);
    let added = store.event_kinds(Some(a)).await.expect("kinds");
    assert_eq!(added, [("definition_added".to_string(), 1)]);

    assert!(store.set_paused(a, true, t1 + secs(1)).await.expect("pause"));
    assert!(!store.set_paused(Uuid::new_v4(), true, t1).await.expect("pause unknown"));
    assert_eq!(event_count(&store, "paused").await, 1);
    let run = manual_run(b, t1 + secs(2), json!({"kept": true}));
    assert!(store.insert_run(&run).await.expect("insert"));

    let snapshot = |defs: Vec<actcore::store::StoredDefinition>| {
        defs.into_iter()
            .map(|d| {
                (
                    d.definition.id,
                    (d.spec_hash, d.enabled, d.paused, d.retired_at, d.updated_at),
                )
            })
            .collect::<HashMap<_, _>>()
    };
    let before = snapshot(store.definitions().await.expect("defs"));
    let kinds_before = store.event_kinds(None).await.expect("kinds");
    let r = store.sync(&files, t1 + secs(60), false).await.expect("no-op sync");
    assert_eq!(r.unchanged, 2);
    assert_eq!(
        snapshot(store.definitions().await.expect("defs")),
        before,
        "a no-op sync rewrote rows"
    );
    assert_eq!(
        store.event_kinds(None).await.expect("kinds"),
        kinds_before,
        "a no-op sync wrote events"
    );

    // Change A: paused stays, the spec and hash follow the file.
    files[0].definition.schedule.cron = "7 * * * *".into();
    files[0].definition.name = "Renamed".into();
    let t2 = t1 + secs(120);
    let r = store.sync(&files, t2, false).await.expect("sync");
    assert_eq!(r.changed, [files[0].definition.slug.clone()]);
    let stored = store.definitions().await.expect("defs");
    let sa = stored.iter().find(|d| d.definition.id == a).unwrap();
    assert!(sa.paused, "sync overwrote the operator's pause");
    assert!(!sa.is_active());
    assert_eq!(sa.definition.schedule.cron, "7 * * * *");
    assert_eq!(sa.definition.name, "Renamed");
    assert_eq!(sa.spec_hash, files[0].definition.spec_hash());
    assert!(
        is_recent(Some(sa.updated_at)),
        "the store's clock, not the caller's {t2}"
    );
    assert_eq!(event_count(&store, "definition_changed").await, 1);

    // Remove B's file: kept, retired, disabled, runs intact.
    let t3 = t2 + secs(60);
    let r = store.sync(&files[..1], t3, false).await.expect("sync");
    assert_eq!(r.retired, [files[1].definition.slug.clone()]);
    let stored = store.definitions().await.expect("defs");
    assert_eq!(stored.len(), 2);
    let sb = stored.iter().find(|d| d.definition.id == b).unwrap();
    assert!(is_recent(sb.retired_at), "the store's clock, not the caller's {t3}");
    assert!(!sb.enabled);
    assert!(!sb.is_active());
    let runs_b = store
        .runs(&RunFilter {
            definition_id: Some(b),
            ..Default::default()
        })
        .await
        .expect("runs");
    assert_eq!(runs_b.len(), 1);
    assert_eq!(runs_b[0].context_snapshot, json!({"kept": true}));
    assert_eq!(event_count(&store, "definition_retired").await, 1);
    // Retiring again is a no-op.
    let r = store.sync(&files[..1], t3 + secs(60), false).await.expect("sync");
    assert!(r.retired.is_empty(), "{r:?}");

    // A new activity may take over the retired slug.
    let heir = loaded(sample(
        Uuid::new_v4(),
        &files[1].definition.slug,
        "*/5 * * * *",
        "http://127.0.0.1:9/y",
    ));
    let r = store
        .sync(&[files[0].clone(), heir.clone()], t3 + secs(120), false)
        .await
        .expect("sync with an heir for the slug");
    assert_eq!(r.added, vec![heir.definition.slug.clone()]);
    // And when the heir goes and B's file returns, B is revived under its slug.
    let t4 = t3 + secs(180);
    let r = store.sync(&files, t4, false).await.expect("revive");
    assert_eq!(r.changed, [files[1].definition.slug.clone()], "{r:?}");
    assert_eq!(r.retired, vec![heir.definition.slug.clone()], "{r:?}");
    let stored = store.definitions().await.expect("defs");
    let sb = stored.iter().find(|d| d.definition.id == b).unwrap();
    assert_eq!(sb.retired_at, None);
    assert!(sb.enabled);
    assert!(sb.is_active());
}

// ---------------------------------------------------------------- runbook SQL

/// The runbook query (docs/reference/tables.md) runs verbatim and returns the sweep
/// result that was stored under `consistency_sweep_remote_all`.
async fn runbook_query_verbatim(backend: Backend) {
    let (store, _g, _url) = fresh_store(backend).await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../definitions");
    let files = actcore::definition::load_dir(&dir).expect("the repository's definitions are valid");
    let flagship = files
        .iter()
        .find(|l| l.definition.id.to_string() == FLAGSHIP_ID)
        .expect("the flagship definition is in definitions/");
    assert_eq!(flagship.definition.result.snapshot_key, "consistency_sweep_remote_all");
    store
        .sync(&files, t("2030-01-01T10:00:00Z"), false)
        .await
        .expect("sync");
    let id = flagship.definition.id;

    // An older scheduled run, claimed and finished the way the worker does it...
    let at = t("2030-01-01T10:15:00Z");
    let it = ClaimItem {
        run_id: Uuid::now_v7(),
        definition_id: id,
        spec_hash: flagship.definition.spec_hash(),
        skip_if_running: true,
        buffer_until: None,
        snapshot: actcore::snapshot::to_stored(
            &json!({"trigger": "schedule", "spec_hash": flagship.definition.spec_hash()}),
        ),
    };
    assert_eq!(claim(&store, at, "w1", std::slice::from_ref(&it)).await.len(), 1);
    let older = json!({"exit_code": 0, "automation_error": false, "assessment_failures": 2, "lock_skipped": false});
    store
        .finish_runs(&[finish(
            it.run_id,
            Outcome::AssessmentFailures,
            json!({"http_status": 200, "consistency_sweep_remote_all": older}),
            at + secs(40),
        )])
        .await
        .expect("finish");
    // ...and a newer manual canary inserted whole.
    let newer =
        json!({"exit_code": 0, "automation_error": false, "assessment_failures": 0, "summary": {"checked": 17}});
    let manual = manual_run(
        id,
        at + secs(600),
        json!({"trigger": "manual", "consistency_sweep_remote_all": newer}),
    );
    assert!(store.insert_run(&manual).await.expect("insert"));

    // (run_id, scheduled_for is null, sweep_result), newest first.
    let rows: Vec<(Uuid, bool, Value)> = match &store {
        Store::Postgres(pg) => sqlx::query(RUNBOOK_SQL)
            .fetch_all(pg.pool())
            .await
            .expect("runbook SQL on Postgres")
            .iter()
            .map(|r| {
                (
                    r.get::<Uuid, _>("run_id"),
                    r.try_get_raw("scheduled_for").expect("scheduled_for column").is_null(),
                    r.get::<Value, _>("sweep_result"),
                )
            })
            .collect(),
        Store::Sqlite(lite) => sqlx::query(RUNBOOK_SQL)
            .fetch_all(lite.pool())
            .await
            .expect("runbook SQL on SQLite")
            .iter()
            .map(|r| {
                let text: String = r.get("sweep_result");
                (
                    Uuid::parse_str(&r.get::<String, _>("run_id")).unwrap(),
                    r.get::<Option<String>, _>("scheduled_for").is_none(),
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("sweep_result `{text}` is not JSON: {e}")),
                )
            })
            .collect(),
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0], (manual.run_id, true, newer), "the newest run first");
    assert_eq!(rows[1], (it.run_id, false, older));
}

// ---------------------------------------------------------------- operator reads and overrides

/// The reads behind `status`, `/metrics` and the page, and the audited
/// overrides: each override and its event in one transaction; an operator's
/// open holds (no half-open time); a reset closes, clears the streak and
/// the churn window.
async fn guard_reads_and_overrides(backend: Backend) {
    let (store, _dir, files) = store_with(backend, 2).await;
    let (a, b) = (files[0].definition.id, files[1].definition.id);
    let t0 = t("2026-11-30T10:00:00Z");
    let mut ok = manual_run(a, t0, json!({}));
    ok.finished_at = Some(t0 + secs(3));
    store.insert_run(&ok).await.expect("ok run");
    for i in 1..=3 {
        let mut e = manual_run(a, t0 + secs(60 * i), json!({}));
        e.state = State::Failed;
        e.outcome = Some(Outcome::AutomationError);
        e.automation_error = true;
        e.error_code = Some(ErrorCode::Transport);
        store.insert_run(&e).await.expect("error run");
    }
    // Per activity, newest first, at most N each; b has none.
    let recent = store.recent_runs(&[a, b], 2).await.expect("recent");
    assert_eq!(recent.len(), 2, "{recent:?}");
    assert!(recent[0].fired_at > recent[1].fired_at && recent.iter().all(|r| r.definition_id == a));
    assert_eq!(
        store.last_successes(&[a, b]).await.expect("successes"),
        vec![(a, t0 + secs(3))]
    );
    let errors = store
        .query_runs(&RunQuery {
            definition_id: Some(a),
            outcome: Some("automation_error".into()),
            since: Some(t0 + secs(90)),
            limit: 10,
            ..RunQuery::default()
        })
        .await
        .expect("query");
    assert_eq!(errors.len(), 2, "since and outcome both filter");
    assert_eq!(
        store.run_by_id(ok.run_id).await.expect("by id").map(|r| r.run_id),
        Some(ok.run_id)
    );
    assert!(store.run_by_id(Uuid::new_v4()).await.expect("by id").is_none());
    assert!(
        store.guards(&[a, b]).await.expect("guards").is_empty(),
        "created lazily"
    );

    let event = |kind: &str| actcore::store::NewEvent {
        at: t0,
        definition_id: Some(a),
        run_id: None,
        kind: kind.into(),
        detail: json!({"actor": "alice"}),
    };
    store
        .override_circuit(
            a,
            CircuitOverride::Open,
            "alice",
            Some("bridge rebuild"),
            &event("circuit_opened_by_operator"),
        )
        .await
        .expect("open");
    let g = store.guards(&[a]).await.expect("guards").remove(0);
    assert_eq!(
        (
            g.circuit.as_str(),
            g.half_open_at,
            g.circuit_actor.as_deref(),
            g.circuit_reason.as_deref()
        ),
        ("open", None, Some("alice"), Some("bridge rebuild"))
    );
    assert!(
        is_recent(g.circuit_since),
        "the database's clock: {:?}",
        g.circuit_since
    );
    store
        .override_circuit(a, CircuitOverride::Reset, "bob", None, &event("circuit_reset"))
        .await
        .expect("reset");
    let g = store.guards(&[a]).await.expect("guards").remove(0);
    assert_eq!(
        (
            g.circuit.as_str(),
            g.consecutive_errors,
            g.window_attempts,
            g.window_started_at,
            g.probe_run_id
        ),
        ("closed", 0, 0, None, None)
    );
    assert_eq!(g.circuit_actor.as_deref(), Some("bob"));

    assert!(store.pause_audited(a, true, &event("paused")).await.expect("pause"));
    assert!(
        !store
            .pause_audited(Uuid::new_v4(), true, &event("paused"))
            .await
            .expect("unknown")
    );
    assert!(
        store
            .definitions()
            .await
            .expect("defs")
            .iter()
            .any(|d| d.definition.id == a && d.paused)
    );
    let kinds = store.event_kinds(Some(a)).await.expect("kinds");
    for kind in ["circuit_opened_by_operator", "circuit_reset", "paused"] {
        assert!(kinds.contains(&(kind.to_string(), 1)), "{kind}: {kinds:?}");
    }
}

/// A finished run of `def` for `instant`, as the cluster or the fallback records it.
fn slot_run(
    def: Uuid,
    instant: Timestamp,
    attempt: i32,
    trigger: Trigger,
    outcome: Outcome,
    finished: Timestamp,
) -> NewRun {
    NewRun {
        scheduled_for: Some(instant),
        trigger,
        source: if trigger == Trigger::Fallback {
            Source::LocalFallback
        } else {
            Source::ActivityCore
        },
        attempt,
        state: outcome.state(),
        outcome: Some(outcome),
        automation_error: outcome == Outcome::AutomationError,
        finished_at: Some(finished),
        ..manual_run(def, instant, json!({}))
    }
}

/// The column as text (uuid in Postgres, text in SQLite), for links the run rows do not carry.
async fn link(store: &Store, run_id: Uuid, column: &str) -> Option<String> {
    let sql = format!("select cast({column} as text) as v from activity_runs where cast(run_id as text) = ");
    match store {
        Store::Postgres(pg) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{sql}$1")))
            .bind(run_id.to_string())
            .fetch_one(pg.pool())
            .await
            .unwrap(),
        Store::Sqlite(lite) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{sql}?1")))
            .bind(run_id.to_string())
            .fetch_one(lite.pool())
            .await
            .unwrap(),
    }
}

/// The worker's start-up creates the missing guard rows of its activities
/// (fresh: circuit closed, nothing counted), ignores unknown ids, and
/// changes none that exists.
async fn guard_rows_created_up_front(backend: Backend) {
    let (store, _dir, files) = store_with(backend, 2).await;
    let (a, b) = (files[0].definition.id, files[1].definition.id);
    assert!(store.guards(&[a, b]).await.expect("guards").is_empty());
    assert_eq!(
        store.create_guard_rows(&[a, Uuid::new_v4()]).await.expect("create"),
        1,
        "an unknown activity gets no row"
    );
    let rows = store.guards(&[a, b]).await.expect("guards");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (
            rows[0].definition_id,
            rows[0].circuit.as_str(),
            rows[0].consecutive_errors,
            rows[0].window_attempts
        ),
        (a, "closed", 0, 0)
    );
    assert_eq!(
        store.create_guard_rows(&[b, a]).await.expect("create"),
        1,
        "only b's is missing"
    );
    assert_eq!(store.create_guard_rows(&[a, b]).await.expect("create"), 0);
    assert_eq!(store.guards(&[a, b]).await.expect("guards").len(), 2);
}

/// The fallback's queries: an instant's runs, the cluster guard's "running
/// or healthy since", the fence widened to fallback first attempts, and the
/// links (`retry_of`, `duplicate_of`, `actor`) stored as given.
async fn fallback_guard_slot_runs_and_the_widened_fence(backend: Backend) {
    let (store, _guard, files) = store_with(backend, 2).await;
    let (a, b) = (files[0].definition.id, files[1].definition.id);
    let s = t("2030-01-01T12:00:00Z");
    let failed = slot_run(a, s, 1, Trigger::Schedule, Outcome::AutomationError, s + secs(10));
    let retried = NewRun {
        retry_of: Some(failed.run_id),
        ..slot_run(a, s, 2, Trigger::Retry, Outcome::Ok, s + secs(60))
    };
    let older_ok = slot_run(a, s - secs(3600), 1, Trigger::Schedule, Outcome::Ok, s - secs(3590));
    let blocked = slot_run(
        a,
        s + secs(900),
        1,
        Trigger::Schedule,
        Outcome::BlockedCircuitOpen,
        s + secs(900),
    );
    let running = NewRun {
        state: State::Running,
        outcome: None,
        finished_at: None,
        ..slot_run(a, s + secs(1800), 1, Trigger::Schedule, Outcome::Ok, s)
    };
    let other = slot_run(b, s, 1, Trigger::Schedule, Outcome::Ok, s + secs(5));
    for r in [&failed, &retried, &older_ok, &blocked, &running, &other] {
        assert!(store.insert_run(r).await.unwrap(), "{r:?}");
    }

    let ids = |rows: Vec<RunRow>| rows.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.slot_runs(a, s).await.unwrap()),
        [failed.run_id, retried.run_id],
        "every attempt of the instant, first attempt first, no other activity"
    );
    let mut live = ids(store.live_or_healthy_since(a, s).await.unwrap());
    live.sort();
    let mut expected = vec![retried.run_id, running.run_id];
    expected.sort();
    assert_eq!(
        live, expected,
        "running, or ended healthy since; not failed, blocked, older or another's"
    );
    assert!(store.live_or_healthy_since(b, s + secs(6)).await.unwrap().is_empty());

    // The fence holds fallback first attempts too, whichever comes first.
    let fallback_first = slot_run(a, s, 1, Trigger::Fallback, Outcome::Ok, s + secs(70));
    assert!(!store.insert_run(&fallback_first).await.unwrap(), "the cluster holds s");
    let t2 = s + secs(2700);
    let fallback_t2 = slot_run(a, t2, 1, Trigger::Fallback, Outcome::Ok, t2 + secs(5));
    assert!(store.insert_run(&fallback_t2).await.unwrap());
    let cluster_t2 = slot_run(a, t2, 1, Trigger::Schedule, Outcome::Ok, t2 + secs(6));
    assert!(!store.insert_run(&cluster_t2).await.unwrap(), "the fallback holds t2");
    // Outside the fence: a later attempt, and an imported duplicate (attempt 0).
    let next = NewRun {
        retry_of: Some(failed.run_id),
        actor: Some("alice".into()),
        ..slot_run(a, s, 3, Trigger::Fallback, Outcome::Ok, s + secs(80))
    };
    let duplicate = NewRun {
        duplicate_of: Some(fallback_t2.run_id),
        ..slot_run(a, t2, 0, Trigger::Fallback, Outcome::Ok, t2 + secs(7))
    };
    assert!(store.insert_run(&next).await.unwrap());
    assert!(store.insert_run(&duplicate).await.unwrap());
    assert_eq!(
        link(&store, next.run_id, "retry_of").await,
        Some(failed.run_id.to_string())
    );
    assert_eq!(link(&store, next.run_id, "actor").await.as_deref(), Some("alice"));
    assert_eq!(
        link(&store, duplicate.run_id, "duplicate_of").await,
        Some(fallback_t2.run_id.to_string())
    );
    assert_eq!(link(&store, failed.run_id, "retry_of").await, None);
    assert_eq!(store.slot_runs(a, t2).await.unwrap().len(), 2);
}

actcore_tests::both_backends!(
    fallback_guard_slot_runs_and_the_widened_fence,
    fault5_a_callers_clock_ahead_moves_neither_updated_at_nor_leases,
    claim_adopts_the_rows_of_an_attempt_whose_reply_was_lost,
    finished_but_unwritten_runs_are_not_overlaps,
    fault2_a_nul_is_refused_raw_and_stored_escaped,
    claim_is_exactly_once,
    concurrent_claims_partition,
    skip_if_running_records_overlap,
    finish_runs_merges_snapshot,
    finish_runs_keeps_nulls_in_snapshot,
    renew_and_reap_expired_leases,
    abandon_worker_runs_only_own_running,
    last_scheduled_per_activity,
    runs_filter_and_order,
    definitions_version_tracks_changes,
    sync_keeps_operator_state_and_history,
    runbook_query_verbatim,
    slugs_can_swap_in_one_sync,
    guard_reads_and_overrides,
    guard_rows_created_up_front,
);
