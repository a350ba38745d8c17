//! The admin API against a real store (Postgres and the embedded SQLite):
//! every endpoint, the auth rules, `/metrics` read by a Prometheus text
//! parser, `/healthz` failing when the loop stalls, and the overrides'
//! state and audit rows (the store methods behind them, on both backends).

use std::time::Duration;

use actcore::api::{self, ApiState, Heartbeat, Liveness, Tokens};
use actcore::definition::{Loaded, sample};
use actcore::run::{ErrorCode, Outcome, Source, Trigger};
use actcore::store::{NewRun, RunStore, Store};
use actcore_tests::{Backend, eventually, fresh_store};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const TOKENS: &str = "alice:alice-secret-1,ci:ci-secret-22";

struct Api {
    base: String,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Api {
    async fn start(store: &Store, tokens: Tokens, liveness: Liveness) -> Api {
        let listener = api::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(api::serve(
            listener,
            ApiState::new(store.clone(), tokens, liveness),
            stop.clone(),
        ));
        Api {
            base,
            http: reqwest::Client::new(),
            stop,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.expect("GET");
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn json(&self, path: &str) -> (u16, Value) {
        let (code, text) = self.get(path).await;
        (
            code,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")),
        )
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("POST");
        let code = r.status().as_u16();
        (code, r.json().await.expect("a JSON body"))
    }
}

fn leaked_heartbeat(every: Duration) -> &'static Heartbeat {
    Box::leak(Box::new(Heartbeat::new(every)))
}

fn run(def: Uuid, minutes_ago: i64, outcome: Outcome, code: Option<ErrorCode>) -> NewRun {
    let at = Timestamp::now() - SignedDuration::from_mins(minutes_ago);
    NewRun {
        run_id: Uuid::now_v7(),
        definition_id: def,
        fired_at: at,
        scheduled_for: Some(at),
        trigger: Trigger::Schedule,
        source: Source::ActivityCore,
        attempt: 1,
        state: outcome.state(),
        outcome: Some(outcome),
        automation_error: outcome == Outcome::AutomationError,
        assessment_failures: 0,
        error_code: code,
        error_message: code.map(|c| format!("{c} failure")),
        context_snapshot: serde_json::json!({"lateness_ms": 7}),
        worker_id: Some("w".into()),
        lease_expires_at: None,
        started_at: Some(at),
        finished_at: Some(at + SignedDuration::from_secs(1)),
        spec_hash: None,
        retry_of: None,
        actor: None,
        duplicate_of: None,
    }
}

/// The activity `sweep` with one ok run then two transport errors.
async fn seeded(backend: Backend) -> (Store, Option<tempfile::TempDir>, Uuid, Uuid) {
    let (store, dir, _url) = fresh_store(backend).await;
    let id = Uuid::new_v4();
    let def = sample(id, "sweep", "*/15 * * * *", "http://127.0.0.1:9/sweep");
    let loaded = Loaded {
        file: "sweep.toml".into(),
        definition: def,
    };
    store.sync(&[loaded], Timestamp::now(), false).await.expect("sync");
    store.insert_run(&run(id, 50, Outcome::Ok, None)).await.expect("run");
    let last_error = run(id, 20, Outcome::AutomationError, Some(ErrorCode::Transport));
    store
        .insert_run(&run(id, 35, Outcome::AutomationError, Some(ErrorCode::Transport)))
        .await
        .unwrap();
    store.insert_run(&last_error).await.unwrap();
    (store, dir, id, last_error.run_id)
}

/// The audit rows of `kind`: (actor, reason).
async fn audit_rows(store: &Store, kind: &str) -> Vec<(Option<String>, Option<String>)> {
    let details: Vec<Value> = match store {
        Store::Postgres(pg) => {
            sqlx::query_scalar("select detail from activity_events where kind = $1 order by event_id")
                .bind(kind)
                .fetch_all(pg.pool())
                .await
                .unwrap()
        }
        Store::Sqlite(s) => sqlx::query_scalar::<_, String>("select detail from activity_events where kind = ?1")
            .bind(kind)
            .fetch_all(s.pool())
            .await
            .unwrap()
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect(),
    };
    details
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().map(str::to_string);
            (s("actor"), s("reason"))
        })
        .collect()
}

fn sample_value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

