//! `actcore sync` and `actcore definitions check` as an operator runs them:
//! the built binary, a real store (Postgres and the embedded SQLite), and
//! the database read back directly to prove what was (not) written.
//!
//! Postgres tests need `ACTCORE_TEST_PG_URL` (set by `scripts/test`).

use std::path::{Path, PathBuf};

use actcore::store::{DefinitionSource, HistoryStore, NewRun, RunFilter, RunStore, Store, StoredDefinition};
use actcore_tests::{Backend, fresh_pg_url, fresh_sqlite_url, run_cli, write_definition};
use jiff::Timestamp;
use sqlx::Row;
use uuid::Uuid;

/// A database for one test: its URL, and the temporary directory of an SQLite file.
struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    async fn fresh(backend: Backend) -> Db {
        match backend {
            Backend::Postgres => Db {
                url: fresh_pg_url().await,
                _dir: None,
            },
            Backend::Sqlite => {
                let (dir, url) = fresh_sqlite_url();
                Store::open_and_migrate(Some(&url)).await.expect("migrate");
                Db { url, _dir: Some(dir) }
            }
        }
    }

    async fn open(&self) -> Store {
        Store::open(Some(&self.url)).await.expect("open the store")
    }

    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run_cli(args, &[("DATABASE_URL", &self.url)])
    }

    fn sync(&self, dir: &Path) -> (i32, String, String) {
        self.cli(&["sync", "--definitions", path_str(dir)])
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

const URL: &str = "http://127.0.0.1:9/sink";

/// Every row of the three public tables, as text, in a stable order. On
/// Postgres each row carries its `xmin`, so a rewrite of an identical row
/// (a new row version) shows as a difference too.
async fn dump(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    match store {
        Store::Postgres(pg) => {
            for (table, sql) in [
                (
                    "activity_definitions",
                    "select xmin::text || ' ' || row_to_json(t)::text as r from activity_definitions t order by definition_id",
                ),
                (
                    "activity_runs",
                    "select xmin::text || ' ' || row_to_json(t)::text as r from activity_runs t order by run_id",
                ),
                (
                    "activity_events",
                    "select xmin::text || ' ' || row_to_json(t)::text as r from activity_events t order by event_id",
                ),
            ] {
                for row in sqlx::query(sql).fetch_all(pg.pool()).await.expect("dump") {
                    out.push(format!("{table}: {}", row.get::<String, _>("r")));
                }
            }
        }
        Store::Sqlite(lite) => {
            for (table, sql) in [
                (
                    "activity_definitions",
                    "select * from activity_definitions order by definition_id",
                ),
                ("activity_runs", "select * from activity_runs order by run_id"),
                ("activity_events", "select * from activity_events order by event_id"),
                ("sqlite_sequence", "select * from sqlite_sequence order by name"),
            ] {
                for row in sqlx::query(sql).fetch_all(lite.pool()).await.expect("dump") {
                    let cells: Vec<String> = (0..row.len())
                        .map(|i| {
                            row.try_get::<Option<String>, _>(i)
                                .map(|v| format!("{v:?}"))
                                .or_else(|_| row.try_get::<Option<i64>, _>(i).map(|v| format!("{v:?}")))
                                .or_else(|_| row.try_get::<Option<f64>, _>(i).map(|v| format!("{v:?}")))
                                .unwrap_or_else(|e| panic!("{table} column {i}: {e}"))
                        })
                        .collect();
                    out.push(format!("{table}: {}", cells.join(" | ")));
                }
            }
        }
    }
    out
}

async fn events_total(store: &Store) -> i64 {
    store
        .event_kinds(None)
        .await
        .expect("event kinds")
        .iter()
        .map(|(_, n)| n)
        .sum()
}

fn by_slug<'a>(defs: &'a [StoredDefinition], slug: &str) -> &'a StoredDefinition {
    defs.iter()
        .find(|d| d.definition.slug == slug)
        .unwrap_or_else(|| panic!("no `{slug}` in the store"))
}

