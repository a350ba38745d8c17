//! The fallback's journal: an embedded store (the same SQLite schema as
//! the cluster's, so the runbook SQL works on it) where a fallback run is
//! recorded when the cluster's database is out of reach, until `fallback
//! import` copies it into Postgres.
//!
//! What has been imported is written in the journal itself, as a
//! `fallback_imported` event per run (`activity_events` is append-only), so
//! `fallback status` can say what is still pending without the cluster.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use crate::definition::Loaded;
use crate::error::{Error, Result};
use crate::run::{ErrorCode, Outcome, Source, State, Trigger};
use crate::store::time::from_text;
use crate::store::{NewEvent, NewRun, RunStore, Store};

/// Where the journal lives unless `--journal` / `ACTCORE_JOURNAL` say otherwise.
pub const DEFAULT_PATH: &str = "/var/lib/actcore/fallback-journal.sqlite";
/// The journal event marking a run as copied into the cluster's database.
pub const IMPORTED: &str = "fallback_imported";

/// An opened journal.
pub struct Journal {
    store: Store,
    path: PathBuf,
}

/// One run in the journal, as written, and whether it was imported.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub slug: String,
    #[serde(flatten)]
    pub run: NewRun,
    /// The import's detail (into which database, as what), or None while pending.
    pub imported: Option<serde_json::Value>,
}

