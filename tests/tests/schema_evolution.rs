//! A schema and a spec that evolve safely (issue 8): during a rollout, old
//! and new replicas share one database. Only `actcore migrate` changes the
//! schema; a binary facing an older schema refuses to start (78, naming
//! `actcore migrate`), one facing a newer additive schema runs, and a stored
//! spec with keys this binary does not know still fires.
//!
//! Every test runs on both stores. Postgres tests need `ACTCORE_TEST_PG_URL`
//! (set by `scripts/test`).

use std::time::Duration;

use actcore::store::{DefinitionSource, HistoryStore, RunFilter, Store};
use actcore_tests::{Backend, Hub, Worker, create_database, eventually, pg_admin_url, run_cli, write_definition};
use uuid::Uuid;

/// A database with no schema at all: a new Postgres database, or a path
/// for an SQLite file that does not exist yet.
async fn empty_database(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    match backend {
        Backend::Postgres => (
            create_database(&pg_admin_url(), "actcore_t")
                .await
                .expect("create a test database"),
            None,
        ),
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}", dir.path().join("actcore.db").display());
            (url, Some(dir))
        }
    }
}

/// A definitions directory holding one activity, `a`.
fn one_definition() -> tempfile::TempDir {
    let defs = tempfile::tempdir().unwrap();
    write_definition(
        defs.path(),
        "a",
        Uuid::new_v4(),
        "*/5 * * * *",
        "http://127.0.0.1:9/x",
        "",
    );
    defs
}

fn cli(url: &str, args: &[&str]) -> (i32, String, String) {
    run_cli(args, &[("DATABASE_URL", url)])
}

#[track_caller]
fn assert_exit(got: &(i32, String, String), code: i32, what: &str) {
    assert_eq!(got.0, code, "{what}\nstdout:\n{}\nstderr:\n{}", got.1, got.2);
}

/// Runs SQL on the store as an operator (or a newer actcore) would.
async fn execute(store: &Store, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match store {
        Store::Postgres(s) => sqlx::raw_sql(sql).execute(s.pool()).await.map(drop),
        Store::Sqlite(s) => sqlx::raw_sql(sql).execute(s.pool()).await.map(drop),
    }
    .unwrap_or_else(|e| panic!("{e}"));
}

/// How many migrations this version embeds, and the latest version (the
/// file names under worker/migrations/postgres/).
fn embedded_migrations() -> (usize, i64) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/migrations/postgres");
    let versions: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".sql")?.split('_').next()?.parse().ok()
        })
        .collect();
    (versions.len(), versions.into_iter().max().unwrap())
}

/// What a newer `actcore migrate` would leave: an additive change (a new
/// column, a new table) recorded under a version this binary does not know.
async fn apply_newer_additive_migration(store: &Store) {
    let checksum = match store {
        Store::Postgres(_) => "'\\x00'::bytea",
        Store::Sqlite(_) => "X'00'",
    };
    execute(
        store,
        &format!(
            "alter table activity_runs add column future_note text;
             create table future_things (id bigint primary key, note text);
             insert into _sqlx_migrations (version, description, success, checksum, execution_time)
             values (20991231235959, 'future additive', true, {checksum}, 0);"
        ),
    )
    .await;
}

// ---------------------------------------------------------------- older schema

/// Every command but `migrate` (and `dev`) refuses a database without the
/// schema it needs: exit 78, what it found, and the command that applies it.
async fn an_older_schema_exits_78_naming_actcore_migrate(backend: Backend) {
    let (url, _dir) = empty_database(backend).await;
    let defs = one_definition();
    let d = defs.path().to_str().unwrap();
    for args in [
        vec!["status"],
        vec!["runs"],
        vec!["pause", "a", "--reason", "test"],
        vec!["sync", "--definitions", d],
        vec!["sync", "--dry-run", "--migrate", "--definitions", d],
        vec!["worker"],
    ] {
        let out = cli(&url, &args);
        assert_exit(&out, 78, &format!("{args:?} on an empty database"));
        assert!(out.2.contains("found no actcore schema"), "{args:?}: {}", out.2);
        assert!(out.2.contains("run `actcore migrate`"), "{args:?}: {}", out.2);
        assert!(!out.2.contains("panicked"), "{args:?}: {}", out.2);
    }

    let migrated = cli(&url, &["migrate"]);
    assert_exit(&migrated, 0, "migrate");
    let (count, latest) = embedded_migrations();
    assert!(
        migrated.1.contains(&format!("applied {count} migration")) && migrated.1.contains("applied 1 initial"),
        "{}",
        migrated.1
    );
    let again = cli(&url, &["migrate", "--json"]);
    assert_exit(&again, 0, "migrate again");
    let report: serde_json::Value = serde_json::from_str(&again.1).expect("JSON");
    assert_eq!(report["applied"], serde_json::json!([]), "{report}");
    assert_eq!(report["version"], latest, "{report}");
    assert_exit(&cli(&url, &["sync", "--definitions", d]), 0, "sync after migrate");
    assert_exit(&cli(&url, &["status"]), 0, "status after migrate");
}