fn run_for(definition_id: Uuid) -> NewRun {
    let now = Timestamp::now();
    NewRun {
        run_id: Uuid::now_v7(),
        definition_id,
        fired_at: now,
        scheduled_for: None,
        trigger: actcore::run::Trigger::Manual,
        source: actcore::run::Source::Manual,
        attempt: 1,
        state: actcore::run::State::Succeeded,
        outcome: Some(actcore::run::Outcome::Ok),
        automation_error: false,
        assessment_failures: 0,
        error_code: None,
        error_message: None,
        context_snapshot: serde_json::json!({"history": true}),
        worker_id: Some("operator".into()),
        lease_expires_at: None,
        started_at: Some(now),
        finished_at: Some(now),
        spec_hash: None,
        retry_of: None,
        actor: None,
        duplicate_of: None,
    }
}

fn assert_exit(got: &(i32, String, String), code: i32, what: &str) {
    assert_eq!(got.0, code, "{what}: exit code\nstdout:\n{}\nstderr:\n{}", got.1, got.2);
}

// ---------------------------------------------------------------- idempotency

/// A second sync of unchanged files writes nothing: not a row version, not
/// an `updated_at`, not an event; only the summary says so too.
async fn sync_is_idempotent(backend: Backend) {
    let db = Db::fresh(backend).await;
    let defs = tempdir();
    write_definition(defs.path(), "alpha", Uuid::new_v4(), "*/5 * * * *", URL, "");
    write_definition(
        defs.path(),
        "beta",
        Uuid::new_v4(),
        "0 3 * * *",
        URL,
        "timezone = \"Europe/Berlin\"",
    );

    let first = db.sync(defs.path());
    assert_exit(&first, 0, "first sync");
    assert!(
        first.1.contains("2 added, 0 changed, 0 unchanged, 0 retired"),
        "{}",
        first.1
    );
    assert!(first.1.contains("alpha") && first.1.contains("beta"), "{}", first.1);

    let store = db.open().await;
    let before = dump(&store).await;
    let stamps: Vec<Timestamp> = store
        .definitions()
        .await
        .expect("defs")
        .iter()
        .map(|d| d.updated_at)
        .collect();
    let events = events_total(&store).await;
    let version = store.definitions_version().await.expect("version");
    assert_eq!(events, 2, "one definition_added event per activity");
    let public_rows = before.iter().filter(|r| r.starts_with("activity_")).count();
    assert_eq!(public_rows, 4, "2 definitions and 2 events: {before:#?}");

    let second = db.cli(&["sync", "--definitions", path_str(defs.path()), "--json"]);
    assert_exit(&second, 0, "second sync");
    let report: serde_json::Value = serde_json::from_str(&second.1).expect("sync --json prints JSON");
    assert_eq!(
        report,
        serde_json::json!({"dry_run": false, "added": [], "changed": [], "unchanged": 2, "retired": []})
    );

    assert_eq!(dump(&store).await, before, "a no-op sync changed the database");
    let after: Vec<Timestamp> = store
        .definitions()
        .await
        .expect("defs")
        .iter()
        .map(|d| d.updated_at)
        .collect();
    assert_eq!(after, stamps);
    assert_eq!(events_total(&store).await, events);
    assert_eq!(store.definitions_version().await.expect("version"), version);

    // A reformatted file with the same meaning is no change either.
    let beta = defs.path().join("beta.toml");
    let text = std::fs::read_to_string(&beta).unwrap();
    std::fs::write(
        &beta,
        format!(
            "# reformatted\n{}",
            text.replace("timeout = \"5s\"", "timeout = \"5000ms\"")
        ),
    )
    .unwrap();
    let third = db.sync(defs.path());
    assert_exit(&third, 0, "sync of a reformatted file");
    assert!(
        third.1.contains("0 added, 0 changed, 2 unchanged, 0 retired"),
        "{}",
        third.1
    );
    assert_eq!(dump(&store).await, before, "a reformatted file rewrote rows");
}

// ---------------------------------------------------------------- retire

