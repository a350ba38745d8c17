//! History retention on Postgres (`crate::retention`): a pass holds a
//! session advisory lock on a connection of its own, so one replica prunes
//! at a time, and deletes expired runs by run id, a batch per statement,
//! oldest first along `activity_runs_fired` / `activity_runs_history`.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::{PgStore, ts};
use crate::error::Result;
use crate::retention::policy::PG_LOCK_KEY;
use crate::retention::{Batches, Gate, PassOutcome, Plan, Pruned};
use crate::store::connect_error;

impl PgStore {
    pub async fn prune_runs(&self, plan: &Plan, gate: &Gate<'_>) -> Result<PassOutcome> {
        // Not a pooled connection: the session lock lives and dies with this
        // one (closing or losing it releases the lock), where a pooled one
        // would hand a held lock on to its next user.
        let options: PgConnectOptions = self.url.parse().map_err(|e| connect_error(&self.url, e))?;
        let mut conn = PgConnection::connect_with(&options).await?;
        let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(PG_LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        if !locked {
            let _ = conn.close().await;
            return Ok(PassOutcome::LockHeld);
        }
        let result = delete_expired(&mut conn, plan, gate).await;
        // Closing the session releases the lock too; unlock first to be plain about it.
        let _ = sqlx::query("select pg_advisory_unlock($1)")
            .bind(PG_LOCK_KEY)
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
        Ok(PassOutcome::Pruned(result?))
    }
}

async fn delete_expired(conn: &mut PgConnection, plan: &Plan, gate: &Gate<'_>) -> Result<Pruned> {
    // A statement that cannot finish (a lock held by a stuck session) gives
    // up rather than holding the pruner forever.
    sqlx::query("set statement_timeout = '60s'").execute(&mut *conn).await?;
    let mut batches = Batches::new(plan, gate);
    while let Some(b) = batches.next().await {
        let sql = format!(
            "delete from activity_runs where run_id in (
                 select run_id from activity_runs
                 where fired_at < $1 and {class} and {scope}
                 order by fired_at limit $3)",
            class = b.class.sql(),
            scope = if b.group.scope.only() {
                "definition_id = any($2)"
            } else {
                "not (definition_id = any($2))"
            },
        );
        let n = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ts(b.group.cutoffs.of(b.class)))
            .bind(b.group.scope.ids())
            .bind(b.limit)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        batches.deleted(n);
    }
    Ok(batches.finish())
}
