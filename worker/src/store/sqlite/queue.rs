//! The durable queue and the guard transactions on the embedded store (see
//! `store/queue.rs`). One process writes the file, so a claim is a plain
//! select-then-update in an immediate transaction (no SKIP LOCKED needed).

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::guard::{guard_row, ids_json};
use super::*;
use crate::guard::Admission;
use crate::run::Trigger;
use crate::store::queue::{
    AdmitItem, Dequeued, Expired, GuardPlan, Queued, Settle, blocked_message, expired_events, expired_message, ids_of,
    plan_admit, plan_settle,
};
use crate::store::{GuardRow, NewRun};

type Tx<'a> = sqlx::Transaction<'a, sqlx::Sqlite>;

fn decode(e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(e.to_string().into())
}

fn opt_uuid(r: &SqliteRow, col: &str) -> std::result::Result<Option<Uuid>, sqlx::Error> {
    r.try_get::<Option<String>, _>(col)?
        .map(|s| Uuid::parse_str(&s).map_err(decode))
        .transpose()
}

/// Inserts one run row, queued when `queue` holds its (not_before, expires_at).
pub(super) async fn insert_row(
    conn: &mut sqlx::SqliteConnection,
    run: &NewRun,
    queue: Option<(Timestamp, Option<Timestamp>)>,
) -> Result<bool> {
    let n = sqlx::query(
        "insert into activity_runs (run_id, definition_id, fired_at, scheduled_for, trigger, source, attempt, state, outcome,
             automation_error, assessment_failures, error_code, error_message, context_snapshot, worker_id,
             lease_expires_at, started_at, finished_at, spec_hash, retry_of, actor, duplicate_of, not_before, expires_at)
         values (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24)
         on conflict do nothing",
    )
    .bind(run.run_id.to_string())
    .bind(run.definition_id.to_string())
    .bind(to_text(run.fired_at))
    .bind(run.scheduled_for.map(to_text))
    .bind(run.trigger.as_str())
    .bind(run.source.as_str())
    .bind(run.attempt)
    .bind(run.state.as_str())
    .bind(run.outcome.map(|o| o.as_str()))
    .bind(run.automation_error)
    .bind(run.assessment_failures)
    .bind(run.error_code.map(|c| c.as_str()))
    .bind(run.error_message.as_deref())
    .bind(run.context_snapshot.to_string())
    .bind(run.worker_id.as_deref())
    .bind(run.lease_expires_at.map(to_text))
    .bind(run.started_at.map(to_text))
    .bind(run.finished_at.map(to_text))
    .bind(run.spec_hash.as_deref())
    .bind(run.retry_of.map(|u| u.to_string()))
    .bind(run.actor.as_deref())
    .bind(run.duplicate_of.map(|u| u.to_string()))
    .bind(queue.map(|q| to_text(q.0)))
    .bind(queue.and_then(|q| q.1).map(to_text))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Inserts the missing guard rows of `ids` (existing activities only), in one statement.
async fn insert_missing_guards<'e>(e: impl sqlx::SqliteExecutor<'e>, ids: &[Uuid]) -> Result<u64> {
    Ok(sqlx::query(
        "insert into activity_guard (definition_id, updated_at)
         select definition_id, ?2 from activity_definitions where definition_id in (select value from json_each(?1))
         on conflict do nothing",
    )
    .bind(ids_json(ids))
    .bind(to_text(Timestamp::now()))
    .execute(e)
    .await?
    .rows_affected())
}

/// Creates the missing guard rows of `ids` and reads them (the immediate
/// transaction already holds the only write lock).
async fn lock_guards(tx: &mut Tx<'_>, ids: &[Uuid]) -> Result<HashMap<Uuid, GuardRow>> {
    insert_missing_guards(&mut **tx, ids).await?;
    let mut out = HashMap::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = sqlx::query("select * from activity_guard where definition_id = ?1")
            .bind(id.to_string())
            .fetch_optional(&mut **tx)
            .await?
        {
            let g = guard_row(&r)?;
            out.insert(g.definition_id, g);
        }
    }
    Ok(out)
}

async fn write_plan(tx: &mut Tx<'_>, plan: &GuardPlan, now: Timestamp) -> Result<()> {
    for g in &plan.guards {
        sqlx::query(
            "update activity_guard set consecutive_errors = ?2, circuit = ?3, circuit_since = ?4, half_open_at = ?5,
                 circuit_actor = ?6, circuit_reason = ?7, probe_run_id = ?8, window_started_at = ?9,
                 window_attempts = ?10, last_attempt_at = ?11, updated_at = ?12
             where definition_id = ?1",
        )
        .bind(g.definition_id.to_string())
        .bind(g.consecutive_errors)
        .bind(&g.circuit)
        .bind(g.circuit_since.map(to_text))
        .bind(g.half_open_at.map(to_text))
        .bind(g.circuit_actor.as_deref())
        .bind(g.circuit_reason.as_deref())
        .bind(g.probe_run_id.map(|u| u.to_string()))
        .bind(g.window_started_at.map(to_text))
        .bind(g.window_attempts)
        .bind(g.last_attempt_at.map(to_text))
        .bind(to_text(now))
        .execute(&mut **tx)
        .await?;
    }
    for (run_id, outcome) in &plan.blocked {
        sqlx::query(
            "update activity_runs set state = 'skipped', outcome = ?2, error_message = ?3, finished_at = ?4,
                 lease_expires_at = null
             where run_id = ?1 and state = 'running'",
        )
        .bind(run_id.to_string())
        .bind(outcome.as_str())
        .bind(blocked_message(*outcome))
        .bind(to_text(now))
        .execute(&mut **tx)
        .await?;
    }
    for q in &plan.queued {
        insert_row(tx, &q.run, Some((q.not_before, q.expires_at))).await?;
    }
    for e in plan.events(now) {
        insert_event(tx, &e).await?;
    }
    Ok(())
}

