//! The embedded single-node store: a SQLite file (WAL mode) under
//! `.actcore/`. Same tables and semantics as Postgres; ids are text and
//! times fixed-width text (see `time.rs`), so the runbook SQL works as is.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::time::{from_text, to_text};
use super::{NewEvent, connect_error};
use crate::error::Result;

mod definitions;
mod guard;
mod queue;
mod retention;
mod runs;

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
}

fn uuid_of(row: &SqliteRow, col: &str) -> std::result::Result<Uuid, sqlx::Error> {
    let s: String = row.try_get(col)?;
    Uuid::parse_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn ts_of(row: &SqliteRow, col: &str) -> std::result::Result<Timestamp, sqlx::Error> {
    from_text(&row.try_get::<String, _>(col)?)
}

fn opt_ts_of(row: &SqliteRow, col: &str) -> std::result::Result<Option<Timestamp>, sqlx::Error> {
    row.try_get::<Option<String>, _>(col)?
        .map(|s| from_text(&s))
        .transpose()
}

fn json_of(row: &SqliteRow, col: &str) -> std::result::Result<serde_json::Value, sqlx::Error> {
    let s: String = row.try_get(col)?;
    serde_json::from_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl SqliteStore {
    /// Opens the file at `path`, creating it and its directory on first use.
    pub async fn open(path: &Path) -> Result<Self> {
        let display = format!("sqlite://{}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| connect_error(&display, e))?;
        }
        let options = SqliteConnectOptions::from_str(&display)
            .map_err(|e| connect_error(&display, e))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| connect_error(&display, e))?;
        Ok(SqliteStore {
            pool,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<()> {
        super::schema::tolerant(&super::schema::SQLITE).run(&self.pool).await?;
        Ok(())
    }
}

async fn insert_event(conn: &mut sqlx::SqliteConnection, e: &NewEvent) -> Result<()> {
    sqlx::query("insert into activity_events (at, definition_id, run_id, kind, detail) values (?1, ?2, ?3, ?4, ?5)")
        .bind(to_text(e.at))
        .bind(e.definition_id.map(|u| u.to_string()))
        .bind(e.run_id.map(|u| u.to_string()))
        .bind(&e.kind)
        .bind(e.detail.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
