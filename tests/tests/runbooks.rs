//! The runbooks cannot drift from the code: every block marked
//! `<!-- runbook: run -->` in `runbooks/*.md` runs here, in order, against a
//! local stack (the built binary first on PATH, a throwaway Postgres as
//! `DATABASE_URL`, the State Hub stand-in as `STATE_HUB_URL`), from the
//! repository root. Shell blocks run with `bash -euo pipefail`, SQL blocks
//! with `psql -v ON_ERROR_STOP=1`. Pending blocks are listed, never skipped
//! silently; `check` blocks are `contract verify`'s (their commands and flags).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use actcore::contract::runbooks::{self, Block, Marker};
use actcore_tests::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// Runs one block; returns (success, stdout, stderr).
fn run_block(block: &Block, env: &[(&str, String)]) -> (bool, String, String) {
    let bin_dir = actcore_bin().parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = if block.lang == "sql" {
        let mut c = Command::new("psql");
        c.args(["-X", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
        let url = &env.iter().find(|(k, _)| *k == "DATABASE_URL").unwrap().1;
        c.arg(url);
        c
    } else {
        let mut c = Command::new("bash");
        c.args(["-euo", "pipefail", "-s"]);
        c
    };
    cmd.current_dir(repo())
        .env("PATH", path)
        .env("RUST_LOG", "warn")
        .env_remove("ACTCORE_CONTRACT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("psql or bash");
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(block.text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The sweep's definition with a schedule of every second, same identity:
/// the stack gets a real run of the flagship to query, then the real file back.
fn fire_the_flagship_once(url: &str, hub: &Hub) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("definitions/state-hub-consistency-sweep.toml"))
        .unwrap()
        .replace("cron = \"*/15 * * * *\"", "cron = \"* * * * * *\"");
    std::fs::write(dir.path().join("state-hub-consistency-sweep.toml"), text).unwrap();
    sync_dir(dir.path(), url);
    let logs = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut w = Worker::spawn(
            &["worker", "--definitions", dir.path().to_str().unwrap()],
            url,
            &[("STATE_HUB_URL", &format!("{}/sink", hub.url()))],
            logs.path(),
            "runbook-seed",
        );
        eventually(Duration::from_secs(20), "one recorded run of the flagship", || {
            let url = url.to_string();
            async move {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&url).await.ok()?;
                let n: i64 = sqlx::query_scalar("select count(*) from activity_runs where state = 'succeeded'")
                    .fetch_one(&mut c)
                    .await
                    .ok()?;
                (n >= 1).then_some(())
            }
        })
        .await;
        w.signal(15);
        let _ = tokio::time::timeout(Duration::from_secs(20), w.child.wait()).await;
    });
    sync_dir(&repo().join("definitions"), url);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_runnable_block_of_the_runbooks_runs_against_a_local_stack() {
    let hub = Hub::start().await;
    let url = fresh_pg_url().await;
    let blocks = runbooks::load(&repo(), Path::new("runbooks")).unwrap();
    let hub_url = hub.url();
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || {
        let hub = hub;
        fire_the_flagship_once(&url2, &hub);
        let env = [
            ("DATABASE_URL", url2.clone()),
            ("STATE_HUB_URL", format!("{hub_url}/sink")),
            ("ACTCORE_DEFINITIONS", repo().join("definitions").display().to_string()),
        ];
        // A worker, as in the cluster: the manual canary's run is claimed from its queue.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let logs = tempfile::tempdir().unwrap();
        let worker = rt.block_on(async {
            Worker::spawn(
                &["worker"],
                &url2,
                &[("STATE_HUB_URL", &format!("{hub_url}/sink"))],
                logs.path(),
                "runbook-worker",
            )
        });
        let mut ran = Vec::new();
        let mut pending = Vec::new();
        for b in &blocks {
            match b.marker {
                Some(Marker::Run) => {
                    let (ok, out, err) = run_block(b, &env);
                    assert!(
                        ok,
                        "{} failed:\n{}\n--- stdout\n{out}\n--- stderr\n{err}\n--- worker\n{}",
                        b.at(),
                        b.text,
                        worker.log_text()
                    );
                    if b.text.contains("actcore trigger") {
                        assert!(
                            out.contains(": ok") && out.contains("canary: found"),
                            "{}: {out}",
                            b.at()
                        );
                    }
                    if b.lang == "sql" {
                        // The runbook query shows the sweep's answer, not just a header.
                        assert!(
                            out.contains("lock_skipped") && out.contains("(1 row)"),
                            "{}: {out}",
                            b.at()
                        );
                    }
                    ran.push(b.at());
                }
                Some(Marker::Pending) => pending.push(b.at()),
                Some(Marker::Check) => {}
                None if runbooks::is_output(b) => {}
                None => panic!("{}: a command block without a marker (run, check or pending)", b.at()),
            }
        }
        eprintln!("runbook blocks run: {}", ran.join(", "));
        eprintln!(
            "runbook blocks pending (their commands land with other branches): {}",
            pending.join(", ")
        );
        for f in ["runbooks/consistency-sweep.md", "runbooks/deploy.md"] {
            assert!(ran.iter().any(|r| r.starts_with(f)), "{f}: no runnable block ran");
        }
        assert!(ran.len() >= 8, "{ran:?}");
    })
    .await
    .unwrap();
}
