//! The emergency local fallback end to end: the built `actcore fallback`
//! against a real Postgres (or a closed port standing for an unreachable
//! one), the State Hub stand-in, its journal, and systemd's own tools.
//!
//! Most tests use a daily schedule (`0 0 * * *`) with a two-day misfire
//! grace: the slot (today's 00:00 UTC) stays the same for the whole test,
//! so a cluster row written for it is the row the fallback meets (a test
//! running across 00:00 UTC would see two slots; it is the one edge).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use actcore::fallback::slot::slot_at;
use actcore::run::{ErrorCode, Outcome, Source, State, Trigger};
use actcore::schedule::Schedule;
use actcore::store::{ClaimBatch, ClaimItem, HistoryStore, NewRun, RunFilter, RunRow, RunStore, Store};
use actcore_tests::{Hub, actcore_bin, activity_id, fresh_pg_url, sync_dir};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;

const SLUG: &str = "fallback-sweep";
const DAILY: &str = "0 0 * * *";

fn def_id() -> Uuid {
    activity_id(0x11)
}

/// A definitions directory holding one activity posting to `url`.
fn definitions(url: &str, cron: &str, grace: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "id = \"{id}\"\nname = \"Fallback test\"\nslug = \"{SLUG}\"\n\n[schedule]\ncron = \"{cron}\"\nmisfire_grace = \"{grace}\"\n\n\
         [action]\nmethod = \"POST\"\nurl = \"{url}\"\nbody = {{ max_seconds = 300, source = \"${{ACTCORE_SOURCE}}\" }}\ntimeout = \"10s\"\n\n\
         [result]\nsnapshot_key = \"consistency_sweep_remote_all\"\n",
        id = def_id()
    );
    std::fs::write(dir.path().join(format!("{SLUG}.toml")), text).unwrap();
    dir
}

/// Today's slot of the daily schedule.
fn daily_slot() -> Timestamp {
    slot_at(&Schedule::new(DAILY, "UTC").unwrap(), Timestamp::now())
        .unwrap()
        .instant
}

/// A URL nothing listens on: the cluster's database out of reach.
fn unreachable_db() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// Where one test keeps its journal.
struct Place {
    _dir: tempfile::TempDir,
    journal: PathBuf,
}

fn place() -> Place {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.sqlite");
    Place { _dir: dir, journal }
}

