//! The warm start (`RunStore::warm_up`, `worker/src/store/postgres/warm.rs`):
//! before the first instant, every connection of the Postgres pool is open
//! and holds prepared the very statements an instant runs, so the instant's
//! claim, admission and finish find them in each connection's cache.
//!
//! Postgres tests need `ACTCORE_TEST_PG_URL` (set by `scripts/test`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use actcore::definition::{Loaded, sample};
use actcore::guard::{Admission, Policy};
use actcore::store::{AdmitItem, ClaimBatch, ClaimItem, FinishRun, PgStore, RunStore, Store, WarmUp};
use actcore_tests::{Backend, fresh_store};
use jiff::{SignedDuration, Timestamp};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use uuid::Uuid;

/// `n` activities synced, with their guard rows (as the worker's start leaves them).
async fn synced(n: usize) -> (Vec<Loaded>, String) {
    let (store, _, url) = fresh_store(Backend::Postgres).await;
    let files: Vec<Loaded> = (0..n)
        .map(|i| {
            let definition = sample(
                Uuid::new_v4(),
                &format!("act-{i}"),
                "*/5 * * * *",
                "http://127.0.0.1:9/x",
            );
            Loaded {
                file: PathBuf::from(format!("definitions/act-{i}.toml")),
                definition,
            }
        })
        .collect();
    store
        .sync(&files, "2030-01-01T00:00:00Z".parse().unwrap(), false)
        .await
        .expect("sync");
    let ids: Vec<Uuid> = files.iter().map(|l| l.definition.id).collect();
    store.create_guard_rows(&ids).await.expect("guard rows");
    (files, url)
}

fn pg(store: &Store) -> &PgStore {
    match store {
        Store::Postgres(pg) => pg,
        Store::Sqlite(_) => panic!("a Postgres store"),
    }
}

/// Every connection of the pool, held at once (so each is a different
/// one). Until all are held: one still being returned (the pool pings it
/// first) is counted in the size but not idle, and is taken once it is.
async fn hold_all(pool: &PgPool) -> Vec<PoolConnection<Postgres>> {
    let mut conns = Vec::new();
    while conns.len() < pool.size() as usize {
        conns.push(pool.acquire().await.expect("acquire"));
    }
    conns
}

async fn backend_pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("select pg_backend_pid()")
        .persistent(false)
        .fetch_one(conn)
        .await
        .expect("pid")
}

/// The statements prepared on this connection (unnamed ones, as these
/// reads are, are not listed).
async fn prepared(conn: &mut PgConnection) -> BTreeSet<String> {
    sqlx::query_scalar("select statement from pg_prepared_statements where not from_sql")
        .persistent(false)
        .fetch_all(conn)
        .await
        .expect("pg_prepared_statements")
        .into_iter()
        .collect()
}

/// Rows in the tables an instant writes.
async fn rows(side: &mut PgConnection) -> (i64, i64, String) {
    sqlx::query_as(
        "select (select count(*) from activity_runs), (select count(*) from activity_events),
                (select coalesce(string_agg(g::text, ',' order by definition_id), '') from activity_guard g)",
    )
    .persistent(false)
    .fetch_one(side)
    .await
    .expect("count rows")
}

