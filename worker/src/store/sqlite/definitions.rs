//! The definitions side of the embedded store: sync (BEGIN IMMEDIATE), reads, pause.

use crate::definition::Loaded;
use crate::error::Result;
use crate::store::time::to_text;
use crate::store::{DefinitionsVersion, RetentionRule, StoredDefinition, plan_from, sync_events};
use crate::sync::{Existing, SyncReport, Upsert};
use futures_util::TryStreamExt;
use jiff::Timestamp;
use sqlx::Row;
use uuid::Uuid;

use super::*;

impl SqliteStore {
    pub async fn sync(&self, files: &[Loaded], now: Timestamp, dry_run: bool) -> Result<SyncReport> {
        // BEGIN IMMEDIATE: take the write lock before reading, one sync at a time.
        let mut conn = self.pool.acquire().await?;
        sqlx::query("begin immediate").execute(&mut *conn).await?;
        let result = async {
            let existing = sqlx::query(
                "select definition_id, slug, spec_hash, retired_at is not null as retired from activity_definitions",
            )
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| {
                Ok(Existing {
                    id: uuid_of(r, "definition_id")?,
                    slug: r.try_get("slug")?,
                    spec_hash: r.try_get("spec_hash")?,
                    retired: r.try_get("retired")?,
                })
            })
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?;
            let plan = plan_from(existing, files);
            let report = plan.report(dry_run);
            if dry_run || plan.is_empty() {
                return Ok::<_, crate::Error>((report, false));
            }
            // The store's clock (one machine owns the file), not the caller's.
            let now_text = to_text(Timestamp::now());
            for e in &plan.retired {
                sqlx::query(
                    "update activity_definitions set enabled = 0, retired_at = ?2, updated_at = ?2 where definition_id = ?1",
                )
                .bind(e.id.to_string())
                .bind(&now_text)
                .execute(&mut *conn)
                .await?;
            }
            // Park the slugs of changed activities, so that slugs may move between
            // activities (a swap, a rename taken by a new file) within one sync.
            for u in &plan.changed {
                sqlx::query("update activity_definitions set slug = '~' || definition_id where definition_id = ?1")
                    .bind(u.definition.id.to_string())
                    .execute(&mut *conn)
                    .await?;
            }
            for u in plan.changed.iter().chain(&plan.added) {
                upsert(&mut conn, u, &now_text).await?;
            }
            for e in sync_events(&plan, now) {
                insert_event(&mut conn, &e).await?;
            }
            Ok((report, true))
        }
        .await;
        match result {
            Ok((report, true)) => {
                sqlx::query("commit").execute(&mut *conn).await?;
                Ok(report)
            }
            Ok((report, false)) => {
                sqlx::query("rollback").execute(&mut *conn).await?;
                Ok(report)
            }
            Err(e) => {
                let _ = sqlx::query("rollback").execute(&mut *conn).await;
                Err(e)
            }
        }
    }

    pub async fn definitions(&self) -> Result<Vec<StoredDefinition>> {
        // Row by row, as on Postgres: the rows need not all be held at once.
        let mut rows = sqlx::query(
            "select slug, spec, spec_hash, enabled, paused, retired_at, updated_at from activity_definitions order by slug",
        )
        .fetch(&self.pool);
        let mut out = Vec::new();
        while let Some(r) = rows.try_next().await? {
            // One spec this binary cannot read (a newer value) must not stop the others.
            let Some(definition) = crate::store::decode_stored(r.try_get("slug")?, json_of(&r, "spec")?) else {
                continue;
            };
            out.push(StoredDefinition {
                definition,
                spec_hash: r.try_get("spec_hash")?,
                enabled: r.try_get("enabled")?,
                paused: r.try_get("paused")?,
                retired_at: opt_ts_of(&r, "retired_at")?,
                updated_at: ts_of(&r, "updated_at")?,
            });
        }
        Ok(out)
    }

    pub async fn retention_rules(&self) -> Result<Vec<RetentionRule>> {
        let rows = sqlx::query(
            "select definition_id, slug, json_extract(spec, '$.retention') as retention
             from activity_definitions order by slug",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let slug: String = r.try_get("slug")?;
            let retention: Option<String> = r.try_get("retention")?;
            let value = match retention.as_deref().map(serde_json::from_str::<serde_json::Value>) {
                None => None,
                Some(Ok(v)) => Some(v),
                Some(Err(e)) => return Err(crate::error::Error::Internal(format!("stored spec of {slug}: {e}"))),
            };
            if let Some(retention) = crate::store::decode_retention(&slug, value) {
                out.push(RetentionRule {
                    definition_id: uuid_of(r, "definition_id")?,
                    slug,
                    retention,
                });
            }
        }
        Ok(out)
    }

    pub async fn definitions_version(&self) -> Result<DefinitionsVersion> {
        let r = sqlx::query("select count(*) as n, max(updated_at) as m from activity_definitions")
            .fetch_one(&self.pool)
            .await?;
        Ok(DefinitionsVersion {
            count: r.try_get("n")?,
            max_updated_at: opt_ts_of(&r, "m")?,
        })
    }

    pub async fn last_scheduled(&self) -> Result<Vec<(Uuid, Timestamp)>> {
        let rows = sqlx::query(
            // Per activity along the fence index (see the Postgres store).
            "select definition_id, last from (
                 select d.definition_id, (select max(r.scheduled_for) from activity_runs r
                     where r.definition_id = d.definition_id and r.trigger in ('schedule', 'fallback') and r.attempt = 1
                       and r.trigger = 'schedule' and r.scheduled_for is not null) as last
                 from activity_definitions d)
             where last is not null",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((uuid_of(r, "definition_id")?, ts_of(r, "last")?)))
            .collect()
    }
}

async fn upsert(conn: &mut sqlx::SqliteConnection, u: &Upsert, now: &str) -> Result<()> {
    // `paused` is not in the column list: sync never touches the operator's flag.
    sqlx::query(
        "insert into activity_definitions (definition_id, name, slug, spec, spec_hash, enabled, source_file, created_at, updated_at, retired_at)
         values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, null)
         on conflict (definition_id) do update set name = excluded.name, slug = excluded.slug, spec = excluded.spec,
              spec_hash = excluded.spec_hash, enabled = excluded.enabled, source_file = excluded.source_file,
              updated_at = excluded.updated_at, retired_at = null",
    )
    .bind(u.definition.id.to_string())
    .bind(&u.definition.name)
    .bind(&u.definition.slug)
    .bind(u.spec.to_string())
    .bind(&u.spec_hash)
    .bind(u.definition.enabled)
    .bind(&u.source_file)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
