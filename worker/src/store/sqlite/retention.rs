//! History retention on the embedded store (`crate::retention`): the same
//! statements as Postgres (`store/postgres/retention.rs`), without a lock:
//! one process owns the file. Each batch is its own short write
//! transaction, so the worker's claims and results interleave with a pass,
//! and the gate sends it between instants.

use super::SqliteStore;
use super::guard::ids_json;
use crate::error::Result;
use crate::retention::{Batches, Gate, PassOutcome, Plan};
use crate::store::time::to_text;

impl SqliteStore {
    pub async fn prune_runs(&self, plan: &Plan, gate: &Gate<'_>) -> Result<PassOutcome> {
        // Each group's id list as JSON, made once per pass, not per statement.
        let ids: Vec<String> = plan.groups.iter().map(|g| ids_json(g.scope.ids())).collect();
        let mut batches = Batches::new(plan, gate);
        while let Some(b) = batches.next().await {
            let sql = format!(
                "delete from activity_runs where run_id in (
                     select run_id from activity_runs
                     where fired_at < ?1 and {class} and definition_id {not}in (select value from json_each(?2))
                     order by fired_at limit ?3)",
                class = b.class.sql(),
                not = if b.group.scope.only() { "" } else { "not " },
            );
            let n = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(to_text(b.group.cutoffs.of(b.class)))
                .bind(&ids[b.index])
                .bind(b.limit)
                .execute(&self.pool)
                .await?
                .rows_affected();
            batches.deleted(n);
        }
        Ok(PassOutcome::Pruned(batches.finish()))
    }
}
