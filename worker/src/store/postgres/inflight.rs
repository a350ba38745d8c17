//! What each activity has in flight, on Postgres: the `activity_inflight`
//! list (docs/design.md, "Runs in flight"). The triggers of migration
//! `20261207060000_runs_in_flight_by_activity` add to it, the finish
//! removes its own runs (`runs.rs`), the readers take the listed ids from
//! the fragments below, and the sweep here drops what ended otherwise.

use crate::error::Result;

use super::PgStore;

/// The ids listed as running, as an array expression for `run_id = any(…)`:
/// a primary-key lookup of `activity_runs` whatever the planner thinks of
/// `state`. A listed run counts only if its own row still says so.
macro_rules! listed_running {
    () => {
        "array(select x from activity_inflight f cross join unnest(f.running) x where f.running <> '{}')"
    };
}

/// The ids listed as queued (the partial index `activity_inflight_queued`).
macro_rules! listed_queued {
    () => {
        "array(select x from activity_inflight f cross join unnest(f.queued) x where f.queued <> '{}')"
    };
}

impl PgStore {
    /// Drops from `activity_inflight` the runs that left their state a minute
    /// ago or more by another way than the finish, which unlists its own:
    /// reaped, abandoned, expired, blocked, started from the queue, ended by
    /// an older replica or by hand. Readers check each listed run on its own
    /// row, so this only keeps the lists short; an activity that fires more
    /// often than once a minute is pruned by its own claims (the insert
    /// trigger) first. Rows a claim holds are skipped, not waited for; a run
    /// this statement cannot see (its claim committing now) is never
    /// dropped: only a row that visibly left the state is.
    pub async fn sweep_inflight(&self) -> Result<u64> {
        Ok(sqlx::query(
            "with l as materialized (
               select definition_id, running, queued from activity_inflight
               where running <> '{}' or queued <> '{}'
               for no key update skip locked),
             gone as materialized (
               select definition_id, array_agg(x) as ids
               from (select l.definition_id, e.x,
                            -- One primary-key probe per listed run: a scalar subquery,
                            -- never a join the planner could make a scan of activity_runs.
                            (select r.state <> e.st and coalesce(r.finished_at, r.fired_at) < now() - interval '1 minute'
                             from activity_runs r where r.run_id = e.x) as ended
                     from l cross join lateral (select unnest(l.running) as x, 'running' as st
                                                union all select unnest(l.queued), 'queued') e) c
               where ended
               group by definition_id)
             update activity_inflight f
             set running = array(select x from unnest(l.running) x where x <> all(g.ids)),
                 queued = case when l.queued = '{}' then l.queued
                               else array(select x from unnest(l.queued) x where x <> all(g.ids)) end
             from l join gone g using (definition_id)
             where f.definition_id = l.definition_id",
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
