//! The shape of `activity_runs.context_snapshot`, built here and nowhere
//! else: operators query these keys with plain SQL, so a key renamed in one
//! code path and not another would silently break a dashboard.
//!
//! A claimed run's snapshot is written in two parts: [`claimed`] at claim
//! time, and [`finished`] merged into it (a shallow `||`) when the result is
//! recorded. Rows that never execute get theirs whole ([`misfire`]).
//! [`make_storable`] runs last on whatever goes to the database.

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::action::{ActionReport, PreparedRequest, redact_url};
use crate::definition::Definition;
use crate::run::Trigger;
use crate::schedule::Missed;

/// Request bodies up to this size are copied into every run's snapshot;
/// larger ones are represented by their size and SHA-256 only (a 5 MB
/// body would otherwise make every row 5 MB).
pub const MAX_REQUEST_BODY_COPY: usize = 4096;

/// Why a misfire row exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MisfireReason {
    /// The instant came due later than the grace (the worker was down or
    /// stalled): the misfire policy decided.
    PastGrace,
    /// The claim could not be written within the grace (the database was
    /// unreachable); recorded once it was back.
    ClaimFailed,
}

impl MisfireReason {
    fn as_str(self) -> &'static str {
        match self {
            MisfireReason::PastGrace => "past_grace",
            MisfireReason::ClaimFailed => "claim_failed",
        }
    }
}

/// Written with the claim, before the action starts. `lateness_ms` is the
/// planned lateness (fire time − instant, i.e. the jitter); the result
/// replaces it with when the request actually left.
pub fn claimed(spec_hash: &str, scheduled_for: &str, jitter_ms: i64) -> Value {
    started(Trigger::Schedule, spec_hash, scheduled_for, jitter_ms)
}

/// The same first part for a run fired by another trigger (the local
/// fallback): its row is written before the request, as a claim is.
pub fn started(trigger: Trigger, spec_hash: &str, scheduled_for: &str, lateness_ms: i64) -> Value {
    json!({
        "trigger": trigger.as_str(),
        "spec_hash": spec_hash,
        "scheduled_for": scheduled_for,
        "lateness_ms": lateness_ms,
    })
}

/// What the execution adds: the request (URL password masked, headers left
/// out since they carry tokens), the response facts, `lateness_ms` (when
/// the request left, counted from the fire time), and the response's JSON
/// body under the definition's `snapshot_key`.
pub fn finished(
    def: &Definition,
    req: &PreparedRequest,
    report: &ActionReport,
    sent_at: Timestamp,
    fire_at: Timestamp,
) -> Value {
    let mut snap = exchange(req, report);
    snap["lateness_ms"] = json!(sent_at.duration_since(fire_at).as_millis());
    if let Some(body) = &report.classification.body {
        snap[def.result.snapshot_key.as_str()] = body.clone();
    }
    snap
}

/// The request and response facts of one exchange (also the bench's and
/// the tests' view of a report).
pub fn exchange(req: &PreparedRequest, report: &ActionReport) -> Value {
    let mut request = json!({
        "method": req.method.as_str(),
        "url": redact_url(&req.url),
    });
    if let Some(bytes) = &req.body {
        request["body_bytes"] = json!(bytes.len());
        request["body_sha256"] = json!(req.body_sha256);
        if bytes.len() <= MAX_REQUEST_BODY_COPY {
            request["body"] = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        }
    }
    let mut parts = json!({
        "request": request,
        "http_status": report.http_status,
        "duration_ms": report.duration_ms,
        "truncated": report.truncated,
    });
    if let Some(text) = &report.body_text {
        parts["body_text"] = Value::String(text.clone());
    }
    parts
}

/// A run that could not even be prepared (an unset variable, a bad URL):
/// nothing was sent, the error message says why.
pub fn not_sent() -> Value {
    json!({ "request": null })
}

/// A run that never reached the action, with why (`shutdown`, `panic`).
pub fn not_executed(reason: &str) -> Value {
    json!({ "not_executed": reason })
}

/// A result the database refused to store: the reason replaces the snapshot.
pub fn unstorable(reason: &str) -> Value {
    let mut reason = crate::classify::truncate_chars(reason, 1000);
    storable_text(&mut reason);
    json!({ "snapshot_unstorable": reason })
}