/// Removing a file retires the activity: the row stays (retired, disabled)
/// and so do its runs; the file coming back revives it.
async fn retire_keeps_history(backend: Backend) {
    let db = Db::fresh(backend).await;
    let defs = tempdir();
    let gone = Uuid::new_v4();
    write_definition(defs.path(), "keeper", Uuid::new_v4(), "*/5 * * * *", URL, "");
    write_definition(defs.path(), "goner", gone, "*/5 * * * *", URL, "");
    assert_exit(&db.sync(defs.path()), 0, "sync");

    let store = db.open().await;
    let run = run_for(gone);
    assert!(store.insert_run(&run).await.expect("insert run"));

    let saved = std::fs::read_to_string(defs.path().join("goner.toml")).unwrap();
    std::fs::remove_file(defs.path().join("goner.toml")).unwrap();
    let out = db.sync(defs.path());
    assert_exit(&out, 0, "sync after removing a file");
    assert!(
        out.1.contains("0 added, 0 changed, 1 unchanged, 1 retired"),
        "{}",
        out.1
    );
    assert!(out.1.contains("retired  goner"), "{}", out.1);

    let all = store.definitions().await.expect("defs");
    assert_eq!(all.len(), 2, "the retired activity is kept");
    let g = by_slug(&all, "goner");
    assert!(g.retired_at.is_some(), "retired_at set");
    assert!(!g.enabled, "a retired activity is disabled");
    assert!(by_slug(&all, "keeper").retired_at.is_none());
    let runs = store
        .runs(&RunFilter {
            definition_id: Some(gone),
            ..Default::default()
        })
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1, "its runs remain");
    assert_eq!(runs[0].run_id, run.run_id);
    let kinds = store.event_kinds(Some(gone)).await.expect("kinds");
    assert!(kinds.contains(&("definition_retired".to_string(), 1)), "{kinds:?}");

    // A retired activity is not a CLI handle any more.
    let paused = db.cli(&["pause", "goner", "--reason", "test"]);
    assert_exit(&paused, 2, "pause of a retired slug");

    std::fs::write(defs.path().join("goner.toml"), saved).unwrap();
    let back = db.sync(defs.path());
    assert_exit(&back, 0, "sync after restoring the file");
    assert!(
        back.1.contains("0 added, 1 changed, 1 unchanged, 0 retired"),
        "{}",
        back.1
    );
    let all = store.definitions().await.expect("defs");
    let g = by_slug(&all, "goner");
    assert!(g.retired_at.is_none() && g.enabled, "revived: {g:?}");
}

// ---------------------------------------------------------------- paused

/// `actcore pause` is operator state: a sync that changes the file keeps it.
async fn paused_survives_sync(backend: Backend) {
    let db = Db::fresh(backend).await;
    let defs = tempdir();
    let id = Uuid::new_v4();
    write_definition(defs.path(), "sweep", id, "*/15 * * * *", URL, "");
    write_definition(defs.path(), "other", Uuid::new_v4(), "*/15 * * * *", URL, "");
    assert_exit(&db.sync(defs.path()), 0, "sync");

    let out = db.cli(&["pause", "sweep", "--reason", "test"]);
    assert_exit(&out, 0, "pause");
    let store = db.open().await;
    assert!(by_slug(&store.definitions().await.expect("defs"), "sweep").paused);

    write_definition(defs.path(), "sweep", id, "*/30 * * * *", URL, "jitter = \"5s\"");
    let out = db.sync(defs.path());
    assert_exit(&out, 0, "sync of a changed file");
    assert!(
        out.1.contains("0 added, 1 changed, 1 unchanged, 0 retired"),
        "{}",
        out.1
    );

    let all = store.definitions().await.expect("defs");
    let s = by_slug(&all, "sweep");
    assert!(s.paused, "sync cleared the operator's pause");
    assert_eq!(
        s.definition.schedule.cron, "*/30 * * * *",
        "the change itself was applied"
    );
    assert!(!by_slug(&all, "other").paused);
    let kinds = store.event_kinds(Some(id)).await.expect("kinds");
    for kind in ["definition_added", "paused", "definition_changed"] {
        assert!(kinds.contains(&(kind.to_string(), 1)), "{kind}: {kinds:?}");
    }

    // Paused through the API too, then resumed through the CLI.
    let other = by_slug(&all, "other").definition.id;
    assert!(store.set_paused(other, true, Timestamp::now()).await.expect("pause"));
    write_definition(defs.path(), "other", other, "*/20 * * * *", URL, "");
    assert_exit(&db.sync(defs.path()), 0, "sync");
    assert!(by_slug(&store.definitions().await.expect("defs"), "other").paused);
    assert_exit(&db.cli(&["resume", "sweep"]), 0, "resume");
    assert!(!by_slug(&store.definitions().await.expect("defs"), "sweep").paused);
}

