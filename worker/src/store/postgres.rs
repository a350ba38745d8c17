//! The production store. Batches what shares an instant into one statement
//! (`unnest` arrays) so that 10,000 activities due together cost one round
//! trip, and uses the partial unique index as the exactly-once fence.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use jiff_sqlx::Timestamp as SqlTs;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{NewEvent, connect_error};
use crate::error::Result;

mod definitions;
mod guard;
mod history;
#[macro_use]
mod inflight;
mod queue;
mod retention;
mod runs;
mod warm;

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
