use super::*;

macro_rules! fixture {
    ($file:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/state-hub/",
            $file
        ))
        .as_slice()
    };
}

fn spec() -> ResultSpec {
    ResultSpec::standard("consistency_sweep_remote_all")
}

fn response(status: u16, body: &[u8]) -> Classification {
    classify(
        &spec(),
        &Exchange::Response {
            status,
            body,
            truncated: false,
        },
    )
}

fn assert_error(c: &Classification, code: ErrorCode, retryable: bool) {
    assert_eq!(c.outcome, Outcome::AutomationError, "{c:?}");
    assert!(c.automation_error, "{c:?}");
    assert_eq!(c.error_code, Some(code), "{c:?}");
    assert_eq!(c.retryable, retryable, "{c:?}");
    assert_eq!(c.assessment_failures, 0, "{c:?}");
    assert!(c.error_message.as_deref().is_some_and(|m| !m.is_empty()), "{c:?}");
}

fn assert_not_error(c: &Classification, outcome: Outcome, failures: i32) {
    assert_eq!(c.outcome, outcome, "{c:?}");
    assert!(!c.automation_error && !c.retryable, "{c:?}");
    assert_eq!((c.error_code, c.error_message.as_deref()), (None, None), "{c:?}");
    assert_eq!(c.assessment_failures, failures, "{c:?}");
    assert!(c.body.is_some(), "the JSON body is kept for the snapshot");
}

#[test]
fn state_hub_fixtures_classify_as_the_readme_says() {
    assert_not_error(&response(200, fixture!("ok-clean.json")), Outcome::Ok, 0);
    assert_not_error(
        &response(200, fixture!("assessment-failures.json")),
        Outcome::AssessmentFailures,
        2,
    );
    assert_not_error(&response(200, fixture!("lock-skipped.json")), Outcome::LockSkipped, 0);
    assert_not_error(&response(200, fixture!("budget-exhausted.json")), Outcome::Ok, 0);

    let c00 = response(200, fixture!("automation-error-c00.json"));
    assert_error(&c00, ErrorCode::Remote, true);
    assert_eq!(
        c00.error_message.as_deref(),
        Some("the remote reported an automation error (C-00): state hub API unreachable from sweep runner")
    );
    assert!(c00.body.is_some());

    let bridge = response(502, fixture!("bridge-502.html"));
    assert_error(&bridge, ErrorCode::Http5xx, true);
    assert_eq!(
        bridge.error_message.as_deref(),
        Some("HTTP 502 from the remote: 502 Bad Gateway 502 Bad Gateway nginx")
    );
    assert!(bridge.body.is_none());

    let truncated = response(200, fixture!("truncated.json"));
    assert_error(&truncated, ErrorCode::BadResponse, false);
    assert!(truncated.body.is_none());
}

#[test]
fn no_response_keeps_the_executors_code() {
    for (code, retryable) in [
        (ErrorCode::Transport, true),
        (ErrorCode::Timeout, true),
        (ErrorCode::Preflight, true),
        (ErrorCode::Config, false),
    ] {
        let message = format!("{code} happened");
        let c = classify(
            &spec(),
            &Exchange::NoResponse {
                code,
                message: message.clone(),
            },
        );
        assert_error(&c, code, retryable);
        assert_eq!(c.error_message, Some(message));
        assert!(c.body.is_none());
    }
}

#[test]
fn http_statuses() {
    assert_error(&response(503, b"down"), ErrorCode::Http5xx, true);
    assert_error(&response(504, b""), ErrorCode::Http5xx, true);
    assert_eq!(
        response(504, b" \n").error_message.as_deref(),
        Some("HTTP 504 from the remote")
    );
    assert_error(&response(404, b"not found"), ErrorCode::Http4xx, false);
    assert_error(&response(400, b"{}"), ErrorCode::Http4xx, false);
    assert_error(&response(408, b""), ErrorCode::Http4xx, true);
    assert_error(&response(429, b"slow down"), ErrorCode::Http4xx, true);
    // 1xx, 3xx and nonsense statuses are not results.
    for status in [100, 101, 301, 302, 304, 307, 0, 99, 600, 999] {
        assert_error(
            &response(status, fixture!("ok-clean.json")),
            ErrorCode::BadResponse,
            false,
        );
    }
    assert!(
        response(302, b"")
            .error_message
            .unwrap()
            .contains("redirects are not followed")
    );
}

