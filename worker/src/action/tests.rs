use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use ::http::Method;

use super::*;
use crate::definition::ActionKind;
use crate::definition::{ActionSpec, ResultSpec};
use crate::duration::Dur;
use crate::run::Outcome;
use crate::run::{ErrorCode, Source};

const OK_CLEAN: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/state-hub/ok-clean.json"
));
const BRIDGE_502: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/state-hub/bridge-502.html"
));

fn spec() -> ResultSpec {
    ResultSpec::standard("consistency_sweep_remote_all")
}

fn action(method: &str, url: &str) -> ActionSpec {
    ActionSpec {
        kind: ActionKind::Http,
        method: method.into(),
        url: url.into(),
        body: None,
        headers: BTreeMap::new(),
        timeout: Dur::from_secs(5),
        preflight: None,
    }
}

fn run() -> RunHeaders {
    RunHeaders {
        run_id: uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
        scheduled_for: Some("2025-03-30T01:15:00Z".parse().unwrap()),
        source: Source::ActivityCore,
    }
}

fn env(server: &str) -> impl FnMut(&str) -> Option<String> {
    let server = server.to_string();
    move |name| match name {
        "STATE_HUB_URL" => Some(server.clone()),
        "ACTCORE_SOURCE" => Some("activity-core".into()),
        "HUB_TOKEN" => Some("s3cret".into()),
        _ => None,
    }
}

fn prepared(server: &str, a: &ActionSpec) -> PreparedRequest {
    prepare(a, env(server)).unwrap()
}

fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn code(report: &ActionReport) -> Option<ErrorCode> {
    report.classification.error_code
}

#[test]
fn prepare_renders_once_and_names_what_is_missing() {
    let mut a = action("POST", "${STATE_HUB_URL}/consistency/sweep/remote-all");
    a.body = Some(json!({"max_seconds": 300, "source": "${ACTCORE_SOURCE}"}));
    a.headers.insert("Authorization".into(), "Bearer ${HUB_TOKEN}".into());
    a.preflight = Some("${STATE_HUB_URL}/health".into());
    let req = prepared("http://hub:8080", &a);
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.url, "http://hub:8080/consistency/sweep/remote-all");
    assert_eq!(req.preflight.as_deref(), Some("http://hub:8080/health"));
    assert_eq!(
        serde_json::from_slice::<Value>(req.body.as_deref().unwrap()).unwrap(),
        json!({"max_seconds": 300, "source": "activity-core"})
    );
    assert_eq!(
        req.headers,
        [("Authorization".to_string(), "Bearer s3cret".to_string())]
    );
    assert_eq!(req.timeout, Duration::from_secs(5));
    assert!(
        !format!("{req:?}").contains("s3cret"),
        "Debug must not print header values"
    );

    let unset = |n: &str| (n == "STATE_HUB_URL").then(|| "http://hub".to_string());
    let err = prepare(&a, unset).unwrap_err();
    assert!(err.contains("ACTCORE_SOURCE") || err.contains("HUB_TOKEN"), "{err}");
    let err = prepare(&action("POST", "${NOT_SET_ANYWHERE}/x"), |_| None).unwrap_err();
    assert!(
        err.starts_with("action.url:") && err.contains("NOT_SET_ANYWHERE"),
        "{err}"
    );

    let err = prepare(&action("POST", "${STATE_HUB_URL}/x"), |_| Some("hub.local".into())).unwrap_err();
    assert!(err.starts_with("action.url:") && err.contains("hub.local"), "{err}");
    let err = prepare(&action("GE T", "http://hub/x"), |_| None).unwrap_err();
    assert!(err.starts_with("action.method:"), "{err}");
    let mut bad_header = action("GET", "http://hub/x");
    bad_header.headers.insert("X-Token".into(), "${HUB_TOKEN}".into());
    let err = prepare(&bad_header, |_| Some("line\nbreak".into())).unwrap_err();
    assert!(
        err.starts_with("action.headers.X-Token:") && !err.contains("line"),
        "{err}"
    );
    let password = prepare(&action("GET", "http://u:pw@hub:x/"), |_| None).unwrap_err();
    assert!(!password.contains("pw@"), "{password}");
}

