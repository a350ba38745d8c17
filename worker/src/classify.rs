//! Turns what came back from an action into a run's outcome (docs/reference/classification.md).
//!
//! Pure: no I/O, no clock. The executor reduces every exchange to an
//! [`Exchange`]; this module alone decides outcome, error code and whether
//! the retry policy applies, so the table in the contract is implemented
//! (and tested) in one place.

use serde_json::Value;

use crate::definition::ResultSpec;
use crate::run::{ErrorCode, Outcome};

/// How many characters of a body an error message quotes.
const MESSAGE_SNIPPET: usize = 200;

/// What an action produced, reduced to what classification needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exchange<'a> {
    /// No HTTP response at all; `code` is `Transport`, `Timeout`, `Config` or `Preflight`.
    NoResponse { code: ErrorCode, message: String },
    /// A final HTTP response. `truncated` means the body exceeded the size cap,
    /// so `body` holds only its first part.
    Response {
        status: u16,
        body: &'a [u8],
        truncated: bool,
    },
}

/// The verdict on one attempt: the columns of its `activity_runs` row and
/// the input of the retry policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Classification {
    pub outcome: Outcome,
    pub automation_error: bool,
    pub error_code: Option<ErrorCode>,
    /// Short and operator-facing; `None` unless there is an automation error.
    pub error_message: Option<String>,
    /// Non-zero only with [`Outcome::AssessmentFailures`], so retries and
    /// skipped runs never count the same failures twice.
    pub assessment_failures: i32,
    /// Whether the retry policy applies (never for anything but automation errors).
    pub retryable: bool,
    /// The parsed JSON body, when there was one (for the snapshot), whatever the status.
    pub body: Option<Value>,
}

impl Classification {
    fn ok(outcome: Outcome, assessment_failures: i32, body: Option<Value>) -> Self {
        Classification {
            outcome,
            automation_error: false,
            error_code: None,
            error_message: None,
            assessment_failures,
            retryable: false,
            body,
        }
    }

    fn error(code: ErrorCode, retryable: bool, message: String, body: Option<Value>) -> Self {
        Classification {
            outcome: Outcome::AutomationError,
            automation_error: true,
            error_code: Some(code),
            error_message: Some(message),
            assessment_failures: 0,
            retryable,
            body,
        }
    }
}

/// Classifies one exchange, first match wins:
///
/// 1. no response: an automation error with the executor's code; transport,
///    timeout and preflight failures are retried, config errors are not;
/// 2. 5xx (a bridge's 502/504 included): `http_5xx`, retried;
/// 3. 408 and 429: `http_4xx` but retried, unlike other 4xx: they say "not
///    now" (the server timed out waiting, or asks us to slow down), not
///    "this request is wrong", so a later attempt can succeed;
/// 4. other 4xx: `http_4xx`, not retried: the same request will fail again;
/// 5. 1xx, 3xx or a status outside 100..=599: `bad_response`, not retried.
///    A 1xx is never a final answer, and redirects are not followed (a
///    followed POST redirect becomes a GET elsewhere), so either way there is
///    no result to read and the definition's URL needs fixing;
/// 6. 2xx with a truncated or non-JSON body: `bad_response`, not retried;
/// 7. 2xx JSON: the `result` pointers, in order `automation_error` (`remote`,
///    retried), `exit_code` non-zero (`nonzero_exit`, retried), `lock_skipped`,
///    `assessment_failures` > 0, else ok. A missing or `null` value means
///    false/0; a value of the wrong type is `bad_response`, because the
///    remote no longer answers in the shape the definition describes.
pub fn classify(spec: &ResultSpec, exchange: &Exchange<'_>) -> Classification {
    let (status, body, truncated) = match exchange {
        Exchange::NoResponse { code, message } => {
            return Classification::error(*code, code.retryable(), message.clone(), None);
        }
        Exchange::Response {
            status,
            body,
            truncated,
        } => (*status, *body, *truncated),
    };
    let json = if truncated {
        None
    } else {
        serde_json::from_slice::<Value>(body).ok()
    };

    match status {
        500..=599 => {
            let message = format!("HTTP {status} from the remote{}", quote(body, json.as_ref()));
            return Classification::error(ErrorCode::Http5xx, true, message, json);
        }
        408 | 429 => {
            let message = format!(
                "HTTP {status} from the remote (retried later){}",
                quote(body, json.as_ref())
            );
            return Classification::error(ErrorCode::Http4xx, true, message, json);
        }
        400..=499 => {
            let message = format!("HTTP {status} from the remote{}", quote(body, json.as_ref()));
            return Classification::error(ErrorCode::Http4xx, false, message, json);
        }
        200..=299 => {}
        300..=399 => {
            let message =
                format!("HTTP {status}: redirects are not followed; point the action's url at the final address");
            return Classification::error(ErrorCode::BadResponse, false, message, json);
        }
        _ => {
            let message = format!(
                "HTTP {status} is not a final response status{}",
                quote(body, json.as_ref())
            );
            return Classification::error(ErrorCode::BadResponse, false, message, json);
        }
    }

    if truncated {
        let message = format!("HTTP {status} body exceeded the size limit (first part kept in the snapshot)");
        return Classification::error(ErrorCode::BadResponse, false, message, None);
    }
    let Some(json) = json else {
        let what = if body.is_empty() {
            " (empty)".to_string()
        } else {
            format!(": {}", snippet(body))
        };
        let message = format!("HTTP {status} body is not JSON{what}");
        return Classification::error(ErrorCode::BadResponse, false, message, None);
    };
    classify_json(spec, status, json)
}

