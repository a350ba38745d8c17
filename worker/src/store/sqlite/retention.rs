//! History retention on the embedded store (`crate::retention`): the same
//! statements as Postgres (`store/postgres/retention.rs`), without a lock:
//! one process owns the file. Each batch is its own short write
//! transaction, so the worker's claims and results interleave with a pass,
//! and the gate sends it between instants.

use super::SqliteStore;
use super::guard::ids_json;
use crate::error::Result;
use crate::retention::{Class, Gate, PassOutcome, Plan, Pruned, Scope};
use crate::store::time::to_text;

impl SqliteStore {
    pub async fn prune_runs(&self, plan: &Plan, gate: &Gate<'_>) -> Result<PassOutcome> {
        let limits = plan.limits;
        let mut pruned = Pruned::default();
        let mut last = None;
        for group in &plan.groups {
            let (ids, only) = match &group.scope {
                Scope::Only(ids) => (ids, true),
                Scope::AllExcept(ids) => (ids, false),
            };
            let ids = ids_json(ids);
            for class in Class::ALL {
                let sql = format!(
                    "delete from activity_runs where run_id in (
                         select run_id from activity_runs
                         where fired_at < ?1 and {class} and definition_id {not}in (select value from json_each(?2))
                         order by fired_at limit ?3)",
                    class = class.sql(),
                    not = if only { "" } else { "not " },
                );
                loop {
                    if pruned.total() >= limits.max_rows || !gate.ready(last).await {
                        pruned.bounded = true;
                        return Ok(PassOutcome::Pruned(pruned));
                    }
                    let started = std::time::Instant::now();
                    let n = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(to_text(group.cutoffs.of(class)))
                        .bind(&ids)
                        .bind(i64::from(limits.batch))
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                    last = Some(started.elapsed());
                    pruned.statements += 1;
                    pruned.add(class, n);
                    if n < u64::from(limits.batch) {
                        break;
                    }
                }
            }
        }
        Ok(PassOutcome::Pruned(pruned))
    }
}