#[tokio::test]
async fn sends_headers_and_rendered_body_and_classifies_ok() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/health"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/consistency/sweep/remote-all"))
        .and(header("idempotency-key", "01900000-0000-7000-8000-000000000001"))
        .and(header("x-actcore-scheduled-for", "2025-03-30T01:15:00Z"))
        .and(header("x-actcore-source", "activity-core"))
        .and(header("content-type", "application/json"))
        .and(header("authorization", "Bearer s3cret"))
        .and(body_json(json!({"max_seconds": 300, "source": "activity-core"})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK_CLEAN, "application/json"))
        .expect(1)
        .mount(&server)
        .await;

    let mut a = action("POST", "${STATE_HUB_URL}/consistency/sweep/remote-all");
    a.body = Some(json!({"max_seconds": 300, "source": "${ACTCORE_SOURCE}"}));
    a.headers.insert("Authorization".into(), "Bearer ${HUB_TOKEN}".into());
    // A definition cannot override actcore's own headers.
    a.headers.insert("Idempotency-Key".into(), "mine".into());
    a.preflight = Some("${STATE_HUB_URL}/health".into());
    let req = prepared(&server.uri(), &a);
    let report = HttpExecutor::new().execute(&req, &run(), &spec()).await;

    assert_eq!(report.classification.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.http_status, Some(200));
    assert_eq!(report.classification.body.as_ref().unwrap()["skipped_clean"], 42);
    assert!(!report.truncated && report.body_text.is_none());

    let snap = crate::snapshot::exchange(&req, &report);
    assert_eq!(snap["request"]["method"], "POST");
    assert_eq!(
        snap["request"]["url"],
        format!("{}/consistency/sweep/remote-all", server.uri())
    );
    assert_eq!(snap["request"]["body"]["source"], "activity-core");
    assert_eq!(snap["http_status"], 200);
    assert_eq!(snap["truncated"], false);
    assert!(snap["duration_ms"].is_u64() && snap.get("body_text").is_none());
    assert!(!snap.to_string().contains("s3cret"));
}

#[tokio::test]
async fn manual_run_omits_scheduled_for() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("x-actcore-source", "manual"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK_CLEAN, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let req = prepared(&server.uri(), &action("GET", "${STATE_HUB_URL}/x"));
    let manual = RunHeaders {
        scheduled_for: None,
        source: Source::Manual,
        ..run()
    };
    let report = HttpExecutor::new().execute(&req, &manual, &spec()).await;
    assert_eq!(report.classification.outcome, Outcome::Ok, "{report:?}");
    let received = server.received_requests().await.unwrap();
    assert!(received[0].headers.get("x-actcore-scheduled-for").is_none());
    assert!(
        received[0].headers.get("content-type").is_none(),
        "no body, no content type"
    );
}

#[tokio::test]
async fn bridge_502_is_http_5xx_with_the_page_as_text() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502).set_body_raw(BRIDGE_502, "text/html"))
        .mount(&server)
        .await;
    let req = prepared(&server.uri(), &action("POST", "${STATE_HUB_URL}/sweep"));
    let report = HttpExecutor::new().execute(&req, &run(), &spec()).await;
    assert_eq!(code(&report), Some(ErrorCode::Http5xx));
    assert!(report.classification.retryable);
    assert_eq!(report.http_status, Some(502));
    assert!(
        report
            .body_text
            .as_deref()
            .unwrap()
            .contains("<title>502 Bad Gateway</title>")
    );
    assert_eq!(
        crate::snapshot::exchange(&req, &report)["body_text"],
        report.body_text.clone().unwrap()
    );
}

#[tokio::test]
async fn slow_server_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(OK_CLEAN, "application/json")
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&server)
        .await;
    let mut a = action("POST", "${STATE_HUB_URL}/sweep");
    a.timeout = Dur::from_millis(200);
    let req = prepared(&server.uri(), &a);
    let report = HttpExecutor::new().execute(&req, &run(), &spec()).await;
    assert_eq!(code(&report), Some(ErrorCode::Timeout), "{report:?}");
    assert!(report.classification.retryable);
    assert_eq!(report.http_status, None);
    assert!(report.duration_ms < 1500, "{}", report.duration_ms);
    assert!(report.classification.error_message.unwrap().contains("200ms"));
}

