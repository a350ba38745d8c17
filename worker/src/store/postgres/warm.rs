//! The warm start: before the worker's first instant, every connection of
//! the pool is opened and holds the statements an instant runs (the claim,
//! the admission, the finish) prepared, so that the first burst waits
//! neither on new backends nor on parsing them again per connection (sqlx
//! caches prepared statements per connection).
//!
//! The statements are not copied here, they are learnt: a throwaway
//! connection runs the real store functions on sample rows inside a
//! transaction that is never committed, and its `pg_prepared_statements`
//! gives their exact text and parameter types. Both must be the real ones.
//! sqlx keys its statement cache by the SQL text alone and binds values in
//! binary by the types the statement was prepared with. Left to infer the
//! types, Postgres refuses the claim (`$6` reads as text in a `case` and
//! as a timestamp in a column) and takes `$9` in `$9 * interval '1 millisecond'`
//! for a `float8` where the claim binds an `int8`: a statement so prepared
//! would be found by the real claim, which would write a garbage lease
//! without an error.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use jiff::{SignedDuration, Timestamp};
use sqlx::pool::PoolConnection;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgPoolOptions, PgTypeInfo};
use sqlx::{AssertSqlSafe, Executor, PgPool, Postgres, SqlSafeStr};
use uuid::Uuid;

use super::PgStore;
use crate::definition::{GuardSpec, RetrySpec};
use crate::duration::Dur;
use crate::error::Result;
use crate::guard::Policy;
use crate::store::{AdmitItem, ClaimBatch, ClaimItem, FinishRun, WarmUp};

/// The `worker_id` of the sample claim (rolled back: no row keeps it).
const WARM_UP_WORKER: &str = "actcore-warm-up";

/// A statement as the store's own call prepared it.
struct Learnt {
    sql: String,
    types: Vec<PgTypeInfo>,
}

impl PgStore {
    /// Opens the pool's connections (all of them not already checked out),
    /// holding them at once so that they are distinct, and prepares on each
    /// the statements learnt from the store's own claim, admission and
    /// finish; then releases them to the pool. The worker's claims,
    /// admissions and finishes run the same text with the same types, and
    /// find it in whichever connection's cache they get.
    pub async fn warm_up(&self) -> Result<WarmUp> {
        let max = self.pool.options().get_max_connections();
        // A connection someone holds (the LISTEN task keeps one) would make
        // an acquire wait out the pool's timeout: leave those out.
        let in_use = self.pool.size().saturating_sub(self.pool.num_idle() as u32);
        let want = max.saturating_sub(in_use) as usize;
        let (learnt, acquired) = tokio::join!(self.learn(), join_all((0..want).map(|_| self.pool.acquire())));
        let mut conns = acquired.into_iter().collect::<std::result::Result<Vec<_>, _>>()?;
        // A connection counted in use may only have been on its way back to
        // the pool (which pings it first); after the round trips above it
        // is idle: take it too.
        conns.extend(std::iter::from_fn(|| self.pool.try_acquire()));
        let learnt = learnt?;
        join_all(conns.iter_mut().map(|c| prepare(c, &learnt)))
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()?;
        Ok(WarmUp {
            connections: conns.len(),
            statements: learnt.len(),
        })
    }

    /// Runs a sample claim, admission and finish through the store's own
    /// functions on a connection of its own, and reads back what they
    /// prepared. Every connection that side pool opens starts in a
    /// transaction that is never committed (the store's `begin`s nest in it
    /// as savepoints): rolled back at the end, or by the server when the
    /// connection drops on an error. Nothing it wrote is ever seen.
    async fn learn(&self) -> Result<Vec<Learnt>> {
        let side = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(2))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Forgotten, so that it is neither committed nor rolled
                    // back when this closure returns: the connection stays in it.
                    std::mem::forget(sqlx::Connection::begin(conn).await?);
                    Ok(())
                })
            })
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let learnt = learn_on(&side, &self.url).await;
        side.close().await;
        learnt
    }
}

async fn learn_on(side: &PgPool, url: &str) -> Result<Vec<Learnt>> {
    // Unnamed statements (`persistent(false)`) stay out of `pg_prepared_statements`.
    let any: Option<Uuid> = sqlx::query_scalar("select definition_id from activity_definitions limit 1")
        .persistent(false)
        .fetch_optional(side)
        .await?;
    if let Some(definition_id) = any {
        let store = PgStore {
            pool: side.clone(),
            url: url.to_string(),
        };
        sample_instant(&store, definition_id).await?;
    }
    let mut conn = side.acquire().await?;
    let rows: Vec<(String, Vec<Oid>)> = sqlx::query_as(
        "select statement, parameter_types::oid[] from pg_prepared_statements where not from_sql order by prepare_time",
    )
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    conn.execute("rollback").await?;
    conn.close().await?;
    Ok(rows
        .into_iter()
        .map(|(sql, oids)| Learnt {
            sql,
            types: oids.into_iter().map(PgTypeInfo::with_oid).collect(),
        })
        .collect())
}

/// What the first instant runs, on one sample row: the claim (of a real
/// activity, as the foreign key requires, for the epoch, an instant no
/// real claim takes), the admission (of an activity with no guard row:
/// both of its paths run and find nothing, so no real row is locked and
/// no decision logged) and the finish.
async fn sample_instant(store: &PgStore, definition_id: Uuid) -> Result<()> {
    let now = Timestamp::now();
    let run_id = Uuid::now_v7();
    let items = [ClaimItem {
        run_id,
        definition_id,
        spec_hash: String::new(),
        skip_if_running: true,
        buffer_until: None,
        snapshot: crate::snapshot::to_stored(&serde_json::json!({})),
    }];
    store
        .claim(&ClaimBatch {
            scheduled_for: Timestamp::UNIX_EPOCH,
            fired_at: now,
            worker_id: WARM_UP_WORKER,
            lease: SignedDuration::from_secs(30),
            items: &items,
            finished_unwritten: &[],
        })
        .await?;
    let admit = [AdmitItem {
        run_id,
        policy: Arc::new(sample_policy(Uuid::new_v4())),
    }];
    store.admit(&admit, now).await?;
    store
        .finish_runs(&[FinishRun::ok(
            run_id,
            crate::snapshot::to_stored(&serde_json::json!({})),
            now,
        )])
        .await?;
    Ok(())
}

/// A policy that admits (closed circuit, room in the budget): its values
/// only fill the binds.
fn sample_policy(definition_id: Uuid) -> Policy {
    Policy {
        definition_id,
        slug: WARM_UP_WORKER.into(),
        retry: RetrySpec {
            max_attempts: 1,
            initial_interval: Dur::from_millis(1_000),
            backoff_coefficient: 2.0,
            max_interval: Dur::from_millis(1_000),
        },
        guard: GuardSpec {
            cooldown: Dur::ZERO,
            max_automated_attempts: 1_000,
            window: Dur::from_millis(1_000),
            open_after: 1_000,
            open_for: Dur::from_millis(1_000),
        },
    }
}

/// Prepares `learnt` on `conn`, into its statement cache (a no-op for a
/// statement already there).
async fn prepare(conn: &mut PoolConnection<Postgres>, learnt: &[Learnt]) -> Result<()> {
    for s in learnt {
        conn.prepare_with(AssertSqlSafe(s.sql.clone()).into_sql_str(), &s.types)
            .await?;
    }
    Ok(())
}