/// Runs `actcore fallback ARGS --json` and returns (exit code, parsed stdout or Null, stderr).
async fn fallback(args: &[&str], defs: &Path, db: &str, journal: &Path) -> (i32, Value, String) {
    let out = command(args, defs, db, journal).output().await.expect("run actcore");
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn command(args: &[&str], defs: &Path, db: &str, journal: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(actcore_bin());
    cmd.arg("fallback")
        .args(args)
        .arg("--json")
        .env("ACTCORE_DEFINITIONS", defs)
        .env("DATABASE_URL", db)
        .env("ACTCORE_JOURNAL", journal)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A cluster run of `slot` as a worker records it.
fn cluster_run(slot: Timestamp, attempt: i32, trigger: Trigger, outcome: Outcome) -> NewRun {
    let now = Timestamp::now();
    NewRun {
        run_id: Uuid::now_v7(),
        definition_id: def_id(),
        fired_at: now - SignedDuration::from_secs(5),
        scheduled_for: Some(slot),
        trigger,
        source: Source::ActivityCore,
        attempt,
        state: outcome.state(),
        outcome: Some(outcome),
        automation_error: outcome == Outcome::AutomationError,
        assessment_failures: 0,
        error_code: (outcome == Outcome::AutomationError).then_some(ErrorCode::Http5xx),
        error_message: None,
        context_snapshot: serde_json::json!({"trigger": trigger.as_str()}),
        worker_id: Some("worker-1".into()),
        lease_expires_at: None,
        started_at: Some(now - SignedDuration::from_secs(5)),
        finished_at: Some(now),
        spec_hash: None,
        retry_of: None,
        actor: None,
        duplicate_of: None,
    }
}

async fn slot_rows(store: &Store, slot: Timestamp) -> Vec<RunRow> {
    store.slot_runs(def_id(), slot).await.unwrap()
}

async fn event_count(store: &Store, kind: &str) -> i64 {
    store
        .event_kinds(Some(def_id()))
        .await
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == kind)
        .map_or(0, |(_, n)| n)
}

/// A Postgres with the activity synced, and a store on it.
async fn cluster(defs: &Path) -> (String, Store) {
    let url = fresh_pg_url().await;
    sync_dir(defs, &url);
    let store = Store::open(Some(&url)).await.unwrap();
    (url, store)
}

#[tokio::test(flavor = "multi_thread")]
async fn five_concurrent_calls_execute_one_action() {
    let hub = Hub::start().await;
    let defs = definitions(&format!("{}/slow/3000", hub.url()), DAILY, "2d");
    let p = place();
    let db = unreachable_db();
    let children: Vec<_> = (0..5)
        .map(|_| command(&["run", SLUG], defs.path(), &db, &p.journal).spawn().unwrap())
        .collect();
    let mut decisions = Vec::new();
    for child in children {
        let out = child.wait_with_output().await.unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        decisions.push(report["decision"].as_str().unwrap().to_string());
    }
    decisions.sort();
    assert_eq!(decisions[0], "ran", "{decisions:?}");
    // The others saw the lock and stopped at once. One delayed past the first
    // run's end (a loaded machine) meets the journal's fence instead: still no second action.
    assert!(
        decisions[1..]
            .iter()
            .all(|d| d == "skipped_locked" || d == "slot_taken"),
        "{decisions:?}"
    );
    assert!(decisions.iter().any(|d| d == "skipped_locked"), "{decisions:?}");
    assert_eq!(hub.arrivals().len(), 1, "one action executed");
    let (_, status, _) = fallback(&["status"], defs.path(), &db, &p.journal).await;
    assert_eq!(status["runs"].as_array().unwrap().len(), 1, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_guard_holds_and_force_still_meets_the_fence() {
    let hub = Hub::start().await;
    let defs = definitions(&format!("{}/sink/sweep", hub.url()), DAILY, "2d");
    let (url, store) = cluster(defs.path()).await;
    let slot = daily_slot();
    let healthy = cluster_run(slot, 1, Trigger::Schedule, Outcome::Ok);
    assert!(store.insert_run(&healthy).await.unwrap());
    let p = place();

    let (code, report, err) = fallback(&["run", SLUG], defs.path(), &url, &p.journal).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["decision"], "cluster_healthy", "{report}");
    assert_eq!(report["because_of"], healthy.run_id.to_string());

    let (code, report, err) = fallback(
        &["run", SLUG, "--force", "--actor", "alice", "--reason", "drill"],
        defs.path(),
        &url,
        &p.journal,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        report["decision"], "slot_taken",
        "the fence refuses a second run of a claimed slot: {report}"
    );
    assert!(hub.arrivals().is_empty(), "nothing was sent");
    assert_eq!(slot_rows(&store, slot).await.len(), 1, "only the cluster's run");
    assert_eq!(
        event_count(&store, "fallback_forced").await,
        1,
        "the override is audited"
    );
    let detail: Value =
        sqlx::query_scalar("select detail from activity_events where kind = 'fallback_forced' and definition_id = $1")
            .bind(def_id())
            .fetch_one(&sqlx::PgPool::connect(&url).await.unwrap())
            .await
            .unwrap();
    assert_eq!(
        (detail["actor"].as_str(), detail["reason"].as_str()),
        (Some("alice"), Some("drill"))
    );
    assert!(!p.journal.exists(), "a reachable cluster never needs the journal");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_an_idle_cluster_the_fallback_takes_the_workers_fence() {
    let hub = Hub::start().await;
    let defs = definitions(&format!("{}/sink/sweep", hub.url()), DAILY, "2d");
    let (url, store) = cluster(defs.path()).await;
    let slot = daily_slot();
    // The fallback swept the previous slot: its own run is no sign of a working cluster.
    let own_previous = NewRun {
        source: Source::LocalFallback,
        ..cluster_run(slot - SignedDuration::from_hours(24), 1, Trigger::Fallback, Outcome::Ok)
    };
    assert!(store.insert_run(&own_previous).await.unwrap());
    let p = place();
    let (code, report, err) = fallback(&["run", SLUG], defs.path(), &url, &p.journal).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (report["decision"].as_str(), report["attempt"].as_i64()),
        (Some("ran"), Some(1)),
        "{report}"
    );
    assert_eq!(report["recorded_in"], "cluster");
    let rows = slot_rows(&store, slot).await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (
            r.trigger.as_str(),
            r.source.as_str(),
            r.state.as_str(),
            r.outcome.as_deref()
        ),
        ("fallback", "local-fallback", "succeeded", Some("ok"))
    );
    assert_eq!(r.context_snapshot["trigger"], "fallback");
    assert_eq!(r.context_snapshot["consistency_sweep_remote_all"]["exit_code"], 0);
    // A worker arriving late for the same instant is refused by the fence.
    let worker_run = Uuid::now_v7();
    let claimed = store
        .claim(&ClaimBatch {
            scheduled_for: slot,
            fired_at: Timestamp::now(),
            worker_id: "worker-1",
            lease: SignedDuration::from_secs(30),
            items: &[ClaimItem {
                run_id: worker_run,
                definition_id: def_id(),
                spec_hash: "h".into(),
                skip_if_running: false,
                buffer_until: None,
                snapshot: actcore::snapshot::to_stored(&serde_json::json!({})),
            }],
            finished_unwritten: &[],
        })
        .await
        .unwrap();
    assert!(claimed.is_empty(), "the cluster cannot run an instant the fallback ran");
    assert_eq!(hub.arrivals().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_with_only_automation_errors_lets_the_fallback_run_as_the_next_attempt() {
    let hub = Hub::start().await;
    let defs = definitions(&format!("{}/sink/sweep", hub.url()), DAILY, "2d");
    let (url, store) = cluster(defs.path()).await;
    let slot = daily_slot();
    let failed = cluster_run(slot, 1, Trigger::Schedule, Outcome::AutomationError);
    let mut retry = cluster_run(slot, 2, Trigger::Retry, Outcome::AutomationError);
    retry.retry_of = Some(failed.run_id);
    // The previous instant was blocked by the circuit: not healthy either.
    let blocked = cluster_run(
        slot - SignedDuration::from_hours(24),
        1,
        Trigger::Schedule,
        Outcome::BlockedCircuitOpen,
    );
    for r in [&failed, &retry, &blocked] {
        assert!(store.insert_run(r).await.unwrap());
    }
    let p = place();
    let (code, report, err) = fallback(&["run", SLUG], defs.path(), &url, &p.journal).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["decision"], "ran", "{report}");
    assert_eq!(report["attempt"], 3, "after the cluster's two attempts");
    assert_eq!(
        report["retry_of"],
        failed.run_id.to_string(),
        "linked to the chain's first run"
    );

    // The request says where it comes from: the header and ${ACTCORE_SOURCE} in the body.
    let arrivals = hub.arrivals();
    assert_eq!(arrivals.len(), 1);
    assert_eq!(arrivals[0].source.as_deref(), Some("local-fallback"));
    assert_eq!(arrivals[0].scheduled_for, Some(slot));
    let body: Value = serde_json::from_slice(&arrivals[0].body).unwrap();
    assert_eq!(body["source"], "local-fallback");
    let run_id: Uuid = report["run_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(arrivals[0].idempotency_key, Some(run_id.to_string()));

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let row = sqlx::query("select attempt, retry_of, trigger, source, outcome from activity_runs where run_id = $1")
        .bind(run_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<i32, _>("attempt"), 3);
    assert_eq!(row.get::<Option<Uuid>, _>("retry_of"), Some(failed.run_id));
    assert_eq!(row.get::<String, _>("trigger"), "fallback");
    assert_eq!(row.get::<String, _>("source"), "local-fallback");
    assert_eq!(row.get::<Option<String>, _>("outcome").as_deref(), Some("ok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_database_unreachable_the_run_is_journaled_and_imported_once() {
    let hub = Hub::start().await;
    let defs = definitions(&format!("{}/fixture/assessment-failures.json", hub.url()), DAILY, "2d");
    let p = place();
    // Forced: its audit is journaled with the run and imported with it.
    let (code, report, err) = fallback(
        &["run", SLUG, "--force", "--reason", "drill"],
        defs.path(),
        &unreachable_db(),
        &p.journal,
    )
    .await;
    assert_eq!(code, 0, "assessment failures are not an automation error: {err}");
    assert_eq!(report["decision"], "ran", "{report}");
    assert_eq!(report["recorded_in"], "journal");
    assert_eq!(report["outcome"], "assessment_failures");
    let run_id: Uuid = report["run_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(hub.arrivals()[0].source.as_deref(), Some("local-fallback"));

    // The runbook's SQL works on the journal: the same schema, the same snapshot.
    let journal = Store::open(Some(&format!("sqlite://{}", p.journal.display())))
        .await
        .unwrap();
    let Store::Sqlite(sqlite) = &journal else {
        unreachable!()
    };
    let sweep: String = sqlx::query_scalar(
        "select context_snapshot->'consistency_sweep_remote_all' from activity_runs where definition_id = ?1 \
         order by fired_at desc limit 5",
    )
    .bind(def_id().to_string())
    .fetch_one(sqlite.pool())
    .await
    .unwrap();
    assert!(sweep.contains("assessment_failures"), "{sweep}");

    let (_, status, _) = fallback(&["status"], defs.path(), "", &p.journal).await;
    assert_eq!(status["pending"], 1, "{status}");

    let (url, store) = cluster(defs.path()).await;
    let (code, first, err) = fallback(&["import"], defs.path(), &url, &p.journal).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(first["imported"][0]["imported_as"], "first_attempt", "{first}");
    let (code, second, err) = fallback(&["import"], defs.path(), &url, &p.journal).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(second["imported"].as_array().unwrap().len(), 0, "{second}");
    assert_eq!(second["already_imported"], 1);
    assert_eq!(
        event_count(&store, "fallback_forced").await,
        1,
        "the override's audit came along, once"
    );

    let all = store
        .runs(&RunFilter {
            definition_id: Some(def_id()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "exactly one row after two imports");
    let row = &all[0];
    assert_eq!(row.run_id, run_id);
    assert_eq!(
        (
            row.trigger.as_str(),
            row.source.as_str(),
            row.attempt,
            row.outcome.as_deref()
        ),
        ("fallback", "local-fallback", 1, Some("assessment_failures"))
    );
    assert_eq!(row.scheduled_for, Some(daily_slot()));
    let (_, status, _) = fallback(&["status"], defs.path(), "", &p.journal).await;
    assert_eq!(status["pending"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instant_both_fired_is_imported_as_a_reported_audited_duplicate() {
    let hub = Hub::start().await;
    let defs = definitions(&format!("{}/sink/sweep", hub.url()), DAILY, "2d");
    let p = place();
    let (code, report, err) = fallback(&["run", SLUG], defs.path(), &unreachable_db(), &p.journal).await;
    assert_eq!((code, report["recorded_in"].as_str()), (0, Some("journal")), "{err}");
    let fallback_run: Uuid = report["run_id"].as_str().unwrap().parse().unwrap();

    // Meanwhile the cluster swept the same instant.
    let (url, store) = cluster(defs.path()).await;
    let slot = daily_slot();
    let cluster_ok = cluster_run(slot, 1, Trigger::Schedule, Outcome::Ok);
    assert!(store.insert_run(&cluster_ok).await.unwrap());

    let (code, out, err) = fallback(&["import"], defs.path(), &url, &p.journal).await;
    assert_eq!(code, 0, "{err}");
    let imported = &out["imported"][0];
    assert_eq!(imported["imported_as"], "duplicate", "{out}");
    assert_eq!(imported["duplicate_of"], cluster_ok.run_id.to_string());

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let row = sqlx::query("select attempt, duplicate_of from activity_runs where run_id = $1")
        .bind(fallback_run)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<i32, _>("attempt"), 0, "kept outside the fence");
    assert_eq!(row.get::<Option<Uuid>, _>("duplicate_of"), Some(cluster_ok.run_id));
    assert_eq!(slot_rows(&store, slot).await.len(), 2, "both kept, none dropped");
    assert_eq!(event_count(&store, "fallback_duplicate_fire").await, 1);

    // The human report says it too.
    let (code, out, err) =
        actcore_tests::run_cli(&["fallback", "status", "--journal", p.journal.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("imported"), "{out}");
    let again = fallback(&["import"], defs.path(), &url, &p.journal).await;
    assert_eq!(again.1["imported"].as_array().unwrap().len(), 0);
    assert_eq!(event_count(&store, "fallback_duplicate_fire").await, 1, "reported once");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_human_import_report_names_a_duplicate_fire() {
    let hub = Hub::start().await;
    let defs = definitions(&format!("{}/sink/sweep", hub.url()), DAILY, "2d");
    let p = place();
    let (code, _, err) = fallback(&["run", SLUG], defs.path(), &unreachable_db(), &p.journal).await;
    assert_eq!(code, 0, "{err}");
    let (url, store) = cluster(defs.path()).await;
    let running = NewRun {
        state: State::Running,
        outcome: None,
        finished_at: None,
        lease_expires_at: Some(Timestamp::now() + SignedDuration::from_secs(600)),
        ..cluster_run(daily_slot(), 1, Trigger::Schedule, Outcome::Ok)
    };
    assert!(store.insert_run(&running).await.unwrap());
    let (code, out, err) = actcore_tests::run_cli(
        &["fallback", "import", "--journal", p.journal.to_str().unwrap()],
        &[("DATABASE_URL", url.as_str())],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("DUPLICATE FIRE") && out.contains(&running.run_id.to_string()),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misfired_slot_is_skipped_and_nothing_is_recorded() {
    let hub = Hub::start().await;
    // The slot is the last 1 January 00:00: far more than a second ago.
    let defs = definitions(&format!("{}/sink/sweep", hub.url()), "0 0 1 1 *", "1s");
    let p = place();
    let (code, report, err) = fallback(&["run", SLUG], defs.path(), &unreachable_db(), &p.journal).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["decision"], "skipped_misfire", "{report}");
    assert!(hub.arrivals().is_empty());
    assert!(!p.journal.exists(), "nothing recorded");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_journal_fails_before_the_request() {
    let hub = Hub::start().await;
    let defs = definitions(&format!("{}/sink/sweep", hub.url()), DAILY, "2d");
    let dir = tempfile::tempdir().unwrap();
    // A directory where the journal file should be: SQLite cannot open it, even as root.
    let journal = dir.path().join("journal.sqlite");
    std::fs::create_dir(&journal).unwrap();
    let (code, _, err) = fallback(&["run", SLUG], defs.path(), &unreachable_db(), &journal).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("fallback journal") && err.contains(journal.to_str().unwrap()) && err.contains("nothing was sent"),
        "{err}"
    );
    assert!(hub.arrivals().is_empty(), "no request without a journal to record it");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_automation_error_exits_1_and_is_recorded() {
    let hub = Hub::start().await;
    let defs = definitions(&format!("{}/fixture/bridge-502.html", hub.url()), DAILY, "2d");
    let p = place();
    let (code, report, err) = fallback(&["run", SLUG], defs.path(), &unreachable_db(), &p.journal).await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        (report["outcome"].as_str(), report["error_code"].as_str()),
        (Some("automation_error"), Some("http_5xx")),
        "{report}"
    );
    let (_, status, _) = fallback(&["status"], defs.path(), "", &p.journal).await;
    assert_eq!(status["runs"][0]["outcome"], "automation_error", "{status}");
    // A later call for the same slot follows the failed attempt as the next one.
    let second = fallback(&["run", SLUG], defs.path(), &unreachable_db(), &p.journal).await;
    assert_eq!(second.1["attempt"], 2, "{}", second.1);
    assert_eq!(second.1["retry_of"], report["run_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_lost_during_the_run_leaves_the_result_in_the_journal_and_import_completes_the_row() {
    let hub = Hub::start().await;
    let defs = definitions(&format!("{}/slow/3000", hub.url()), DAILY, "2d");
    let (url, _) = cluster(defs.path()).await;
    let p = place();
    let child = command(&["run", SLUG], defs.path(), &url, &p.journal).spawn().unwrap();
    actcore_tests::eventually(Duration::from_secs(10), "the fallback's request", || async {
        (!hub.arrivals().is_empty()).then_some(())
    })
    .await;
    // The database goes away while the request is out: its connections are
    // cut and new ones refused.
    let name = url.rsplit('/').next().unwrap().to_string();
    let admin = sqlx::PgPool::connect(&actcore_tests::pg_admin_url()).await.unwrap();
    let allow = |on: bool| sqlx::AssertSqlSafe(format!("alter database {name} with allow_connections {on}"));
    sqlx::query(allow(false)).execute(&admin).await.unwrap();
    sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
        .bind(&name)
        .execute(&admin)
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["outcome"].as_str(), report["recorded_in"].as_str()),
        (Some("ok"), Some("journal")),
        "{report}"
    );
    let run_id: Uuid = report["run_id"].as_str().unwrap().parse().unwrap();

    sqlx::query(allow(true)).execute(&admin).await.unwrap();
    let (code, imported, err) = fallback(&["import"], defs.path(), &url, &p.journal).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(imported["imported"][0]["imported_as"], "result_written", "{imported}");
    let store = Store::open(Some(&url)).await.unwrap();
    let rows = slot_rows(&store, daily_slot()).await;
    assert_eq!(
        rows.len(),
        1,
        "one row: the one written before the request, now finished"
    );
    assert_eq!(rows[0].run_id, run_id);
    assert_eq!(
        (rows[0].state.as_str(), rows[0].outcome.as_deref()),
        ("succeeded", Some("ok"))
    );
    assert_eq!(rows[0].context_snapshot["consistency_sweep_remote_all"]["exit_code"], 0);
}

/// A State Hub progress endpoint answering `events` (the canary's `verify` URL).
async fn progress_server(events: Value) -> String {
    let app = axum::Router::new().route(
        "/progress",
        axum::routing::get(move || {
            let events = events.clone();
            async move { axum::Json(events) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/progress")
}

fn with_canary(defs: &Path, verify: &str) {
    let file = defs.join(format!("{SLUG}.toml"));
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!("\n[canary]\nverify = \"{verify}\"\n"));
    std::fs::write(file, text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_reach_the_canary_skips_a_slot_the_cluster_swept_and_only_that() {
    let hub = Hub::start().await;
    let slot = daily_slot();
    let event =
        |source: &str, at: Timestamp| serde_json::json!({"created_at": at.to_string(), "detail": {"source": source}});

    // The cluster's sweep of this slot reached State Hub: nothing to do.
    let swept = progress_server(serde_json::json!([
        event("local-fallback", slot + SignedDuration::from_secs(60)),
        event("activity-core", slot + SignedDuration::from_secs(30)),
    ]))
    .await;
    let defs = definitions(&format!("{}/sink/sweep", hub.url()), DAILY, "2d");
    with_canary(defs.path(), &swept);
    let p = place();
    let (code, report, err) = fallback(&["run", SLUG], defs.path(), &unreachable_db(), &p.journal).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["decision"], "canary_seen", "{report}");
    assert!(hub.arrivals().is_empty());
    assert!(!p.journal.exists(), "nothing recorded");

    // Only older sweeps, or the fallback's own: it runs, into the journal.
    let stale = progress_server(serde_json::json!([
        event("activity-core", slot - SignedDuration::from_hours(24)),
        event("local-fallback", slot + SignedDuration::from_secs(30)),
    ]))
    .await;
    let defs = definitions(&format!("{}/sink/sweep", hub.url()), DAILY, "2d");
    with_canary(defs.path(), &stale);
    let (code, report, err) = fallback(&["run", SLUG], defs.path(), &unreachable_db(), &p.journal).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (report["decision"].as_str(), report["recorded_in"].as_str()),
        (Some("ran"), Some("journal")),
        "{report}"
    );
    assert_eq!(hub.arrivals().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_activity_is_left_alone_unless_forced() {
    let hub = Hub::start().await;
    let defs = definitions(&format!("{}/sink/sweep", hub.url()), DAILY, "2d");
    let (url, store) = cluster(defs.path()).await;
    let (code, out, err) = actcore_tests::run_cli(
        &["pause", SLUG, "--reason", "State Hub maintenance"],
        &[("DATABASE_URL", url.as_str())],
    );
    assert_eq!(code, 0, "{out}{err}");
    let p = place();
    let (code, report, err) = fallback(&["run", SLUG], defs.path(), &url, &p.journal).await;
    assert_eq!(
        (code, report["decision"].as_str()),
        (0, Some("paused")),
        "{report}{err}"
    );
    assert!(hub.arrivals().is_empty());

    let (code, report, err) = fallback(&["run", SLUG, "--force"], defs.path(), &url, &p.journal).await;
    assert_eq!((code, report["decision"].as_str()), (0, Some("ran")), "{report}{err}");
    assert_eq!(hub.arrivals().len(), 1);
    assert_eq!(event_count(&store, "fallback_forced").await, 1);
}
