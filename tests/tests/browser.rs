//! The status page in a real browser (Debian's headless Chromium driven by
//! playwright-core, both installed by `scripts/test`) against a local
//! stack: the `actcore worker` binary, a throwaway Postgres database and the
//! State Hub stand-in. Checks what a person sees (the activities, a red
//! strip cell after an automation error, the recommendation, a confirmation
//! before a trigger, a pause through the buttons) and saves screenshots
//! under the target directory (`browser/`). End to end (a few seconds).

use std::path::PathBuf;
use std::time::Duration;

use actcore_tests::{Hub, Worker, eventually, fresh_pg_url, sync_dir, write_definition};

const TOKEN: &str = "browser-test-token-1";

/// The cargo target directory (this test runs from `target/debug/deps`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_headless_chromium() {
    let node_modules = std::env::var("ACTCORE_BROWSER_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| target_dir().join("browser-node/node_modules"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        node_modules.join("playwright-core").exists() && std::path::Path::new(&chromium).exists(),
        "playwright-core ({}) or Chromium ({chromium}) is missing: run scripts/test, which installs both",
        node_modules.display()
    );

    let hub = Hub::start().await;
    let url = fresh_pg_url().await;
    let defs = tempfile::tempdir().unwrap();
    let every_second = "* * * * * *";
    write_definition(
        defs.path(),
        "sweep-ok",
        uuid::Uuid::new_v4(),
        every_second,
        &format!("{}/fixture/ok-clean.json", hub.url()),
        "",
    );
    write_definition(
        defs.path(),
        "bridge-down",
        uuid::Uuid::new_v4(),
        every_second,
        &format!("{}/fixture/bridge-502.html", hub.url()),
        "",
    );
    sync_dir(defs.path(), &url);
    let logs = tempfile::tempdir().unwrap();
    let worker = Worker::spawn(
        &["worker"],
        &url,
        &[("ACTCORE_ADMIN_TOKEN", TOKEN)],
        logs.path(),
        "browser-w1",
    );
    let base = eventually(
        Duration::from_secs(20),
        "the worker to announce its admin API",
        || async {
            let log = worker.log_text();
            let at = log.find("listening on http://")? + "listening on ".len();
            Some(log[at..].split_whitespace().next()?.trim_end_matches('/').to_string())
        },
    )
    .await;
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(20), "an automation error and an ok run", || async {
        let runs: serde_json::Value = http
            .get(format!("{base}/v1/runs?limit=50"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let outcomes: Vec<&str> = runs["runs"]
            .as_array()?
            .iter()
            .filter_map(|r| r["outcome"].as_str())
            .collect();
        (outcomes.contains(&"automation_error") && outcomes.contains(&"ok")).then_some(())
    })
    .await;

    let out_dir = target_dir().join("browser");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser/page.cjs");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .args([&base, out_dir.to_str().unwrap(), TOKEN])
        .env("NODE_MODULES", &node_modules)
        .env("CHROMIUM", &chromium)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the browser finished within 90 s")
        .expect("run node (apt-get install nodejs npm)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed: {}{}\nworker log:\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr),
        worker.log_text()
    );
    let found: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the script's findings");
    assert_eq!(found["red_cell_colour"], "rgb(217, 58, 58)");
    assert!(found["paused_row"].as_str().unwrap().contains("paused"), "{found}");
    assert!(out_dir.join("status-page.png").exists());
    // The pause went through the API with the token: audited as `admin`.
    let status: serde_json::Value = http
        .get(format!("{base}/v1/status?q=sweep-ok"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["activities"][0]["state"], "paused", "{status}");
}