#[tokio::test]
async fn connection_refused_is_transport() {
    let req = prepared(&closed_port_url(), &action("POST", "${STATE_HUB_URL}/sweep"));
    let report = HttpExecutor::new().execute(&req, &run(), &spec()).await;
    assert_eq!(code(&report), Some(ErrorCode::Transport), "{report:?}");
    assert!(report.classification.retryable);
    let message = report.classification.error_message.clone().unwrap();
    assert!(
        message.starts_with("POST http://127.0.0.1:") && message.contains("onnect"),
        "{message}"
    );
    assert_eq!(crate::snapshot::exchange(&req, &report)["http_status"], Value::Null);
}

#[tokio::test]
async fn body_over_the_cap_is_bad_response_and_keeps_the_start() {
    let server = MockServer::start().await;
    let big = format!("{{\"padding\": \"{}\"}}", "x".repeat(10_000));
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(big.clone(), "application/json"))
        .mount(&server)
        .await;
    let req = prepared(&server.uri(), &action("POST", "${STATE_HUB_URL}/sweep"));
    let report = HttpExecutor::new()
        .with_max_body(1000)
        .execute(&req, &run(), &spec())
        .await;
    assert_eq!(code(&report), Some(ErrorCode::BadResponse), "{report:?}");
    assert!(!report.classification.retryable && report.truncated);
    let text = report.body_text.as_deref().unwrap();
    assert!(big.starts_with(text) && text.len() == 1000, "{}", text.len());
    assert_eq!(crate::snapshot::exchange(&req, &report)["truncated"], true);

    // Exactly at the cap is fine.
    let exact = HttpExecutor::new()
        .with_max_body(big.len())
        .execute(&req, &run(), &spec())
        .await;
    assert_eq!(exact.classification.outcome, Outcome::Ok, "{exact:?}");
}

/// A peer that streams a chunked body with no Content-Length: the cap is
/// enforced while reading, not only from the declared length.
#[tokio::test]
async fn chunked_body_over_the_cap_is_cut_while_reading() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let mut out =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..20 {
            out.extend_from_slice(format!("3e8\r\n{}\r\n", "a".repeat(1000)).as_bytes());
        }
        out.extend_from_slice(b"0\r\n\r\n");
        let _ = socket.write_all(&out).await;
    });
    let req = prepared(&url, &action("GET", "${STATE_HUB_URL}/stream"));
    let report = HttpExecutor::new()
        .with_max_body(2500)
        .execute(&req, &run(), &spec())
        .await;
    assert_eq!(code(&report), Some(ErrorCode::BadResponse), "{report:?}");
    assert!(report.truncated);
    assert_eq!(report.body_text.as_deref(), Some("a".repeat(2500).as_str()));
}