// ---------------------------------------------------------------- all or nothing

/// One bad file among changes, removals and additions: exit 78, the file
/// and key named, and every table exactly as it was.
async fn failing_file_leaves_database_untouched(backend: Backend) {
    let db = Db::fresh(backend).await;
    let defs = tempdir();
    let a = Uuid::new_v4();
    write_definition(defs.path(), "a", a, "*/5 * * * *", URL, "");
    write_definition(defs.path(), "b", Uuid::new_v4(), "*/5 * * * *", URL, "");
    assert_exit(&db.sync(defs.path()), 0, "sync");
    assert_exit(&db.cli(&["pause", "b", "--reason", "test"]), 0, "pause");
    let store = db.open().await;
    assert!(store.insert_run(&run_for(a)).await.expect("insert run"));
    let before = dump(&store).await;
    assert!(before.len() >= 6, "{before:#?}");

    // Each of these alone would write: a change, a retire, an addition.
    write_definition(defs.path(), "a", a, "*/10 * * * *", URL, "");
    std::fs::remove_file(defs.path().join("b.toml")).unwrap();
    write_definition(defs.path(), "c", Uuid::new_v4(), "*/5 * * * *", URL, "");
    let bad = defs.path().join("d.toml");
    std::fs::write(
        &bad,
        format!("id = \"{}\"\nslug = \"d\"\n[schedule]\ncron = \"*/5 * * * *\"\nmisfire_grace = \"soon\"\n[action]\nurl = \"{URL}\"\n", Uuid::new_v4()),
    )
    .unwrap();

    let out = db.sync(defs.path());
    assert_exit(&out, 78, "sync with a bad file");
    assert!(
        out.2.contains(&format!("{}: schedule.misfire_grace:", bad.display())),
        "names the file and key: {}",
        out.2
    );
    assert_eq!(dump(&store).await, before, "a failed sync wrote to the database");

    // The dry run refuses the same way; with the file fixed, everything lands at once.
    assert_exit(
        &db.cli(&["sync", "--dry-run", "--definitions", path_str(defs.path())]),
        78,
        "dry run",
    );
    std::fs::remove_file(&bad).unwrap();
    let dry = db.cli(&["sync", "--dry-run", "--definitions", path_str(defs.path())]);
    assert_exit(&dry, 0, "dry run");
    assert!(
        dry.1.contains("would sync") && dry.1.contains("1 added, 1 changed, 0 unchanged, 1 retired"),
        "{}",
        dry.1
    );
    assert_eq!(dump(&store).await, before, "a dry run wrote to the database");
    let out = db.sync(defs.path());
    assert_exit(&out, 0, "sync");
    assert!(
        out.1.contains("1 added, 1 changed, 0 unchanged, 1 retired"),
        "{}",
        out.1
    );
}

// ---------------------------------------------------------------- unreachable

/// A database that cannot be reached: exit 1, one line naming the URL
/// without its password, and what to try.
#[test]
fn unreachable_database_is_one_line_without_password() {
    let defs = tempdir();
    write_definition(defs.path(), "alpha", Uuid::new_v4(), "*/5 * * * *", URL, "");
    let url = "postgres://user:secret@127.0.0.1:1/db";
    for args in [vec!["sync", "--definitions", path_str(defs.path())], vec!["status"]] {
        let started = std::time::Instant::now();
        let (code, stdout, stderr) = run_cli(&args, &[("DATABASE_URL", url)]);
        let took = started.elapsed();
        assert_eq!(code, 1, "{args:?}: exit code; stderr: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: stdout: {stdout}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line expected, got:\n{stderr}");
        let line = lines[0];
        assert!(
            line.contains("127.0.0.1:1"),
            "{args:?}: names the host and port: {line}"
        );
        assert!(line.contains("postgres://user:"), "{args:?}: names the URL: {line}");
        assert!(!line.contains("secret"), "{args:?}: leaks the password: {line}");
        assert!(line.contains("DATABASE_URL"), "{args:?}: says what to try: {line}");
        assert!(
            took < std::time::Duration::from_secs(5),
            "{args:?}: took {took:?} to report a refused connection: {line}"
        );
    }
}

