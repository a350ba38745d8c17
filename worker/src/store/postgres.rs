//! The production store. Batches what shares an instant into one statement
//! (`unnest` arrays) so that 10,000 activities due together cost one round
//! trip, and uses the partial unique index as the exactly-once fence.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use jiff_sqlx::Timestamp as SqlTs;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::{
    Abandoned, ClaimBatch, Claimed, DefinitionsVersion, FinishRun, NOTIFY_CHANNEL, NewEvent, NewRun, RunFilter, RunRow,
    StoredDefinition, connect_error, plan_from, sync_events,
};
use crate::definition::Loaded;
use crate::error::{Error, Result};
use crate::run::{ErrorCode, State};
use crate::sync::{Existing, SyncReport, Upsert};

/// A pool on a Postgres database.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    url: String,
}

fn ts(t: Timestamp) -> SqlTs {
    SqlTs::from(t)
}

/// A duration as whole milliseconds for `$n * interval '1 millisecond'`
/// (saturating: the CLI bounds leases long before this matters).
fn millis(d: SignedDuration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(if d.is_negative() { i64::MIN } else { i64::MAX })
}

fn opt_ts(t: Option<Timestamp>) -> Option<SqlTs> {
    t.map(SqlTs::from)
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let options: PgConnectOptions = url.parse().map_err(|e| connect_error(url, e))?;
        // One direct connection first: a pool would report only "timed out"
        // where the operator needs "connection refused" or "password failed".
        let probe = tokio::time::timeout(
            Duration::from_secs(10),
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
        )
        .await
        .map_err(|_| connect_error(url, "no answer within 10 s"))?
        .map_err(|e| connect_error(url, e))?;
        let _ = sqlx::Connection::close(probe).await;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            // Fail fast on a dead server: the worker retries a claim within
            // its misfire grace, and waiting 10 s for the pool would use it up.
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(options)
            .await
            .map_err(|e| connect_error(url, e))?;
        Ok(PgStore {
            pool,
            url: url.to_string(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn migrate(&self) -> Result<()> {
        // Serialise concurrent starts of several replicas (sqlx also locks).
        super::schema::tolerant(&super::schema::POSTGRES)
            .run(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn sync(&self, files: &[Loaded], now: Timestamp, dry_run: bool) -> Result<SyncReport> {
        let mut tx = self.pool.begin().await?;
        // One sync at a time; workers are not blocked (they only read).
        sqlx::query("select pg_advisory_xact_lock(hashtext('actcore_sync'))")
            .execute(&mut *tx)
            .await?;
        let existing = sqlx::query(
            "select definition_id, slug, spec_hash, retired_at is not null as retired from activity_definitions",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| {
            Ok(Existing {
                id: r.try_get("definition_id")?,
                slug: r.try_get("slug")?,
                spec_hash: r.try_get("spec_hash")?,
                retired: r.try_get("retired")?,
            })
        })
        .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?;
        let plan = plan_from(existing, files);
        let report = plan.report(dry_run);
        if dry_run || plan.is_empty() {
            tx.rollback().await?;
            return Ok(report);
        }
        // Retire first so that a new activity may take over a retired slug.
        if !plan.retired.is_empty() {
            let ids: Vec<Uuid> = plan.retired.iter().map(|e| e.id).collect();
            sqlx::query(
                "update activity_definitions set enabled = false, retired_at = now(), updated_at = now() where definition_id = any($1)",
            )
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
        // Park the slugs of changed activities, so that slugs may move between
        // activities (a swap, a rename taken by a new file) within one sync.
        if !plan.changed.is_empty() {
            let ids: Vec<Uuid> = plan.changed.iter().map(|u| u.definition.id).collect();
            sqlx::query(
                "update activity_definitions set slug = '~' || definition_id::text where definition_id = any($1)",
            )
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
        upsert(&mut tx, &plan.changed).await?;
        upsert(&mut tx, &plan.added).await?;
        insert_events(&mut tx, &sync_events(&plan, now)).await?;
        sqlx::query("select pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(serde_json::json!({"added": report.added.len(), "changed": report.changed.len(), "retired": report.retired.len()}).to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(report)
    }

    pub async fn definitions(&self) -> Result<Vec<StoredDefinition>> {
        let rows = sqlx::query(
            "select slug, spec, spec_hash, enabled, paused, retired_at, updated_at from activity_definitions order by slug",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let spec: serde_json::Value = r.try_get("spec")?;
            // One spec this binary cannot read (a newer value) must not stop the others.
            let Some(definition) = super::decode_stored(r.try_get("slug")?, spec) else {
                continue;
            };
            out.push(StoredDefinition {
                definition,
                spec_hash: r.try_get("spec_hash")?,
                enabled: r.try_get("enabled")?,
                paused: r.try_get("paused")?,
                retired_at: r.try_get::<Option<SqlTs>, _>("retired_at")?.map(SqlTs::to_jiff),
                updated_at: r.try_get::<SqlTs, _>("updated_at")?.to_jiff(),
            });
        }
        Ok(out)
    }

    pub async fn definitions_version(&self) -> Result<DefinitionsVersion> {
        let r = sqlx::query("select count(*) as n, max(updated_at) as m from activity_definitions")
            .fetch_one(&self.pool)
            .await?;
        Ok(DefinitionsVersion {
            count: r.try_get("n")?,
            max_updated_at: r.try_get::<Option<SqlTs>, _>("m")?.map(SqlTs::to_jiff),
        })
    }

    pub async fn set_paused(&self, id: Uuid, paused: bool, now: Timestamp) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The database's clock: a laptop running `pause` with a fast clock
        // must not move the worker's resume point into the future.
        let n = sqlx::query("update activity_definitions set paused = $2, updated_at = now() where definition_id = $1")
            .bind(id)
            .bind(paused)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0 {
            let kind = if paused { "paused" } else { "resumed" };
            insert_events(
                &mut tx,
                &[NewEvent {
                    at: now,
                    definition_id: Some(id),
                    run_id: None,
                    kind: kind.into(),
                    detail: serde_json::json!({}),
                }],
            )
            .await?;
            sqlx::query("select pg_notify($1, 'pause')")
                .bind(NOTIFY_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    pub async fn last_scheduled(&self) -> Result<Vec<(Uuid, Timestamp)>> {
        let rows = sqlx::query(
            "select definition_id, max(scheduled_for) as last from activity_runs \
             where trigger = 'schedule' and scheduled_for is not null group by definition_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("definition_id")?, r.try_get::<SqlTs, _>("last")?.to_jiff())))
            .collect()
    }

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
        // its own insert, so it returns exactly those.
        let rows = sqlx::query(
            "with u as (select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::bool[], $5::jsonb[])
                        as u(run_id, definition_id, hash, skip, snap)),
             ins as (
               insert into activity_runs (run_id, definition_id, fired_at, scheduled_for, trigger, source, attempt, state, outcome,
                   worker_id, lease_expires_at, started_at, finished_at, context_snapshot, spec_hash)
               select u.run_id, u.definition_id, $6, $7, 'schedule', 'activity-core', 1,
                      case when busy.yes then 'skipped' else 'running' end,
                      case when busy.yes then 'skipped_overlap' end,
                      $8, case when busy.yes then null else now() + $9 * interval '1 millisecond' end, $6,
                      case when busy.yes then $6 end, u.snap, u.hash
               from u
               left join lateral (select true as yes from activity_runs r
                                  where u.skip and r.definition_id = u.definition_id and r.state = 'running'
                                    and r.run_id <> all($10::uuid[]) limit 1) busy on true
               order by u.definition_id
               on conflict do nothing
               returning run_id, definition_id, state)
             select run_id, definition_id, state from ins
             union all
             select r.run_id, r.definition_id, r.state from activity_runs r join u on r.run_id = u.run_id
             where r.worker_id = $8",
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
        let n = sqlx::query(
            "insert into activity_runs (run_id, definition_id, fired_at, scheduled_for, trigger, source, attempt, state, outcome,
                 automation_error, assessment_failures, error_code, error_message, context_snapshot, worker_id,
                 lease_expires_at, started_at, finished_at, spec_hash)
             values ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19)
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
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
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
        let done = sqlx::query(
            "update activity_runs r set state = u.state, outcome = u.outcome, automation_error = u.auto,
                 assessment_failures = u.count, error_code = u.code, error_message = u.msg,
                 context_snapshot = r.context_snapshot || u.snap, finished_at = u.fin, lease_expires_at = null
             from unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::int[], $6::text[], $7::text[], $8::jsonb[], $9::timestamptz[])
                  as u(run_id, state, outcome, auto, count, code, msg, snap, fin)
             where r.run_id = u.run_id and r.state = 'running'",
        )
        .bind(&ids)
        .bind(&states)
        .bind(&outcomes)
        .bind(&autos)
        .bind(&counts)
        .bind(&codes)
        .bind(&msgs)
        .bind(&snaps)
        .bind(&fins)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done)
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

    pub async fn reap_expired(&self) -> Result<Vec<Abandoned>> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "update activity_runs set state = 'abandoned', outcome = 'automation_error', automation_error = true,
                 error_code = 'worker_lost', finished_at = now(), lease_expires_at = null,
                 error_message = 'worker ' || coalesce(worker_id, '?') || ' stopped renewing its lease'
             where state = 'running' and lease_expires_at < now()
             returning run_id, definition_id, worker_id, finished_at",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let a = Abandoned {
                run_id: r.try_get("run_id")?,
                definition_id: r.try_get("definition_id")?,
            };
            events.push(NewEvent {
                at: r.try_get::<SqlTs, _>("finished_at")?.to_jiff(),
                definition_id: Some(a.definition_id),
                run_id: Some(a.run_id),
                kind: "run_abandoned".into(),
                detail: serde_json::json!({"error_code": "worker_lost", "worker_id": r.try_get::<Option<String>, _>("worker_id")?}),
            });
            out.push(a);
        }
        insert_events(&mut tx, &events).await?;
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
            "update activity_runs set state = 'abandoned', outcome = 'automation_error', automation_error = true,
                 error_code = $2, error_message = $3, finished_at = $4, lease_expires_at = null
             where worker_id = $1 and state = 'running'",
        )
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

    pub async fn runs(&self, f: &RunFilter) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(
            "select run_id, definition_id, fired_at, scheduled_for, trigger, source, attempt, state, outcome, automation_error,
                    assessment_failures, error_code, error_message, context_snapshot, worker_id, lease_expires_at,
                    started_at, finished_at from activity_runs
             where ($1::uuid is null or definition_id = $1) and ($2::timestamptz is null or fired_at >= $2)
             order by fired_at desc, run_id limit $3",
        )
        .bind(f.definition_id)
        .bind(opt_ts(f.since))
        .bind(if f.limit > 0 { f.limit } else { i64::MAX })
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
}

fn run_row(r: &PgRow) -> Result<RunRow> {
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

fn parse_state(s: &str) -> Result<State> {
    s.parse().map_err(|e: String| Error::Db(sqlx::Error::Decode(e.into())))
}

async fn upsert(tx: &mut Transaction<'_, Postgres>, list: &[Upsert]) -> Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = list.iter().map(|u| u.definition.id).collect();
    let names: Vec<&str> = list.iter().map(|u| u.definition.name.as_str()).collect();
    let slugs: Vec<&str> = list.iter().map(|u| u.definition.slug.as_str()).collect();
    let specs: Vec<sqlx::types::Json<&serde_json::Value>> = list.iter().map(|u| sqlx::types::Json(&u.spec)).collect();
    let hashes: Vec<&str> = list.iter().map(|u| u.spec_hash.as_str()).collect();
    let enabled: Vec<bool> = list.iter().map(|u| u.definition.enabled).collect();
    let files: Vec<&str> = list.iter().map(|u| u.source_file.as_str()).collect();
    // `paused` is not in the column list: sync never touches the operator's flag.
    sqlx::query(
        "insert into activity_definitions (definition_id, name, slug, spec, spec_hash, enabled, source_file, created_at, updated_at, retired_at)
         select u.id, u.name, u.slug, u.spec, u.hash, u.enabled, u.file, now(), now(), null
         from unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::bool[], $7::text[])
              as u(id, name, slug, spec, hash, enabled, file)
         on conflict (definition_id) do update set name = excluded.name, slug = excluded.slug, spec = excluded.spec,
              spec_hash = excluded.spec_hash, enabled = excluded.enabled, source_file = excluded.source_file,
              updated_at = excluded.updated_at, retired_at = null",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&slugs)
    .bind(&specs)
    .bind(&hashes)
    .bind(&enabled)
    .bind(&files)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_events(tx: &mut Transaction<'_, Postgres>, events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ats: Vec<SqlTs> = events.iter().map(|e| ts(e.at)).collect();
    let defs: Vec<Option<Uuid>> = events.iter().map(|e| e.definition_id).collect();
    let runs: Vec<Option<Uuid>> = events.iter().map(|e| e.run_id).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let details: Vec<sqlx::types::Json<&serde_json::Value>> =
        events.iter().map(|e| sqlx::types::Json(&e.detail)).collect();
    sqlx::query(
        "insert into activity_events (at, definition_id, run_id, kind, detail)
         select * from unnest($1::timestamptz[], $2::uuid[], $3::uuid[], $4::text[], $5::jsonb[])",
    )
    .bind(&ats)
    .bind(&defs)
    .bind(&runs)
    .bind(&kinds)
    .bind(&details)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
