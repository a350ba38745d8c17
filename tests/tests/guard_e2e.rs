//! Guarded self-healing and the manual canary end to end: the real binary,
//! a throwaway Postgres (or the embedded store), the State Hub stand-in.
//!
//! - `actcore trigger --wait`: exit 0 on a clean answer, 1 on C-00, 1 when
//!   the canary finds no event; `--local` with the embedded store and no
//!   worker; refused while the circuit is held open, `--force` audited; a
//!   queued run nobody claims expires.
//! - Two worker processes share one circuit; a retry queued by a replica
//!   that is then SIGKILLed runs once, on the other.

use std::time::Duration;

use actcore::store::{GuardStore, HistoryStore, RunFilter, RunRow, Store};
use actcore_tests::*;
use serde_json::Value;

const FAR: &str = "0 0 1 1 *"; // once a year: no scheduled fire during a test

async fn open(url: &str) -> Store {
    Store::open(Some(url)).await.expect("open the store")
}

async fn rows(store: &Store) -> Vec<RunRow> {
    let mut r = store
        .runs(&RunFilter {
            limit: 10_000,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    r.sort_by_key(|r| (r.fired_at, r.attempt));
    r
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A fresh database holding one synced activity (id 1) posting to `path` on the hub.
async fn one_activity(hub: &Hub, slug: &str, cron: &str, path: &str, extra: &str) -> String {
    let url = fresh_pg_url().await;
    let dir = tempfile::tempdir().unwrap();
    write_definition(
        dir.path(),
        slug,
        activity_id(1),
        cron,
        &format!("{}{path}", hub.url()),
        extra,
    );
    sync_dir(dir.path(), &url);
    url
}

fn canary(hub: &Hub, path: &str) -> String {
    format!("[canary]\nverify = \"{}{path}\"\n", hub.url())
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_wait_exits_0_when_clean_1_on_c00_and_1_without_the_canary_event() {
    let hub = Hub::start().await;
    let url = fresh_pg_url().await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let u = hub.url();
    write_definition(
        dir.path(),
        "clean",
        activity_id(1),
        FAR,
        &format!("{u}/fixture/ok-clean.json"),
        &canary(&hub, "/progress/"),
    );
    write_definition(
        dir.path(),
        "c00",
        activity_id(2),
        FAR,
        &format!("{u}/fixture/automation-error-c00.json"),
        &canary(&hub, "/progress/"),
    );
    // The remote answers clean, but its event list only holds yesterday's events.
    write_definition(
        dir.path(),
        "silent",
        activity_id(3),
        FAR,
        &format!("{u}/fixture/ok-clean.json"),
        &canary(&hub, "/fixture/progress-recent.json"),
    );
    sync_dir(dir.path(), &url);
    let worker = Worker::spawn(&["worker"], &url, &[], logs.path(), "w1");
    let env = [("DATABASE_URL", url.as_str())];

    let (code, out, err) = run_cli(&["trigger", "clean", "--wait", "--json", "--actor", "alice"], &env);
    assert_eq!(code, 0, "{out}{err}\n{}", worker.log_text());
    let r = json(&out);
    assert_eq!(
        (r["outcome"].as_str(), r["ok"].as_bool()),
        (Some("ok"), Some(true)),
        "{r}"
    );
    assert_eq!(r["canary"]["found"], true, "{r}");
    assert_eq!(r["worker_id"], "w1", "a worker executed it: {r}");
    assert_eq!(r["summary"]["skipped_clean"], 42, "{r}");
    let arrival = hub
        .arrivals()
        .into_iter()
        .find(|a| a.path.contains("ok-clean"))
        .unwrap();
    assert_eq!(arrival.source.as_deref(), Some("manual"));
    assert_eq!(arrival.scheduled_for, None);

    let (code, out, err) = run_cli(&["trigger", "c00", "--wait"], &env);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("automation_error (remote)"), "{out}");
    assert!(out.contains("C-00"), "the summary shows the check: {out}");

    let (code, out, err) = run_cli(&["trigger", "silent", "--wait", "--json"], &env);
    assert_eq!(code, 1, "{out}{err}");
    let r = json(&out);
    assert_eq!(
        (r["outcome"].as_str(), r["canary"]["found"].as_bool()),
        (Some("ok"), Some(false)),
        "{r}"
    );
    assert!(r["reason"].as_str().unwrap().contains("canary"), "{r}");

    let store = open(&url).await;
    let manual: Vec<RunRow> = rows(&store)
        .await
        .into_iter()
        .filter(|r| r.trigger == "manual")
        .collect();
    assert_eq!(manual.len(), 3);
    assert!(manual.iter().all(|r| r.source == "manual" && r.scheduled_for.is_none()));
    let kinds = store.event_kinds(Some(activity_id(1))).await.unwrap();
    assert!(kinds.iter().any(|(k, n)| k == "manual_trigger" && *n == 1), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_local_runs_with_the_embedded_store_and_no_worker() {
    let hub = Hub::start().await;
    let (_db, url) = fresh_sqlite_url();
    let dir = tempfile::tempdir().unwrap();
    write_definition(
        dir.path(),
        "clean",
        activity_id(1),
        FAR,
        &format!("{}/fixture/ok-clean.json", hub.url()),
        &canary(&hub, "/progress/"),
    );
    let (code, out, err) = run_cli(&["migrate"], &[("DATABASE_URL", url.as_str())]);
    assert_eq!(code, 0, "{out}{err}");
    sync_dir(dir.path(), &url);
    let env = [("DATABASE_URL", url.as_str())];
    let (code, out, err) = run_cli(&["trigger", "clean", "--local"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("run ") && out.contains(": ok") && out.contains("canary: found"),
        "{out}"
    );
    let store = open(&url).await;
    let r = rows(&store).await;
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].trigger.as_str(), r[0].state.as_str()), ("manual", "succeeded"));
    assert!(
        r[0].worker_id.as_deref().unwrap().starts_with("trigger-local-"),
        "{:?}",
        r[0].worker_id
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_no_worker_claims_expires_and_never_fires() {
    let hub = Hub::start().await;
    let url = one_activity(&hub, "clean", FAR, "/fixture/ok-clean.json", "").await;
    let env = [("DATABASE_URL", url.as_str())];
    let (code, out, err) = run_cli(&["trigger", "clean", "--wait", "--timeout", "1s", "--json"], &env);
    assert_eq!(code, 1, "{out}{err}");
    let r = json(&out);
    assert_eq!(
        (r["state"].as_str(), r["error_code"].as_str()),
        (Some("abandoned"), Some("expired")),
        "{r}"
    );
    assert!(r["reason"].as_str().unwrap().starts_with("timeout"), "{r}");
    // A worker started afterwards does not run it.
    let logs = tempfile::tempdir().unwrap();
    let worker = Worker::spawn(&["worker"], &url, &[], logs.path(), "late");
    eventually(Duration::from_secs(20), "the late worker to start", || async {
        worker.log_text().contains("worker started").then_some(())
    })
    .await;
    let store = open(&url).await;
    let all = rows(&store).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].state, "abandoned");
    assert!(hub.arrivals().is_empty(), "never sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_is_refused_while_the_circuit_is_held_open_and_force_is_audited() {
    let hub = Hub::start().await;
    let url = one_activity(&hub, "clean", FAR, "/fixture/ok-clean.json", "").await;
    let env = [("DATABASE_URL", url.as_str())];
    let (code, out, err) = run_cli(
        &[
            "circuit",
            "open",
            "clean",
            "--reason",
            "bridge maintenance",
            "--actor",
            "bob",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_cli(&["trigger", "clean", "--wait"], &env);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("held open by bob") && err.contains("circuit reset clean") && err.contains("--force"),
        "{err}"
    );
    let store = open(&url).await;
    assert!(rows(&store).await.is_empty(), "nothing queued");
    let (code, out, err) = run_cli(
        &[
            "trigger",
            "clean",
            "--local",
            "--force",
            "--actor",
            "carol",
            "--reason",
            "probe before reset",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let r = rows(&store).await;
    assert_eq!((r.len(), r[0].outcome.as_deref()), (1, Some("ok")));
    let events =
        sqlx::query_as::<_, (String, Value)>("select kind, detail from activity_events where kind = 'manual_trigger'")
            .fetch_all(&sqlx::PgPool::connect(&url).await.unwrap())
            .await
            .unwrap();
    assert_eq!(events.len(), 1);
    let d = &events[0].1;
    assert_eq!(
        (d["actor"].as_str(), d["reason"].as_str(), d["forced"].as_bool()),
        (Some("carol"), Some("probe before reset"), Some(true)),
        "{d}"
    );
    assert!(d["bypassed"].as_str().unwrap().contains("held open"), "{d}");
    // The hold stays: the forced run did not reset it.
    let g = store.guards(&[activity_id(1)]).await.unwrap();
    assert_eq!(g[0].circuit, "open");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_error_streak_lives_in_the_database_so_the_next_replica_opens_the_circuit() {
    let hub = Hub::start().await;
    let logs = tempfile::tempdir().unwrap();
    // Every other second, always a 502; two errors in a row open the circuit for an hour.
    let extra = "misfire_grace = \"1s\"\noverlap = \"allow\"\n[retry]\nmax_attempts = 1\n[guard]\nopen_after = 2\nopen_for = \"1h\"\ncooldown = \"0s\"\n";
    let url = one_activity(&hub, "down", "*/2 * * * * *", "/fixture/bridge-502.html", extra).await;
    let store = open(&url).await;
    let errors = |rows: &[RunRow]| -> Vec<RunRow> {
        rows.iter()
            .filter(|r| r.outcome.as_deref() == Some("automation_error"))
            .cloned()
            .collect()
    };
    // Replica A records one error, then stops.
    let mut a = Worker::spawn(&["worker"], &url, &[], logs.path(), "wa");
    eventually(Duration::from_secs(20), "A's first error", || async {
        (!errors(&rows(&store).await).is_empty()).then_some(())
    })
    .await;
    a.signal(15);
    a.child.wait().await.unwrap();
    assert_eq!(store.guards(&[activity_id(1)]).await.unwrap()[0].consecutive_errors, 1);
    // Replica B continues the same streak: its first error is the second in a row.
    let b = Worker::spawn(&["worker"], &url, &[], logs.path(), "wb");
    let all = eventually(Duration::from_secs(30), "two blocked instants", || async {
        let r = rows(&store).await;
        let n = r
            .iter()
            .filter(|r| r.outcome.as_deref() == Some("blocked_circuit_open"))
            .count();
        (n >= 2).then_some(r)
    })
    .await;
    let e = errors(&all);
    let who: Vec<Option<&str>> = e.iter().map(|r| r.worker_id.as_deref()).collect();
    assert_eq!(who, [Some("wa"), Some("wb")], "{all:?}\n{}", b.log_text());
    assert_eq!(hub.arrivals().len(), 2, "nothing was sent while it was open");
    let g = store.guards(&[activity_id(1)]).await.unwrap();
    assert_eq!((g[0].circuit.as_str(), g[0].consecutive_errors), ("open", 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_queued_by_a_replica_that_is_then_sigkilled_runs_once_on_another() {
    let hub = Hub::start().await;
    let logs = tempfile::tempdir().unwrap();
    // The first request fails (502); its retry waits a 4 s cooldown.
    let extra = "[retry]\nmax_attempts = 3\ninitial_interval = \"1s\"\n[guard]\ncooldown = \"4s\"\n";
    let url = one_activity(&hub, "flaky", "*/30 * * * * *", "/flaky/1/sweep", extra).await;
    let a = Worker::spawn(&["worker", "--lease", "2s"], &url, &[], logs.path(), "wa");
    let store = open(&url).await;
    let queued = eventually(Duration::from_secs(45), "the queued retry", || async {
        rows(&store)
            .await
            .into_iter()
            .find(|r| r.trigger == "retry" && r.state == "queued")
    })
    .await;
    a.signal(9);
    let b = Worker::spawn(&["worker", "--lease", "2s"], &url, &[], logs.path(), "wb");
    let done = eventually(Duration::from_secs(30), "the retry to run", || async {
        let r = store.run_by_id(queued.run_id).await.unwrap()?;
        (r.state != "queued" && r.state != "running").then_some(r)
    })
    .await;
    assert_eq!(
        (done.outcome.as_deref(), done.worker_id.as_deref()),
        (Some("ok"), Some("wb")),
        "{}",
        b.log_text()
    );
    assert_eq!(done.attempt, 2);
    let retries: Vec<RunRow> = rows(&store)
        .await
        .into_iter()
        .filter(|r| r.trigger == "retry")
        .collect();
    assert_eq!(retries.len(), 1, "{retries:?}");
    let sent = hub.arrivals().iter().filter(|a| a.path == "/flaky/1/sweep").count();
    assert!(sent >= 2);
    // Exactly one request carried the retry (its scheduled instant is the first run's).
    let first = rows(&store)
        .await
        .into_iter()
        .find(|r| r.trigger == "schedule")
        .unwrap();
    let for_instant = hub
        .arrivals()
        .iter()
        .filter(|a| a.scheduled_for == first.scheduled_for)
        .count();
    assert_eq!(for_instant, 2, "the first attempt and its one retry");
}
