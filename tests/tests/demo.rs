//! `actcore dev --demo` as a newcomer runs it: within a minute the API shows
//! runs of every outcome, the page a red cell and the recommendation, and
//! `/metrics` the worker's own counters. End to end (about 30-40 s).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use actcore_tests::{actcore_bin, eventually};
use serde_json::Value;

struct Demo {
    _child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Demo {
    async fn start() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("stdout.txt");
        let child = tokio::process::Command::new(actcore_bin())
            .args(["dev", "--demo"])
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env("ACTCORE_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.txt")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn actcore dev --demo");
        let base = eventually(Duration::from_secs(20), "dev to print its address", || {
            let out = out.clone();
            async move { address(&out) }
        })
        .await;
        Demo {
            _child: child,
            base,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.ok()?;
        Some((r.status().as_u16(), r.text().await.ok()?))
    }

    async fn json(&self, path: &str) -> Option<Value> {
        let (code, text) = self.get(path).await?;
        (code == 200).then(|| serde_json::from_str(&text).ok()).flatten()
    }
}

/// `http://127.0.0.1:PORT` from dev's announcement line.
fn address(stdout: &Path) -> Option<String> {
    let text = std::fs::read_to_string(stdout).ok()?;
    let at = text.find("http://")?;
    let url = text[at..].split_whitespace().next()?;
    Some(url.trim_end_matches('/').to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_demo_shows_every_outcome_within_a_minute() {
    let demo = Demo::start().await;
    let wanted = [
        ("ok", None),
        ("assessment_failures", None),
        ("lock_skipped", None),
        ("automation_error", Some("remote")),
        ("automation_error", Some("http_5xx")),
    ];
    eventually(Duration::from_secs(60), "runs of every outcome", || async {
        let runs = demo.json("/v1/runs?limit=200").await?;
        let seen: Vec<(String, Option<String>)> = runs["runs"]
            .as_array()?
            .iter()
            .map(|r| {
                (
                    r["outcome"].as_str().unwrap_or("").to_string(),
                    r["error_code"].as_str().map(str::to_string),
                )
            })
            .collect();
        wanted
            .iter()
            .all(|(o, c)| seen.iter().any(|(so, sc)| so == o && sc.as_deref() == *c))
            .then_some(())
    })
    .await;

    let (code, page) = demo.get("/").await.expect("page");
    assert_eq!(code, 200);
    for words in [
        "demo-sweep",
        "demo-bridge-down",
        "cell error",
        "cell assess",
        "cell lock",
        "bridge unreachable",
    ] {
        assert!(page.contains(words), "the page shows `{words}`");
    }
    let (code, health) = demo.get("/healthz").await.expect("healthz");
    assert_eq!(code, 200, "{health}");
    let (_, metrics) = demo.get("/metrics").await.expect("metrics");
    assert!(
        metrics.contains(r#"actcore_runs_total{slug="demo-bridge-down",outcome="automation_error"}"#),
        "the worker counts its runs: {metrics}"
    );
    for series in [
        "actcore_recorder_backlog ",
        "actcore_claim_seconds_bucket",
        "actcore_fire_lateness_seconds_bucket",
        "actcore_run_duration_seconds_count",
    ] {
        assert!(metrics.contains(series), "the worker records {series}: {metrics}");
    }
    let status = demo.json("/v1/status?q=bridge").await.expect("status");
    let a = &status["activities"][0];
    assert!(a["consecutive_automation_errors"].as_u64().unwrap() >= 2, "{a}");
    let severity = a["recommendation"]["severity"].as_str().unwrap();
    assert!(["warning", "critical"].contains(&severity), "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_demo_opens_the_circuit_within_a_minute() {
    let demo = Demo::start().await;
    eventually(
        Duration::from_secs(60),
        "demo-bridge-down's circuit to open",
        || async {
            let status = demo.json("/v1/status?q=demo-bridge-down").await?;
            (status["activities"][0]["circuit"]["state"] == "open").then_some(())
        },
    )
    .await;
    let (_, page) = demo.get("/").await.expect("page");
    assert!(page.contains("circuit-open"), "the page shows the open circuit");
    assert!(
        page.contains("actcore circuit reset demo-bridge-down"),
        "and the recommendation names the reset"
    );
}
