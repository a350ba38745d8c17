//! End-to-end faults: the built binary against a real Postgres, under the
//! operator's bad days: a body Postgres cannot store, and the database
//! going away for 20 s while activities fire and a slow action is in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actcore::schedule::Schedule;
use actcore::store::{HistoryStore, RunFilter, RunRow, Store};
use actcore_tests::{Hub, PgCluster, Worker, create_database, eventually, fresh_pg_url, write_definition};
use jiff::Timestamp;

use actcore_tests::{activity_id as id, sync_dir as sync};

async fn all_runs(url: &str) -> Vec<RunRow> {
    let store = Store::open(Some(url)).await.unwrap();
    store
        .runs(&RunFilter {
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn stop(mut w: Worker, within: Duration) -> std::process::ExitStatus {
    w.signal(15);
    tokio::time::timeout(within, w.child.wait())
        .await
        .unwrap_or_else(|_| panic!("worker did not exit within {within:?} of SIGTERM:\n{}", w.log_text()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn fault2_bodies_postgres_cannot_store_are_recorded_and_nothing_wedges() {
    let hub = Hub::start().await;
    let url = fresh_pg_url().await;
    let dir = tempfile::tempdir().unwrap();
    for (n, slug, route) in [
        (1, "nul-json", "nul/json"),
        (2, "nul-raw", "nul/raw"),
        (3, "clean", "sink/clean"),
    ] {
        write_definition(
            dir.path(),
            slug,
            id(n),
            "* * * * * *",
            &format!("{}/{route}", hub.url()),
            "",
        );
    }
    sync(dir.path(), &url);
    let logs = tempfile::tempdir().unwrap();
    let w = Worker::spawn(&["worker"], &url, &[], logs.path(), "w-nul");
    // Three instants of each, all written: the recorder is not wedged.
    eventually(
        Duration::from_secs(20),
        "three finished runs of each activity",
        || async {
            let rows = all_runs(&url).await;
            let done = |n| {
                rows.iter()
                    .filter(|r| r.definition_id == id(n) && r.state != "running")
                    .count()
            };
            (done(1) >= 3 && done(2) >= 3 && done(3) >= 3).then_some(())
        },
    )
    .await;
    let status = stop(w, Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    let rows = all_runs(&url).await;
    assert!(rows.iter().all(|r| r.state != "running"), "none left running: {rows:?}");
    // A JSON body is a success; a text body is a bad_response: either way recorded.
    for (n, state) in [(1, "succeeded"), (2, "failed")] {
        let sanitized: Vec<&RunRow> = rows
            .iter()
            .filter(|r| r.definition_id == id(n) && r.state == state)
            .collect();
        assert!(sanitized.len() >= 3, "activity {n}: {rows:?}");
        for r in sanitized {
            assert!(
                r.context_snapshot["sanitized"]["nul_characters_escaped"].as_u64() >= Some(1),
                "activity {n}: {}",
                r.context_snapshot
            );
        }
    }
}

/// Every instant of `schedule` from the first to the last one recorded is
/// exactly one run row or inside exactly one misfire summary.
fn assert_each_instant_once(label: &str, schedule: &Schedule, rows: &[&RunRow]) {
    let mut covered: BTreeMap<Timestamp, Vec<String>> = BTreeMap::new();
    for r in rows {
        let m = &r.context_snapshot["misfire"];
        if r.outcome.as_deref() == Some("skipped_misfire") && m.is_object() {
            let first: Timestamp = m["first"].as_str().unwrap().parse().unwrap();
            let last: Timestamp = m["last"].as_str().unwrap().parse().unwrap();
            let mut at = first;
            let mut n = 0;
            while at <= last {
                covered.entry(at).or_default().push(format!("misfire {}", r.run_id));
                n += 1;
                at = schedule.next_after(at).unwrap();
            }
            assert_eq!(
                m["count"].as_u64(),
                Some(n),
                "{label}: a summary's count is its range: {m}"
            );
        } else {
            covered
                .entry(r.scheduled_for.unwrap())
                .or_default()
                .push(format!("{} {}", r.state, r.run_id));
        }
    }
    let (first, last) = (*covered.keys().next().unwrap(), *covered.keys().last().unwrap());
    let mut at = first;
    let mut missing = Vec::new();
    while at <= last {
        if !covered.contains_key(&at) {
            missing.push(at);
        }
        at = schedule.next_after(at).unwrap();
    }
    let doubled: Vec<_> = covered.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        missing.is_empty(),
        "{label}: instants with neither a run nor a misfire: {missing:?}"
    );
    assert!(doubled.is_empty(), "{label}: instants recorded twice: {doubled:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fault8_a_database_restart_loses_no_instant_and_the_worker_recovers() {
    let pg = PgCluster::start();
    let url = create_database(&pg.url(), "actcore_outage")
        .await
        .expect("a database on the own cluster");
    Store::open_and_migrate(Some(&url)).await.expect("migrate");
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let every_2s = "*/2 * * * * *";
    for n in 1..=2 {
        write_definition(
            dir.path(),
            &format!("fast-{n}"),
            id(n),
            every_2s,
            &format!("{}/sink/fast-{n}", hub.url()),
            "",
        );
    }
    // A slow action (8 s) every 10 s: one is in flight when the database stops.
    write_definition(
        dir.path(),
        "slow",
        id(3),
        "*/10 * * * * *",
        &format!("{}/slow/8000", hub.url()),
        "",
    );
    std::fs::write(
        dir.path().join("slow.toml"),
        std::fs::read_to_string(dir.path().join("slow.toml"))
            .unwrap()
            .replace("timeout = \"5s\"", "timeout = \"15s\""),
    )
    .unwrap();
    sync(dir.path(), &url);
    let logs = tempfile::tempdir().unwrap();
    let w = Worker::spawn(&["worker", "--lease", "60s"], &url, &[], logs.path(), "w-outage");

    // Running normally, with the slow action in flight.
    eventually(
        Duration::from_secs(30),
        "a slow request in flight and fast runs recorded",
        || async {
            let slow_sent = hub.arrivals().iter().any(|a| a.path.starts_with("/slow/"));
            let rows = all_runs(&url).await;
            let fast_done = rows.iter().filter(|r| r.state == "succeeded").count();
            let slow_running = rows.iter().any(|r| r.definition_id == id(3) && r.state == "running");
            (slow_sent && slow_running && fast_done >= 2).then_some(())
        },
    )
    .await;
    let stopped_at = Timestamp::now();
    pg.ctl_stop();
    tokio::time::sleep(Duration::from_secs(20)).await; // the outage itself, not a synchronisation
    pg.ctl_start();
    let restarted_at = Timestamp::now();

    // Recovered by itself: new instants fire and the slow run's result lands.
    eventually(
        Duration::from_secs(40),
        "runs after the restart and nothing left running",
        || async {
            let rows = all_runs(&url).await;
            let fresh = rows
                .iter()
                .filter(|r| {
                    r.state == "succeeded"
                        && r.scheduled_for
                            .is_some_and(|s| s > restarted_at + jiff::SignedDuration::from_secs(3))
                })
                .count();
            let running_old = rows
                .iter()
                .any(|r| r.state == "running" && r.scheduled_for.is_some_and(|s| s < restarted_at));
            (fresh >= 2 && !running_old).then_some(())
        },
    )
    .await;
    let status = stop(w, Duration::from_secs(30)).await;
    let log = std::fs::read_to_string(logs.path().join("w-outage.log")).unwrap_or_default();
    assert!(status.success(), "{status:?}\n{log}");

    let rows = all_runs(&url).await;
    assert!(
        rows.iter().all(|r| r.state != "running"),
        "none left running: {:?}",
        rows.iter().filter(|r| r.state == "running").collect::<Vec<_>>()
    );
    let schedule = Schedule::new(every_2s, "UTC").unwrap();
    for n in 1..=2 {
        let mine: Vec<&RunRow> = rows.iter().filter(|r| r.definition_id == id(n)).collect();
        assert_each_instant_once(&format!("fast-{n}"), &schedule, &mine);
        let span: BTreeSet<Timestamp> = mine.iter().filter_map(|r| r.scheduled_for).collect();
        assert!(
            span.first().is_some_and(|f| *f < stopped_at) && span.last().is_some_and(|l| *l > restarted_at),
            "fast-{n} spans the outage: {span:?}"
        );
        let overlaps: Vec<&&RunRow> = mine
            .iter()
            .filter(|r| r.outcome.as_deref() == Some("skipped_overlap"))
            .collect();
        assert!(
            overlaps.is_empty(),
            "fast-{n}: a finished run waiting to be written is not an overlap: {overlaps:#?}\nall: {:#?}\n{log}",
            mine.iter()
                .map(|r| (
                    r.scheduled_for,
                    &r.state,
                    &r.outcome,
                    &r.error_code,
                    r.started_at,
                    r.finished_at
                ))
                .collect::<Vec<_>>()
        );
    }
    // The slow run in flight across the outage ends with its real result.
    let slow_across = rows
        .iter()
        .filter(|r| r.definition_id == id(3))
        .find(|r| r.started_at.is_some_and(|s| s < stopped_at))
        .expect("the slow run started before the outage");
    assert_eq!(slow_across.state, "succeeded", "{slow_across:?}\n{log}");
}