async fn scrape(api: &Api) -> prometheus_parse::Scrape {
    let (code, text) = api.get("/metrics").await;
    assert_eq!(code, 200, "{text}");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

async fn read_endpoints_metrics_and_overrides(backend: Backend) {
    let (store, _dir, id, last_error) = seeded(backend).await;
    let heartbeat = leaked_heartbeat(Duration::from_secs(60));
    heartbeat.stamp();
    let api = Api::start(
        &store,
        Tokens::parse(None, Some(TOKENS)).unwrap(),
        Liveness::Loop(heartbeat),
    )
    .await;

    // Probes.
    let (code, health) = api.json("/healthz").await;
    assert_eq!((code, health["alive"].as_bool()), (200, Some(true)), "{health}");
    let (code, ready) = api.json("/readyz").await;
    assert_eq!(code, 200, "{ready}");

    // Status with the recommendation, from the same function as `actcore status`.
    let (code, status) = api.json("/v1/status").await;
    assert_eq!(code, 200);
    let a = &status["activities"][0];
    assert_eq!(a["slug"], "sweep");
    assert_eq!(a["consecutive_automation_errors"], 2);
    assert_eq!(a["last_run"]["lateness_ms"], 7);
    assert_eq!(a["recommendation"]["severity"], "warning");
    let action = a["recommendation"]["action"].as_str().unwrap();
    assert!(
        action.contains("bridge unreachable twice") && action.contains("ops-bridge tunnel"),
        "{action}"
    );
    assert_eq!(api.json("/v1/status?q=nope").await.1["total"], 0);

    let (code, acts) = api.json("/v1/activities").await;
    assert_eq!(
        (code, acts["activities"][0]["slug"].as_str()),
        (200, Some("sweep")),
        "{acts}"
    );

    // Runs and one run.
    let (code, runs) = api
        .json("/v1/runs?slug=sweep&outcome=automation_error&since=1h&limit=10")
        .await;
    assert_eq!(code, 200, "{runs}");
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2, "{runs}");
    assert_eq!(runs["runs"][0]["run_id"], last_error.to_string(), "newest first");
    assert_eq!(
        api.json("/v1/runs?since=30m").await.1["runs"].as_array().unwrap().len(),
        1
    );
    let (_, scheduled) = api.json("/v1/runs?trigger=schedule&limit=1000").await;
    let all = api.json("/v1/runs?limit=1000").await.1["runs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        scheduled["runs"].as_array().unwrap().len(),
        all,
        "every seeded run is scheduled"
    );
    assert!(
        api.json("/v1/runs?trigger=manual").await.1["runs"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (code, one) = api.json(&format!("/v1/runs/{last_error}")).await;
    assert_eq!((code, one["run"]["error_code"].as_str()), (200, Some("transport")));
    assert_eq!(one["run"]["context_snapshot"]["lateness_ms"], 7);

    // One error shape.
    for (path, code, error) in [
        (format!("/v1/runs/{}", Uuid::new_v4()), 404, "not_found"),
        ("/v1/runs/not-a-uuid".to_string(), 400, "bad_request"),
        ("/v1/runs?outcome=fine".to_string(), 400, "bad_request"),
        ("/v1/runs?trigger=cron".to_string(), 400, "bad_request"),
        ("/v1/runs?since=yesterday".to_string(), 400, "bad_request"),
        ("/v1/runs?slug=nope".to_string(), 404, "not_found"),
        ("/v2/nothing".to_string(), 404, "not_found"),
    ] {
        let (got, body) = api.json(&path).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (code, Some(error)),
            "{path}: {body}"
        );
        assert!(
            body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: {body}"
        );
    }
    let (code, openapi) = api.json("/v1/openapi.json").await;
    assert_eq!(code, 200);
    assert!(
        openapi["paths"]["/v1/activities/{slug}/circuit/reset"]["post"]["security"].is_array(),
        "{openapi}"
    );

    // Metrics, parsed as Prometheus parses them; per-activity gauges from the database.
    actcore::api::metrics::run_finished(
        "sweep",
        Outcome::Ok,
        Some(Duration::from_millis(300)),
        Some(Duration::from_millis(20)),
    );
    actcore::api::metrics::instant_skipped("sweep", actcore::api::metrics::SkipReason::Misfire);
    actcore::api::metrics::claim_took(Duration::from_millis(3));
    let m = scrape(&api).await;
    let sweep = [("slug", "sweep")];
    assert_eq!(sample_value(&m, "actcore_up", &[]), Some(1.0));
    assert_eq!(
        sample_value(&m, "actcore_consecutive_automation_errors", &sweep),
        Some(2.0)
    );
    assert_eq!(sample_value(&m, "actcore_circuit_open", &sweep), Some(0.0));
    assert_eq!(
        sample_value(&m, "actcore_last_run_assessment_failures", &sweep),
        Some(0.0)
    );
    let last_ok = sample_value(&m, "actcore_last_success_timestamp_seconds", &sweep).expect("last success");
    let age = Timestamp::now().as_second() as f64 - last_ok;
    assert!((2900.0..3100.0).contains(&age), "the ok run ended ~49 min ago: {age}");
    assert!(sample_value(&m, "actcore_runs_total", &[("slug", "sweep"), ("outcome", "ok")]).unwrap() >= 1.0);
    assert!(
        sample_value(
            &m,
            "actcore_skipped_instants_total",
            &[("slug", "sweep"), ("reason", "misfire")]
        )
        .unwrap()
            >= 1.0
    );
    for h in [
        "actcore_run_duration_seconds",
        "actcore_fire_lateness_seconds",
        "actcore_claim_seconds",
    ] {
        let s = m
            .samples
            .iter()
            .find(|s| s.metric == h)
            .unwrap_or_else(|| panic!("{h} missing"));
        assert!(
            matches!(s.value, prometheus_parse::Value::Histogram(_)),
            "{h} is a histogram"
        );
        assert!(s.labels.is_empty(), "{h} carries no labels: {:?}", s.labels);
    }
    assert!(
        m.samples.iter().all(|s| s.labels.get("run_id").is_none()),
        "no series carries a run id"
    );

    // Auth: 401 without a token or with a wrong one; nothing changes.
    let pause = "/v1/activities/sweep/pause";
    let reason = r#"{"reason": "State Hub maintenance"}"#;
    let (code, body) = api.post(pause, None, reason).await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (code, _) = api.post(pause, Some("alice-secret-2"), reason).await;
    assert_eq!(code, 401);
    assert!(audit_rows(&store, "paused").await.is_empty());
    let (code, body) = api.post(pause, Some("alice-secret-1"), "").await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "a pause needs a reason: {body}"
    );
    let (code, body) = api
        .post("/v1/activities/nope/pause", Some("alice-secret-1"), reason)
        .await;
    assert_eq!(code, 404, "{body}");

    // Authorised: applied, audited with the token's name.
    let (code, body) = api.post(pause, Some("alice-secret-1"), reason).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["applied"]["actor"], "alice");
    assert_eq!(
        audit_rows(&store, "paused").await,
        vec![(Some("alice".into()), Some("State Hub maintenance".into()))]
    );
    let (_, status) = api.json("/v1/status").await;
    assert_eq!(status["activities"][0]["state"], "paused");
    assert!(
        status["activities"][0]["recommendation"]["action"]
            .as_str()
            .unwrap()
            .contains("actcore resume sweep")
    );
    let (code, _) = api.post("/v1/activities/sweep/resume", Some("ci-secret-22"), "").await;
    assert_eq!(code, 200);
    assert_eq!(audit_rows(&store, "resumed").await, vec![(Some("ci".into()), None)]);

    // Circuit held open by an operator, then reset.
    let (code, body) = api
        .post(
            "/v1/activities/sweep/circuit/open",
            Some("alice-secret-1"),
            r#"{"reason": "bridge rebuild"}"#,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // A trigger is refused (409) while the circuit is held open, queued with force.
    let trigger = "/v1/activities/sweep/trigger";
    let (code, _) = api.post(trigger, None, "").await;
    assert_eq!(code, 401);
    let (code, body) = api
        .post(trigger, Some("alice-secret-1"), r#"{"reason": "canary"}"#)
        .await;
    assert_eq!((code, body["error"]["code"].as_str()), (409, Some("refused")), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("held open by alice"),
        "{body}"
    );
    let (code, body) = api
        .post(
            trigger,
            Some("ci-secret-22"),
            r#"{"reason": "canary", "force": true, "timeout": "30s"}"#,
        )
        .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(
        (body["queued"]["actor"].as_str(), body["queued"]["forced"].as_bool()),
        (Some("ci"), Some(true))
    );
    let run_id = body["queued"]["run_id"].as_str().unwrap().to_string();
    let (_, run) = api.json(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(
        (run["run"]["state"].as_str(), run["run"]["trigger"].as_str()),
        (Some("queued"), Some("manual")),
        "{run}"
    );
    assert_eq!(
        audit_rows(&store, "manual_trigger").await,
        vec![(Some("ci".into()), Some("canary".into()))]
    );
    let (_, status) = api.json("/v1/status").await;
    let c = &status["activities"][0]["circuit"];
    assert_eq!(
        (
            c["state"].as_str(),
            c["held_by_operator"].as_bool(),
            c["actor"].as_str()
        ),
        (Some("open"), Some(true), Some("alice")),
        "{c}"
    );
    assert_eq!(
        sample_value(&scrape(&api).await, "actcore_circuit_open", &sweep),
        Some(1.0)
    );
    let (code, _) = api
        .post("/v1/activities/sweep/circuit/reset", Some("alice-secret-1"), "")
        .await;
    assert_eq!(code, 200);
    let (_, status) = api.json("/v1/status").await;
    let a = &status["activities"][0];
    assert_eq!(
        (
            a["circuit"]["state"].as_str(),
            a["consecutive_automation_errors"].as_u64()
        ),
        (Some("closed"), Some(0)),
        "{a}"
    );
    let m = scrape(&api).await;
    assert_eq!(sample_value(&m, "actcore_circuit_open", &sweep), Some(0.0));
    assert_eq!(
        sample_value(&m, "actcore_consecutive_automation_errors", &sweep),
        Some(0.0)
    );
    assert_eq!(
        audit_rows(&store, "circuit_reset").await,
        vec![(Some("alice".into()), None)]
    );

    // The page: the activity, its recommendation, a red cell for the error, the snapshot a click away.
    let (code, page) = api.get("/").await;
    assert_eq!(code, 200);
    assert!(page.contains("sweep") && page.contains("cell error"), "{page}");
    assert!(page.contains(&format!("/v1/runs/{last_error}")), "snapshot link");
    let _ = id;
}

/// With no token configured, the mutating endpoints answer 403.
async fn read_only_without_configured_tokens(backend: Backend) {
    let (store, _dir, _, _) = seeded(backend).await;
    let api = Api::start(&store, Tokens::default(), Liveness::Server).await;
    for op in ["trigger", "pause", "resume", "circuit/open", "circuit/reset"] {
        let (code, body) = api
            .post(
                &format!("/v1/activities/sweep/{op}"),
                Some("anything-at-all"),
                r#"{"reason":"x"}"#,
            )
            .await;
        assert_eq!(
            (code, body["error"]["code"].as_str()),
            (403, Some("read_only")),
            "{op}: {body}"
        );
    }
    // actcore api's liveness: the server and its database answer.
    let (code, health) = api.json("/healthz").await;
    assert_eq!((code, health["database"].as_bool()), (200, Some(true)), "{health}");
    assert_eq!(api.json("/readyz").await.0, 200);
}

actcore_tests::both_backends!(
    read_endpoints_metrics_and_overrides,
    read_only_without_configured_tokens
);

/// `/healthz` fails once the loop has not stamped its heartbeat for three periods.
#[tokio::test]
async fn healthz_fails_when_the_loop_is_stalled() {
    let (store, _dir, _, _) = seeded(Backend::Sqlite).await;
    let heartbeat = leaked_heartbeat(Duration::from_millis(100));
    let api = Api::start(&store, Tokens::default(), Liveness::Loop(heartbeat)).await;
    assert_eq!(api.get("/healthz").await.0, 503, "never stamped: the loop never ran");
    assert_eq!(
        api.get("/readyz").await.0,
        503,
        "definitions not loaded by the loop yet"
    );
    heartbeat.stamp();
    assert_eq!(api.get("/healthz").await.0, 200);
    // Nobody stamps any more: the loop is stalled.
    eventually(Duration::from_secs(5), "/healthz to fail", || async {
        (api.get("/healthz").await.0 == 503).then_some(())
    })
    .await;
}

/// The page stays one page of queries with many activities: 50 per page,
/// a link to the next, and a search by slug.
#[tokio::test]
async fn the_page_paginates_and_searches_by_slug() {
    let (store, _dir, _url) = fresh_store(Backend::Sqlite).await;
    let files: Vec<Loaded> = (0..60)
        .map(|i| Loaded {
            file: format!("act-{i:02}.toml").into(),
            definition: sample(
                Uuid::new_v4(),
                &format!("act-{i:02}"),
                "*/15 * * * *",
                "http://127.0.0.1:9/x",
            ),
        })
        .collect();
    store.sync(&files, Timestamp::now(), false).await.expect("sync");
    let api = Api::start(&store, Tokens::default(), Liveness::Server).await;
    let (code, first) = api.get("/").await;
    assert_eq!(code, 200, "{first}");
    assert!(first.contains("page 1 of 2") && first.contains("page=2"), "{first}");
    assert_eq!(first.matches("<tr class=\"activity\"").count(), 50);
    assert!(first.contains("act-49") && !first.contains("data-slug=\"act-50\""));
    let (_, second) = api.get("/?page=2").await;
    assert_eq!(second.matches("<tr class=\"activity\"").count(), 10);
    assert!(second.contains("data-slug=\"act-59\""));
    let (_, found) = api.get("/?q=act-5").await;
    assert_eq!(found.matches("<tr class=\"activity\"").count(), 10, "act-50 .. act-59");
    assert!(found.contains("page 1 of 1"));
}
