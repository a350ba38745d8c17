//! The durable queue and the guard transactions on Postgres (see `store/queue.rs`).

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::guard::guard_row;
use super::*;
use crate::guard::Admission;
use crate::run::Trigger;
use crate::store::queue::{
    AdmitItem, Dequeued, Expired, GuardPlan, Queued, Settle, blocked_message, expired_message, ids_of, plan_admit,
    plan_settle,
};
use crate::store::{GuardRow, NewRun};

/// Inserts one run row, queued when `queue` holds its (not_before, expires_at).
pub(super) async fn insert_row<'e>(
    e: impl sqlx::PgExecutor<'e>,
    run: &NewRun,
    queue: Option<(Timestamp, Option<Timestamp>)>,
) -> Result<bool> {
    let n = sqlx::query(
        "insert into activity_runs (run_id, definition_id, fired_at, scheduled_for, trigger, source, attempt, state, outcome,
             automation_error, assessment_failures, error_code, error_message, context_snapshot, worker_id,
             lease_expires_at, started_at, finished_at, spec_hash, retry_of, actor, duplicate_of, not_before, expires_at)
         values ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24)
         on conflict do nothing",
    )
    .bind(run.run_id)
    .bind(run.definition_id)
    .bind(ts(run.fired_at))
    .bind(opt_ts(run.scheduled_for))
    .bind(run.trigger.as_str())
    .bind(run.source.as_str())
    .bind(run.attempt)
    .bind(run.state.as_str())
    .bind(run.outcome.map(|o| o.as_str()))
    .bind(run.automation_error)
    .bind(run.assessment_failures)
    .bind(run.error_code.map(|c| c.as_str()))
    .bind(run.error_message.as_deref())
    .bind(sqlx::types::Json(&run.context_snapshot))
    .bind(run.worker_id.as_deref())
    .bind(opt_ts(run.lease_expires_at))
    .bind(opt_ts(run.started_at))
    .bind(opt_ts(run.finished_at))
    .bind(run.spec_hash.as_deref())
    .bind(run.retry_of)
    .bind(run.actor.as_deref())
    .bind(run.duplicate_of)
    .bind(opt_ts(queue.map(|q| q.0)))
    .bind(opt_ts(queue.and_then(|q| q.1)))
    .execute(e)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Inserts the missing guard rows of `ids` (existing activities only), in
/// id order, as every statement that locks guard rows takes them.
async fn insert_missing_guards<'e>(e: impl sqlx::PgExecutor<'e>, ids: &[Uuid]) -> Result<u64> {
    Ok(sqlx::query(
        "insert into activity_guard (definition_id)
         select d.id from unnest($1::uuid[]) as d(id) join activity_definitions a on a.definition_id = d.id
         order by d.id on conflict do nothing",
    )
    .bind(ids)
    .execute(e)
    .await?
    .rows_affected())
}

/// Creates the missing guard rows and locks `ids`' rows, in id order.
async fn lock_guards(tx: &mut Transaction<'_, Postgres>, ids: &[Uuid]) -> Result<HashMap<Uuid, GuardRow>> {
    insert_missing_guards(&mut **tx, ids).await?;
    let rows =
        sqlx::query("select * from activity_guard where definition_id = any($1) order by definition_id for update")
            .bind(ids)
            .fetch_all(&mut **tx)
            .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in &rows {
        let g = guard_row(r)?;
        out.insert(g.definition_id, g);
    }
    Ok(out)
}

