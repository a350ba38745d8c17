//! Least privilege in Postgres: the SQL of `actcore db roles --print`,
//! applied by a superuser after `actcore migrate`, lets the owner sync and
//! the runtime role fire normally and prune expired runs (its one DELETE,
//! on `activity_runs`), while it is refused DDL and deleting or rewriting
//! an audit event.

use std::time::Duration;

use actcore_tests::*;
use sqlx::Connection;

/// The test database's URL with another user (trust authentication on the throwaway server).
fn as_user(url: &str, user: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let host_and_db = rest.split_once('@').map(|(_, h)| h).unwrap_or(rest);
    format!("postgres://{user}@{host_and_db}")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_role_fires_but_cannot_change_the_schema_or_the_audit_log() {
    let hub = Hub::start().await;
    let admin = create_database(&pg_admin_url(), "actcore_roles").await.unwrap();
    // Role names are cluster-wide: unique ones keep parallel runs apart.
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (owner, runtime) = (format!("actcore_owner_{suffix}"), format!("actcore_runtime_{suffix}"));

    let (code, _, err) = run_cli(&["migrate"], &[("DATABASE_URL", &admin)]);
    assert_eq!(code, 0, "migrate: {err}");
    let (code, sql, err) = run_cli(
        &["db", "roles", "--print", "--owner", &owner, "--runtime", &runtime],
        &[],
    );
    assert_eq!(code, 0, "db roles --print: {err}");
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
        .execute(&mut conn)
        .await
        .unwrap();
    // Idempotent: a DBA applies it again after an upgrade.
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();

    let owner_url = as_user(&admin, &owner);
    let runtime_url = as_user(&admin, &runtime);
    let dir = tempfile::tempdir().unwrap();
    let id = activity_id(900);
    write_definition(
        dir.path(),
        "roles",
        id,
        "* * * * * *",
        &format!("{}/sink/roles", hub.url()),
        "",
    );
    // The owner migrates (nothing left to apply) and syncs, as the sync Job does.
    let (code, out, err) = run_cli(
        &["sync", "--migrate", "--definitions", dir.path().to_str().unwrap()],
        &[("DATABASE_URL", &owner_url)],
    );
    assert_eq!(code, 0, "sync as the owner: {out}{err}");

    let logs = tempfile::tempdir().unwrap();
    let mut worker = Worker::spawn(
        &["worker", "--definitions", dir.path().to_str().unwrap()],
        &runtime_url,
        &[],
        logs.path(),
        "roles-worker",
    );
    let mut rt = sqlx::PgConnection::connect(&runtime_url).await.unwrap();
    let ok: i64 = eventually(
        Duration::from_secs(20),
        "two ok runs recorded by the runtime role",
        || {
            let url = runtime_url.clone();
            async move {
                let mut c = sqlx::PgConnection::connect(&url).await.ok()?;
                let n: i64 = sqlx::query_scalar("select count(*) from activity_runs where outcome = 'ok'")
                    .fetch_one(&mut c)
                    .await
                    .ok()?;
                (n >= 2).then_some(n)
            }
        },
    )
    .await;
    assert!(ok >= 2);
    worker.signal(15);
    let status = tokio::time::timeout(Duration::from_secs(20), worker.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "worker: {}", worker.log_text());

    // An event to try to delete: the runtime role may append one.
    sqlx::query("insert into activity_events (at, definition_id, kind, detail) values (now(), $1, 'test', '{}')")
        .bind(id)
        .execute(&mut rt)
        .await
        .expect("the runtime role appends to the audit log");

    for statement in [
        "drop table activity_runs",
        "alter table activity_runs add column x int",
        "create table sneaky (x int)",
        "delete from activity_events",
        "update activity_events set kind = 'rewritten'",
        "truncate activity_runs",
        "truncate activity_events",
    ] {
        let err = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&mut rt)
            .await
            .expect_err(statement);
        let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
        // 42501 insufficient_privilege; 42501 also for "must be owner of table".
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {err}");
    }
    // Retention: the runtime role prunes finished runs (DELETE on
    // activity_runs, and the advisory lock) and audits the pass. A `now`
    // 100 days ahead puts every finished run past its retention.
    let store = actcore::store::Store::open(Some(&runtime_url)).await.unwrap();
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 100);
    let stop = tokio_util::sync::CancellationToken::new();
    let outcome = actcore::retention::pruner::pass(
        &store,
        "roles-test",
        later,
        actcore::retention::PassLimits::default(),
        &actcore::retention::Gate::new(&stop, std::time::Duration::ZERO),
    )
    .await
    .expect("the runtime role prunes");
    match outcome {
        actcore::retention::PassOutcome::Pruned(p) => assert!(p.total() >= 2, "{p:?}"),
        other => panic!("{other:?}"),
    }
    let left: i64 = sqlx::query_scalar("select count(*) from activity_runs where state not in ('queued', 'running')")
        .fetch_one(&mut rt)
        .await
        .unwrap();
    assert_eq!(left, 0, "every finished run pruned");
    let pruned: i64 = sqlx::query_scalar("select count(*) from activity_events where kind = 'runs_pruned'")
        .fetch_one(&mut rt)
        .await
        .unwrap();
    assert_eq!(pruned, 1, "the pass audited");

    // The owner keeps the schema: it may alter (and the next migration will).
    let mut ow = sqlx::PgConnection::connect(&owner_url).await.unwrap();
    sqlx::raw_sql(
        "alter table activity_runs add column owner_may int; alter table activity_runs drop column owner_may",
    )
    .execute(&mut ow)
    .await
    .expect("the owner alters its tables");
    let events: i64 = sqlx::query_scalar("select count(*) from activity_events where kind = 'test'")
        .fetch_one(&mut rt)
        .await
        .unwrap();
    assert_eq!(events, 1, "the audit event survived");
}

#[test]
fn db_roles_needs_print_and_sane_names() {
    let (code, _, err) = run_cli(&["db", "roles"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--print"), "{err}");
    let (code, _, err) = run_cli(&["db", "roles", "--print", "--runtime", "x; drop"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--runtime"), "{err}");
}
