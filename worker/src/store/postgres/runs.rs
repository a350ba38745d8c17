//! The runs side of the Postgres store: the claim (the exactly-once fence),
//! the finish, leases and the reaper. History reads are in `history.rs`,
//! the in-flight list in `inflight.rs`.

use crate::error::{Error, Result};
use crate::run::{ErrorCode, State};
use crate::store::{Abandoned, ClaimBatch, Claimed, FinishRun, NewEvent, NewRun};
use jiff::{SignedDuration, Timestamp};
use jiff_sqlx::Timestamp as SqlTs;
use sqlx::Row;
use uuid::Uuid;

use super::*;

impl PgStore {
    pub async fn claim(&self, b: &ClaimBatch<'_>) -> Result<Vec<Claimed>> {
        if b.items.is_empty() {
            return Ok(Vec::new());
        }
        let n = b.items.len();
        let mut run_ids = Vec::with_capacity(n);
        let mut def_ids = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        let mut skips = Vec::with_capacity(n);
        let mut snaps = Vec::with_capacity(n);
        for i in b.items {
            run_ids.push(i.run_id);
            def_ids.push(i.definition_id);
            hashes.push(i.spec_hash.as_str());
            skips.push(i.skip_if_running);
            snaps.push(sqlx::types::Json(&i.snapshot));
        }
        // Rows are inserted in definition order so that replicas racing on
        // the same instant take the index locks in the same order. The
        // second half adopts rows a previous attempt with the same run ids
        // committed (its reply was lost): the statement's snapshot predates
        // its own insert, so it returns exactly those. It reads them by run id
        // alone, not joined to `u`: on a short history analysed at rest the
        // planner took `r.worker_id = $8` for one row and rescanned `u` for
        // each of the 1,000 it found (0.2 s on a 12,000-row table).
        let buffers: Vec<Option<SqlTs>> = b.items.iter().map(|i| opt_ts(i.buffer_until)).collect();
        // `overlap = "buffer_one"`: an instant due while a run is in flight is
        // queued (one at most) until the run ends or its grace passes. What is
        // in flight is read from the activity's `activity_inflight` row (a
        // primary-key probe in a table of one row per activity, whatever the
        // history), each listed run checked on its own row. `offset 0` keeps
        // each check a subquery evaluated once per run: flattened, it would be
        // evaluated again at each of the five places the insert reads it.
        let rows = sqlx::query(
            "with u as (select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::bool[], $5::jsonb[], $11::timestamptz[])
                        as u(run_id, definition_id, hash, skip, snap, buffer)),
             ins as (
               insert into activity_runs (run_id, definition_id, fired_at, scheduled_for, trigger, source, attempt, state, outcome,
                   worker_id, lease_expires_at, started_at, finished_at, context_snapshot, spec_hash, not_before, expires_at)
               select u.run_id, u.definition_id, $6, $7, 'schedule', 'activity-core', 1,
                      case when not busy.yes then 'running' when queue.yes then 'queued' else 'skipped' end,
                      case when busy.yes and not queue.yes then 'skipped_overlap' end,
                      $8,
                      case when busy.yes then null else now() + $9 * interval '1 millisecond' end,
                      case when busy.yes then null else $6 end,
                      case when busy.yes and not queue.yes then $6 end, u.snap, u.hash,
                      case when queue.yes then $6 end, case when queue.yes then u.buffer end
               from u
               cross join lateral (select exists (select 1 from activity_inflight f cross join unnest(f.running) x
                                  where u.skip and f.definition_id = u.definition_id
                                    -- A run this worker finished but has not written yet does not
                                    -- count; checked after the row, so only for runs still running.
                                    and case when (select r.state = 'running' from activity_runs r where r.run_id = x)
                                             then x <> all($10::uuid[]) else false end)
                                  as yes offset 0) busy
               cross join lateral (select u.buffer is not null and not exists (select 1 from activity_inflight f
                                  cross join unnest(f.queued) x where f.definition_id = u.definition_id
                                    and (select r.state = 'queued' and r.trigger = 'schedule'
                                         from activity_runs r where r.run_id = x))
                                  as yes offset 0) queue
               order by u.definition_id
               on conflict do nothing
               returning run_id, definition_id, state)
             select run_id, definition_id, state from ins
             union all
             select r.run_id, r.definition_id, r.state from activity_runs r
             where r.run_id = any($1::uuid[]) and r.worker_id = $8",
        )
        .bind(&run_ids)
        .bind(&def_ids)
        .bind(&hashes)
        .bind(&skips)
        .bind(&snaps)
        .bind(ts(b.fired_at))
        .bind(ts(b.scheduled_for))
        .bind(b.worker_id)
        .bind(millis(b.lease))
        .bind(b.finished_unwritten)
        .bind(&buffers)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Claimed {
                    run_id: r.try_get("run_id")?,
                    definition_id: r.try_get("definition_id")?,
                    state: parse_state(r.try_get("state")?)?,
                })
            })
            .collect()
    }

    pub async fn insert_run(&self, run: &NewRun) -> Result<bool> {
        super::queue::insert_row(&self.pool, run, None).await
    }

    pub async fn finish_runs(&self, runs: &[FinishRun]) -> Result<u64> {
        if runs.is_empty() {
            return Ok(0);
        }
        let n = runs.len();
        let (mut ids, mut states, mut outcomes, mut autos, mut counts, mut codes, mut msgs, mut snaps, mut fins) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in runs {
            ids.push(r.run_id);
            states.push(r.state.as_str());
            outcomes.push(r.outcome.as_str());
            autos.push(r.automation_error);
            counts.push(r.assessment_failures);
            codes.push(r.error_code.map(|c| c.as_str()));
            msgs.push(r.error_message.as_deref());
            snaps.push(sqlx::types::Json(&r.snapshot));
            fins.push(ts(r.finished_at));
        }
        let settles: Vec<&crate::store::Settle> = runs.iter().filter_map(|r| r.settle.as_deref()).collect();
        // The runs it ended leave their activities' `activity_inflight` rows
        // in the same statement (a table of one row per activity, whatever the
        // history: its update costs the same at 10 million runs), so that the
        // next claim finds nothing listed to check.
        // `(select 'running')`, not the constant: no partial index names the
        // state any more, and on a history analysed at rest the statistics
        // hold no `running` row, so the planner took the constant for one row,
        // scanned `activity_runs` for it and rescanned the unnest for each of
        // the thousand it really found (238 ms for 1,000 finishes on a
        // 12,000-row table). A parameter's frequency it cannot read.
        // `dirty`: the activity's guard row holds an error streak, a circuit
        // not closed or a probe. A run that did not end in an automation
        // error changes nothing on a clean row (its settle is a no-op), so
        // only the others take the guard's locks: at 10,000 healthy runs an
        // instant, the settle step costs nothing.
        let query = sqlx::query(
            "with done as (
               update activity_runs r set state = u.state, outcome = u.outcome, automation_error = u.auto,
                   assessment_failures = u.count, error_code = u.code, error_message = u.msg,
                   context_snapshot = r.context_snapshot || u.snap, finished_at = u.fin, lease_expires_at = null
               from unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::int[], $6::text[], $7::text[], $8::jsonb[], $9::timestamptz[])
                    as u(run_id, state, outcome, auto, count, code, msg, snap, fin)
               where r.run_id = u.run_id and r.state = (select 'running')
               returning r.run_id, r.definition_id, exists (select 1 from activity_guard g where g.definition_id = r.definition_id
                   and (g.consecutive_errors <> 0 or g.circuit <> 'closed' or g.probe_run_id is not null)) as dirty),
             unlisted as (
               update activity_inflight f set running = array(select x from unnest(f.running) x where x <> all(d.ids))
               from (select definition_id, array_agg(run_id) as ids from done group by definition_id) d
               where f.definition_id = d.definition_id)
             select run_id, dirty from done",
        )
        .bind(&ids)
        .bind(&states)
        .bind(&outcomes)
        .bind(&autos)
        .bind(&counts)
        .bind(&codes)
        .bind(&msgs)
        .bind(&snaps)
        .bind(&fins);
        if settles.is_empty() {
            return Ok(query.execute(&self.pool).await?.rows_affected());
        }
        let mut tx = self.pool.begin().await?;
        let done = query.fetch_all(&mut *tx).await?;
        // Only the rows this statement ended feed the guard (a reaped run was
        // settled by its reaper), and of those only the ones that can change it.
        let ended: std::collections::HashMap<Uuid, bool> =
            done.iter().map(|r| (r.get("run_id"), r.get("dirty"))).collect();
        let settles: Vec<&crate::store::Settle> = settles
            .into_iter()
            .filter(|s| match ended.get(&s.ended.run_id) {
                Some(dirty) => *dirty || s.ended.outcome == crate::run::Outcome::AutomationError,
                None => false,
            })
            .collect();
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
        Ok(ended.len() as u64)
    }

    pub async fn renew_leases(&self, run_ids: &[Uuid], lease: SignedDuration, within: SignedDuration) -> Result<u64> {
        Ok(sqlx::query(
            "update activity_runs set lease_expires_at = now() + $2 * interval '1 millisecond'
             where run_id = any($1) and state = 'running' and lease_expires_at < now() + $3 * interval '1 millisecond'",
        )
        .bind(run_ids)
        .bind(millis(lease))
        .bind(millis(within))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Marks the listed runs whose lease ran out `abandoned`, then sweeps the
    /// in-flight list on the same tick (`inflight.rs`): one background pass
    /// every third of a lease, off the firing loop.
    pub async fn reap_expired(&self) -> Result<Vec<Abandoned>> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(concat!(
            "update activity_runs set state = 'abandoned', outcome = 'automation_error', automation_error = true,
                 error_code = 'worker_lost', finished_at = now(), lease_expires_at = null,
                 error_message = 'worker ' || coalesce(worker_id, '?') || ' stopped renewing its lease'
             where run_id = any(",
            listed_running!(),
            ")
               and state = 'running' and lease_expires_at < now()
             returning run_id, definition_id, worker_id, finished_at, trigger, attempt, retry_of, scheduled_for"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let a = Abandoned {
                run_id: r.try_get("run_id")?,
                definition_id: r.try_get("definition_id")?,
                trigger: r
                    .try_get::<&str, _>("trigger")?
                    .parse()
                    .map_err(|e: String| Error::Db(sqlx::Error::Decode(e.into())))?,
                attempt: r.try_get("attempt")?,
                retry_of: r.try_get("retry_of")?,
                scheduled_for: r.try_get::<Option<SqlTs>, _>("scheduled_for")?.map(SqlTs::to_jiff),
                finished_at: r.try_get::<SqlTs, _>("finished_at")?.to_jiff(),
            };
            events.push(NewEvent {
                at: a.finished_at,
                definition_id: Some(a.definition_id),
                run_id: Some(a.run_id),
                kind: "run_abandoned".into(),
                detail: serde_json::json!({"error_code": "worker_lost", "worker_id": r.try_get::<Option<String>, _>("worker_id")?}),
            });
            out.push(a);
        }
        insert_events(&mut tx, &events).await?;
        tx.commit().await?;
        if let Err(e) = self.sweep_inflight().await {
            tracing::warn!(error = %e, "could not sweep activity_inflight; retrying next tick");
        }
        Ok(out)
    }

    pub async fn abandon_worker_runs(
        &self,
        worker_id: &str,
        code: ErrorCode,
        message: &str,
        now: Timestamp,
    ) -> Result<u64> {
        Ok(sqlx::query(concat!(
            "update activity_runs set state = 'abandoned', outcome = 'automation_error', automation_error = true,
                 error_code = $2, error_message = $3, finished_at = $4, lease_expires_at = null
             where run_id = any(",
            listed_running!(),
            ")
               and worker_id = $1 and state = 'running'"
        ))
        .bind(worker_id)
        .bind(code.as_str())
        .bind(message)
        .bind(ts(now))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub async fn record_events(&self, events: &[NewEvent]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn parse_state(s: &str) -> Result<State> {
    s.parse().map_err(|e: String| Error::Db(sqlx::Error::Decode(e.into())))
}
