//! `trigger --wait`: follow a run to its end, expire it if no worker
//! claimed it in time, check the canary, and say it in one report whose
//! `ok` decides the exit code (0: ok, assessment failures or lock skipped,
//! and the canary found; 1: an automation error, a timeout, no canary event).

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::canary::{self, Verdict};
use crate::error::{Error, Result};
use crate::run::Source;
use crate::store::{GuardStore, RunRow, RunStore, StoredDefinition, redact_url};
use crate::template;

/// How often the run's row is read while waiting.
pub const POLL: Duration = Duration::from_millis(250);

/// What `--wait` prints (`--json`: this object).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub run_id: Uuid,
    pub slug: String,
    pub state: String,
    pub outcome: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub assessment_failures: i32,
    pub worker_id: Option<String>,
    /// The response's scalar fields (and its `error`), from the snapshot.
    pub summary: Value,
    pub canary: Option<CanaryCheck>,
    /// Exit 0 when true.
    pub ok: bool,
    /// Why not ok, in words.
    pub reason: Option<String>,
}

/// The canary check after the run.
#[derive(Clone, Debug, Serialize)]
pub struct CanaryCheck {
    pub url: String,
    pub found: bool,
    pub verdict: Option<Verdict>,
    pub error: Option<String>,
}

/// Waits for `run_id` to end: queued past `queue_deadline` it is expired
/// (recorded `abandoned`, `expired`, never fires later); running past its
/// own deadline it is reported as a timeout (the row is the worker's to end).
pub async fn follow<S: RunStore + GuardStore>(
    store: &S,
    def: &StoredDefinition,
    run_id: Uuid,
    queue_deadline: Timestamp,
) -> Result<Report> {
    let run_deadline = super::local::deadline(&def.definition);
    loop {
        let row = store
            .run_by_id(run_id)
            .await?
            .ok_or_else(|| Error::Internal(format!("run {run_id} vanished from activity_runs")))?;
        let now = Timestamp::now();
        match row.state.as_str() {
            "queued" if now >= queue_deadline => {
                store.expire_queued(now, Some(run_id)).await?;
                continue;
            }
            "running" if row.started_at.is_some_and(|s| now >= s + run_deadline) => {
                let mut r = report(def, row, None);
                r.ok = false;
                r.reason = Some(format!(
                    "timeout: still running {}s after it started; the worker records its end (`actcore runs --slug {}`)",
                    run_deadline.as_secs(),
                    def.definition.slug
                ));
                return Ok(r);
            }
            "queued" | "running" => tokio::time::sleep(POLL).await,
            _ => {
                let check = match (&def.definition.canary, row.outcome.as_deref()) {
                    (Some(spec), Some("ok" | "assessment_failures" | "lock_skipped")) => {
                        Some(check_canary(spec, row.started_at.unwrap_or(row.fired_at)).await)
                    }
                    _ => None,
                };
                return Ok(report(def, row, check));
            }
        }
    }
}

async fn check_canary(spec: &crate::definition::CanarySpec, since: Timestamp) -> CanaryCheck {
    let url = match template::render_with(&spec.verify, template::source_lookup(Source::Manual)) {
        Ok(u) => u,
        Err(e) => {
            return CanaryCheck {
                url: spec.verify.clone(),
                found: false,
                verdict: None,
                error: Some(format!("canary.verify: {e}")),
            };
        }
    };
    let client = reqwest::Client::new();
    match canary::fetch(&client, &url, spec, Source::Manual, since).await {
        Ok(v) => CanaryCheck {
            url: redact_url(&url),
            found: v.found,
            verdict: Some(v),
            error: None,
        },
        Err(e) => CanaryCheck {
            url: redact_url(&url),
            found: false,
            verdict: None,
            error: Some(e),
        },
    }
}

/// The one place the report is built.
fn report(def: &StoredDefinition, row: RunRow, canary: Option<CanaryCheck>) -> Report {
    let healthy = matches!(
        row.outcome.as_deref(),
        Some("ok" | "assessment_failures" | "lock_skipped")
    );
    let reason = if !healthy {
        Some(match (row.outcome.as_deref(), row.error_code.as_deref()) {
            (Some("automation_error"), Some("expired")) => {
                "timeout: no worker claimed the run in time; recorded abandoned (expired), it will never fire; \
                 start a worker or use --local"
                    .to_string()
            }
            (Some(o), code) => format!(
                "{o}{}: {}",
                code.map(|c| format!(" ({c})")).unwrap_or_default(),
                row.error_message.as_deref().unwrap_or("")
            ),
            (None, _) => format!("ended {} without an outcome", row.state),
        })
    } else {
        canary.as_ref().filter(|c| !c.found).map(|c| match (&c.error, &c.verdict) {
            (Some(e), _) => format!("canary check failed: {e}"),
            (None, Some(v)) => format!(
                "canary: no event from `manual` at or after the run's start (less {}s of clock skew) among {} events at {}",
                canary::CLOCK_SKEW.as_secs(),
                v.events,
                c.url
            ),
            (None, None) => "canary: no answer".to_string(),
        })
    };
    Report {
        run_id: row.run_id,
        slug: def.definition.slug.clone(),
        summary: summary(&row.context_snapshot, &def.definition.result.snapshot_key),
        state: row.state,
        outcome: row.outcome,
        error_code: row.error_code,
        error_message: row.error_message,
        assessment_failures: row.assessment_failures,
        worker_id: row.worker_id,
        canary,
        ok: reason.is_none(),
        reason,
    }
}

/// The response body's scalar fields and its `error` object: what an
/// operator reads at a glance (`actcore runs` / SQL have the whole body).
fn summary(snapshot: &Value, key: &str) -> Value {
    let mut out = Map::new();
    if let Some(Value::Object(body)) = snapshot.get(key) {
        for (k, v) in body {
            if !(v.is_array() || v.is_object()) || k == "error" {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(status) = snapshot.get("http_status") {
        out.insert("http_status".into(), status.clone());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_keeps_scalars_and_the_error() {
        let snap = serde_json::json!({
            "http_status": 200,
            "sweep": {"exit_code": 1, "repos_processed": [1, 2], "error": {"check": "C-00"}, "automation_error": true}
        });
        let s = summary(&snap, "sweep");
        assert_eq!(
            s,
            serde_json::json!({"exit_code": 1, "error": {"check": "C-00"}, "automation_error": true, "http_status": 200})
        );
    }
}