#[tokio::test]
async fn failing_preflight_skips_the_main_call() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/health"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;

    let mut a = action("POST", "${STATE_HUB_URL}/sweep");
    a.preflight = Some("${STATE_HUB_URL}/health".into());
    let req = prepared(&server.uri(), &a);
    let report = HttpExecutor::new().execute(&req, &run(), &spec()).await;
    assert_eq!(code(&report), Some(ErrorCode::Preflight), "{report:?}");
    assert!(report.classification.retryable);
    let message = report.classification.error_message.unwrap();
    assert!(message.contains("/health") && message.contains("503"), "{message}");

    // An unreachable preflight is a preflight failure too.
    a.preflight = Some(format!("{}/health", closed_port_url()));
    let req = prepared(&server.uri(), &a);
    let report = HttpExecutor::new().execute(&req, &run(), &spec()).await;
    assert_eq!(code(&report), Some(ErrorCode::Preflight), "{report:?}");
    assert_eq!(report.http_status, None);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start().await;
    let elsewhere = format!("{}/elsewhere", server.uri());
    Mock::given(path("/sweep"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", elsewhere.as_str()))
        .mount(&server)
        .await;
    Mock::given(path("/elsewhere"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let req = prepared(&server.uri(), &action("POST", "${STATE_HUB_URL}/sweep"));
    let report = HttpExecutor::new().execute(&req, &run(), &spec()).await;
    assert_eq!(code(&report), Some(ErrorCode::BadResponse), "{report:?}");
    assert_eq!(report.http_status, Some(302));
}

#[tokio::test]
async fn a_hand_built_request_with_a_bad_header_is_config_not_a_panic() {
    let mut req = prepared("http://127.0.0.1:9", &action("GET", "${STATE_HUB_URL}/x"));
    req.headers.push(("bad header".into(), "v".into()));
    let report = HttpExecutor::new().execute(&req, &run(), &spec()).await;
    assert_eq!(code(&report), Some(ErrorCode::Config), "{report:?}");
    assert!(!report.classification.retryable);

    req.headers.clear();
    req.url = "not a url".into();
    let report = HttpExecutor::new().execute(&req, &run(), &spec()).await;
    assert_eq!(code(&report), Some(ErrorCode::Config), "{report:?}");
}

#[tokio::test]
async fn user_info_in_the_url_is_sent_as_basic_auth_and_the_definitions_authorization_wins() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK_CLEAN, "application/json"))
        .mount(&server)
        .await;
    // `p%40ss` is `p@ss` once percent-decoded: "sweeper:p@ss" in Base64.
    let with_user = server.uri().replacen("http://", "http://sweeper:p%40ss@", 1);
    let req = prepared(&with_user, &action("POST", "${STATE_HUB_URL}/sweep"));
    assert!(
        !format!("{req:?}").contains("p%40ss"),
        "the password stays out of Debug"
    );
    let report = HttpExecutor::new().execute(&req, &run(), &spec()).await;
    assert_eq!(report.classification.outcome, Outcome::Ok, "{report:?}");

    let mut a = action("POST", "${STATE_HUB_URL}/sweep");
    a.headers.insert("Authorization".into(), "Bearer ${HUB_TOKEN}".into());
    let req = prepared(&with_user, &a);
    HttpExecutor::new().execute(&req, &run(), &spec()).await;

    let received = server.received_requests().await.unwrap();
    let header = |i: usize, name: &str| received[i].headers.get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(header(0, "authorization").as_deref(), Some("Basic c3dlZXBlcjpwQHNz"));
    assert_eq!(
        header(0, "user-agent"),
        Some(format!("actcore/{}", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(header(0, "accept").as_deref(), Some("*/*"));
    assert_eq!(received[0].url.path(), "/sweep");
    assert_eq!(header(1, "authorization").as_deref(), Some("Bearer s3cret"));
}

#[tokio::test]
async fn an_https_url_that_cannot_connect_is_transport_and_names_the_request() {
    let url = closed_port_url().replacen("http://", "https://", 1);
    let req = prepared(&url, &action("POST", "${STATE_HUB_URL}/sweep"));
    let report = HttpExecutor::new().execute(&req, &run(), &spec()).await;
    assert_eq!(code(&report), Some(ErrorCode::Transport), "{report:?}");
    let message = report.classification.error_message.unwrap();
    assert!(message.starts_with(&format!("POST {url}/sweep: ")), "{message}");
}

#[tokio::test]
async fn the_preflight_is_resolved_once_and_an_edited_one_is_the_one_sent() {
    let server = MockServer::start().await;
    Mock::given(path("/health"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK_CLEAN, "application/json"))
        .mount(&server)
        .await;
    let with_user = server.uri().replacen("http://", "http://probe:pw@", 1);
    let mut a = action("POST", "${STATE_HUB_URL}/sweep");
    a.preflight = Some("${STATE_HUB_URL}/health".into());
    let mut req = prepared(&with_user, &a);
    let report = HttpExecutor::new().execute(&req, &run(), &spec()).await;
    assert_eq!(report.classification.outcome, Outcome::Ok, "{report:?}");
    let received = server.received_requests().await.unwrap();
    assert_eq!(received[0].url.path(), "/health");
    // "probe:pw" in Base64: the preflight carries the URL's user info too.
    assert_eq!(received[0].headers.get("authorization").unwrap(), "Basic cHJvYmU6cHc=");

    req.preflight = Some(format!("{}/down", server.uri()));
    let report = HttpExecutor::new().execute(&req, &run(), &spec()).await;
    assert_eq!(code(&report), Some(ErrorCode::Preflight), "{report:?}");
    let message = report.classification.error_message.unwrap();
    assert!(
        message.starts_with("preflight GET ") && message.contains("/down: HTTP 503"),
        "{message}"
    );
}
