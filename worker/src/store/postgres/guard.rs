//! The operator's reads and overrides on Postgres (see `store/guard.rs`).
//! Per-activity reads walk the `(definition_id, fired_at desc)` index with a
//! lateral join: cost by activities asked for, not by the size of history.

use jiff::Timestamp;
use jiff_sqlx::Timestamp as SqlTs;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::history::run_row;
use super::*;
use crate::store::guard::{
    CircuitOverride, GuardRow, RUN_COLUMNS_BUT_SNAPSHOT, RunQuery, SUCCESS_OUTCOMES, run_columns,
};
use crate::store::{NOTIFY_CHANNEL, RunRow};

pub(super) fn guard_row(r: &PgRow) -> std::result::Result<GuardRow, sqlx::Error> {
    let opt = |col: &str| -> std::result::Result<Option<Timestamp>, sqlx::Error> {
        Ok(r.try_get::<Option<SqlTs>, _>(col)?.map(SqlTs::to_jiff))
    };
    Ok(GuardRow {
        definition_id: r.try_get("definition_id")?,
        consecutive_errors: r.try_get("consecutive_errors")?,
        circuit: r.try_get("circuit")?,
        circuit_since: opt("circuit_since")?,
        half_open_at: opt("half_open_at")?,
        circuit_actor: r.try_get("circuit_actor")?,
        circuit_reason: r.try_get("circuit_reason")?,
        probe_run_id: r.try_get("probe_run_id")?,
        window_started_at: opt("window_started_at")?,
        window_attempts: r.try_get("window_attempts")?,
        last_attempt_at: opt("last_attempt_at")?,
    })
}

/// The snapshot of a summary row: its lateness only.
const LATENESS_ONLY: &str = "jsonb_build_object('lateness_ms', context_snapshot->'lateness_ms') as context_snapshot";

impl PgStore {
    pub async fn guards(&self, ids: &[Uuid]) -> Result<Vec<GuardRow>> {
        let rows = sqlx::query("select * from activity_guard where definition_id = any($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(guard_row).collect::<std::result::Result<_, _>>()?)
    }

    pub async fn recent_runs(&self, ids: &[Uuid], per_activity: i64) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select r.* from unnest($1::uuid[]) as d(id) cross join lateral
               (select {RUN_COLUMNS_BUT_SNAPSHOT}, {LATENESS_ONLY} from activity_runs where definition_id = d.id
                order by fired_at desc, run_id limit $2) r
             order by r.definition_id, r.fired_at desc, r.run_id"
        )))
        .bind(ids)
        .bind(per_activity)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_row).collect()
    }

    pub async fn last_successes(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, Timestamp)>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select d.id as definition_id, s.at from unnest($1::uuid[]) as d(id) cross join lateral
               (select coalesce(finished_at, fired_at) as at from activity_runs
                where definition_id = d.id and outcome in {SUCCESS_OUTCOMES}
                order by fired_at desc limit 1) s"
        )))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("definition_id")?, r.try_get::<SqlTs, _>("at")?.to_jiff())))
            .collect()
    }

    pub async fn run_by_id(&self, run_id: Uuid) -> Result<Option<RunRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {} from activity_runs where run_id = $1",
            run_columns()
        )))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run_row).transpose()
    }

    pub async fn query_runs(&self, q: &RunQuery) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {} from activity_runs
             where ($1::uuid is null or definition_id = $1) and ($2::timestamptz is null or fired_at >= $2)
               and ($3::text is null or outcome = $3) and ($5::text is null or trigger = $5)
             order by fired_at desc, run_id limit $4",
            run_columns()
        )))
        .bind(q.definition_id)
        .bind(opt_ts(q.since))
        .bind(q.outcome.as_deref())
        .bind(if q.limit > 0 { q.limit } else { i64::MAX })
        .bind(q.trigger.as_deref())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_row).collect()
    }

    pub async fn pause_audited(&self, id: Uuid, paused: bool, event: &NewEvent) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The database's clock, as `set_paused`: a caller's fast clock must
        // not move the worker's resume point into the future.
        let n = sqlx::query("update activity_definitions set paused = $2, updated_at = now() where definition_id = $1")
            .bind(id)
            .bind(paused)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0 {
            insert_events(&mut tx, std::slice::from_ref(event)).await?;
            sqlx::query("select pg_notify($1, 'pause')")
                .bind(NOTIFY_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    pub async fn override_circuit(
        &self,
        id: Uuid,
        what: CircuitOverride,
        actor: &str,
        reason: Option<&str>,
        event: &NewEvent,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let sql = match what {
            CircuitOverride::Open => {
                "insert into activity_guard (definition_id, circuit, circuit_since, half_open_at, circuit_actor, circuit_reason, probe_run_id, updated_at)
                 values ($1, 'open', now(), null, $2, $3, null, now())
                 on conflict (definition_id) do update set circuit = 'open', circuit_since = now(), half_open_at = null,
                      circuit_actor = $2, circuit_reason = $3, probe_run_id = null, updated_at = now()"
            }
            CircuitOverride::Reset => {
                "insert into activity_guard (definition_id, consecutive_errors, circuit, circuit_since, circuit_actor, circuit_reason, updated_at)
                 values ($1, 0, 'closed', now(), $2, $3, now())
                 on conflict (definition_id) do update set consecutive_errors = 0, circuit = 'closed', circuit_since = now(),
                      half_open_at = null, circuit_actor = $2, circuit_reason = $3, probe_run_id = null,
                      window_started_at = null, window_attempts = 0, updated_at = now()"
            }
        };
        sqlx::query(sql)
            .bind(id)
            .bind(actor)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        insert_events(&mut tx, std::slice::from_ref(event)).await?;
        tx.commit().await?;
        Ok(())
    }
}
