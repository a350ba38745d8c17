//! Postgres lists each activity's queued and running runs in its
//! `activity_inflight` row, so that no index of `activity_runs` names a
//! column a run's finish writes and the finish is a HOT update (migration
//! `20261207060000_runs_in_flight_by_activity.sql`, docs/design.md "Runs in
//! flight").
//!
//! The list is a superset kept by triggers (whoever writes `activity_runs`)
//! and checked run by run by its readers; these tests hold both halves: what
//! is in flight is always listed, and what is listed but has ended never
//! counts as in flight.
//!
//! Needs `ACTCORE_TEST_PG_URL` (set by `scripts/test`) and the server's
//! `pageinspect` extension (part of Debian's postgresql-15 package).

use std::collections::BTreeSet;

use actcore::definition::{Loaded, sample};
use actcore::run::{Source, State, Trigger};
use actcore::store::queue::Queued;
use actcore::store::{ClaimBatch, ClaimItem, FinishRun, RunStore, Store};
use actcore_tests::{create_database, fresh_pg_url, pg_admin_url};
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

fn definitions(n: usize) -> Vec<Loaded> {
    (0..n)
        .map(|i| Loaded {
            file: format!("definitions/act-{i}.toml").into(),
            definition: sample(
                Uuid::new_v4(),
                &format!("act-{i}"),
                "*/5 * * * *",
                "http://127.0.0.1:9/x",
            ),
        })
        .collect()
}

async fn setup(n: usize) -> (Store, PgConnection, Vec<Loaded>) {
    let url = fresh_pg_url().await;
    let store = Store::open_and_migrate(Some(&url)).await.expect("open");
    let files = definitions(n);
    store
        .sync(&files, t("2030-01-01T00:00:00Z"), false)
        .await
        .expect("sync");
    let conn = PgConnection::connect(&url).await.expect("connect");
    (store, conn, files)
}