/// One activity's instant through the store's own functions, as the worker
/// runs it: claim, admission, finish. Checks what they wrote, the lease
/// above all: a statement prepared with other parameter types than the
/// claim binds would still be found in the cache, and read its lease wrong.
async fn instant(store: &Store, l: &Loaded, side: &mut PgConnection) {
    let at: Timestamp = "2030-01-01T00:05:00Z".parse().unwrap();
    let hash = l.definition.spec_hash();
    let run_id = Uuid::now_v7();
    let items = [ClaimItem {
        run_id,
        definition_id: l.definition.id,
        spec_hash: hash.clone(),
        skip_if_running: true,
        buffer_until: None,
        snapshot: actcore::snapshot::claimed(&hash, &at.to_string(), 0),
    }];
    let claimed = store
        .claim(&ClaimBatch {
            scheduled_for: at,
            fired_at: at,
            worker_id: "w1",
            lease: SignedDuration::from_secs(30),
            items: &items,
            finished_unwritten: &[],
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let lease: f64 = sqlx::query_scalar(
        "select extract(epoch from lease_expires_at - now())::float8 from activity_runs where run_id = $1",
    )
    .bind(run_id)
    .persistent(false)
    .fetch_one(&mut *side)
    .await
    .expect("lease");
    assert!((20.0..=30.0).contains(&lease), "a 30 s lease, {lease} s left");
    let policy = Arc::new(Policy {
        definition_id: l.definition.id,
        slug: l.definition.slug.clone(),
        retry: l.definition.retry.clone(),
        guard: l.definition.guard.clone(),
    });
    let admitted = store.admit(&[AdmitItem { run_id, policy }], at).await.expect("admit");
    assert_eq!(admitted, vec![(run_id, Admission::Run)]);
    let finished = store
        .finish_runs(&[FinishRun::ok(
            run_id,
            actcore::snapshot::to_stored(&serde_json::json!({"status": 200})),
            at,
        )])
        .await
        .expect("finish");
    assert_eq!(finished, 1);
}

#[tokio::test]
async fn the_warm_up_opens_every_connection_with_an_instants_statements_prepared() {
    // One activity per instant below: each is admitted once, on the fast path.
    let (files, url) = synced(1 + 8).await;
    let mut side = PgConnection::connect(&url).await.expect("connect");

    // What an instant prepares on a cold connection (a new pool, as a
    // worker's): the statements to warm.
    let cold = Store::Postgres(PgStore::connect(&url).await.expect("connect"));
    instant(&cold, &files[0], &mut side).await;
    let mut hot = BTreeSet::new();
    for mut c in hold_all(pg(&cold).pool()).await {
        hot.extend(prepared(&mut c).await);
    }
    assert!(hot.len() >= 3, "the claim, the admission and the finish: {hot:#?}");

    // A new worker's pool, warmed.
    let warm = Store::Postgres(PgStore::connect(&url).await.expect("connect"));
    let pool = pg(&warm).pool();
    let max = pool.options().get_max_connections();
    let before = rows(&mut side).await;
    let w = warm.warm_up().await.expect("warm up");
    assert_eq!(rows(&mut side).await, before, "the warm-up wrote nothing");
    assert_eq!(w.connections, max as usize, "{w:?}");
    assert!(w.statements >= hot.len(), "{w:?}");
    assert_eq!(pool.size(), max, "every connection of the pool is open");

    let mut conns = hold_all(pool).await;
    let mut pids = BTreeSet::new();
    let mut warmed = Vec::new();
    for c in &mut conns {
        pids.insert(backend_pid(c).await);
        let p = prepared(c).await;
        assert!(
            p.is_superset(&hot),
            "missing on a connection: {:#?}",
            hot.difference(&p)
        );
        assert_eq!(p.len(), w.statements);
        warmed.push(p);
    }
    assert_eq!(pids.len(), max as usize, "distinct connections");

    // An instant on each connection in turn (the only one left idle)
    // prepares nothing more: its statements were found in the cache.
    let mut done = Vec::new();
    for (i, l) in files[1..].iter().enumerate() {
        let mut c = conns.pop().expect("a held connection");
        let pid = backend_pid(&mut c).await;
        drop(c);
        instant(&warm, l, &mut side).await;
        let mut c = pool.acquire().await.expect("acquire");
        assert_eq!(
            backend_pid(&mut c).await,
            pid,
            "instant {i} ran on the connection left idle"
        );
        assert_eq!(
            prepared(&mut c).await,
            warmed[warmed.len() - 1 - i],
            "instant {i} prepared a statement"
        );
        done.push(c);
    }
    assert!(conns.is_empty());
}

#[tokio::test]
async fn a_second_warm_up_prepares_nothing_twice() {
    let (_, url) = synced(1).await;
    let store = Store::Postgres(PgStore::connect(&url).await.expect("connect"));
    let first = store.warm_up().await.expect("warm up");
    let again = store.warm_up().await.expect("warm up again");
    assert_eq!(again, first);
    for mut c in hold_all(pg(&store).pool()).await {
        assert_eq!(prepared(&mut c).await.len(), first.statements);
    }
}

#[tokio::test]
async fn the_embedded_store_has_nothing_to_warm() {
    let (store, _dir, _url) = fresh_store(Backend::Sqlite).await;
    assert_eq!(store.warm_up().await.expect("warm up"), WarmUp::default());
}