/// libpq takes the password as a query parameter too: it is not printed either.
#[test]
fn fault9_password_in_the_query_is_not_printed() {
    for url in [
        "postgres://user@127.0.0.1:1/db?password=secret",
        "postgres://user@127.0.0.1:1/db?sslmode=disable&sslpassword=secret&PassWord=secret",
        "mysql://user:secret@127.0.0.1:1/db?password=secret",
    ] {
        let (code, stdout, stderr) = run_cli(&["status"], &[("DATABASE_URL", url)]);
        assert!(code == 1 || code == 78, "{url}: exit code {code}; stderr: {stderr}");
        assert!(stdout.is_empty(), "{url}: {stdout}");
        assert!(stderr.contains("127.0.0.1:1"), "{url}: names the host: {stderr}");
        assert!(!stderr.contains("secret"), "{url}: leaks the password: {stderr}");
    }
}

// ---------------------------------------------------------------- bad input

/// A valid file every bad-input directory also holds, so that the message
/// is about the bad file alone.
fn good_file(dir: &Path) {
    write_definition(dir, "good", Uuid::new_v4(), "*/5 * * * *", URL, "");
}

fn file(id: &str, slug: &str, schedule: &str, action: &str) -> String {
    format!("id = \"{id}\"\nslug = \"{slug}\"\n\n[schedule]\n{schedule}\n\n[action]\n{action}\n")
}