/// Claims one instant of `files` (overlap `skip`, or `buffer_one` with
/// `buffer`), as the worker does; returns the rows as claimed, in the order
/// of `files`.
async fn claim_with(store: &Store, files: &[Loaded], at: Timestamp, worker: &str, buffer: bool) -> Vec<(Uuid, State)> {
    let mut items: Vec<ClaimItem> = files
        .iter()
        .map(|l| ClaimItem {
            run_id: Uuid::now_v7(),
            definition_id: l.definition.id,
            spec_hash: l.definition.spec_hash(),
            skip_if_running: true,
            buffer_until: buffer.then(|| at + SignedDuration::from_mins(10)),
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
    // In the order of `files`, whatever order the store answers in.
    files
        .iter()
        .filter_map(|l| claimed.iter().find(|c| c.definition_id == l.definition.id))
        .map(|c| (c.run_id, c.state))
        .collect()
}

async fn claim(store: &Store, files: &[Loaded], at: Timestamp, worker: &str) -> Vec<Uuid> {
    claim_with(store, files, at, worker, false)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

fn finished(run_id: Uuid, at: Timestamp) -> FinishRun {
    FinishRun::ok(
        run_id,
        actcore::snapshot::to_stored(&actcore_tests::flagship_finish_snapshot()),
        at,
    )
}

/// (run id, state) of every run `activity_runs` says is queued or running,
/// and of every run `activity_inflight` lists.
async fn both_sides(conn: &mut PgConnection) -> (BTreeSet<(Uuid, String)>, BTreeSet<(Uuid, String)>) {
    let runs: Vec<(Uuid, String)> =
        sqlx::query_as("select run_id, state from activity_runs where state in ('queued', 'running')")
            .fetch_all(&mut *conn)
            .await
            .expect("read activity_runs");
    let listed: Vec<(Uuid, String)> = sqlx::query_as(
        "select x, 'running' from activity_inflight, unnest(running) x
         union all select x, 'queued' from activity_inflight, unnest(queued) x",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("read activity_inflight");
    (runs.into_iter().collect(), listed.into_iter().collect())
}

/// Every run in flight is listed under its state; returns how many of each
/// `activity_runs` holds.
async fn assert_listed(conn: &mut PgConnection, step: &str) -> (usize, usize) {
    let (runs, listed) = both_sides(conn).await;
    let missing: Vec<_> = runs.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "{step}: in flight but not listed in activity_inflight: {missing:?}"
    );
    let count = |s: &str| runs.iter().filter(|r| r.1 == s).count();
    (count("running"), count("queued"))
}

/// The runs `activity_inflight` lists as running for one activity.
async fn listed_running(conn: &mut PgConnection, definition_id: Uuid) -> Vec<Uuid> {
    sqlx::query_scalar("select running from activity_inflight where definition_id = $1")
        .bind(definition_id)
        .fetch_one(conn)
        .await
        .expect("list")
}

async fn count_outcome(conn: &mut PgConnection, outcome: &str) -> i64 {
    sqlx::query_scalar("select count(*) from activity_runs where outcome = $1")
        .bind(outcome)
        .fetch_one(conn)
        .await
        .expect("count")
}

/// Whichever statement puts a run in flight (the claim, the queue, an
/// operator's SQL), `activity_inflight` lists it; whichever ends it (the
/// finish, an operator, the reaper, a worker's shutdown, the queue's
/// expiry), the overlap check, the queue and the reaper stop counting it,
/// though the list may still name it.
#[tokio::test]
async fn what_is_in_flight_is_listed_and_what_ended_no_longer_counts() {
    let (store, mut conn, files) = setup(4).await;
    assert_eq!(assert_listed(&mut conn, "empty").await, (0, 0));

    let at = t("2030-01-01T00:05:00Z");
    let runs = claim(&store, &files, at, "w1").await;
    assert_eq!(runs.len(), 4);
    assert_eq!(assert_listed(&mut conn, "claimed").await, (4, 0));

    // The overlap check reads the list: every activity is busy.
    let next = at + SignedDuration::from_secs(300);
    claim(&store, &files, next, "w2").await;
    assert_eq!(count_outcome(&mut conn, "skipped_overlap").await, 4);

    // Finished: the finish unlists its run, so the activity is free.
    assert_eq!(store.finish_runs(&[finished(runs[0], at)]).await.expect("finish"), 1);
    assert!(listed_running(&mut conn, files[0].definition.id).await.is_empty());
    let third = next + SignedDuration::from_secs(300);
    let fresh = claim_with(&store, &files[..1], third, "w2", false).await;
    assert_eq!(
        fresh[0].1,
        State::Running,
        "a finished run does not keep its activity busy"
    );
    assert_eq!(
        listed_running(&mut conn, files[0].definition.id).await,
        vec![fresh[0].0]
    );
    assert_eq!(assert_listed(&mut conn, "claimed after a finish").await, (4, 0));

    // An operator closing a run by hand: still listed, yet the activity is
    // free at once (the claim checks the run's own row), and the claim that
    // lists the next run drops it.
    sqlx::query("update activity_runs set state = 'abandoned', outcome = 'automation_error', finished_at = now() where run_id = $1")
        .bind(runs[1])
        .execute(&mut conn)
        .await
        .expect("operator update");
    assert_eq!(listed_running(&mut conn, files[1].definition.id).await, vec![runs[1]]);
    let freed = claim_with(&store, &files[1..2], third, "w2", false).await;
    assert_eq!(freed[0].1, State::Running);
    assert_eq!(
        listed_running(&mut conn, files[1].definition.id).await,
        vec![freed[0].0]
    );

    // An operator inserting a running run (an older replica does the same):
    // listed by the insert trigger, so it blocks the next instant.
    let manual = Uuid::now_v7();
    sqlx::query(
        "insert into activity_runs (run_id, definition_id, fired_at, trigger, source, state, worker_id, lease_expires_at)
         values ($1, $2, now(), 'manual', 'manual', 'running', 'w9', now() + interval '1 hour')",
    )
    .bind(manual)
    .bind(files[2].definition.id)
    .execute(&mut conn)
    .await
    .expect("operator insert");
    assert_listed(&mut conn, "operator's insert").await;

    // A lease that ran out is reaped through the list; an ended run listed
    // beside it is not touched.
    sqlx::query("update activity_runs set lease_expires_at = now() - interval '1 second' where run_id = any($1)")
        .bind([runs[2], runs[0]])
        .execute(&mut conn)
        .await
        .expect("expire leases");
    let reaped = store.reap_expired().await.expect("reap");
    assert_eq!(reaped.iter().map(|a| a.run_id).collect::<Vec<_>>(), vec![runs[2]]);

    // A manual run queued, started by the queue (an update into running,
    // listed by the row trigger), then abandoned by its worker's shutdown.
    let def = files[3].definition.id;
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
    let (_, queued) = assert_listed(&mut conn, "queued").await;
    assert_eq!(queued, 1);
    let got = store
        .claim_queued("w3", SignedDuration::from_secs(30), at, 10, None)
        .await
        .expect("claim queued");
    assert_eq!(got.iter().map(|d| d.run_id).collect::<Vec<_>>(), vec![q.run.run_id]);
    assert_eq!(assert_listed(&mut conn, "dequeued").await.1, 0);
    let abandoned = store
        .abandon_worker_runs("w3", actcore::run::ErrorCode::WorkerLost, "test", at)
        .await
        .expect("abandon");
    assert_eq!(abandoned, 1, "only w3's run");

    // Dequeued and abandoned, the run is still listed as queued: the queue
    // must not start it again.
    let again = store
        .claim_queued("w3", SignedDuration::from_secs(30), at, 10, None)
        .await
        .expect("claim queued");
    assert!(
        again.is_empty(),
        "an ended run listed as queued is not started: {again:?}"
    );

    // A queued run past its expiry is recorded as not run, once.
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
    assert_eq!(store.expire_queued(at, None).await.expect("expire").len(), 1);
    assert!(store.expire_queued(at, None).await.expect("expire again").is_empty());
    assert_eq!(assert_listed(&mut conn, "expired").await.1, 0);
}

/// `overlap = "buffer_one"`: an instant due while a run is in flight is
/// queued, one at most, read through the list too.
#[tokio::test]
async fn a_buffered_instant_is_queued_once_through_the_list() {
    let (store, mut conn, files) = setup(2).await;
    let at = t("2030-01-01T00:05:00Z");
    claim_with(&store, &files, at, "w1", true).await;
    let second = claim_with(&store, &files, at + SignedDuration::from_secs(300), "w1", true).await;
    assert!(second.iter().all(|(_, s)| *s == State::Queued), "{second:?}");
    let third = claim_with(&store, &files, at + SignedDuration::from_secs(600), "w1", true).await;
    assert!(third.iter().all(|(_, s)| *s == State::Skipped), "{third:?}");
    assert_eq!(assert_listed(&mut conn, "buffered").await, (2, 2));
}

/// The sweep drops runs that left their state a minute ago or more, keeps
/// the rest, and a run it cannot judge (no row it can see) stays listed.
/// (The finish unlists its own runs; the sweep is for the others.)
#[tokio::test]
async fn the_sweep_drops_only_runs_that_visibly_ended() {
    let (store, mut conn, files) = setup(3).await;
    let Store::Postgres(pg) = &store else {
        panic!("a Postgres store")
    };
    let at = t("2030-01-01T00:05:00Z");
    let runs = claim(&store, &files, at, "w1").await;
    // Two end outside the finish (which unlists its own runs): an operator
    // closes one long ago (by its finished_at) and one just now.
    for (run, at) in [(runs[0], "2020-01-01T00:00:00Z"), (runs[1], "now")] {
        sqlx::query("update activity_runs set state = 'abandoned', finished_at = $2::timestamptz where run_id = $1")
            .bind(run)
            .bind(at)
            .execute(&mut conn)
            .await
            .expect("operator update");
    }
    // A listed id with no row this statement can see.
    let unseen = Uuid::now_v7();
    sqlx::query("update activity_inflight set running = running || $1 where definition_id = $2")
        .bind(unseen)
        .bind(files[2].definition.id)
        .execute(&mut conn)
        .await
        .expect("list an unseen run");
    assert_eq!(pg.sweep_inflight().await.expect("sweep"), 1, "one row written");
    let left: Vec<Uuid> = sqlx::query_scalar("select x from activity_inflight, unnest(running) x order by x")
        .fetch_all(&mut conn)
        .await
        .expect("list");
    let mut want = vec![runs[1], runs[2], unseen];
    want.sort();
    assert_eq!(left, want, "only the run finished long ago is dropped");
    assert_eq!(pg.sweep_inflight().await.expect("sweep"), 0, "nothing left to drop");
}

/// A database migrated while runs were in flight lists them: the migration
/// fills the table from `activity_runs`, and grants it to the roles that
/// already use `activity_runs`.
#[tokio::test]
async fn the_migration_lists_what_was_in_flight() {
    let url = create_database(&pg_admin_url(), "actcore_t")
        .await
        .expect("create a test database");
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/migrations/postgres");
    let migrator = sqlx::migrate::Migrator::new(dir).await.expect("migrations");
    migrator
        .run_to(20261130213000, &mut conn)
        .await
        .expect("migrate to the version before");
    let def = Uuid::new_v4();
    sqlx::query(
        "insert into activity_definitions (definition_id, name, slug, spec, spec_hash) values ($1, 'a', 'a', '{}', 'h')",
    )
    .bind(def)
    .execute(&mut conn)
    .await
    .expect("definition");
    for state in ["running", "queued", "succeeded"] {
        sqlx::query(
            "insert into activity_runs (run_id, definition_id, fired_at, trigger, source, state)
             values ($1, $2, now(), 'manual', 'manual', $3)",
        )
        .bind(Uuid::now_v7())
        .bind(def)
        .bind(state)
        .execute(&mut conn)
        .await
        .expect("run");
    }
    // A runtime role granted before the roles SQL knew the table, and one
    // that may only read.
    let suffix = Uuid::new_v4().simple().to_string();
    let (writer, reader) = (format!("rt_{suffix}"), format!("ro_{suffix}"));
    for (role, grant) in [(&writer, "select, update"), (&reader, "select")] {
        for sql in [
            format!("create role {role}"),
            format!("grant {grant} on activity_runs to {role}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("role");
        }
    }
    migrator.run(&mut conn).await.expect("migrate to this version");
    let (runs, listed) = both_sides(&mut conn).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(listed, runs);
    let privileges: Vec<(bool, bool)> = sqlx::query_as(
        "select has_table_privilege(r, 'activity_inflight', 'select'), has_table_privilege(r, 'activity_inflight', 'update')
         from unnest(array[$1, $2]) r",
    )
    .bind(&writer)
    .bind(&reader)
    .fetch_all(&mut conn)
    .await
    .expect("privileges");
    assert_eq!(
        privileges,
        vec![(true, true), (true, false)],
        "the runtime role sweeps the list; a reader reads it"
    );
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

/// The query docs/reference/tables.md gives operators for what is in
/// flight answers what `activity_runs` says, run as written there.
#[tokio::test]
async fn the_documented_in_flight_query_lists_what_is_in_flight() {
    let doc = include_str!("../../docs/reference/tables.md");
    let section = doc
        .split("## `activity_inflight`")
        .nth(1)
        .expect("the activity_inflight section");
    let sql = section
        .split("```sql")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("its sql block")
        .trim()
        .trim_end_matches(';')
        .to_string();
    let (store, mut conn, files) = setup(3).await;
    let at = t("2030-01-01T00:05:00Z");
    let runs = claim(&store, &files, at, "w1").await;
    assert_eq!(store.finish_runs(&[finished(runs[0], at)]).await.expect("finish"), 1);
    let got: Vec<(Uuid, Uuid, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select run_id, definition_id, state from ({sql}) q order by run_id"
    )))
    .fetch_all(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("the documented query fails: {e}\n{sql}"));
    let want: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "select run_id, definition_id, state from activity_runs where state in ('running', 'queued') order by run_id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("state");
    assert_eq!(got.len(), 2);
    assert_eq!(got, want);
}