fn classify_json(spec: &ResultSpec, status: u16, json: Value) -> Classification {
    let bad = |message: String, json: Value| {
        Classification::error(
            ErrorCode::BadResponse,
            false,
            format!("HTTP {status}: {message}"),
            Some(json),
        )
    };

    match flag(&json, &spec.automation_error) {
        Ok(true) => {
            let message = format!("the remote reported an automation error{}", remote_detail(&json));
            return Classification::error(ErrorCode::Remote, true, message, Some(json));
        }
        Ok(false) => {}
        Err(e) => return bad(e, json),
    }
    match count(&json, &spec.exit_code) {
        Ok(0) => {}
        Ok(code) => {
            let message = format!("the remote exited with code {code}{}", remote_detail(&json));
            return Classification::error(ErrorCode::NonzeroExit, true, message, Some(json));
        }
        Err(e) => return bad(e, json),
    }
    match flag(&json, &spec.lock_skipped) {
        Ok(true) => return Classification::ok(Outcome::LockSkipped, 0, Some(json)),
        Ok(false) => {}
        Err(e) => return bad(e, json),
    }
    match count(&json, &spec.assessment_failures) {
        Ok(n) if n > 0 => {
            let n = i32::try_from(n).unwrap_or(i32::MAX);
            Classification::ok(Outcome::AssessmentFailures, n, Some(json))
        }
        Ok(0) => Classification::ok(Outcome::Ok, 0, Some(json)),
        Ok(n) => bad(
            format!("`{}` is {n}; a count cannot be negative", spec.assessment_failures),
            json,
        ),
        Err(e) => bad(e, json),
    }
}

/// A boolean at `pointer`; missing or null is false.
fn flag(json: &Value, pointer: &str) -> Result<bool, String> {
    match json.pointer(pointer) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(format!("`{pointer}` is {}, expected true or false", type_name(other))),
    }
}

/// An integer at `pointer` (an integral float such as `2.0` is accepted);
/// missing or null is 0.
fn count(json: &Value, pointer: &str) -> Result<i64, String> {
    let wrong = |v: &Value| format!("`{pointer}` is {}, expected an integer", type_name(v));
    match json.pointer(pointer) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if n.as_u64().is_some() {
                Ok(i64::MAX)
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.is_finite() => {
                        Ok(f.clamp(i64::MIN as f64, i64::MAX as f64) as i64)
                    }
                    _ => Err(format!("`{pointer}` is {n}, expected an integer")),
                }
            }
        }
        Some(other) => Err(wrong(other)),
    }
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the string {:?}", truncate_chars(s, 40)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// `" C-00: message"` from the body's `/error/check` and `/error/message`
/// (State Hub's shape), or nothing.
fn remote_detail(json: &Value) -> String {
    let text = |p: &str| {
        json.pointer(p)
            .and_then(Value::as_str)
            .map(collapse)
            .filter(|s| !s.is_empty())
    };
    match (text("/error/check"), text("/error/message")) {
        (Some(check), Some(message)) => format!(" ({check}): {}", truncate_chars(&message, MESSAGE_SNIPPET)),
        (Some(check), None) => format!(" ({check})"),
        (None, Some(message)) => format!(": {}", truncate_chars(&message, MESSAGE_SNIPPET)),
        (None, None) => String::new(),
    }
}

/// `": <what the body says>"` for an HTTP error, or nothing for an empty body.
fn quote(body: &[u8], json: Option<&Value>) -> String {
    if let Some(detail) = json.map(remote_detail).filter(|d| !d.is_empty()) {
        return detail;
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return String::new();
    }
    format!(": {}", snippet(body))
}

/// The first [`MESSAGE_SNIPPET`] characters of a body, whitespace collapsed
/// and, for HTML (an nginx error page), tags dropped so the text remains.
fn snippet(body: &[u8]) -> String {
    // Only the start is ever quoted; bound the work for a large body.
    let head = &body[..body.len().min(16 * 1024)];
    let text = String::from_utf8_lossy(head);
    let text = if text.trim_start().starts_with('<') {
        strip_tags(&text)
    } else {
        text.into_owned()
    };
    truncate_chars(&collapse(&text), MESSAGE_SNIPPET)
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first `max` characters of `text`, with `…` when it was longer.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests;