#[test]
fn error_bodies_are_quoted_briefly_and_kept_when_json() {
    let long = format!("<p>{}</p>", "x ".repeat(1000));
    let m = response(500, long.as_bytes()).error_message.unwrap();
    assert!(m.starts_with("HTTP 500 from the remote: x x x"), "{m}");
    assert!(m.chars().count() < 260, "{m}");
    assert!(m.ends_with('…'), "{m}");

    let json = br#"{"error": {"message": "token\n expired"}}"#;
    let c = response(401, json);
    assert_eq!(
        c.error_message.as_deref(),
        Some("HTTP 401 from the remote: token expired")
    );
    assert!(c.body.is_some(), "a JSON error body is kept for the snapshot");
}

#[test]
fn two_hundred_without_usable_json_is_bad_response() {
    for body in [&b"<html>ok</html>"[..], b"", b"\xff\xfe not utf-8", b"{\"a\": 1"] {
        let c = response(200, body);
        assert_error(&c, ErrorCode::BadResponse, false);
        assert!(c.body.is_none());
    }
    assert_eq!(
        response(204, b"").error_message.as_deref(),
        Some("HTTP 204 body is not JSON (empty)")
    );

    // Over the cap: even a prefix that happens to parse is not trusted.
    let c = classify(
        &spec(),
        &Exchange::Response {
            status: 200,
            body: b"{}",
            truncated: true,
        },
    );
    assert_error(&c, ErrorCode::BadResponse, false);
    assert!(c.error_message.unwrap().contains("size limit"));
}

#[test]
fn pointers_in_precedence_order() {
    let c = response(
        200,
        br#"{"automation_error": true, "exit_code": 3, "lock_skipped": true}"#,
    );
    assert_error(&c, ErrorCode::Remote, true);
    assert_eq!(
        c.error_message.as_deref(),
        Some("the remote reported an automation error")
    );

    let c = response(
        200,
        br#"{"exit_code": 3, "lock_skipped": true, "assessment_failures": 4}"#,
    );
    assert_error(&c, ErrorCode::NonzeroExit, true);
    assert_eq!(c.error_message.as_deref(), Some("the remote exited with code 3"));
    assert_error(&response(200, br#"{"exit_code": -1}"#), ErrorCode::NonzeroExit, true);

    let c = response(200, br#"{"lock_skipped": true, "assessment_failures": 4}"#);
    assert_not_error(&c, Outcome::LockSkipped, 0);
    assert_not_error(
        &response(200, br#"{"assessment_failures": 4.0}"#),
        Outcome::AssessmentFailures,
        4,
    );
    let huge = response(200, br#"{"assessment_failures": 99999999999999999999}"#);
    assert_not_error(&huge, Outcome::AssessmentFailures, i32::MAX);
}

#[test]
fn missing_or_null_pointers_mean_false_and_zero() {
    assert_not_error(&response(200, b"{}"), Outcome::Ok, 0);
    assert_not_error(&response(200, b"[]"), Outcome::Ok, 0);
    let nulls = br#"{"automation_error": null, "exit_code": null, "lock_skipped": null, "assessment_failures": null}"#;
    assert_not_error(&response(200, nulls), Outcome::Ok, 0);

    let nested = ResultSpec {
        automation_error: "/result/fault".into(),
        ..spec()
    };
    let c = classify(
        &nested,
        &Exchange::Response {
            status: 200,
            body: br#"{"result": {"fault": true}}"#,
            truncated: false,
        },
    );
    assert_error(&c, ErrorCode::Remote, true);
}

#[test]
fn wrong_types_are_bad_response() {
    for body in [
        &br#"{"automation_error": "false"}"#[..],
        br#"{"exit_code": "0"}"#,
        br#"{"exit_code": 0.5}"#,
        br#"{"lock_skipped": 1}"#,
        br#"{"assessment_failures": [1]}"#,
        br#"{"assessment_failures": -2}"#,
    ] {
        let c = response(200, body);
        assert_error(&c, ErrorCode::BadResponse, false);
        assert!(c.body.is_some());
        let m = c.error_message.unwrap();
        assert!(m.starts_with("HTTP 200: `/"), "{m}");
    }
}