/// One `skipped_misfire` row: which instants, why, and the policy that decided.
pub fn misfire(def: &Definition, spec_hash: &str, m: &Missed, reason: MisfireReason, now: Timestamp) -> Value {
    json!({
        "trigger": Trigger::Schedule.as_str(),
        "spec_hash": spec_hash,
        "misfire": {
            "count": m.count,
            "first": m.first.to_string(),
            "last": m.last.to_string(),
            "grace_ms": def.schedule.misfire_grace.as_millis(),
            "policy": def.schedule.misfire,
            "reason": reason.as_str(),
        },
        "lateness_ms": now.duration_since(m.last).as_millis(),
    })
}

/// Makes a snapshot storable in any backend: Postgres `jsonb` (and
/// `text`) cannot hold a NUL character, so each one in a key or string is
/// replaced by the six characters `\u0000`, and the snapshot says how many
/// under `"sanitized"`. Returns that count (0: untouched).
pub fn make_storable(snapshot: &mut Value) -> usize {
    let n = escape_nul_in(snapshot);
    if n > 0
        && let Some(map) = snapshot.as_object_mut()
    {
        map.insert(
            "sanitized".into(),
            json!({"nul_characters_escaped": n, "note": "NUL characters were replaced by the text \\u0000"}),
        );
    }
    n
}

/// The same for a text column (`error_message`).
pub fn storable_text(text: &mut String) -> usize {
    let n = text.matches('\0').count();
    if n > 0 {
        *text = text.replace('\0', "\\u0000");
    }
    n
}

fn escape_nul_in(v: &mut Value) -> usize {
    match v {
        Value::String(s) => storable_text(s),
        Value::Array(items) => items.iter_mut().map(escape_nul_in).sum(),
        Value::Object(map) => {
            let mut n = 0;
            if map.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(map);
                *map = old
                    .into_iter()
                    .map(|(mut k, v)| {
                        n += storable_text(&mut k);
                        (k, v)
                    })
                    .collect::<Map<_, _>>();
            }
            n + map.values_mut().map(escape_nul_in).sum::<usize>()
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault2_nul_characters_are_escaped_everywhere_and_counted() {
        let mut v = json!({"a\u{0}b": ["x\u{0}", {"y": "\u{0}\u{0}"}], "n": 1, "ok": "plain"});
        assert_eq!(make_storable(&mut v), 4);
        assert_eq!(v["a\\u0000b"][0], "x\\u0000");
        assert_eq!(v["a\\u0000b"][1]["y"], "\\u0000\\u0000");
        assert_eq!(v["ok"], "plain");
        assert_eq!(v["sanitized"]["nul_characters_escaped"], 4);
        fn has_nul(v: &Value) -> bool {
            match v {
                Value::String(s) => s.contains('\0'),
                Value::Array(a) => a.iter().any(has_nul),
                Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
                _ => false,
            }
        }
        assert!(!has_nul(&v), "{v}");
    }

    fn exchange_with_body(body: Value) -> Value {
        let mut def = crate::definition::sample(uuid::Uuid::nil(), "s", "* * * * *", "http://127.0.0.1:9/x");
        def.action.body = Some(body);
        let req = crate::action::prepare(&def.action, |_| None).unwrap();
        let report = ActionReport {
            classification: crate::classify::classify(
                &def.result,
                &crate::classify::Exchange::NoResponse {
                    code: crate::run::ErrorCode::Transport,
                    message: "refused".into(),
                },
            ),
            http_status: None,
            duration_ms: 1,
            body_text: None,
            truncated: false,
        };
        exchange(&req, &report)
    }

    #[test]
    fn fault9_a_large_request_body_is_kept_as_its_size_and_hash_not_copied() {
        let big = exchange_with_body(json!({"blob": "x".repeat(5 << 20)}));
        let request = &big["request"];
        assert!(request.get("body").is_none(), "not copied into every row");
        assert!(request["body_bytes"].as_u64().unwrap() > 5 << 20);
        assert_eq!(request["body_sha256"].as_str().unwrap().len(), 64);
        assert!(big.to_string().len() < 1024, "the snapshot stays small");

        let small = exchange_with_body(json!({"max_seconds": 300}));
        assert_eq!(
            small["request"]["body"],
            json!({"max_seconds": 300}),
            "a small body is copied"
        );
        assert_eq!(small["request"]["body_bytes"], 19);
    }

    #[test]
    fn a_clean_snapshot_is_left_alone() {
        let mut v = json!({"a": "b", "c": [1, 2]});
        let before = v.clone();
        assert_eq!(make_storable(&mut v), 0);
        assert_eq!(v, before);
    }
}
