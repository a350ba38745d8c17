//! The history reads of the Postgres store: runs by activity, by slot and by
//! time, the fallback's live check, and the counts the reports show.

use jiff::Timestamp;
use jiff_sqlx::Timestamp as SqlTs;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::*;
use crate::error::Result;
use crate::store::guard::{SUCCESS_OUTCOMES, run_columns};
use crate::store::{RunCount, RunCountQuery, RunFilter, RunRow};

impl PgStore {
    pub async fn runs(&self, f: &RunFilter) -> Result<Vec<RunRow>> {
        // Only constant text is formatted in.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {} from activity_runs
             where ($1::uuid is null or definition_id = $1) and ($2::timestamptz is null or fired_at >= $2)
             order by fired_at desc, run_id limit $3",
            run_columns()
        )))
        .bind(f.definition_id)
        .bind(opt_ts(f.since))
        .bind(if f.limit > 0 { f.limit } else { i64::MAX })
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_row).collect()
    }

    pub async fn slot_runs(&self, definition_id: Uuid, scheduled_for: Timestamp) -> Result<Vec<RunRow>> {
        // Only constant text is formatted in.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {} from activity_runs where definition_id = $1 and scheduled_for = $2 order by attempt, fired_at, run_id",
            run_columns()
        )))
        .bind(definition_id)
        .bind(ts(scheduled_for))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_row).collect()
    }

    pub async fn live_or_healthy_since(&self, definition_id: Uuid, since: Timestamp) -> Result<Vec<RunRow>> {
        // Only constant text is formatted in.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {} from activity_runs where definition_id = $1
               and ((state = 'running' and run_id = any(array(select x from activity_inflight f cross join unnest(f.running) x
                                                                where f.definition_id = $1)))
                    or (outcome in {SUCCESS_OUTCOMES} and finished_at >= $2))
             order by fired_at desc, run_id",
            run_columns()
        )))
        .bind(definition_id)
        .bind(ts(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_row).collect()
    }

    pub async fn event_kinds(&self, definition_id: Option<Uuid>) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "select kind, count(*) as n from activity_events where ($1::uuid is null or definition_id = $1) group by kind order by kind",
        )
        .bind(definition_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("kind")?, r.try_get("n")?))).collect()
    }

    pub async fn run_counts(&self, q: &RunCountQuery) -> Result<Vec<RunCount>> {
        let rows = sqlx::query(
            "select source, trigger, outcome, count(*) as n from activity_runs
             where ($1::uuid is null or definition_id = $1) and fired_at >= $2 and fired_at <= $3
             group by source, trigger, outcome
             order by source, trigger, outcome is null, outcome",
        )
        .bind(q.definition_id)
        .bind(ts(q.since))
        .bind(ts(q.until))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RunCount {
                    source: r.try_get("source")?,
                    trigger: r.try_get("trigger")?,
                    outcome: r.try_get("outcome")?,
                    count: r.try_get("n")?,
                })
            })
            .collect()
    }
}

pub(super) fn run_row(r: &PgRow) -> Result<RunRow> {
    let opt = |col: &str| -> std::result::Result<Option<Timestamp>, sqlx::Error> {
        Ok(r.try_get::<Option<SqlTs>, _>(col)?.map(SqlTs::to_jiff))
    };
    Ok(RunRow {
        run_id: r.try_get("run_id")?,
        definition_id: r.try_get("definition_id")?,
        fired_at: r.try_get::<SqlTs, _>("fired_at")?.to_jiff(),
        scheduled_for: opt("scheduled_for")?,
        trigger: r.try_get("trigger")?,
        source: r.try_get("source")?,
        attempt: r.try_get("attempt")?,
        state: r.try_get("state")?,
        outcome: r.try_get("outcome")?,
        automation_error: r.try_get("automation_error")?,
        assessment_failures: r.try_get("assessment_failures")?,
        error_code: r.try_get("error_code")?,
        error_message: r.try_get("error_message")?,
        context_snapshot: r.try_get("context_snapshot")?,
        worker_id: r.try_get("worker_id")?,
        lease_expires_at: opt("lease_expires_at")?,
        started_at: opt("started_at")?,
        finished_at: opt("finished_at")?,
    })
}