impl Journal {
    /// Opens (creating it and its directory) and migrates the journal, and
    /// syncs the definition files into it so that it holds the activity's
    /// definition. Any failure is an error naming the path: the caller
    /// sends nothing it could not record.
    pub async fn open_for_run(path: &Path, files: &[Loaded], now: Timestamp) -> Result<Journal> {
        let fail = |e: Error| unwritable(path, e);
        let store = Store::open_and_migrate(Some(&url_of(path))).await.map_err(fail)?;
        store.sync(files, now, false).await.map_err(fail)?;
        Ok(Journal {
            store,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing journal (`status`, `import`); None when there is no file yet.
    pub async fn open_existing(path: &Path) -> Result<Option<Journal>> {
        if !path.exists() {
            return Ok(None);
        }
        let store = Store::open_and_migrate(Some(&url_of(path)))
            .await
            .map_err(|e| Error::Config(format!("the fallback journal {} cannot be read: {e}", path.display())))?;
        Ok(Some(Journal {
            store,
            path: path.to_path_buf(),
        }))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every run in the journal, oldest first, with its import mark.
    pub async fn entries(&self) -> Result<Vec<Entry>> {
        let Store::Sqlite(s) = &self.store else {
            return Err(Error::Internal("the journal is not an embedded store".into()));
        };
        let rows = sqlx::query(
            "select r.run_id, r.definition_id, d.slug, r.fired_at, r.scheduled_for, r.trigger, r.source, r.attempt,
                    r.state, r.outcome, r.automation_error, r.assessment_failures, r.error_code, r.error_message,
                    r.context_snapshot, r.worker_id, r.lease_expires_at, r.started_at, r.finished_at, r.spec_hash,
                    r.retry_of, r.actor, r.duplicate_of,
                    (select e.detail from activity_events e where e.kind = ?1 and e.run_id = r.run_id
                     order by e.event_id desc limit 1) as imported
             from activity_runs r join activity_definitions d on d.definition_id = r.definition_id
             order by r.fired_at, r.run_id",
        )
        .bind(IMPORTED)
        .fetch_all(s.pool())
        .await?;
        rows.iter().map(entry).collect()
    }

    /// The audit events recorded with `run_id` in the journal (a forced run's
    /// `fallback_forced`), to copy along with the run.
    pub async fn audits_of(&self, run_id: Uuid) -> Result<Vec<NewEvent>> {
        let Store::Sqlite(s) = &self.store else {
            return Err(Error::Internal("the journal is not an embedded store".into()));
        };
        let rows = sqlx::query(
            "select at, definition_id, kind, detail from activity_events where run_id = ?1 and kind <> ?2 order by event_id",
        )
        .bind(run_id.to_string())
        .bind(IMPORTED)
        .fetch_all(s.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let definition_id: Option<String> = r.try_get("definition_id")?;
                Ok(NewEvent {
                    at: from_text(&r.try_get::<String, _>("at")?)?,
                    definition_id: definition_id
                        .map(|d| Uuid::parse_str(&d).map_err(|e| sqlx::Error::Decode(Box::new(e))))
                        .transpose()?,
                    run_id: Some(run_id),
                    kind: r.try_get("kind")?,
                    detail: serde_json::from_str(&r.try_get::<String, _>("detail")?)
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                })
            })
            .collect()
    }

    /// Records that `run_id` is now in the cluster's database.
    pub async fn mark_imported(
        &self,
        run_id: Uuid,
        definition_id: Uuid,
        detail: serde_json::Value,
        now: Timestamp,
    ) -> Result<()> {
        self.store
            .record_events(&[NewEvent {
                at: now,
                definition_id: Some(definition_id),
                run_id: Some(run_id),
                kind: IMPORTED.into(),
                detail,
            }])
            .await
    }
}

fn url_of(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn unwritable(path: &Path, e: Error) -> Error {
    Error::Io(std::io::Error::other(format!(
        "the fallback journal {} cannot be written ({e}); nothing was sent. Make its directory writable by this \
         user, or pass --journal PATH (ACTCORE_JOURNAL)",
        path.display()
    )))
}

fn entry(r: &sqlx::sqlite::SqliteRow) -> Result<Entry> {
    fn parse<T: std::str::FromStr<Err = String>>(text: String) -> std::result::Result<T, sqlx::Error> {
        text.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))
    }
    let uuid = |col: &str| -> std::result::Result<Option<Uuid>, sqlx::Error> {
        r.try_get::<Option<String>, _>(col)?
            .map(|s| Uuid::parse_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e))))
            .transpose()
    };
    let ts = |col: &str| -> std::result::Result<Option<Timestamp>, sqlx::Error> {
        r.try_get::<Option<String>, _>(col)?.map(|s| from_text(&s)).transpose()
    };
    let json = |text: String| serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)));
    let missing = |col: &str| sqlx::Error::Decode(format!("{col} is null").into());
    Ok(Entry {
        slug: r.try_get("slug")?,
        run: NewRun {
            run_id: uuid("run_id")?.ok_or_else(|| missing("run_id"))?,
            definition_id: uuid("definition_id")?.ok_or_else(|| missing("definition_id"))?,
            fired_at: ts("fired_at")?.ok_or_else(|| missing("fired_at"))?,
            scheduled_for: ts("scheduled_for")?,
            trigger: parse::<Trigger>(r.try_get("trigger")?)?,
            source: parse::<Source>(r.try_get("source")?)?,
            attempt: r.try_get("attempt")?,
            state: parse::<State>(r.try_get("state")?)?,
            outcome: r
                .try_get::<Option<String>, _>("outcome")?
                .map(parse::<Outcome>)
                .transpose()?,
            automation_error: r.try_get("automation_error")?,
            assessment_failures: r.try_get("assessment_failures")?,
            error_code: r
                .try_get::<Option<String>, _>("error_code")?
                .map(parse::<ErrorCode>)
                .transpose()?,
            error_message: r.try_get("error_message")?,
            context_snapshot: json(r.try_get("context_snapshot")?)?,
            worker_id: r.try_get("worker_id")?,
            lease_expires_at: ts("lease_expires_at")?,
            started_at: ts("started_at")?,
            finished_at: ts("finished_at")?,
            spec_hash: r.try_get("spec_hash")?,
            retry_of: uuid("retry_of")?,
            actor: r.try_get("actor")?,
            duplicate_of: uuid("duplicate_of")?,
        },
        imported: r.try_get::<Option<String>, _>("imported")?.map(json).transpose()?,
    })
}