/// Locks the guards of `items`, plans and writes their settlements in `tx`.
pub(super) async fn settle_in(tx: &mut Tx<'_>, items: &[&Settle], now: Timestamp) -> Result<GuardPlan> {
    let rows = lock_guards(tx, &ids_of(items.iter().map(|s| &*s.policy))).await?;
    let plan = plan_settle(rows, items, now);
    write_plan(tx, &plan, now).await?;
    Ok(plan)
}

impl SqliteStore {
    pub async fn create_guard_rows(&self, ids: &[Uuid]) -> Result<u64> {
        insert_missing_guards(&self.pool, ids).await
    }

    pub async fn admit(&self, items: &[AdmitItem], now: Timestamp) -> Result<Vec<(Uuid, Admission)>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin_with("begin immediate").await?;
        let rows = lock_guards(&mut tx, &ids_of(items.iter().map(|i| &*i.policy))).await?;
        let plan = plan_admit(rows, items, now);
        write_plan(&mut tx, &plan, now).await?;
        tx.commit().await?;
        plan.log();
        Ok(plan.admitted)
    }

    pub async fn settle(&self, items: &[Settle], now: Timestamp) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin_with("begin immediate").await?;
        let plan = settle_in(&mut tx, &items.iter().collect::<Vec<_>>(), now).await?;
        tx.commit().await?;
        plan.log();
        Ok(())
    }

    pub async fn claim_queued(
        &self,
        worker_id: &str,
        lease: SignedDuration,
        now: Timestamp,
        limit: i64,
        only: Option<Uuid>,
    ) -> Result<Vec<Dequeued>> {
        let mut tx = self.pool.begin_with("begin immediate").await?;
        let at = to_text(now);
        // A buffered instant (trigger schedule) waits while its activity has a run in flight.
        let rows = sqlx::query(
            "select run_id from activity_runs q
             where q.state = 'queued' and q.not_before <= ?1 and (q.expires_at is null or q.expires_at > ?1)
               and (?3 is null or q.run_id = ?3)
               and (q.trigger <> 'schedule' or not exists
                    (select 1 from activity_runs r where r.definition_id = q.definition_id and r.state = 'running'))
             order by q.not_before, q.run_id limit ?2",
        )
        .bind(&at)
        .bind(limit)
        .bind(only.map(|u| u.to_string()))
        .fetch_all(&mut *tx)
        .await?;
        // One process owns the file, so its clock is the database's.
        let lease_until = to_text(Timestamp::now() + lease);
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get("run_id")?;
            let row = sqlx::query(
                "update activity_runs set state = 'running', worker_id = ?2, lease_expires_at = ?3, started_at = ?4,
                     fired_at = ?4
                 where run_id = ?1 and state = 'queued'
                 returning run_id, definition_id, trigger, source, attempt, retry_of, scheduled_for",
            )
            .bind(&id)
            .bind(worker_id)
            .bind(&lease_until)
            .bind(&at)
            .fetch_one(&mut *tx)
            .await?;
            out.push(Dequeued {
                run_id: uuid_of(&row, "run_id")?,
                definition_id: uuid_of(&row, "definition_id")?,
                trigger: row.try_get::<String, _>("trigger")?.parse().map_err(decode)?,
                source: row.try_get::<String, _>("source")?.parse().map_err(decode)?,
                attempt: row.try_get("attempt")?,
                retry_of: opt_uuid(&row, "retry_of")?,
                scheduled_for: opt_ts_of(&row, "scheduled_for")?,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    pub async fn expire_queued(&self, now: Timestamp, only: Option<Uuid>) -> Result<Vec<Expired>> {
        let mut tx = self.pool.begin_with("begin immediate").await?;
        let rows = sqlx::query(
            "update activity_runs set
                 state = case when trigger = 'schedule' then 'skipped' else 'abandoned' end,
                 outcome = case when trigger = 'schedule' then 'skipped_misfire' else 'automation_error' end,
                 automation_error = trigger <> 'schedule',
                 error_code = case when trigger = 'schedule' then null else 'expired' end,
                 error_message = case when trigger = 'schedule' then ?3 else ?4 end,
                 finished_at = ?1
             where state = 'queued' and expires_at <= ?1 and (?2 is null or run_id = ?2)
             returning run_id, definition_id, trigger",
        )
        .bind(to_text(now))
        .bind(only.map(|u| u.to_string()))
        .bind(expired_message(Trigger::Schedule))
        .bind(expired_message(Trigger::Manual))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(Expired {
                run_id: uuid_of(r, "run_id")?,
                definition_id: uuid_of(r, "definition_id")?,
                trigger: r.try_get::<String, _>("trigger")?.parse().map_err(decode)?,
            });
        }
        for e in expired_events(&out, now) {
            insert_event(&mut tx, &e).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    pub async fn enqueue(&self, q: &Queued, events: &[NewEvent]) -> Result<bool> {
        let mut tx = self.pool.begin_with("begin immediate").await?;
        let inserted = insert_row(&mut tx, &q.run, Some((q.not_before, q.expires_at))).await?;
        if inserted {
            for e in events {
                insert_event(&mut tx, e).await?;
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }
}
