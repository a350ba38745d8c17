//! The runs side of the embedded store: the claim, results, leases, history.

use crate::error::Result;
use crate::run::{ErrorCode, State};
use crate::store::time::to_text;
use crate::store::{
    Abandoned, ClaimBatch, Claimed, FinishRun, NewEvent, NewRun, RunCount, RunCountQuery, RunFilter, RunRow,
};
use jiff::{SignedDuration, Timestamp};
use sqlx::Row;
use uuid::Uuid;

use super::*;

impl SqliteStore {
    pub async fn claim(&self, b: &ClaimBatch<'_>) -> Result<Vec<Claimed>> {
        if b.items.is_empty() {
            return Ok(Vec::new());
        }
        // IMMEDIATE: take the write lock before the overlap read; a deferred
        // read-then-write fails at once ("database is locked") when another writer is active.
        let mut tx = self.pool.begin_with("begin immediate").await?;
        let fired = to_text(b.fired_at);
        let scheduled = to_text(b.scheduled_for);
        // One process owns the file, so its clock is the database's.
        let lease = to_text(Timestamp::now() + b.lease);
        let finished: std::collections::HashSet<String> = b.finished_unwritten.iter().map(Uuid::to_string).collect();
        let mut out = Vec::with_capacity(b.items.len());
        for i in b.items {
            let def = i.definition_id.to_string();
            let run_id = i.run_id.to_string();
            // A previous attempt with this run id committed: adopt its row.
            let earlier: Option<(String, Option<String>)> =
                sqlx::query_as("select state, worker_id from activity_runs where run_id = ?1")
                    .bind(&run_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((state, worker)) = earlier {
                if worker.as_deref() == Some(b.worker_id) {
                    out.push(Claimed {
                        run_id: i.run_id,
                        definition_id: i.definition_id,
                        state: state.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))?,
                    });
                }
                continue;
            }
            let mut busy = false;
            if i.skip_if_running {
                let running: Vec<String> = sqlx::query_scalar(
                    "select run_id from activity_runs where definition_id = ?1 and state = 'running'",
                )
                .bind(&def)
                .fetch_all(&mut *tx)
                .await?;
                busy = running.iter().any(|r| !finished.contains(r));
            }
            // `overlap = "buffer_one"`: queue it, one at most, until its grace passes.
            let mut queue = false;
            if busy && i.buffer_until.is_some() {
                let waiting: Option<String> = sqlx::query_scalar(
                    "select run_id from activity_runs where definition_id = ?1 and state = 'queued' and trigger = 'schedule' limit 1",
                )
                .bind(&def)
                .fetch_optional(&mut *tx)
                .await?;
                queue = waiting.is_none();
            }
            let state = match (busy, queue) {
                (false, _) => State::Running,
                (true, true) => State::Queued,
                (true, false) => State::Skipped,
            };
            let skipped = state == State::Skipped;
            let inserted = sqlx::query(
                "insert into activity_runs (run_id, definition_id, fired_at, scheduled_for, trigger, source, attempt, state,
                     outcome, worker_id, lease_expires_at, started_at, finished_at, context_snapshot, spec_hash,
                     not_before, expires_at)
                 values (?1, ?2, ?3, ?4, 'schedule', 'activity-core', 1, ?5, ?6, ?7, ?8, ?12, ?9, ?10, ?11, ?13, ?14)
                 on conflict do nothing",
            )
            .bind(&run_id)
            .bind(&def)
            .bind(&fired)
            .bind(&scheduled)
            .bind(state.as_str())
            .bind(skipped.then_some("skipped_overlap"))
            .bind(b.worker_id)
            .bind((!busy).then_some(lease.as_str()))
            .bind(skipped.then_some(fired.as_str()))
            .bind(i.snapshot.get())
            .bind(&i.spec_hash)
            .bind((!queue).then_some(fired.as_str()))
            .bind(queue.then_some(fired.as_str()))
            .bind(i.buffer_until.filter(|_| queue).map(to_text))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                out.push(Claimed {
                    run_id: i.run_id,
                    definition_id: i.definition_id,
                    state,
                });
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    pub async fn insert_run(&self, run: &NewRun) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        super::queue::insert_row(&mut conn, run, None).await
    }

    pub async fn finish_runs(&self, runs: &[FinishRun]) -> Result<u64> {
        // Immediate: this reads before it writes (see `claim`).
        let mut tx = self.pool.begin_with("begin immediate").await?;
        let mut done = 0;
        let mut settles = Vec::new();
        for r in runs {
            let id = r.run_id.to_string();
            let current: Option<String> = sqlx::query_scalar(
                "select context_snapshot from activity_runs where run_id = ?1 and state = 'running'",
            )
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(current) = current else { continue };
            // A shallow merge, as Postgres's `jsonb || jsonb`: json_patch would
            // follow RFC 7396, dropping nulls and merging nested objects.
            let mut merged: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&current).unwrap_or_default();
            if let serde_json::Value::Object(add) = crate::snapshot::to_value(&r.snapshot) {
                merged.extend(add);
            }
            done += sqlx::query(
                "update activity_runs set state = ?2, outcome = ?3, automation_error = ?4, assessment_failures = ?5,
                     error_code = ?6, error_message = ?7, context_snapshot = ?8,
                     finished_at = ?9, lease_expires_at = null
                 where run_id = ?1 and state = 'running'",
            )
            .bind(&id)
            .bind(r.state.as_str())
            .bind(r.outcome.as_str())
            .bind(r.automation_error)
            .bind(r.assessment_failures)
            .bind(r.error_code.map(|c| c.as_str()))
            .bind(r.error_message.as_deref())
            .bind(serde_json::Value::Object(merged).to_string())
            .bind(to_text(r.finished_at))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            settles.extend(r.settle.as_deref());
        }
        let plan = match settles.is_empty() {
            true => None,
            false => {
                let now = settles
                    .iter()
                    .map(|s| s.ended.finished_at)
                    .max()
                    .unwrap_or_else(Timestamp::now);
                Some(super::queue::settle_in(&mut tx, &settles, now).await?)
            }
        };
        tx.commit().await?;
        if let Some(p) = plan {
            p.log();
        }
        Ok(done)
    }

    pub async fn renew_leases(&self, run_ids: &[Uuid], lease: SignedDuration, within: SignedDuration) -> Result<u64> {
        let now = Timestamp::now();
        let (until, before) = (to_text(now + lease), to_text(now + within));
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for id in run_ids {
            n += sqlx::query(
                "update activity_runs set lease_expires_at = ?2
                 where run_id = ?1 and state = 'running' and lease_expires_at < ?3",
            )
            .bind(id.to_string())
            .bind(&until)
            .bind(&before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    pub async fn reap_expired(&self) -> Result<Vec<Abandoned>> {
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "update activity_runs set state = 'abandoned', outcome = 'automation_error', automation_error = 1,
                 error_code = 'worker_lost', finished_at = ?1, lease_expires_at = null,
                 error_message = 'worker ' || coalesce(worker_id, '?') || ' stopped renewing its lease'
             where state = 'running' and lease_expires_at < ?1
             returning run_id, definition_id, worker_id, trigger, attempt, retry_of, scheduled_for",
        )
        .bind(to_text(now))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let a = Abandoned {
                run_id: uuid_of(r, "run_id")?,
                definition_id: uuid_of(r, "definition_id")?,
                trigger: r
                    .try_get::<String, _>("trigger")?
                    .parse()
                    .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
                attempt: r.try_get("attempt")?,
                retry_of: r
                    .try_get::<Option<String>, _>("retry_of")?
                    .map(|s| Uuid::parse_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e))))
                    .transpose()?,
                scheduled_for: opt_ts_of(r, "scheduled_for")?,
                finished_at: now,
            };
            let worker: Option<String> = r.try_get("worker_id")?;
            let e = NewEvent {
                at: now,
                definition_id: Some(a.definition_id),
                run_id: Some(a.run_id),
                kind: "run_abandoned".into(),
                detail: serde_json::json!({"error_code": "worker_lost", "worker_id": worker}),
            };
            insert_event(&mut tx, &e).await?;
            out.push(a);
        }
        tx.commit().await?;
        Ok(out)
    }

    pub async fn abandon_worker_runs(
        &self,
        worker_id: &str,
        code: ErrorCode,
        message: &str,
        now: Timestamp,
    ) -> Result<u64> {
        Ok(sqlx::query(
            "update activity_runs set state = 'abandoned', outcome = 'automation_error', automation_error = 1,
                 error_code = ?2, error_message = ?3, finished_at = ?4, lease_expires_at = null
             where worker_id = ?1 and state = 'running'",
        )
        .bind(worker_id)
        .bind(code.as_str())
        .bind(message)
        .bind(to_text(now))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub async fn record_events(&self, events: &[NewEvent]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for e in events {
            insert_event(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn runs(&self, f: &RunFilter) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(
            "select run_id, definition_id, fired_at, scheduled_for, trigger, source, attempt, state, outcome, automation_error,
                    assessment_failures, error_code, error_message, context_snapshot, worker_id, lease_expires_at,
                    started_at, finished_at from activity_runs
             where (?1 is null or definition_id = ?1) and (?2 is null or fired_at >= ?2)
             order by fired_at desc, run_id limit ?3",
        )
        .bind(f.definition_id.map(|u| u.to_string()))
        .bind(f.since.map(to_text))
        .bind(if f.limit > 0 { f.limit } else { i64::MAX })
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(run_row(r)?)).collect()
    }

    pub async fn slot_runs(&self, definition_id: Uuid, scheduled_for: Timestamp) -> Result<Vec<RunRow>> {
        // Only constant text is formatted in.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{RUN_COLUMNS} where definition_id = ?1 and scheduled_for = ?2 order by attempt, fired_at, run_id"
        )))
        .bind(definition_id.to_string())
        .bind(to_text(scheduled_for))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(run_row(r)?)).collect()
    }

    pub async fn live_or_healthy_since(&self, definition_id: Uuid, since: Timestamp) -> Result<Vec<RunRow>> {
        // Only constant text is formatted in.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{RUN_COLUMNS} where definition_id = ?1
               and (state = 'running'
                    or (outcome in ('ok', 'assessment_failures', 'lock_skipped') and finished_at >= ?2))
             order by fired_at desc, run_id"
        )))
        .bind(definition_id.to_string())
        .bind(to_text(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(run_row(r)?)).collect()
    }

    pub async fn event_kinds(&self, definition_id: Option<Uuid>) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "select kind, count(*) as n from activity_events where (?1 is null or definition_id = ?1) group by kind order by kind",
        )
        .bind(definition_id.map(|u| u.to_string()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("kind")?, r.try_get("n")?))).collect()
    }

    pub async fn run_counts(&self, q: &RunCountQuery) -> Result<Vec<RunCount>> {
        let rows = sqlx::query(
            "select source, trigger, outcome, count(*) as n from activity_runs
             where (?1 is null or definition_id = ?1) and fired_at >= ?2 and fired_at <= ?3
             group by source, trigger, outcome
             order by source, trigger, outcome is null, outcome",
        )
        .bind(q.definition_id.map(|u| u.to_string()))
        .bind(to_text(q.since))
        .bind(to_text(q.until))
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

/// The columns of a [`RunRow`], as a select prefix.
const RUN_COLUMNS: &str =
    "select run_id, definition_id, fired_at, scheduled_for, trigger, source, attempt, state, outcome,
        automation_error, assessment_failures, error_code, error_message, context_snapshot, worker_id, lease_expires_at,
        started_at, finished_at from activity_runs";

/// A run row as read back; shared by the history reads of this backend.
pub(super) fn run_row(r: &SqliteRow) -> std::result::Result<RunRow, sqlx::Error> {
    Ok(RunRow {
        run_id: uuid_of(r, "run_id")?,
        definition_id: uuid_of(r, "definition_id")?,
        fired_at: ts_of(r, "fired_at")?,
        scheduled_for: opt_ts_of(r, "scheduled_for")?,
        trigger: r.try_get("trigger")?,
        source: r.try_get("source")?,
        attempt: r.try_get("attempt")?,
        state: r.try_get("state")?,
        outcome: r.try_get("outcome")?,
        automation_error: r.try_get("automation_error")?,
        assessment_failures: r.try_get("assessment_failures")?,
        error_code: r.try_get("error_code")?,
        error_message: r.try_get("error_message")?,
        context_snapshot: json_of(r, "context_snapshot")?,
        worker_id: r.try_get("worker_id")?,
        lease_expires_at: opt_ts_of(r, "lease_expires_at")?,
        started_at: opt_ts_of(r, "started_at")?,
        finished_at: opt_ts_of(r, "finished_at")?,
    })
}
