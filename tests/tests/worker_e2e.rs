//! End-to-end: the built `actcore` binary against a real Postgres and a
//! local State Hub stand-in. These take seconds each (they wait for real
//! cron instants), which is why they live here and not in unit tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use actcore::store::{HistoryStore, RunFilter, RunRow, Store};
use actcore_tests::{Hub, Worker, eventually, fresh_pg_url, run_cli, write_definition};
use jiff::Timestamp;
use uuid::Uuid;

use actcore_tests::{activity_id as id, sync_dir as sync};

/// A fresh database holding one activity, `id(1)`, firing every second at
/// the hub's `/sink/{slug}`; returns its URL and the definitions directory.
async fn one_activity_every_second(hub: &Hub, slug: &str, extra: &str) -> (String, tempfile::TempDir) {
    let url = fresh_pg_url().await;
    let dir = tempfile::tempdir().unwrap();
    write_definition(
        dir.path(),
        slug,
        id(1),
        "* * * * * *",
        &format!("{}/sink/{slug}", hub.url()),
        extra,
    );
    sync(dir.path(), &url);
    (url, dir)
}

async fn all_runs(store: &Store) -> Vec<RunRow> {
    store
        .runs(&RunFilter {
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap()
}

fn by_def(runs: &[RunRow]) -> HashMap<Uuid, Vec<&RunRow>> {
    let mut m: HashMap<Uuid, Vec<&RunRow>> = HashMap::new();
    for r in runs {
        m.entry(r.definition_id).or_default().push(r);
    }
    m
}

async fn stop(mut w: Worker) -> std::process::ExitStatus {
    w.signal(15);
    tokio::time::timeout(Duration::from_secs(20), w.child.wait())
        .await
        .expect("worker exits after SIGTERM")
        .unwrap()
}

/// Scheduled instants of one activity, sorted, with duplicates kept.
fn instants(rows: &[&RunRow]) -> Vec<Timestamp> {
    let mut v: Vec<Timestamp> = rows
        .iter()
        .filter(|r| r.trigger == "schedule")
        .filter_map(|r| r.scheduled_for)
        .collect();
    v.sort();
    v
}

fn assert_every_second(label: &str, ts: &[Timestamp], step: i64) {
    for w in ts.windows(2) {
        let gap = w[1].as_second() - w[0].as_second();
        assert_eq!(
            gap, step,
            "{label}: instants {} and {} are not consecutive (all: {ts:?})",
            w[0], w[1]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_fixture_classifies_as_its_table_says_and_rows_survive_failures() {
    let hub = Hub::start().await;
    let url = fresh_pg_url().await;
    let dir = tempfile::tempdir().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cases: Vec<(&str, String, &str, Option<&str>)> = vec![
        ("ok-clean", format!("{}/fixture/ok-clean.json", hub.url()), "ok", None),
        (
            "assessment",
            format!("{}/fixture/assessment-failures.json", hub.url()),
            "assessment_failures",
            None,
        ),
        (
            "lock",
            format!("{}/fixture/lock-skipped.json", hub.url()),
            "lock_skipped",
            None,
        ),
        (
            "budget",
            format!("{}/fixture/budget-exhausted.json", hub.url()),
            "ok",
            None,
        ),
        (
            "c00",
            format!("{}/fixture/automation-error-c00.json", hub.url()),
            "automation_error",
            Some("remote"),
        ),
        (
            "bridge",
            format!("{}/fixture/bridge-502.html", hub.url()),
            "automation_error",
            Some("http_5xx"),
        ),
        (
            "truncated",
            format!("{}/fixture/truncated.json", hub.url()),
            "automation_error",
            Some("bad_response"),
        ),
        (
            "big",
            format!("{}/big", hub.url()),
            "automation_error",
            Some("bad_response"),
        ),
        (
            "down",
            format!("http://127.0.0.1:{closed}/sweep"),
            "automation_error",
            Some("transport"),
        ),
        (
            "unset-var",
            "${ACTCORE_E2E_SURELY_UNSET}/x".to_string(),
            "automation_error",
            Some("config"),
        ),
    ];
    for (i, (slug, target, _, _)) in cases.iter().enumerate() {
        write_definition(dir.path(), slug, id(i as u128 + 1), "* * * * * *", target, "");
    }
    sync(dir.path(), &url);
    let logs = tempfile::tempdir().unwrap();
    let w = Worker::spawn(&["worker"], &url, &[], logs.path(), "w1");
    let store = Store::open(Some(&url)).await.unwrap();
    let rows = eventually(Duration::from_secs(20), "a finished run of every activity", || async {
        let rows = all_runs(&store).await;
        let done: HashSet<Uuid> = rows
            .iter()
            .filter(|r| r.finished_at.is_some())
            .map(|r| r.definition_id)
            .collect();
        (done.len() == cases.len()).then_some(rows)
    })
    .await;
    assert!(stop(w).await.success());

    for (i, (slug, _, outcome, code)) in cases.iter().enumerate() {
        let r = rows
            .iter()
            .find(|r| r.definition_id == id(i as u128 + 1) && r.finished_at.is_some())
            .unwrap();
        assert_eq!(r.outcome.as_deref(), Some(*outcome), "{slug}: {r:#?}");
        assert_eq!(r.error_code.as_deref(), *code, "{slug}: {r:#?}");
        assert_eq!(r.automation_error, code.is_some(), "{slug}");
        let expected_state = if code.is_some() { "failed" } else { "succeeded" };
        assert_eq!(r.state, expected_state, "{slug}");
        let snap = &r.context_snapshot;
        assert_eq!(snap["trigger"], "schedule", "{slug}: {snap}");
        assert!(
            snap["spec_hash"].as_str().is_some_and(|h| h.len() == 64),
            "{slug}: {snap}"
        );
        assert!(snap["lateness_ms"].is_number(), "{slug}: {snap}");
        assert_eq!(r.worker_id.as_deref(), Some("w1"));
    }
    let assessed = rows
        .iter()
        .find(|r| r.definition_id == id(2) && r.finished_at.is_some())
        .unwrap();
    assert_eq!(assessed.assessment_failures, 2);
    assert_eq!(
        assessed.context_snapshot["assessment"]["assessment_failures"], 2,
        "body kept under snapshot_key"
    );
    assert_eq!(assessed.context_snapshot["http_status"], 200);

    // The hub saw the run id as the idempotency key and who fired it.
    let arrivals = hub.arrivals();
    let ok_run = rows
        .iter()
        .find(|r| r.definition_id == id(1) && r.finished_at.is_some())
        .unwrap();
    let a = arrivals
        .iter()
        .find(|a| a.idempotency_key.as_deref() == Some(&ok_run.run_id.to_string()))
        .unwrap();
    assert_eq!(a.source.as_deref(), Some("activity-core"));
    assert_eq!(a.scheduled_for, ok_run.scheduled_for);
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_fire_every_instant_exactly_once() {
    let hub = Hub::start().await;
    let url = fresh_pg_url().await;
    let dir = tempfile::tempdir().unwrap();
    for n in 0..20u128 {
        write_definition(
            dir.path(),
            &format!("a{n}"),
            id(n),
            "* * * * * *",
            &format!("{}/sink/a{n}", hub.url()),
            "",
        );
    }
    sync(dir.path(), &url);
    let logs = tempfile::tempdir().unwrap();
    let workers: Vec<Worker> = (0..3)
        .map(|i| Worker::spawn(&["worker"], &url, &[], logs.path(), &format!("r{i}")))
        .collect();
    let store = Store::open(Some(&url)).await.unwrap();
    // Let every replica come up, then observe a window of whole seconds.
    eventually(Duration::from_secs(20), "first runs", || async {
        (all_runs(&store).await.len() >= 20).then_some(())
    })
    .await;
    // The window ends once every activity has finished ten more instants
    // (an observable condition, not a fixed sleep).
    let from = Timestamp::now();
    eventually(
        Duration::from_secs(40),
        "ten more instants of every activity",
        || async {
            let rows = all_runs(&store).await;
            let per = by_def(&rows);
            (0..20u128)
                .all(|n| {
                    per.get(&id(n)).is_some_and(|mine| {
                        mine.iter()
                            .filter(|r| r.state == "succeeded" && r.scheduled_for.is_some_and(|s| s > from))
                            .count()
                            >= 10
                    })
                })
                .then_some(())
        },
    )
    .await;
    let to = Timestamp::now();
    for w in workers {
        assert!(stop(w).await.success());
    }
    let rows = all_runs(&store).await;
    let per = by_def(&rows);
    let window =
        |t: &Timestamp| *t > from + jiff::SignedDuration::from_secs(1) && *t < to - jiff::SignedDuration::from_secs(1);
    let mut winners = HashSet::new();
    for n in 0..20u128 {
        let mine = per.get(&id(n)).cloned().unwrap_or_default();
        let ts: Vec<Timestamp> = instants(&mine).into_iter().filter(window).collect();
        assert!(ts.len() >= 8, "a{n}: only {} instants in the window", ts.len());
        assert_every_second(&format!("a{n}"), &ts, 1);
        winners.extend(mine.iter().filter_map(|r| r.worker_id.clone()));
    }
    // Every run ok, but those claimed ahead of an instant that SIGTERM
    // reached before it was sent (recorded abandoned/shutdown, never sent).
    let not_ok: Vec<&RunRow> = rows
        .iter()
        .filter(|r| r.outcome.as_deref() != Some("ok"))
        .filter(|r| !(r.error_code.as_deref() == Some("shutdown") && r.scheduled_for.is_some_and(|s| s > to)))
        .collect();
    assert!(not_ok.is_empty(), "every run ok: {not_ok:#?}");
    // The hub received each (activity, instant) exactly once.
    let mut seen: BTreeMap<(String, Timestamp), u32> = BTreeMap::new();
    for a in hub.arrivals() {
        *seen.entry((a.path.clone(), a.scheduled_for.unwrap())).or_default() += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "doubled deliveries: {doubled:?}");
    assert_eq!(seen.len(), rows.len(), "one delivery per run row");
    assert!(!winners.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replicas_runs_are_abandoned_and_survivors_keep_firing() {
    let hub = Hub::start().await;
    let url = fresh_pg_url().await;
    let dir = tempfile::tempdir().unwrap();
    // Runs take 1.5 s and overlap is allowed, so a replica always has runs in flight.
    for n in 0..10u128 {
        write_definition(
            dir.path(),
            &format!("s{n}"),
            id(n),
            "* * * * * *",
            &format!("{}/slow/1500", hub.url()),
            "overlap = \"allow\"",
        );
    }
    sync(dir.path(), &url);
    let logs = tempfile::tempdir().unwrap();
    let args = ["worker", "--lease", "2s"];
    let mut workers: Vec<Worker> = (0..3)
        .map(|i| Worker::spawn(&args, &url, &[], logs.path(), &format!("k{i}")))
        .collect();
    let store = Store::open(Some(&url)).await.unwrap();
    // Wait until the victim holds a run in flight, then SIGKILL it.
    let victim = workers.remove(0);
    eventually(Duration::from_secs(20), "k0 to hold a running run", || async {
        all_runs(&store)
            .await
            .iter()
            .any(|r| r.worker_id.as_deref() == Some("k0") && r.state == "running")
            .then_some(())
    })
    .await;
    let killed_at = Timestamp::now();
    victim.signal(9);
    // Its runs become abandoned once the lease (2 s) expires and a survivor reaps them.
    let abandoned = eventually(Duration::from_secs(15), "k0's runs abandoned", || async {
        let rows = all_runs(&store).await;
        let lost: Vec<RunRow> = rows
            .into_iter()
            .filter(|r| r.worker_id.as_deref() == Some("k0"))
            .collect();
        (lost.iter().all(|r| r.state != "running") && lost.iter().any(|r| r.state == "abandoned")).then_some(lost)
    })
    .await;
    for r in abandoned.iter().filter(|r| r.state == "abandoned") {
        assert_eq!(r.error_code.as_deref(), Some("worker_lost"), "{r:#?}");
        assert!(r.automation_error);
    }
    let until = Timestamp::now() + jiff::SignedDuration::from_secs(3);
    eventually(Duration::from_secs(10), "three more seconds of firing", || async {
        (Timestamp::now() > until).then_some(())
    })
    .await;
    for w in workers {
        assert!(stop(w).await.success());
    }
    let rows = all_runs(&store).await;
    let per = by_def(&rows);
    for n in 0..10u128 {
        let ts: Vec<Timestamp> = instants(&per[&id(n)])
            .into_iter()
            .filter(|t| *t > killed_at - jiff::SignedDuration::from_secs(3) && *t < until)
            .collect();
        assert_every_second(&format!("s{n}"), &ts, 1);
    }
    let kinds = store.event_kinds(None).await.unwrap();
    assert!(kinds.iter().any(|(k, n)| k == "run_abandoned" && *n > 0), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn instants_missed_while_down_are_recorded_as_misfires_never_fired_late() {
    let hub = Hub::start().await;
    let (url, _dir) = one_activity_every_second(&hub, "tick", "misfire_grace = \"1s\"").await;
    let logs = tempfile::tempdir().unwrap();
    let store = Store::open(Some(&url)).await.unwrap();
    let w = Worker::spawn(&["worker"], &url, &[], logs.path(), "m1");
    eventually(Duration::from_secs(10), "two runs", || async {
        (all_runs(&store).await.len() >= 2).then_some(())
    })
    .await;
    assert!(stop(w).await.success());
    let down_from = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(5)).await; // the outage under test
    let w = Worker::spawn(&["worker"], &url, &[], logs.path(), "m2");
    let misfire = eventually(Duration::from_secs(10), "a misfire summary", || async {
        all_runs(&store)
            .await
            .into_iter()
            .find(|r| r.outcome.as_deref() == Some("skipped_misfire"))
    })
    .await;
    eventually(Duration::from_secs(10), "m2 firing", || async {
        all_runs(&store)
            .await
            .iter()
            .any(|r| r.worker_id.as_deref() == Some("m2") && r.state == "succeeded")
            .then_some(())
    })
    .await;
    assert!(stop(w).await.success());
    let m = &misfire.context_snapshot["misfire"];
    assert!(
        m["count"].as_u64().unwrap() >= 3,
        "several instants summarised in one row: {m}"
    );
    assert_eq!(misfire.state, "skipped");
    let misfires = all_runs(&store)
        .await
        .into_iter()
        .filter(|r| r.outcome.as_deref() == Some("skipped_misfire"))
        .count();
    assert_eq!(misfires, 1, "one summary row, not one per instant");
    // Nothing fired late: every request reached the stand-in within the
    // grace of its instant (its arrival time, not the planned `fired_at`),
    // and each executed run's recorded lateness says the same.
    let arrivals = hub.arrivals();
    assert!(arrivals.len() >= 2, "both workers sent: {arrivals:?}");
    for a in &arrivals {
        let instant = a.scheduled_for.expect("X-Actcore-Scheduled-For on every request");
        let late = a.at.duration_since(instant);
        assert!(
            late < jiff::SignedDuration::from_secs(1),
            "arrived {late:?} after its instant: {a:?}"
        );
    }
    for r in all_runs(&store).await.iter().filter(|r| r.state == "succeeded") {
        let late_ms = r.context_snapshot["lateness_ms"].as_i64().expect("lateness_ms");
        assert!(late_ms < 1000, "sent {late_ms} ms late: {r:#?}");
    }
    let first: Timestamp = m["first"].as_str().unwrap().parse().unwrap();
    assert!(
        first > down_from - jiff::SignedDuration::from_secs(2),
        "summary starts at the outage"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_synced_change_takes_effect_without_restart_or_disturbing_others() {
    let hub = Hub::start().await;
    let url = fresh_pg_url().await;
    let dir = tempfile::tempdir().unwrap();
    let steady = |d: &Path| {
        write_definition(
            d,
            "steady",
            id(1),
            "* * * * * *",
            &format!("{}/sink/steady", hub.url()),
            "",
        )
    };
    steady(dir.path());
    write_definition(
        dir.path(),
        "changing",
        id(2),
        "*/2 * * * * *",
        &format!("{}/sink/changing", hub.url()),
        "",
    );
    sync(dir.path(), &url);
    let logs = tempfile::tempdir().unwrap();
    let store = Store::open(Some(&url)).await.unwrap();
    let w = Worker::spawn(&["worker", "--reread", "30s"], &url, &[], logs.path(), "c1");
    eventually(Duration::from_secs(10), "changing to fire", || async {
        all_runs(&store)
            .await
            .iter()
            .any(|r| r.definition_id == id(2))
            .then_some(())
    })
    .await;
    write_definition(
        dir.path(),
        "changing",
        id(2),
        "*/3 * * * * *",
        &format!("{}/sink/changing", hub.url()),
        "",
    );
    sync(dir.path(), &url);
    let changed_at = Timestamp::now();
    // The NOTIFY wakes the worker: the new schedule is used well before the 30 s re-read.
    eventually(Duration::from_secs(10), "two runs on the new schedule", || async {
        let n = all_runs(&store)
            .await
            .iter()
            .filter(|r| {
                r.definition_id == id(2)
                    && r.scheduled_for
                        .is_some_and(|t| t > changed_at + jiff::SignedDuration::from_secs(1))
            })
            .count();
        (n >= 2).then_some(())
    })
    .await;
    assert!(stop(w).await.success());
    let rows = all_runs(&store).await;
    let per = by_def(&rows);
    for t in instants(&per[&id(2)]) {
        if t > changed_at + jiff::SignedDuration::from_secs(1) {
            assert_eq!(t.as_second() % 3, 0, "after the change only */3 instants: {t}");
        }
    }
    let steady_ts = instants(&per[&id(1)]);
    assert_every_second("steady", &steady_ts, 1);
    assert!(
        steady_ts.iter().any(|t| *t > changed_at),
        "steady kept firing across the change"
    );
    let (code, out, _) = run_cli(
        &["sync", "--definitions", dir.path().to_str().unwrap(), "--json"],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(code, 0);
    assert!(out.contains("\"unchanged\": 2"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_run_finish_within_the_grace_and_abandons_it_past_the_grace() {
    let hub = Hub::start().await;
    for (grace, slow_ms, expect_state, expect_code) in [
        ("10s", 1500, "succeeded", None),
        ("300ms", 4000, "abandoned", Some("shutdown")),
    ] {
        let url = fresh_pg_url().await;
        let dir = tempfile::tempdir().unwrap();
        write_definition(
            dir.path(),
            "long",
            id(1),
            "* * * * * *",
            &format!("{}/slow/{slow_ms}", hub.url()),
            "",
        );
        sync(dir.path(), &url);
        let logs = tempfile::tempdir().unwrap();
        let store = Store::open(Some(&url)).await.unwrap();
        let w = Worker::spawn(&["worker", "--shutdown-grace", grace], &url, &[], logs.path(), "g1");
        // In flight: its request reached the stand-in (a run claimed ahead
        // but not sent yet is abandoned at SIGTERM: no request starts after it).
        let run = eventually(Duration::from_secs(10), "a request in flight", || async {
            let sent = hub.arrivals().last()?.scheduled_for?;
            all_runs(&store)
                .await
                .into_iter()
                .find(|r| r.state == "running" && r.scheduled_for == Some(sent))
        })
        .await;
        let status = stop(w).await;
        assert!(status.success(), "exit 0 after SIGTERM (grace {grace}): {status:?}");
        let rows = all_runs(&store).await;
        let r = rows.iter().find(|r| r.run_id == run.run_id).unwrap();
        assert_eq!(r.state, expect_state, "grace {grace}: {r:#?}");
        assert_eq!(r.error_code.as_deref(), expect_code, "grace {grace}");
        assert!(
            rows.iter().all(|r| r.state != "running"),
            "nothing left running after exit"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_worker_on_the_embedded_store_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("actcore.db").display());
    let defs = tempfile::tempdir().unwrap();
    write_definition(defs.path(), "x", id(1), "0 0 1 1 *", "http://127.0.0.1:9/x", "");
    let logs = tempfile::tempdir().unwrap();
    let first = Worker::spawn(
        &["dev", "--definitions", defs.path().to_str().unwrap()],
        &db,
        &[],
        logs.path(),
        "first",
    );
    eventually(Duration::from_secs(10), "the first worker to start", || async {
        first.log_text().contains("worker started").then_some(())
    })
    .await;
    let (code, _, err) = run_cli(&["worker"], &[("DATABASE_URL", &db)]);
    assert_eq!(code, 78, "{err}");
    let pid = first.child.id().unwrap().to_string();
    assert!(
        err.contains(&pid) && err.contains("Postgres"),
        "names the holder and the way out: {err}"
    );
    assert!(stop(first).await.success());
}

/// A claim that fails (here: a trigger that raises while a fault row exists,
/// standing in for a dropped connection or a failover) is retried within
/// the grace; the instant then fires once, late but not lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_claim_is_retried_and_its_instant_still_fires_once() {
    use sqlx::Connection;
    let hub = Hub::start().await;
    let (url, _dir) = one_activity_every_second(&hub, "flaky-db", "").await;
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    for sql in [
        "create table test_faults (reason text)",
        "create function test_fail_claims() returns trigger language plpgsql as $$
         begin
           if exists (select 1 from test_faults) then raise exception 'injected fault'; end if;
           return null;
         end $$",
        "create trigger test_fail_claims before insert on activity_runs
         for each statement execute function test_fail_claims()",
        "insert into test_faults values ('database away')",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let logs = tempfile::tempdir().unwrap();
    let w = Worker::spawn(&["worker"], &url, &[], logs.path(), "f1");
    let failed: Timestamp = eventually(Duration::from_secs(15), "a failed claim being retried", || async {
        let log = w.log_text();
        let line = log.lines().find(|l| l.contains("claim failed; retrying"))?;
        let at = line.split("instant=").nth(1)?.split_whitespace().next()?;
        Some(at.trim_matches('"').parse().unwrap())
    })
    .await;
    sqlx::raw_sql("delete from test_faults")
        .execute(&mut admin)
        .await
        .unwrap();

    let store = Store::open(Some(&url)).await.unwrap();
    let row = eventually(Duration::from_secs(15), "the failed instant recorded", || async {
        all_runs(&store)
            .await
            .into_iter()
            .find(|r| r.scheduled_for == Some(failed) && r.state == "succeeded")
    })
    .await;
    assert!(stop(w).await.success());
    assert_eq!(row.outcome.as_deref(), Some("ok"), "{row:#?}");
    let rows = all_runs(&store).await;
    assert_eq!(
        rows.iter().filter(|r| r.scheduled_for == Some(failed)).count(),
        1,
        "one row for the retried instant"
    );
    let delivered = hub
        .arrivals()
        .iter()
        .filter(|a| a.scheduled_for == Some(failed))
        .count();
    assert_eq!(delivered, 1, "the retried instant was sent exactly once");
}
