//! `GET /`: the status page, rendered on the server (minijinja template
//! `page.html`; a few lines of plain JS for the confirm-and-token buttons).
//! Paginated and searchable by slug, so 10,000 activities cost one page of
//! queries, not 10,000.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::{Query, State};
use axum::response::Html;
use jiff::Timestamp;
use minijinja::{Environment, context};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ApiState;
use super::error::{ApiError, ApiResult};
use super::handlers::live_definitions;
use crate::store::{GuardStore, RunQuery, RunRow};

/// Activities per page.
pub const PER_PAGE: usize = 50;
/// Instants in each activity's strip.
pub const STRIP: i64 = 48;

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.add_template("page.html", include_str!("page.html"))
        .expect("page.html is a valid template");
    env
});

#[derive(Debug, Deserialize)]
pub(super) struct PageParams {
    q: Option<String>,
    page: Option<usize>,
}

#[derive(Serialize)]
struct Cell {
    class: &'static str,
    title: String,
    run_id: Uuid,
}

/// The colour class of a run in the strip.
pub fn cell_class(r: &RunRow) -> &'static str {
    match r.outcome.as_deref() {
        Some("ok") => "ok",
        Some("assessment_failures") => "assess",
        Some("lock_skipped") => "lock",
        Some("automation_error") => "error",
        Some("blocked_circuit_open" | "blocked_budget") => "blocked",
        Some(_) => "skipped",
        None => "pending",
    }
}

fn short(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

pub(super) async fn index(State(s): State<ApiState>, Query(p): Query<PageParams>) -> ApiResult<Html<String>> {
    let q = p.q.unwrap_or_default();
    let defs = live_definitions(&s, Some(&q)).await?;
    let total = defs.len();
    let pages = total.div_ceil(PER_PAGE).max(1);
    let page = p.page.unwrap_or(1).clamp(1, pages);
    let shown: Vec<_> = defs.into_iter().skip((page - 1) * PER_PAGE).take(PER_PAGE).collect();
    let now = Timestamp::now();
    let statuses = crate::status::collect(s.store(), &shown, now).await?;
    let ids: Vec<Uuid> = shown.iter().map(|d| d.definition.id).collect();
    let mut strips: HashMap<Uuid, Vec<Cell>> = HashMap::new();
    for r in s.store().recent_runs(&ids, STRIP).await? {
        strips.entry(r.definition_id).or_default().push(Cell {
            class: cell_class(&r),
            title: format!(
                "{} {}{}",
                short(r.scheduled_for.unwrap_or(r.fired_at)),
                r.outcome.as_deref().unwrap_or(&r.state),
                r.error_code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
            ),
            run_id: r.run_id,
        });
    }
    let slugs: HashMap<Uuid, String> = shown
        .iter()
        .map(|d| (d.definition.id, d.definition.slug.clone()))
        .collect();
    let activities: Vec<_> = statuses
        .iter()
        .map(|a| {
            let mut strip = strips.remove(&a.definition_id).unwrap_or_default();
            strip.reverse(); // oldest first, newest at the right
            let last = a.last_run.as_ref();
            context! {
                slug => a.slug, state => a.state, paused => a.paused,
                next_utc => a.next_instant.map(short),
                next_local => a.next_instant_local,
                last_outcome => last.and_then(|r| r.outcome.clone().or_else(|| Some(r.state.clone()))),
                last_run_id => last.map(|r| r.run_id.to_string()),
                lateness_ms => last.and_then(|r| r.lateness_ms),
                errors => a.consecutive_automation_errors,
                circuit => a.circuit.state,
                severity => a.recommendation.severity.as_str(),
                action => a.recommendation.action,
                strip => strip,
            }
        })
        .collect();
    let recent: Vec<_> = s
        .store()
        .query_runs(&RunQuery {
            limit: 20,
            ..RunQuery::default()
        })
        .await?
        .into_iter()
        .map(|r| {
            context! {
                run_id => r.run_id.to_string(),
                slug => slugs.get(&r.definition_id).cloned().unwrap_or_else(|| r.definition_id.to_string()),
                fired_at => short(r.fired_at),
                trigger => r.trigger,
                class => cell_class(&r),
                outcome => r.outcome.unwrap_or(r.state),
                error_code => r.error_code,
            }
        })
        .collect();
    let html = TEMPLATES
        .get_template("page.html")
        .and_then(|t| {
            t.render(context! {
                now => short(now), q => q, page => page, pages => pages, total => total,
                activities => activities, recent => recent, backend => s.store().backend(),
            })
        })
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Html(html))
}