/// `sync --migrate` is the sync Job's one command: it migrates, then syncs.
async fn sync_migrate_applies_the_schema_then_syncs(backend: Backend) {
    let (url, _dir) = empty_database(backend).await;
    let defs = one_definition();
    let out = cli(
        &url,
        &["sync", "--migrate", "--definitions", defs.path().to_str().unwrap()],
    );
    assert_exit(&out, 0, "sync --migrate");
    assert!(out.1.contains("1 added"), "{}", out.1);
}

// ---------------------------------------------------------------- newer schema

/// A schema a newer actcore migrated (a column, a table and a version this
/// binary does not know) is accepted by every command, `migrate` included.
async fn a_newer_additive_schema_is_accepted(backend: Backend) {
    let (url, _dir) = empty_database(backend).await;
    let store = Store::open_and_migrate(Some(&url)).await.expect("migrate");
    apply_newer_additive_migration(&store).await;
    let defs = one_definition();
    assert_exit(
        &cli(&url, &["sync", "--definitions", defs.path().to_str().unwrap()]),
        0,
        "sync",
    );
    assert_exit(&cli(&url, &["status"]), 0, "status");
    assert_exit(&cli(&url, &["runs"]), 0, "runs");
    let migrate = cli(&url, &["migrate"]);
    assert_exit(&migrate, 0, "an older migrate facing a newer schema");
    assert!(
        migrate.1.contains("schema at version 20991231235959") && migrate.1.contains("newer   20991231235959"),
        "{}",
        migrate.1
    );
    Store::open(Some(&url)).await.expect("the library opens it too");
}

/// A spec stored by a newer `sync`, with keys this binary does not know (at
/// the top, in a table, a new table), on a newer additive schema: the worker
/// fires it, and logs each unknown key once, naming it and the activity.
async fn a_stored_spec_with_unknown_keys_still_fires(backend: Backend) {
    let hub = Hub::start().await;
    let (url, _dir) = empty_database(backend).await;
    let newer = Store::open_and_migrate(Some(&url)).await.expect("migrate");
    apply_newer_additive_migration(&newer).await;
    // This binary's own connections start after the newer migration, as an old replica's do after a restart.
    drop(newer);
    let store = Store::open(Some(&url)).await.expect("open");
    let defs = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    write_definition(
        defs.path(),
        "from-the-future",
        id,
        "* * * * * *",
        &format!("{}/sink/future", hub.url()),
        "",
    );
    assert_exit(
        &cli(&url, &["sync", "--definitions", defs.path().to_str().unwrap()]),
        0,
        "sync",
    );
    let mut spec = store.definitions().await.unwrap()[0].definition.canonical_json();
    spec["notify"] = serde_json::json!({"webhook": "${CHAT_URL}", "on": "automation_error"});
    spec["schedule"]["buffer"] = serde_json::json!(2);
    spec["action"]["body"] = serde_json::json!({"unknown_to_actcore": "is the user's own body"});
    let (cast, id_text) = match &store {
        Store::Postgres(_) => ("::jsonb", format!("'{id}'::uuid")),
        Store::Sqlite(_) => ("", format!("'{id}'")),
    };
    execute(
        &store,
        &format!(
            "update activity_definitions set spec = '{}'{cast}, spec_hash = 'written-by-a-newer-sync' where definition_id = {id_text}",
            spec.to_string().replace('\'', "''")
        ),
    )
    .await;

    let logs = tempfile::tempdir().unwrap();
    let mut worker = Worker::spawn(&["worker"], &url, &[], logs.path(), "old-replica");
    let run = eventually(Duration::from_secs(20), "a run of the activity", || async {
        let runs = store
            .runs(&RunFilter {
                definition_id: Some(id),
                limit: 10,
                ..RunFilter::default()
            })
            .await
            .unwrap();
        runs.into_iter().find(|r| r.state == "succeeded")
    })
    .await;
    assert_eq!(run.outcome.as_deref(), Some("ok"), "{run:#?}");
    let arrivals = hub.arrivals();
    assert!(
        arrivals
            .iter()
            .any(|a| a.body.as_ref() == br#"{"unknown_to_actcore":"is the user's own body"}"#),
        "the body is sent as stored"
    );
    worker.signal(15);
    let status = tokio::time::timeout(Duration::from_secs(20), worker.child.wait())
        .await
        .expect("the worker stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let log = worker.log_text();
    for key in ["notify", "schedule.buffer"] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("does not know") && l.split_whitespace().any(|w| w == format!("key={key}")))
            .collect();
        assert_eq!(lines.len(), 1, "one warning naming `{key}`:\n{log}");
        assert!(lines[0].contains("from-the-future"), "names the activity: {}", lines[0]);
    }
    assert!(
        !log.contains("unknown_to_actcore"),
        "the body is not a spec key:\n{log}"
    );
}

actcore_tests::both_backends!(
    an_older_schema_exits_78_naming_actcore_migrate,
    sync_migrate_applies_the_schema_then_syncs,
    a_newer_additive_schema_is_accepted,
    a_stored_spec_with_unknown_keys_still_fires,
);