struct Case {
    name: &'static str,
    /// (file name, text)
    files: Vec<(&'static str, String)>,
    /// The file the message must name.
    bad: &'static str,
    /// The key it must name ("" for a TOML syntax error: the line instead).
    key: &'static str,
    /// More text the message must hold.
    says: &'static str,
}

fn cases() -> Vec<Case> {
    let id = || Uuid::new_v4().to_string();
    let cron = "cron = \"*/5 * * * *\"";
    let url = format!("url = \"{URL}\"");
    let shared_id = id();
    vec![
        Case {
            name: "toml syntax error",
            files: vec![(
                "syntax.toml",
                format!("id = \"{}\"\nslug = \"syntax\n[schedule]\n{cron}\n", id()),
            )],
            bad: "syntax.toml",
            key: "",
            says: "line 2",
        },
        Case {
            name: "unknown top-level key",
            files: vec![(
                "colour.toml",
                format!("colour = \"blue\"\n{}", file(&id(), "colour", cron, &url)),
            )],
            bad: "colour.toml",
            key: "colour",
            says: "unknown key `colour`",
        },
        Case {
            name: "unknown key in a table",
            files: vec![(
                "typo.toml",
                file(&id(), "typo", &format!("{cron}\ntimezon = \"UTC\""), &url),
            )],
            bad: "typo.toml",
            key: "schedule.timezon",
            says: "unknown key `timezon`",
        },
        Case {
            name: "missing id",
            files: vec![(
                "noid.toml",
                format!("slug = \"noid\"\n[schedule]\n{cron}\n[action]\n{url}\n"),
            )],
            bad: "noid.toml",
            key: "id",
            says: "missing",
        },
        Case {
            name: "missing slug",
            files: vec![(
                "noslug.toml",
                format!("id = \"{}\"\n[schedule]\n{cron}\n[action]\n{url}\n", id()),
            )],
            bad: "noslug.toml",
            key: "slug",
            says: "missing",
        },
        Case {
            name: "missing cron",
            files: vec![("nocron.toml", file(&id(), "nocron", "timezone = \"UTC\"", &url))],
            bad: "nocron.toml",
            key: "schedule.cron",
            says: "missing",
        },
        Case {
            name: "cron with four fields",
            files: vec![("four.toml", file(&id(), "four", "cron = \"*/5 * * *\"", &url))],
            bad: "four.toml",
            key: "schedule.cron",
            says: "5 fields",
        },
        Case {
            name: "cron hour out of range",
            files: vec![("range.toml", file(&id(), "range", "cron = \"0 25 * * *\"", &url))],
            bad: "range.toml",
            key: "schedule.cron",
            says: "25",
        },
        Case {
            name: "unknown time zone",
            files: vec![(
                "mars.toml",
                file(
                    &id(),
                    "mars",
                    &format!("{cron}\ntimezone = \"Mars/Olympus_Mons\""),
                    &url,
                ),
            )],
            bad: "mars.toml",
            key: "schedule.timezone",
            says: "Mars/Olympus_Mons",
        },
        Case {
            name: "duplicate id across files",
            files: vec![
                ("dup-1.toml", file(&shared_id, "dup-one", cron, &url)),
                ("dup-2.toml", file(&shared_id, "dup-two", cron, &url)),
            ],
            bad: "dup-2.toml",
            key: "id",
            says: "dup-1.toml",
        },
        Case {
            name: "duplicate slug across files",
            files: vec![
                ("same-1.toml", file(&id(), "same", cron, &url)),
                ("same-2.toml", file(&id(), "same", cron, &url)),
            ],
            bad: "same-2.toml",
            key: "slug",
            says: "same-1.toml",
        },
        Case {
            name: "malformed duration",
            files: vec![(
                "slow.toml",
                file(&id(), "slow", cron, &format!("{url}\ntimeout = \"5 parsecs\"")),
            )],
            bad: "slow.toml",
            key: "action.timeout",
            says: "duration",
        },
        Case {
            name: "http url without a host",
            files: vec![("nohost.toml", file(&id(), "nohost", cron, "url = \"http://\""))],
            bad: "nohost.toml",
            key: "action.url",
            says: "no host",
        },
        Case {
            name: "jitter not below the grace",
            files: vec![(
                "jittery.toml",
                file(&id(), "jittery", &format!("{cron}\njitter = \"2m\""), &url),
            )],
            bad: "jittery.toml",
            key: "schedule.jitter",
            says: "misfire_grace (1m)",
        },
        Case {
            name: "huge duration",
            files: vec![(
                "huge.toml",
                file(
                    &id(),
                    "huge",
                    &format!("{cron}\nmisfire_grace = \"200000000000d\""),
                    &url,
                ),
            )],
            bad: "huge.toml",
            key: "schedule.misfire_grace",
            says: "above the maximum 7d",
        },
        Case {
            name: "http action without url",
            files: vec![(
                "nourl.toml",
                file(&id(), "nourl", cron, "kind = \"http\"\ntimeout = \"5s\""),
            )],
            bad: "nourl.toml",
            key: "action.url",
            says: "url",
        },
    ]
}

/// Every kind of bad input, through `definitions check DIR` and `sync`:
/// exit 78, the file and the key named, nothing created.
#[test]
fn bad_definitions_are_refused_with_file_and_key() {
    for case in cases() {
        let dir = tempdir();
        good_file(dir.path());
        for (name, text) in &case.files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let bad = dir.path().join(case.bad);
        let expected = if case.key.is_empty() {
            format!("{}: ", bad.display())
        } else {
            format!("{}: {}: ", bad.display(), case.key)
        };
        let store_dir = tempdir();
        let db_file = store_dir.path().join("actcore.db");
        let db_url = format!("sqlite://{}", db_file.display());

        let check = run_cli(&["definitions", "check", path_str(dir.path())], &[]);
        let sync = run_cli(
            &["sync", "--definitions", path_str(dir.path())],
            &[("DATABASE_URL", &db_url)],
        );
        for (what, (code, stdout, stderr)) in [("definitions check", check), ("sync", sync)] {
            let ctx = format!("{}: {what}\nstdout:\n{stdout}\nstderr:\n{stderr}", case.name);
            assert_eq!(code, 78, "{ctx}");
            assert!(stderr.contains(&expected), "{ctx}\nexpected `{expected}`");
            let line = stderr.lines().find(|l| l.contains(&expected)).unwrap();
            assert!(
                line.contains(case.says),
                "{ctx}\nexpected `{}` in the message",
                case.says
            );
            assert!(line.contains("fix:") || case.key.is_empty(), "{ctx}\nexpected a fix");
            assert!(!stderr.contains("good.toml"), "{ctx}\nthe valid file is not blamed");
            assert!(!stdout.contains("all valid") && !stdout.contains("synced"), "{ctx}");
        }
        assert!(!db_file.exists(), "{}: a refused sync created the store", case.name);
    }
}

/// `${VAR}`s are resolved at execution: plain `check` and `sync` accept an
/// unset one; `check --env` reports it (file and variable), and passes once it is set.
#[test]
fn check_env_reports_unset_variables() {
    let var = "ACTCORE_TEST_SURELY_UNSET_HUB_URL";
    assert!(std::env::var_os(var).is_none(), "{var} is set in the test environment");
    let dir = tempdir();
    good_file(dir.path());
    write_definition(
        dir.path(),
        "templated",
        Uuid::new_v4(),
        "*/5 * * * *",
        &format!("${{{var}}}/sweep"),
        "",
    );
    let d = path_str(dir.path());

    let plain = run_cli(&["definitions", "check", d], &[]);
    assert_exit(&plain, 0, "check");
    assert!(plain.1.contains("2 definitions, all valid"), "{}", plain.1);

    let env = run_cli(&["definitions", "check", "--env", d], &[]);
    assert_exit(&env, 78, "check --env");
    let templated = dir.path().join("templated.toml");
    assert!(
        env.2.contains(&templated.display().to_string()),
        "names the file: {}",
        env.2
    );
    assert!(env.2.contains(var), "names the variable: {}", env.2);
    assert!(!env.2.contains("good.toml"), "{}", env.2);

    let set = run_cli(&["definitions", "check", "--env", d], &[(var, "http://127.0.0.1:9")]);
    assert_exit(&set, 0, "check --env with the variable set");

    let store_dir = tempdir();
    let url = format!("sqlite://{}", store_dir.path().join("actcore.db").display());
    let sync = run_cli(&["sync", "--migrate", "--definitions", d], &[("DATABASE_URL", &url)]);
    assert_exit(&sync, 0, "sync with an unset variable");
    assert!(sync.1.contains("2 added"), "{}", sync.1);
}

/// `definitions check` reads `--definitions` (and `ACTCORE_DEFINITIONS`)
/// when no DIR is given, and `--json` lists what it validated.
#[test]
fn check_lists_valid_definitions() {
    let dir = tempdir();
    let id = Uuid::new_v4();
    write_definition(dir.path(), "alpha", id, "*/5 * * * *", URL, "");
    let (code, stdout, stderr) = run_cli(
        &["definitions", "check", "--json"],
        &[("ACTCORE_DEFINITIONS", path_str(dir.path()))],
    );
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["ok"], true);
    assert_eq!(v["definitions"][0]["slug"], "alpha");
    assert_eq!(v["definitions"][0]["id"], id.to_string());

