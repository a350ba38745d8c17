//! The shape of `activity_runs.context_snapshot`, built here and nowhere
//! else: operators query these keys with plain SQL, so a key renamed in one
//! code path and not another would silently break a dashboard.
//!
//! A claimed run's snapshot is written in two parts: [`claimed`] at claim
//! time, and [`finished`] merged into it (a shallow `||`) when the result is
//! recorded. Rows that never execute get theirs whole ([`misfire`]).
//! [`storable`] runs last on whatever goes to the database.
//!
//! The two parts every fire writes are serialised straight to JSON text
//! ([`Stored`]), not built as `serde_json::Value` trees: at 10,000 runs an
//! instant, the trees' allocations, the copy of the response body and the
//! walk to serialise them were a tenth of the worker's CPU per fire. The
//! request part, the same for every run of an activity, is serialised once
//! per prepared request ([`request_part`]).

use jiff::Timestamp;
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::action::{ActionReport, PreparedRequest};
use crate::definition::Definition;
use crate::run::Trigger;
use crate::schedule::Missed;

/// Request bodies up to this size are copied into every run's snapshot;
/// larger ones are represented by their size and SHA-256 only (a 5 MB
/// body would otherwise make every row 5 MB).
pub const MAX_REQUEST_BODY_COPY: usize = 4096;

/// A snapshot (or the part merged into one) as JSON text, serialised once:
/// the stores bind it as it is.
pub type Stored = Box<RawValue>;

/// Serialises `v` to a [`Stored`] snapshot.
pub fn to_stored<T: Serialize + ?Sized>(v: &T) -> Stored {
    // Serialising our own shapes (string keys, no floats from outside) cannot fail.
    serde_json::value::to_raw_value(v).expect("a snapshot serialises")
}

/// Parses a [`Stored`] snapshot back (the slow paths: SQLite's merge, the
/// fallback's journal, tests).
pub fn to_value(s: &RawValue) -> Value {
    serde_json::from_str(s.get()).expect("a stored snapshot is JSON")
}

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

/// The first part, written before the request leaves.
#[derive(Serialize)]
struct Started<'a> {
    trigger: &'a str,
    spec_hash: &'a str,
    scheduled_for: &'a str,
    lateness_ms: i64,
}

/// Written with the claim, before the action starts. `lateness_ms` is the
/// planned lateness (fire time − instant, i.e. the jitter); the result
/// replaces it with when the request actually left.
pub fn claimed(spec_hash: &str, scheduled_for: &str, jitter_ms: i64) -> Stored {
    to_stored(&Started {
        trigger: Trigger::Schedule.as_str(),
        spec_hash,
        scheduled_for,
        lateness_ms: jitter_ms,
    })
}

/// The same first part for a run fired by another trigger (the local
/// fallback): its row is written before the request, as a claim is.
pub fn started(trigger: Trigger, spec_hash: &str, scheduled_for: &str, lateness_ms: i64) -> Value {
    serde_json::to_value(Started {
        trigger: trigger.as_str(),
        spec_hash,
        scheduled_for,
        lateness_ms,
    })
    .expect("a snapshot serialises")
}

/// The request as the snapshot shows it: method, URL (password masked),
/// the body's size and SHA-256, and the body itself up to
/// [`MAX_REQUEST_BODY_COPY`]. Headers are left out: they carry tokens.
/// The same for every run of an activity, so built once per prepared request.
pub fn request_part(method: &str, url: &str, body: Option<&[u8]>, body_sha256: Option<&str>) -> Stored {
    #[derive(Serialize)]
    struct Request<'a> {
        method: &'a str,
        url: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        body_bytes: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        body_sha256: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<Value>,
    }
    to_stored(&Request {
        method,
        url: crate::action::redact_url(url),
        body_bytes: body.map(<[u8]>::len),
        body_sha256: body.and(body_sha256),
        body: body
            .filter(|b| b.len() <= MAX_REQUEST_BODY_COPY)
            .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null)),
    })
}

/// What the execution adds: the request (see [`request_part`]), the
/// response facts, `lateness_ms` (when the request left, counted from the
/// fire time), and the response's JSON body under the definition's
/// `snapshot_key`.
pub fn finished(
    def: &Definition,
    req: &PreparedRequest,
    report: &ActionReport,
    sent_at: Timestamp,
    fire_at: Timestamp,
) -> Stored {
    to_stored(&Exchange {
        request: &req.snapshot_part(),
        report,
        lateness_ms: Some(sent_at.duration_since(fire_at).as_millis()),
        body_key: Some(def.result.snapshot_key.as_str()),
    })
}

/// The request and response facts of one exchange (also the bench's and
/// the tests' view of a report).
pub fn exchange(req: &PreparedRequest, report: &ActionReport) -> Value {
    serde_json::to_value(Exchange {
        request: &req.snapshot_part(),
        report,
        lateness_ms: None,
        body_key: None,
    })
    .expect("a snapshot serialises")
}

