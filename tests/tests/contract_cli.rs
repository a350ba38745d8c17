//! `actcore contract verify` end to end: clean on the repository, exit 78
//! naming the file and field of an injected drift, `--live` against a fake
//! Kubernetes API server; and the worker's start-up contract check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use actcore_tests::*;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn verify(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut args = vec!["contract", "verify", "--root", root.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_cli(&args, env)
}

/// The parts of the repository `contract verify` reads, copied to edit.
fn checkout_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .args(["definitions", "k8s", "runbooks", "Dockerfile"].map(|p| repo().join(p)))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn the_repository_has_no_drift() {
    let (code, out, err) = verify(&repo(), &[], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no drift"), "{out}");
    let (code, out, err) = verify(&repo(), &["--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["drifts"], json!([]));
    assert_eq!(report["overlays"], json!(["railiance", "dev"]));
}

#[test]
fn injected_drifts_exit_78_naming_file_and_field() {
    let dir = checkout_copy();
    let root = dir.path();
    // The sync Job reads the definitions somewhere else than the worker.
    edit(
        &root.join("k8s/base/sync-job.yaml"),
        "mountPath: /etc/actcore/definitions",
        "mountPath: /definitions",
    );
    // The copy under k8s/ no longer matches definitions/.
    edit(
        &root.join("definitions/state-hub-consistency-sweep.toml"),
        "misfire_grace = \"60s\"",
        "misfire_grace = \"90s\"",
    );
    // A runbook names a flag that does not exist.
    std::fs::write(
        root.join("runbooks/extra.md"),
        "# Extra\n\n<!-- runbook: check -->\n```bash\nactcore runs --slug s --since-days 2\n```\n",
    )
    .unwrap();
    let (code, out, err) = verify(root, &["--json"], &[]);
    assert_eq!(code, 78, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let drifts = report["drifts"].as_array().unwrap();
    let has = |file: &str, field: &str| {
        drifts
            .iter()
            .any(|d| d["file"].as_str().unwrap().starts_with(file) && d["field"].as_str().unwrap().contains(field))
    };
    assert!(
        has(
            "k8s/overlays/railiance",
            "Job/actcore-sync container sync volumeMounts definitions"
        ),
        "{out}"
    );
    assert!(
        has("k8s/overlays/dev", "Job/actcore-sync container sync volumeMounts"),
        "{out}"
    );
    assert!(
        has("k8s/base/definitions/state-hub-consistency-sweep.toml", "content"),
        "{out}"
    );
    assert!(
        has("runbooks/extra.md:4", "actcore runs --slug s --since-days 2"),
        "{out}"
    );
    assert_eq!(drifts.len(), 4, "{out}");
    for d in drifts {
        for key in ["expected", "found", "fix"] {
            assert!(!d[key].as_str().unwrap().is_empty(), "{d}");
        }
    }
    // The human form says the same, one line each, and the error names the count.
    let (code, out, err) = verify(root, &[], &[]);
    assert_eq!(code, 78);
    assert_eq!(
        out.lines().filter(|l| l.trim_start().starts_with("drift ")).count(),
        4,
        "{out}"
    );
    assert!(err.contains("4 drifts"), "{err}");
}

#[test]
fn a_fallback_timer_present_is_checked() {
    let dir = checkout_copy();
    let units = dir.path().join("scripts/systemd");
    std::fs::create_dir_all(&units).unwrap();
    let timer = units.join("actcore-fallback-state-hub-consistency-sweep.timer");
    std::fs::write(&timer, "[Timer]\nOnCalendar=*-*-* *:00/15:00 UTC\n").unwrap();
    let (code, out, err) = verify(dir.path(), &[], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("not present"), "{out}");
    std::fs::write(&timer, "[Timer]\nOnCalendar=hourly\n").unwrap();
    let (code, out, _) = verify(dir.path(), &[], &[]);
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains("scripts/systemd/actcore-fallback-state-hub-consistency-sweep.timer: OnCalendar"),
        "{out}"
    );
}

#[test]
fn the_worker_with_the_contract_and_a_missing_variable_exits_78() {
    let contract = repo().join("k8s/contract.toml");
    let (code, _, err) = run_cli(
        &["worker", "--contract", contract.to_str().unwrap()],
        &[
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
            ("ACTCORE_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert_eq!(code, 78, "{err}");
    for name in ["STATE_HUB_URL", "ACTCORE_DEFINITIONS", "ACTCORE_WORKER_ID"] {
        assert!(
            err.contains(&format!("environment: {name}: expected set")),
            "{name}: {err}"
        );
    }
    assert!(!err.contains("DATABASE_URL:"), "{err}");
    assert!(!err.contains("ACTCORE_CONTRACT:"), "given by --contract: {err}");

    // The same contract met (its definitions path pointed here): the worker
    // goes on to its store, which is unreachable: exit 1, not 78.
    let dir = tempfile::tempdir().unwrap();
    let defs = repo().join("definitions");
    let text = std::fs::read_to_string(&contract).unwrap().replace(
        "definitions = \"/etc/actcore/definitions\"",
        &format!("definitions = {:?}", defs.to_str().unwrap()),
    );
    let local = dir.path().join("contract.toml");
    std::fs::write(&local, text).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let db = format!("postgres://nobody@127.0.0.1:{closed}/none");
    let (code, _, err) = run_cli(
        &["worker"],
        &[
            ("ACTCORE_CONTRACT", local.to_str().unwrap()),
            ("DATABASE_URL", &db),
            ("STATE_HUB_URL", "http://127.0.0.1:9"),
            ("ACTCORE_DEFINITIONS", defs.to_str().unwrap()),
            ("ACTCORE_LISTEN", "127.0.0.1:0"),
            ("ACTCORE_LOG_FORMAT", "json"),
            ("ACTCORE_WORKER_ID", "contract-test"),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach the database"), "{err}");
}

/// A fake Kubernetes API server: GETs of the objects it holds, 404 Status otherwise.
#[derive(Clone, Default)]
struct FakeApi {
    objects: Arc<Mutex<HashMap<String, Value>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    fn put(&self, path: &str, object: Value) {
        self.objects.lock().unwrap().insert(path.to_string(), object);
    }

    async fn start(&self) -> String {
        let app = Router::new().route("/{*path}", get(answer)).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }
}

async fn answer(State(api): State<FakeApi>, UrlPath(path): UrlPath<String>) -> impl IntoResponse {
    let path = format!("/{path}");
    api.requests.lock().unwrap().push(path.clone());
    match api.objects.lock().unwrap().get(&path) {
        Some(o) => (StatusCode::OK, axum::Json(o.clone())),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("{path} not found"), "reason": "NotFound", "code": 404
            })),
        ),
    }
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/k8s-live")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
             users:\n- name: fake\n  user:\n    token: fake-token\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: activity-core\n\
             current-context: fake\n"
        ),
    )
    .unwrap();
    path
}

fn live_api() -> FakeApi {
    let api = FakeApi::default();
    let ns = "activity-core";
    api.put(
        &format!("/apis/apps/v1/namespaces/{ns}/deployments/actcore-worker"),
        fixture("actcore-worker.json"),
    );
    api.put(
        &format!("/apis/apps/v1/namespaces/{ns}/deployments/actcore-api"),
        fixture("actcore-api.json"),
    );
    let cm = fixture("configmap-definitions.json");
    let name = cm["metadata"]["name"].as_str().unwrap().to_string();
    api.put(&format!("/api/v1/namespaces/{ns}/configmaps/{name}"), cm);
    api
}

#[tokio::test(flavor = "multi_thread")]
async fn live_lists_what_the_cluster_runs_that_the_repository_does_not_say() {
    let api = live_api();
    let server = api.start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &server);
    let (code, out, err) = verify(
        &repo(),
        &["--live", "--overlay", "railiance", "--json"],
        &[("KUBECONFIG", kc.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["drifts"], json!([]), "{out}");
    let live = report["live"].as_array().unwrap();
    assert_eq!(live.len(), 1, "{out}");
    assert_eq!(live[0]["file"], "live:activity-core:Deployment/actcore-worker");
    assert_eq!(
        (
            live[0]["field"].as_str(),
            live[0]["expected"].as_str(),
            live[0]["found"].as_str()
        ),
        (Some("replicas"), Some("2"), Some("3"))
    );
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("no Job actcore-sync"),
        "a missing Job is normal: {notes}"
    );
    let requests = api.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r.ends_with("/jobs/actcore-sync")),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn live_holds_the_cluster_to_the_contract() {
    let api = live_api();
    let mut worker = fixture("actcore-worker.json");
    let env = worker
        .pointer_mut("/spec/template/spec/containers/0/env")
        .unwrap()
        .as_array_mut()
        .unwrap();
    env.retain(|e| e["name"] != "STATE_HUB_URL");
    worker["spec"]["template"]["spec"]["containers"][0]["image"] = json!("ghcr.io/railiance/actcore:hotfix");
    api.put(
        "/apis/apps/v1/namespaces/activity-core/deployments/actcore-worker",
        worker,
    );
    let server = api.start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &server);
    let (code, out, err) = verify(
        &repo(),
        &["--live", "--overlay", "railiance"],
        &[("KUBECONFIG", kc.to_str().unwrap())],
    );
    assert_eq!(code, 78, "{out}{err}");
    assert!(
        out.contains(
            "drift   live:activity-core: Deployment/actcore-worker container worker env STATE_HUB_URL: expected set"
        ),
        "{out}"
    );
    assert!(
        out.contains("Deployment/actcore-api container api image: expected ghcr.io/railiance/actcore:hotfix"),
        "{out}"
    );
    assert!(out.contains("live    live:activity-core:Deployment/actcore-worker: container worker image: expected ghcr.io/railiance/actcore:railiance01-prod, found ghcr.io/railiance/actcore:hotfix"), "{out}");
}