    let missing: PathBuf = dir.path().join("nope");
    let (code, _, stderr) = run_cli(&["definitions", "check", path_str(&missing)], &[]);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

/// A definition file that became a dangling symlink: `check` and `sync`
/// refuse it (exit 78, the file named) instead of skipping it, and the
/// activity is not retired.
#[tokio::test]
async fn fault9_dangling_symlink_is_a_problem_and_nothing_is_retired() {
    let db = Db::fresh(Backend::Sqlite).await;
    let defs = tempdir();
    good_file(defs.path());
    write_definition(defs.path(), "linked", Uuid::new_v4(), "*/5 * * * *", URL, "");
    assert_exit(&db.sync(defs.path()), 0, "first sync");
    let before = dump(&db.open().await).await;

    let link = defs.path().join("linked.toml");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(defs.path().join("moved-away.toml"), &link).unwrap();
    let check = run_cli(&["definitions", "check", path_str(defs.path())], &[]);
    let sync = db.sync(defs.path());
    for (what, out) in [("check", &check), ("sync", &sync)] {
        assert_exit(out, 78, what);
        assert!(
            out.2
                .contains(&format!("{}: cannot read: dangling symlink", link.display())),
            "{what}: {}",
            out.2
        );
        assert!(out.2.contains("moved-away.toml"), "{what}: names the target: {}", out.2);
        assert!(
            !out.1.contains("all valid") && !out.1.contains("retired"),
            "{what}: {}",
            out.1
        );
    }
    assert_eq!(dump(&db.open().await).await, before, "a refused sync wrote (retired?)");
}

/// Runs `actcore` with its stdout a pipe whose reader is already closed,
/// as `actcore … | head -1` leaves it once head has its line.
fn run_with_closed_stdout(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut cmd = std::process::Command::new(actcore_tests::actcore_bin());
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(writer)
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run actcore");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn fault9_closed_stdout_ends_quietly_instead_of_panicking() {
    let defs = tempdir();
    good_file(defs.path());
    let store_dir = tempdir();
    let url = format!("sqlite://{}", store_dir.path().join("actcore.db").display());
    for args in [
        vec!["definitions", "check", path_str(defs.path())],
        vec!["definitions", "check", "--json", path_str(defs.path())],
        vec!["migrate"],
        vec!["sync", "--definitions", path_str(defs.path())],
        vec!["status"],
    ] {
        let (code, stderr) = run_with_closed_stdout(&args, &[("DATABASE_URL", &url)]);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.trim().is_empty(), "{args:?}: quiet: {stderr}");
    }
    // The sync did its work although nobody read its summary.
    let status = run_cli(&["status", "--json"], &[("DATABASE_URL", &url)]);
    assert_exit(&status, 0, "status");
    assert!(status.1.contains("\"good\""), "{}", status.1);
}