/// The finished part, serialised field by field from the report (the
/// response body is written from the classification's parsed `Value`, not
/// copied).
struct Exchange<'a> {
    request: &'a RawValue,
    report: &'a ActionReport,
    lateness_ms: Option<i128>,
    /// Where the response's JSON body goes (None: left out).
    body_key: Option<&'a str>,
}

impl Serialize for Exchange<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.report;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("request", self.request)?;
        map.serialize_entry("http_status", &r.http_status)?;
        map.serialize_entry("duration_ms", &r.duration_ms)?;
        map.serialize_entry("truncated", &r.truncated)?;
        if let Some(text) = &r.body_text {
            map.serialize_entry("body_text", text)?;
        }
        if let Some(ms) = self.lateness_ms {
            map.serialize_entry("lateness_ms", &ms)?;
        }
        if let (Some(key), Some(body)) = (self.body_key, &r.classification.body) {
            map.serialize_entry(key, body)?;
        }
        map.end()
    }
}

/// A run that could not even be prepared (an unset variable, a bad URL):
/// nothing was sent, the error message says why.
pub fn not_sent() -> Stored {
    to_stored(&json!({ "request": null }))
}

/// A run that never reached the action, with why (`shutdown`, `panic`).
pub fn not_executed(reason: &str) -> Stored {
    to_stored(&json!({ "not_executed": reason }))
}

/// A result the database refused to store: the reason replaces the snapshot.
pub fn unstorable(reason: &str) -> Stored {
    let mut reason = crate::classify::truncate_chars(reason, 1000);
    storable_text(&mut reason);
    to_stored(&json!({ "snapshot_unstorable": reason }))
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

/// [`make_storable`] for serialised text: JSON text holds a NUL character
/// only as the escape `\u0000`, so text without that sequence is returned
/// as it is (the common case costs one scan); otherwise it is parsed,
/// escaped and serialised again.
pub fn storable(s: Stored) -> Stored {
    if !s.get().contains("\\u0000") {
        return s;
    }
    let mut v = to_value(&s);
    match make_storable(&mut v) {
        0 => s,
        _ => to_stored(&v),
    }
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
    fn fault2_stored_text_with_a_nul_is_escaped_and_clean_text_kept_as_it_is() {
        // A literal backslash-u in a string looks like the escape to the scan:
        // parsed, found clean, and returned untouched.
        let lookalike = to_stored(&json!({"a": "x\\u0000y"}));
        assert!(lookalike.get().contains("\\u0000"));
        let kept = storable(lookalike.clone());
        assert_eq!(kept.get(), lookalike.get());
        assert!(to_value(&kept).get("sanitized").is_none());

        let fixed = to_value(&storable(to_stored(&json!({"body_text": "a\u{0}b"}))));
        assert_eq!(fixed["body_text"], "a\\u0000b");
        assert_eq!(fixed["sanitized"]["nul_characters_escaped"], 1);
    }

    #[test]
    fn the_finished_part_carries_the_request_the_response_and_the_body_under_its_key() {
        let mut def = crate::definition::sample(uuid::Uuid::nil(), "s", "* * * * *", "http://u:secret@127.0.0.1:9/x");
        def.action.body = Some(json!({"max_seconds": 300}));
        let req = crate::action::prepare(&def.action, |_| None).unwrap();
        let mut report = ActionReport {
            classification: crate::classify::classify(
                &def.result,
                &crate::classify::Exchange::NoResponse {
                    code: crate::run::ErrorCode::Transport,
                    message: "refused".into(),
                },
            ),
            http_status: Some(200),
            duration_ms: 7,
            body_text: None,
            truncated: false,
        };
        report.classification.body = Some(json!({"ok": true}));
        let fire: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let sent = fire + jiff::SignedDuration::from_millis(12);
        let v = to_value(&finished(&def, &req, &report, sent, fire));
        assert_eq!(
            v["request"]["url"], "http://u:***@127.0.0.1:9/x",
            "the password is masked"
        );
        assert_eq!(v["request"]["body"], json!({"max_seconds": 300}));
        assert_eq!(v["request"]["body_sha256"].as_str().map(str::len), Some(64));
        assert_eq!(v["http_status"], 200);
        assert_eq!(v["duration_ms"], 7);
        assert_eq!(v["lateness_ms"], 12);
        assert_eq!(v[def.result.snapshot_key.as_str()], json!({"ok": true}));
        assert!(v.get("body_text").is_none());

        // A request edited after `prepare` is described as it is now.
        let mut edited = req;
        edited.url = "http://127.0.0.1:9/other".into();
        assert_eq!(
            to_value(&finished(&def, &edited, &report, sent, fire))["request"]["url"],
            "http://127.0.0.1:9/other"
        );
    }

    #[test]
    fn a_clean_snapshot_is_left_alone() {
        let mut v = json!({"a": "b", "c": [1, 2]});
        let before = v.clone();
        assert_eq!(make_storable(&mut v), 0);
        assert_eq!(v, before);
    }
}
