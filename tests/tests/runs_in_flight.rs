//! Postgres keeps its queued and running runs in `activity_runs_inflight`,
//! mirrored from `activity_runs` by triggers, so that a run's finish touches
//! no indexed column and is a HOT update (migration
//! `20261206235000_runs_in_flight.sql`, docs/design.md "Runs in flight").
//!
//! Needs `ACTCORE_TEST_PG_URL` (set by `scripts/test`) and the server's
//! `pageinspect` extension (part of Debian's postgresql-15 package).

use actcore::definition::{Loaded, sample};
use actcore::run::{Outcome, Source, State, Trigger};
use actcore::store::queue::Queued;
use actcore::store::{ClaimBatch, ClaimItem, FinishRun, RunStore, Store};
use actcore_tests::fresh_pg_url;
use jiff::{SignedDuration, Timestamp};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Every column a finish writes (`PgStore::finish_runs`); none may be named
/// by an index of `activity_runs`, or the finish cannot be HOT.
const FINISH_WRITES: &[&str] = &[
    "state",
    "outcome",
    "automation_error",
    "assessment_failures",
    "error_code",
    "error_message",
    "context_snapshot",
    "finished_at",
    "lease_expires_at",
];

fn t(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

async fn setup(n: usize) -> (Store, PgConnection, Vec<Loaded>) {
    let url = fresh_pg_url().await;
    let store = Store::open_and_migrate(Some(&url)).await.expect("open");
    let files: Vec<Loaded> = (0..n)
        .map(|i| {
            let d = sample(
                Uuid::new_v4(),
                &format!("act-{i}"),
                "*/5 * * * *",
                "http://127.0.0.1:9/x",
            );
            Loaded {
                file: format!("definitions/act-{i}.toml").into(),
                definition: d,
            }
        })
        .collect();
    store
        .sync(&files, t("2030-01-01T00:00:00Z"), false)
        .await
        .expect("sync");
    let conn = PgConnection::connect(&url).await.expect("connect");
    (store, conn, files)
}

async fn claim(store: &Store, files: &[Loaded], at: Timestamp, worker: &str) -> Vec<Uuid> {
    let mut items: Vec<ClaimItem> = files
        .iter()
        .map(|l| ClaimItem {
            run_id: Uuid::now_v7(),
            definition_id: l.definition.id,
            spec_hash: l.definition.spec_hash(),
            skip_if_running: true,
            buffer_until: None,
            snapshot: actcore::snapshot::claimed(&l.definition.spec_hash(), &at.to_string(), 0),
        })
        .collect();
    items.sort_by_key(|i| i.definition_id);
    let claimed = store
        .claim(&ClaimBatch {
            scheduled_for: at,
            fired_at: at,
            worker_id: worker,
            lease: SignedDuration::from_secs(30),
            items: &items,
            finished_unwritten: &[],
        })
        .await
        .expect("claim");
    claimed.into_iter().map(|c| c.run_id).collect()
}

fn finished(run_id: Uuid, at: Timestamp) -> FinishRun {
    FinishRun {
        run_id,
        state: State::Succeeded,
        outcome: Outcome::Ok,
        automation_error: false,
        assessment_failures: 0,
        error_code: None,
        error_message: None,
        // What the flagship's finish adds: the request, the response facts, the State Hub's answer.
        snapshot: actcore::snapshot::to_stored(&serde_json::json!({
            "request": {
                "method": "POST",
                "url": "http://state-hub-bridge.state-hub.svc:8080/consistency/sweep/remote-all",
                "body_bytes": 44,
                "body_sha256": "9f2c4b1e0d7a6f5c3b2a190817263544536271809f8e7d6c5b4a392817060504",
                "body": {"max_seconds": 300, "source": "activity-core"}
            },
            "http_status": 200, "duration_ms": 42, "truncated": false, "lateness_ms": 3,
            "consistency_sweep_remote_all": serde_json::from_str::<serde_json::Value>(
                include_str!("../fixtures/state-hub/ok-clean.json")
            ).expect("fixture")
        })),
        finished_at: at,
        settle: None,
    }
}

type InFlight = Vec<(
    Uuid,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
)>;

/// The in-flight table and what `activity_runs` itself says is in flight,
/// column for column.
async fn both_sides(conn: &mut PgConnection) -> (InFlight, InFlight) {
    let cols = "run_id, state, worker_id, lease_expires_at::text, not_before::text, expires_at::text";
    let q = |from: &str| format!("select {cols} from {from} where state in ('queued', 'running') order by run_id");
    let mirror: InFlight = sqlx::query_as(sqlx::AssertSqlSafe(q("activity_runs_inflight")))
        .fetch_all(&mut *conn)
        .await
        .expect("read activity_runs_inflight");
    let runs: InFlight = sqlx::query_as(sqlx::AssertSqlSafe(q("activity_runs")))
        .fetch_all(&mut *conn)
        .await
        .expect("read activity_runs");
    (mirror, runs)
}

/// Asserts the mirror is exact and holds `running` / `queued` rows.
async fn assert_mirrors(conn: &mut PgConnection, running: usize, queued: usize, step: &str) {
    let (mirror, runs) = both_sides(conn).await;
    assert_eq!(
        mirror, runs,
        "{step}: activity_runs_inflight differs from activity_runs"
    );
    let count = |s: &str| runs.iter().filter(|r| r.1 == s).count();
    assert_eq!(
        (count("running"), count("queued")),
        (running, queued),
        "{step}: {runs:?}"
    );
}

/// Whichever statement writes `activity_runs` (the store's claim, finish,
/// queue, lease renewal and reaper, an operator's SQL, a delete, a
/// truncate), the in-flight table says exactly what it says.
#[tokio::test]
async fn the_in_flight_table_mirrors_every_writer() {
    let (store, mut conn, files) = setup(4).await;
    assert_mirrors(&mut conn, 0, 0, "empty").await;

    let at = t("2030-01-01T00:05:00Z");
    let runs = claim(&store, &files, at, "w1").await;
    assert_eq!(runs.len(), 4);
    assert_mirrors(&mut conn, 4, 0, "claimed").await;

    // The overlap check reads the mirror: every activity is busy now.
    let again = claim(&store, &files, at + SignedDuration::from_secs(300), "w2").await;
    let (skipped,): (i64,) = sqlx::query_as("select count(*) from activity_runs where outcome = 'skipped_overlap'")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(
        (again.len(), skipped),
        (4, 4),
        "the second instant overlaps every run in flight"
    );
    assert_mirrors(&mut conn, 4, 0, "overlaps recorded").await;

    store
        .renew_leases(
            &runs[..1],
            SignedDuration::from_secs(600),
            SignedDuration::from_secs(3600),
        )
        .await
        .expect("renew");
    assert_mirrors(&mut conn, 4, 0, "lease renewed").await;

    assert_eq!(store.finish_runs(&[finished(runs[0], at)]).await.expect("finish"), 1);
    assert_mirrors(&mut conn, 3, 0, "one finished").await;

    // An operator closing a run by hand.
    sqlx::query("update activity_runs set state = 'abandoned', outcome = 'automation_error', finished_at = now() where run_id = $1")
        .bind(runs[1])
        .execute(&mut conn)
        .await
        .expect("operator update");
    assert_mirrors(&mut conn, 2, 0, "operator's update").await;

    // A lease that ran out is reaped through the mirror.
    sqlx::query("update activity_runs set lease_expires_at = now() - interval '1 second' where run_id = $1")
        .bind(runs[2])
        .execute(&mut conn)
        .await
        .expect("expire a lease");
    assert_mirrors(&mut conn, 2, 0, "lease expired").await;
    let reaped = store.reap_expired().await.expect("reap");
    assert_eq!(reaped.iter().map(|a| a.run_id).collect::<Vec<_>>(), vec![runs[2]]);
    assert_mirrors(&mut conn, 1, 0, "reaped").await;

    // A manual run queued, then claimed from the queue, then abandoned by its worker.
    let def = files[1].definition.id;
    let q = Queued::new(
        def,
        Trigger::Manual,
        Source::Manual,
        1,
        None,
        (at, Some(at + SignedDuration::from_hours(1))),
        serde_json::json!({}),
    );
    assert!(store.enqueue(&q, &[]).await.expect("enqueue"));
    assert_mirrors(&mut conn, 1, 1, "queued").await;
    let got = store
        .claim_queued("w3", SignedDuration::from_secs(30), at, 10, None)
        .await
        .expect("claim queued");
    assert_eq!(got.iter().map(|d| d.run_id).collect::<Vec<_>>(), vec![q.run.run_id]);
    assert_mirrors(&mut conn, 2, 0, "dequeued").await;
    let abandoned = store
        .abandon_worker_runs("w3", actcore::run::ErrorCode::WorkerLost, "test", at)
        .await
        .expect("abandon");
    assert_eq!(abandoned, 1, "only w3's run");
    assert_mirrors(&mut conn, 1, 0, "w3 abandoned").await;

    // A queued run past its expiry is recorded as not run.
    let late = Queued::new(
        def,
        Trigger::Manual,
        Source::Manual,
        1,
        None,
        (at, Some(at)),
        serde_json::json!({}),
    );
    assert!(store.enqueue(&late, &[]).await.expect("enqueue"));
    assert_mirrors(&mut conn, 1, 1, "queued to expire").await;
    let expired = store.expire_queued(at, None).await.expect("expire");
    assert_eq!(expired.len(), 1);
    assert_mirrors(&mut conn, 1, 0, "expired").await;

    sqlx::query("delete from activity_runs where run_id = $1")
        .bind(runs[3])
        .execute(&mut conn)
        .await
        .expect("delete");
    assert_mirrors(&mut conn, 0, 0, "deleted").await;

    claim(&store, &files, at + SignedDuration::from_secs(600), "w1").await;
    assert_mirrors(&mut conn, 4, 0, "claimed again").await;
    sqlx::query("truncate activity_runs")
        .execute(&mut conn)
        .await
        .expect("truncate");
    assert_mirrors(&mut conn, 0, 0, "truncated").await;
}

/// No index of `activity_runs` names (as a key, an expression or a
/// predicate) a column the finish writes: the precondition of a HOT update.
#[tokio::test]
async fn no_index_of_activity_runs_names_a_column_the_finish_writes() {
    let (_store, mut conn, _files) = setup(1).await;
    // An index depends on every column its keys, expressions and predicate name.
    let named: Vec<(String, String)> = sqlx::query_as(
        "select c.relname::text, a.attname::text
         from pg_index i
         join pg_class c on c.oid = i.indexrelid
         join pg_depend d on d.classid = 'pg_class'::regclass and d.objid = i.indexrelid
                         and d.refobjid = i.indrelid and d.refobjsubid > 0
         join pg_attribute a on a.attrelid = i.indrelid and a.attnum = d.refobjsubid
         where i.indrelid = 'activity_runs'::regclass
         order by 1, 2",
    )
    .fetch_all(&mut conn)
    .await
    .expect("read index columns");
    assert!(
        named.iter().any(|(_, col)| col == "definition_id"),
        "the query must see the indexes' columns: {named:?}"
    );
    let blocking: Vec<_> = named
        .iter()
        .filter(|(_, col)| FINISH_WRITES.contains(&col.as_str()))
        .collect();
    assert!(
        blocking.is_empty(),
        "indexes naming a column the finish writes: {blocking:?}"
    );
}

/// The finish of a claimed run is a HOT update: the old version's line
/// pointer is HOT-updated (or already pruned into a redirect), read from the
/// page itself with `pageinspect`.
#[tokio::test]
async fn a_finish_is_a_hot_update() {
    let (store, mut conn, files) = setup(20).await;
    sqlx::query("create extension if not exists pageinspect")
        .execute(&mut conn)
        .await
        .expect("pageinspect (part of the postgresql-15 package)");
    let at = t("2030-01-01T00:05:00Z");
    let runs = claim(&store, &files, at, "w1").await;
    assert_eq!(runs.len(), 20);
    let before: Vec<(String,)> = sqlx::query_as("select ctid::text from activity_runs where run_id = any($1)")
        .bind(&runs)
        .fetch_all(&mut conn)
        .await
        .expect("ctids");
    let done: Vec<FinishRun> = runs.iter().map(|r| finished(*r, at)).collect();
    assert_eq!(store.finish_runs(&done).await.expect("finish"), 20);
    let mut hot = 0;
    for (ctid,) in &before {
        let (block, lp) = ctid
            .trim_matches(|c| c == '(' || c == ')')
            .split_once(',')
            .and_then(|(b, l)| Some((b.parse::<u32>().ok()?, l.parse::<u16>().ok()?)))
            .expect("a ctid is (block,offset)");
        // lp_flags 2: a redirect left by pruning a HOT chain; t_infomask2
        // bit 0x4000 (HEAP_HOT_UPDATED): the next version is on this page,
        // reached without an index entry.
        let (flags, infomask2): (i16, Option<i32>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select lp_flags, t_infomask2 from heap_page_items(get_raw_page('activity_runs', {block})) where lp = {lp}"
        )))
        .fetch_one(&mut conn)
        .await
        .expect("page item");
        if flags == 2 || infomask2.is_some_and(|m| m & 0x4000 != 0) {
            hot += 1;
        }
    }
    assert_eq!(hot, 20, "every finish a HOT update");
}