/// The admissions that change nothing but the budget's count: each item
/// whose activity's guard row exists with its circuit closed and room in
/// its budget's window is admitted in one statement (the window restarted
/// when it is over, the attempt counted), as [`crate::guard::admit`] would
/// decide it; the rows are locked in id order first, as `lock_guards`
/// does. Returns the run ids so admitted (`Admission::Run`, no audit); the
/// rest (a missing row, a circuit not closed, a spent budget, an activity
/// twice in `items`) go through the planner. At 10,000 healthy activities
/// due together, the worker then reads and writes no guard row itself.
async fn admit_closed(
    tx: &mut Transaction<'_, Postgres>,
    items: &[AdmitItem],
    now: Timestamp,
) -> Result<std::collections::HashSet<Uuid>> {
    let mut seen: HashMap<Uuid, usize> = HashMap::with_capacity(items.len());
    for i in items {
        *seen.entry(i.policy.definition_id).or_default() += 1;
    }
    let once: Vec<&AdmitItem> = items.iter().filter(|i| seen[&i.policy.definition_id] == 1).collect();
    if once.is_empty() {
        return Ok(Default::default());
    }
    let rows = sqlx::query(
        "with u as (select * from unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::int[]) as u(id, run_id, window_ms, max)),
         l as (select a.definition_id, u.run_id, u.max,
                      a.window_started_at is null or $5 >= a.window_started_at + u.window_ms * interval '1 millisecond' as restart
               from activity_guard a join u on a.definition_id = u.id
               where a.circuit = 'closed'
               order by a.definition_id for update of a)
         update activity_guard a set
             window_started_at = case when l.restart then $5 else a.window_started_at end,
             window_attempts = case when l.restart then 1 else a.window_attempts + 1 end,
             last_attempt_at = $5, updated_at = now()
         from l
         where a.definition_id = l.definition_id and a.circuit = 'closed'
           and (case when l.restart then 0 else a.window_attempts end) < l.max
         returning l.run_id",
    )
    .bind(once.iter().map(|i| i.policy.definition_id).collect::<Vec<_>>())
    .bind(once.iter().map(|i| i.run_id).collect::<Vec<_>>())
    .bind(once.iter().map(|i| millis(i.policy.guard.window.signed())).collect::<Vec<_>>())
    .bind(
        once.iter()
            .map(|i| i32::try_from(i.policy.guard.max_automated_attempts).unwrap_or(i32::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(ts(now))
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get("run_id"))
        .collect::<std::result::Result<_, _>>()?)
}

/// Writes the plan: guard rows, blocked runs, queued retries, audit rows.
async fn write_plan(tx: &mut Transaction<'_, Postgres>, plan: &GuardPlan, now: Timestamp) -> Result<()> {
    if !plan.guards.is_empty() {
        let g = &plan.guards;
        let opt = |f: fn(&GuardRow) -> Option<Timestamp>| g.iter().map(|r| opt_ts(f(r))).collect::<Vec<_>>();
        // One statement for the whole chunk: 10,000 activities due together cost one round trip.
        sqlx::query(
            "update activity_guard a set consecutive_errors = u.errors, circuit = u.circuit, circuit_since = u.since,
                 half_open_at = u.half_open_at, circuit_actor = u.actor, circuit_reason = u.reason, probe_run_id = u.probe,
                 window_started_at = u.window_started, window_attempts = u.attempts, last_attempt_at = u.last_attempt,
                 updated_at = now()
             from unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::text[],
                         $8::uuid[], $9::timestamptz[], $10::int[], $11::timestamptz[])
                  as u(id, errors, circuit, since, half_open_at, actor, reason, probe, window_started, attempts, last_attempt)
             where a.definition_id = u.id",
        )
        .bind(g.iter().map(|r| r.definition_id).collect::<Vec<_>>())
        .bind(g.iter().map(|r| r.consecutive_errors).collect::<Vec<_>>())
        .bind(g.iter().map(|r| r.circuit.as_str()).collect::<Vec<_>>())
        .bind(opt(|r| r.circuit_since))
        .bind(opt(|r| r.half_open_at))
        .bind(g.iter().map(|r| r.circuit_actor.as_deref()).collect::<Vec<_>>())
        .bind(g.iter().map(|r| r.circuit_reason.as_deref()).collect::<Vec<_>>())
        .bind(g.iter().map(|r| r.probe_run_id).collect::<Vec<_>>())
        .bind(opt(|r| r.window_started_at))
        .bind(g.iter().map(|r| r.window_attempts).collect::<Vec<_>>())
        .bind(opt(|r| r.last_attempt_at))
        .execute(&mut **tx)
        .await?;
    }
    for (run_id, outcome) in &plan.blocked {
        sqlx::query(
            "update activity_runs set state = 'skipped', outcome = $2, error_message = $3, finished_at = $4,
                 lease_expires_at = null
             where run_id = $1 and state = 'running'",
        )
        .bind(run_id)
        .bind(outcome.as_str())
        .bind(blocked_message(*outcome))
        .bind(ts(now))
        .execute(&mut **tx)
        .await?;
    }
    for q in &plan.queued {
        insert_row(&mut **tx, &q.run, Some((q.not_before, q.expires_at))).await?;
    }
    insert_events(tx, &plan.events(now)).await
}

fn dequeued(r: &PgRow) -> Result<Dequeued> {
    let parse = |e: String| crate::error::Error::Db(sqlx::Error::Decode(e.into()));
    Ok(Dequeued {
        run_id: r.try_get("run_id")?,
        definition_id: r.try_get("definition_id")?,
        trigger: r.try_get::<&str, _>("trigger")?.parse().map_err(parse)?,
        source: r.try_get::<&str, _>("source")?.parse().map_err(parse)?,
        attempt: r.try_get("attempt")?,
        retry_of: r.try_get("retry_of")?,
        scheduled_for: r.try_get::<Option<SqlTs>, _>("scheduled_for")?.map(SqlTs::to_jiff),
    })
}

