//! The JSON endpoints: probes, metrics, status, activities, runs, overrides.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::{ApiState, Liveness};
use crate::ops::{self, Op};
use crate::run::Outcome;
use crate::store::{DefinitionSource, GuardStore, RunQuery, StoredDefinition, schema};

const DB_CHECK: std::time::Duration = std::time::Duration::from_secs(3);

/// `GET /healthz`: the worker loop woke within three periods; for `actcore
/// api`, the database pool answers.
pub(super) async fn healthz(State(s): State<ApiState>) -> Response {
    match &s.inner.liveness {
        Liveness::Loop(h) => {
            let age = h.age().map(|a| a.as_secs_f64());
            let alive = h.alive();
            let body = json!({"alive": alive, "loop_heartbeat_age_s": age, "loop_period_s": h.every().as_secs_f64()});
            let code = if alive {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, Json(body)).into_response()
        }
        Liveness::Server => {
            let ok = matches!(
                tokio::time::timeout(DB_CHECK, s.store().definitions_version()).await,
                Ok(Ok(_))
            );
            let code = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, Json(json!({"alive": ok, "database": ok}))).into_response()
        }
    }
}

/// `GET /readyz`: database reachable, schema accepted, definitions loaded,
/// start-up checks passed.
pub(super) async fn readyz(State(s): State<ApiState>) -> Response {
    let schema = match tokio::time::timeout(DB_CHECK, schema::check(s.store())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer from the database within {} s", DB_CHECK.as_secs())),
    };
    let definitions = match &s.inner.liveness {
        // The loop stamps its heartbeat only after it has loaded the definitions.
        Liveness::Loop(h) => h
            .age()
            .map(|_| ())
            .ok_or_else(|| "the worker has not loaded its definitions yet".to_string()),
        Liveness::Server => match tokio::time::timeout(DB_CHECK, s.definitions()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("reading the definitions timed out".into()),
        },
    };
    let checks = s.inner.checks_passed.load(std::sync::atomic::Ordering::Relaxed);
    let ready = schema.is_ok() && definitions.is_ok() && checks;
    let show = |r: &Result<(), String>| r.as_ref().err().cloned().unwrap_or_else(|| "ok".into());
    let body = json!({
        "ready": ready,
        "database_and_schema": show(&schema),
        "definitions": show(&definitions),
        "startup_checks": if checks { "ok" } else { "failed" },
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(State(s): State<ApiState>) -> ApiResult<Response> {
    let activities = super::metrics::scrape(&s).await?;
    let text = super::metrics::render(&s.inner.metrics, &activities);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct ListParams {
    /// Only slugs containing this.
    q: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// The live definitions matching `q`, sorted by slug, and how many there are.
pub(super) async fn live_definitions(s: &ApiState, q: Option<&str>) -> ApiResult<Vec<StoredDefinition>> {
    let q = q.map(str::trim).filter(|q| !q.is_empty());
    let mut defs: Vec<StoredDefinition> = s
        .definitions()
        .await?
        .iter()
        .filter(|d| d.retired_at.is_none())
        .filter(|d| q.is_none_or(|q| d.definition.slug.contains(q)))
        .cloned()
        .collect();
    defs.sort_by(|a, b| a.definition.slug.cmp(&b.definition.slug));
    Ok(defs)
}

fn window(p: &ListParams) -> ApiResult<(usize, usize)> {
    let limit = p.limit.unwrap_or(500);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be from 1 to 10000"));
    }
    Ok((p.offset.unwrap_or(0), limit))
}

/// `GET /v1/status`: what `actcore status` shows, from the same function.
pub(super) async fn status(State(s): State<ApiState>, Query(p): Query<ListParams>) -> ApiResult<Json<Value>> {
    let (offset, limit) = window(&p)?;
    let defs = live_definitions(&s, p.q.as_deref()).await?;
    let total = defs.len();
    let page: Vec<StoredDefinition> = defs.into_iter().skip(offset).take(limit).collect();
    let now = Timestamp::now();
    let activities = crate::status::collect(s.store(), &page, now).await?;
    Ok(Json(
        json!({"now": now, "total": total, "offset": offset, "activities": activities}),
    ))
}

/// `GET /v1/activities`: the live definitions.
pub(super) async fn activities(State(s): State<ApiState>, Query(p): Query<ListParams>) -> ApiResult<Json<Value>> {
    let (offset, limit) = window(&p)?;
    let defs = live_definitions(&s, p.q.as_deref()).await?;
    let total = defs.len();
    let list: Vec<Value> = defs
        .iter()
        .skip(offset)
        .take(limit)
        .map(|d| {
            let def = &d.definition;
            json!({
                "slug": def.slug, "definition_id": def.id, "name": def.name,
                "enabled": d.enabled, "paused": d.paused,
                "cron": def.schedule.cron, "timezone": def.schedule.timezone,
                "spec_hash": d.spec_hash, "updated_at": d.updated_at,
                "guard": def.guard, "retry": def.retry,
            })
        })
        .collect();
    Ok(Json(json!({"total": total, "offset": offset, "activities": list})))
}

#[derive(Debug, Deserialize)]
pub(super) struct RunsParams {
    slug: Option<String>,
    /// A duration back from now (`24h`, `30m`) or an RFC 3339 time.
    since: Option<String>,
    outcome: Option<String>,
    /// `schedule`, `manual`, `retry` or `fallback`.
    trigger: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/runs?slug=&since=&outcome=&trigger=&limit=`, newest first.
pub(super) async fn runs(State(s): State<ApiState>, Query(p): Query<RunsParams>) -> ApiResult<Json<Value>> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be from 1 to 1000"));
    }
    let definition_id = match p.slug.as_deref() {
        Some(slug) => Some(find(&s, slug).await?.definition.id),
        None => None,
    };
    let since = match p.since.as_deref() {
        None | Some("") => None,
        Some(text) => Some(parse_since(text, Timestamp::now())?),
    };
    if let Some(o) = &p.outcome {
        o.parse::<Outcome>().map_err(ApiError::bad_request)?;
    }
    if let Some(t) = &p.trigger {
        t.parse::<crate::run::Trigger>().map_err(ApiError::bad_request)?;
    }
    let rows = s
        .store()
        .query_runs(&RunQuery {
            definition_id,
            since,
            outcome: p.outcome.clone(),
            trigger: p.trigger.clone(),
            limit,
        })
        .await?;
    Ok(Json(json!({"runs": rows})))
}

/// `since`: an RFC 3339 time, or a duration back from `now`.
pub(super) fn parse_since(text: &str, now: Timestamp) -> ApiResult<Timestamp> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let d: crate::duration::Dur = text.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "since `{text}` is neither an RFC 3339 time nor a duration ({e}); e.g. since=24h or since=2026-11-30T00:00:00Z"
        ))
    })?;
    now.checked_sub(d.signed())
        .map_err(|_| ApiError::bad_request(format!("since `{text}` reaches before year -9999")))
}

/// `GET /v1/runs/{run_id}`: one run with its snapshot.
pub(super) async fn run(State(s): State<ApiState>, Path(run_id): Path<String>) -> ApiResult<Json<Value>> {
    let id =
        Uuid::parse_str(&run_id).map_err(|_| ApiError::bad_request(format!("`{run_id}` is not a run id (a UUID)")))?;
    let row = s
        .store()
        .run_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    Ok(Json(json!({"run": row})))
}

async fn find(s: &ApiState, slug: &str) -> ApiResult<StoredDefinition> {
    let defs = s.definitions().await?;
    defs.iter()
        .find(|d| d.retired_at.is_none() && d.definition.slug == slug)
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no activity with slug `{slug}` (GET /v1/activities lists them)"
            ))
        })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    reason: Option<String>,
}

async fn apply(s: ApiState, slug: String, headers: HeaderMap, body: Bytes, op: Op) -> ApiResult<Json<Value>> {
    let actor = s.inner.tokens.authorize(&headers)?;
    let body: OverrideBody = if body.iter().all(u8::is_ascii_whitespace) {
        OverrideBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body must be JSON like {{\"reason\": \"...\"}}: {e}")))?
    };
    let def = find(&s, &slug).await?;
    let applied = ops::apply(s.store(), &def, op, &actor, body.reason.as_deref(), Timestamp::now()).await?;
    Ok(Json(json!({"applied": applied})))
}

pub(super) async fn pause(
    State(s): State<ApiState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    apply(s, slug, headers, body, Op::Pause).await
}

pub(super) async fn resume(
    State(s): State<ApiState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    apply(s, slug, headers, body, Op::Resume).await
}

pub(super) async fn circuit_open(
    State(s): State<ApiState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    apply(s, slug, headers, body, Op::CircuitOpen).await
}

pub(super) async fn circuit_reset(
    State(s): State<ApiState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    apply(s, slug, headers, body, Op::CircuitReset).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    reason: Option<String>,
    #[serde(default)]
    force: bool,
    /// How long the queued run waits for a worker (`2m` by default).
    timeout: Option<String>,
}

/// `POST /v1/activities/{slug}/trigger`: the same [`crate::trigger::enqueue`]
/// as `actcore trigger`; 409 (`refused`) while paused or the circuit is
/// open, unless `force`. Answers 202 with the queued run: follow it at
/// `GET /v1/runs/{run_id}`.
pub(super) async fn trigger(
    State(s): State<ApiState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let actor = s.inner.tokens.authorize(&headers)?;
    let body: TriggerBody = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be JSON like {{\"reason\": \"...\", \"force\": false, \"timeout\": \"2m\"}}: {e}"
            ))
        })?
    };
    let timeout = match body.timeout.as_deref() {
        None => crate::trigger::DEFAULT_TIMEOUT,
        Some(t) => crate::duration::Bounds::new(crate::duration::Dur::from_secs(1), crate::duration::Dur::from_days(1))
            .parse(t)
            .map_err(|e| ApiError::bad_request(format!("timeout: {e}")))?
            .signed(),
    };
    let def = find(&s, &slug).await?;
    let req = crate::trigger::Request {
        actor,
        reason: body.reason,
        force: body.force,
        timeout,
    };
    match crate::trigger::enqueue(s.store(), &def, &req, Timestamp::now()).await {
        Ok(q) => Ok((StatusCode::ACCEPTED, Json(json!({"queued": q})))),
        Err(crate::error::Error::Automation(why)) => Err(ApiError::new(StatusCode::CONFLICT, "refused", why)),
        Err(e) => Err(e.into()),
    }
}