/// The worker defaults `${ACTCORE_SOURCE}` to `activity-core`, so `check
/// --env` counts it as set; a variable that resolves to a URL without a
/// host is reported on `action.url`.
#[test]
fn fault10_check_env_counts_the_worker_defaults_as_set() {
    let dir = tempdir();
    let text = format!(
        "id = \"{}\"\nslug = \"sourced\"\n[schedule]\ncron = \"*/5 * * * *\"\n[action]\nurl = \"{URL}\"\nbody = {{ source = \"${{ACTCORE_SOURCE}}\" }}\n",
        Uuid::new_v4()
    );
    std::fs::write(dir.path().join("sourced.toml"), text).unwrap();
    let d = path_str(dir.path());
    let env = run_cli(&["definitions", "check", "--env", d], &[]);
    assert_exit(&env, 0, "check --env with ACTCORE_SOURCE unset");

    let var = "ACTCORE_TEST_HUB_URL_WITHOUT_HOST";
    write_definition(
        dir.path(),
        "hostless",
        Uuid::new_v4(),
        "*/5 * * * *",
        &format!("${{{var}}}"),
        "",
    );
    let plain = run_cli(&["definitions", "check", d], &[(var, "http://")]);
    assert_exit(&plain, 0, "a URL that is all ${VAR} is checked only with --env");
    let env = run_cli(&["definitions", "check", "--env", d], &[(var, "http://")]);
    assert_exit(&env, 78, "check --env with a hostless URL");
    let hostless = dir.path().join("hostless.toml");
    assert!(
        env.2.contains(&format!("{}: action.url: ", hostless.display())),
        "{}",
        env.2
    );
}

/// Flags that would panic or defeat the lease are refused when parsed,
/// naming the flag and the range, before anything starts.
#[test]
fn fault4_out_of_range_duration_flags_are_refused() {
    let store_dir = tempdir();
    let db_file = store_dir.path().join("actcore.db");
    let url = format!("sqlite://{}", db_file.display());
    for (args, flag, range) in [
        (vec!["worker", "--lease", "1ms"], "--lease", "from 2s to 1d"),
        (vec!["worker", "--lease", "99999999999d"], "--lease", "from 2s to 1d"),
        (vec!["dev", "--lease", "2d"], "--lease", "from 2s to 1d"),
        (vec!["worker", "--reread", "0s"], "--reread", "from 1s to 1d"),
        (
            vec!["worker", "--shutdown-grace", "300000000000d"],
            "--shutdown-grace",
            "too large",
        ),
        (
            vec!["worker", "--shutdown-grace", "2d"],
            "--shutdown-grace",
            "from 0s to 1d",
        ),
        (vec!["schedule", "preview", "x", "--count", "0"], "--count", "1..=10000"),
        (
            vec!["runs", "--since-hours", "4294967295"],
            "--since-hours",
            "1..=87600",
        ),
        (vec!["runs", "--limit=-1"], "--limit", "1..=10000"),
    ] {
        let (code, stdout, stderr) = run_cli(&args, &[("DATABASE_URL", &url)]);
        assert_eq!(
            code, 2,
            "{args:?}: usage error
stdout: {stdout}
stderr: {stderr}"
        );
        assert!(stderr.contains(flag) && stderr.contains(range), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let (code, _, stderr) = run_cli(&["worker", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(stderr.is_empty());
    assert!(!db_file.exists(), "a refused command opened the store");
}

actcore_tests::both_backends!(
    sync_is_idempotent,
    retire_keeps_history,
    paused_survives_sync,
    failing_file_leaves_database_untouched,
);