impl PgStore {
    pub async fn admit(&self, items: &[AdmitItem], now: Timestamp) -> Result<Vec<(Uuid, Admission)>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let fast = admit_closed(&mut tx, items, now).await?;
        let rest: Vec<AdmitItem> = items.iter().filter(|i| !fast.contains(&i.run_id)).cloned().collect();
        let mut admitted: Vec<(Uuid, Admission)> = Vec::with_capacity(items.len());
        let mut plan = GuardPlan::default();
        if !rest.is_empty() {
            let rows = lock_guards(&mut tx, &ids_of(rest.iter().map(|i| &*i.policy))).await?;
            plan = plan_admit(rows, &rest, now);
            write_plan(&mut tx, &plan, now).await?;
        }
        tx.commit().await?;
        plan.log();
        // In the items' order, as `plan_admit` answers.
        let mut slow: HashMap<Uuid, Admission> = plan.admitted.into_iter().collect();
        for i in items {
            if let Some(a) = slow.remove(&i.run_id) {
                admitted.push((i.run_id, a));
            } else if fast.contains(&i.run_id) {
                admitted.push((i.run_id, Admission::Run));
            }
        }
        Ok(admitted)
    }

    pub async fn create_guard_rows(&self, ids: &[Uuid]) -> Result<u64> {
        insert_missing_guards(&self.pool, ids).await
    }

    /// Guard updates and retries for runs already ended (reaped ones).
    pub async fn settle(&self, items: &[Settle], now: Timestamp) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
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
        // A buffered instant (trigger schedule) waits while its activity has a run in flight.
        let rows = sqlx::query(concat!(
            "with c as (
               select q.run_id from activity_runs q
               where q.run_id = any(",
            listed_queued!(),
            ")
                 and q.state = 'queued' and q.not_before <= $3 and (q.expires_at is null or q.expires_at > $3)
                 and ($5::uuid is null or q.run_id = $5)
                 and (q.trigger <> 'schedule' or not exists
                      (select 1 from activity_inflight g cross join unnest(g.running) y
                       where g.definition_id = q.definition_id
                         and (select r.state = 'running' from activity_runs r where r.run_id = y)))
               order by q.not_before, q.run_id limit $4
               for update of q skip locked)
             update activity_runs r set state = 'running', worker_id = $1,
                 lease_expires_at = now() + $2 * interval '1 millisecond', started_at = $3, fired_at = $3
             from c where r.run_id = c.run_id
             returning r.run_id, r.definition_id, r.trigger, r.source, r.attempt, r.retry_of, r.scheduled_for"
        ))
        .bind(worker_id)
        .bind(millis(lease))
        .bind(ts(now))
        .bind(limit)
        .bind(only)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dequeued).collect()
    }

    pub async fn expire_queued(&self, now: Timestamp, only: Option<Uuid>) -> Result<Vec<Expired>> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(concat!(
            "update activity_runs set
                 state = case when trigger = 'schedule' then 'skipped' else 'abandoned' end,
                 outcome = case when trigger = 'schedule' then 'skipped_misfire' else 'automation_error' end,
                 automation_error = trigger <> 'schedule',
                 error_code = case when trigger = 'schedule' then null else 'expired' end,
                 error_message = case when trigger = 'schedule' then $3 else $4 end,
                 finished_at = $1
             where run_id = any(",
            listed_queued!(),
            ")
               and state = 'queued' and expires_at <= $1 and ($2::uuid is null or run_id = $2)
             returning run_id, definition_id, trigger"
        ))
        .bind(ts(now))
        .bind(only)
        .bind(expired_message(Trigger::Schedule))
        .bind(expired_message(Trigger::Manual))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let trigger: &str = r.try_get("trigger")?;
            out.push(Expired {
                run_id: r.try_get("run_id")?,
                definition_id: r.try_get("definition_id")?,
                trigger: trigger
                    .parse()
                    .map_err(|e: String| crate::error::Error::Db(sqlx::Error::Decode(e.into())))?,
            });
        }
        insert_events(&mut tx, &crate::store::queue::expired_events(&out, now)).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn enqueue(&self, q: &Queued, events: &[NewEvent]) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let inserted = insert_row(&mut *tx, &q.run, Some((q.not_before, q.expires_at))).await?;
        if inserted {
            insert_events(&mut tx, events).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }
}

/// Locks the guards of `items`, plans and writes their settlements in `tx`.
pub(super) async fn settle_in(
    tx: &mut Transaction<'_, Postgres>,
    items: &[&Settle],
    now: Timestamp,
) -> Result<GuardPlan> {
    let rows = lock_guards(tx, &ids_of(items.iter().map(|s| &*s.policy))).await?;
    let plan = plan_settle(rows, items, now);
    write_plan(tx, &plan, now).await?;
    Ok(plan)
}
