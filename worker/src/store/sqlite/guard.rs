//! The operator's reads and overrides on the embedded store (see
//! `store/guard.rs`). A list of ids is bound once, as a JSON array read
//! with `json_each`.

use jiff::Timestamp;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::runs::run_row;
use super::*;
use crate::store::RunRow;
use crate::store::guard::{
    CircuitOverride, GuardRow, RUN_COLUMNS_BUT_SNAPSHOT, RunQuery, SUCCESS_OUTCOMES, run_columns,
};

/// A list of ids as the JSON array text that `json_each(?)` reads.
pub(super) fn ids_json(ids: &[Uuid]) -> String {
    serde_json::to_string(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

pub(super) fn guard_row(r: &SqliteRow) -> std::result::Result<GuardRow, sqlx::Error> {
    Ok(GuardRow {
        definition_id: uuid_of(r, "definition_id")?,
        consecutive_errors: r.try_get("consecutive_errors")?,
        circuit: r.try_get("circuit")?,
        circuit_since: opt_ts_of(r, "circuit_since")?,
        half_open_at: opt_ts_of(r, "half_open_at")?,
        circuit_actor: r.try_get("circuit_actor")?,
        circuit_reason: r.try_get("circuit_reason")?,
        probe_run_id: r
            .try_get::<Option<String>, _>("probe_run_id")?
            .map(|s| Uuid::parse_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e))))
            .transpose()?,
        window_started_at: opt_ts_of(r, "window_started_at")?,
        window_attempts: r.try_get("window_attempts")?,
        last_attempt_at: opt_ts_of(r, "last_attempt_at")?,
    })
}

/// The snapshot of a summary row: its lateness only.
const LATENESS_ONLY: &str =
    "json_object('lateness_ms', json_extract(context_snapshot, '$.lateness_ms')) as context_snapshot";

impl SqliteStore {
    pub async fn guards(&self, ids: &[Uuid]) -> Result<Vec<GuardRow>> {
        let rows = sqlx::query("select * from activity_guard where definition_id in (select value from json_each(?1))")
            .bind(ids_json(ids))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(guard_row).collect::<std::result::Result<_, _>>()?)
    }

    pub async fn recent_runs(&self, ids: &[Uuid], per_activity: i64) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {RUN_COLUMNS_BUT_SNAPSHOT}, {LATENESS_ONLY} from (
               select *, row_number() over (partition by definition_id order by fired_at desc, run_id) as rn
               from activity_runs where definition_id in (select value from json_each(?1))
             ) where rn <= ?2 order by definition_id, fired_at desc, run_id"
        )))
        .bind(ids_json(ids))
        .bind(per_activity)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(run_row).collect::<std::result::Result<_, _>>()?)
    }

    pub async fn last_successes(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, Timestamp)>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select d.value as definition_id,
                    (select coalesce(finished_at, fired_at) from activity_runs
                     where definition_id = d.value and outcome in {SUCCESS_OUTCOMES}
                     order by fired_at desc limit 1) as at
             from json_each(?1) as d"
        )))
        .bind(ids_json(ids))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            if let Some(at) = opt_ts_of(r, "at")? {
                out.push((uuid_of(r, "definition_id")?, at));
            }
        }
        Ok(out)
    }

    pub async fn run_by_id(&self, run_id: Uuid) -> Result<Option<RunRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {} from activity_runs where run_id = ?1",
            run_columns()
        )))
        .bind(run_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(run_row).transpose()?)
    }

    pub async fn query_runs(&self, q: &RunQuery) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {} from activity_runs
             where (?1 is null or definition_id = ?1) and (?2 is null or fired_at >= ?2) and (?3 is null or outcome = ?3)
               and (?5 is null or trigger = ?5)
             order by fired_at desc, run_id limit ?4",
            run_columns()
        )))
        .bind(q.definition_id.map(|u| u.to_string()))
        .bind(q.since.map(to_text))
        .bind(q.outcome.as_deref())
        .bind(if q.limit > 0 { q.limit } else { i64::MAX })
        .bind(q.trigger.as_deref())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(run_row).collect::<std::result::Result<_, _>>()?)
    }

    pub async fn pause_audited(&self, id: Uuid, paused: bool, event: &NewEvent) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("update activity_definitions set paused = ?2, updated_at = ?3 where definition_id = ?1")
            .bind(id.to_string())
            .bind(paused)
            .bind(to_text(Timestamp::now()))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0 {
            insert_event(&mut tx, event).await?;
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
                 values (?1, 'open', ?4, null, ?2, ?3, null, ?4)
                 on conflict (definition_id) do update set circuit = 'open', circuit_since = ?4, half_open_at = null,
                      circuit_actor = ?2, circuit_reason = ?3, probe_run_id = null, updated_at = ?4"
            }
            CircuitOverride::Reset => {
                "insert into activity_guard (definition_id, consecutive_errors, circuit, circuit_since, circuit_actor, circuit_reason, updated_at)
                 values (?1, 0, 'closed', ?4, ?2, ?3, ?4)
                 on conflict (definition_id) do update set consecutive_errors = 0, circuit = 'closed', circuit_since = ?4,
                      half_open_at = null, circuit_actor = ?2, circuit_reason = ?3, probe_run_id = null,
                      window_started_at = null, window_attempts = 0, updated_at = ?4"
            }
        };
        sqlx::query(sql)
            .bind(id.to_string())
            .bind(actor)
            .bind(reason)
            .bind(to_text(Timestamp::now()))
            .execute(&mut *tx)
            .await?;
        insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }
}
