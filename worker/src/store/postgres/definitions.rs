//! The definitions side of the Postgres store: sync (one transaction, NOTIFY), reads, pause.

use crate::definition::Loaded;
use crate::error::Result;
use crate::store::{DefinitionsVersion, NOTIFY_CHANNEL, RetentionRule, StoredDefinition, plan_from, sync_events};
use crate::sync::{Existing, SyncReport, Upsert};
use futures_util::TryStreamExt;
use jiff::Timestamp;
use jiff_sqlx::Timestamp as SqlTs;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::*;

impl PgStore {
    pub async fn sync(&self, files: &[Loaded], now: Timestamp, dry_run: bool) -> Result<SyncReport> {
        let mut tx = self.pool.begin().await?;
        // One sync at a time; workers are not blocked (they only read).
        sqlx::query("select pg_advisory_xact_lock(hashtext('actcore_sync'))")
            .execute(&mut *tx)
            .await?;
        let existing = sqlx::query(
            "select definition_id, slug, spec_hash, retired_at is not null as retired from activity_definitions",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| {
            Ok(Existing {
                id: r.try_get("definition_id")?,
                slug: r.try_get("slug")?,
                spec_hash: r.try_get("spec_hash")?,
                retired: r.try_get("retired")?,
            })
        })
        .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?;
        let plan = plan_from(existing, files);
        let report = plan.report(dry_run);
        if dry_run || plan.is_empty() {
            tx.rollback().await?;
            return Ok(report);
        }
        // Retire first so that a new activity may take over a retired slug.
        if !plan.retired.is_empty() {
            let ids: Vec<Uuid> = plan.retired.iter().map(|e| e.id).collect();
            sqlx::query(
                "update activity_definitions set enabled = false, retired_at = now(), updated_at = now() where definition_id = any($1)",
            )
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
        // Park the slugs of changed activities, so that slugs may move between
        // activities (a swap, a rename taken by a new file) within one sync.
        if !plan.changed.is_empty() {
            let ids: Vec<Uuid> = plan.changed.iter().map(|u| u.definition.id).collect();
            sqlx::query(
                "update activity_definitions set slug = '~' || definition_id::text where definition_id = any($1)",
            )
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
        upsert(&mut tx, &plan.changed).await?;
        upsert(&mut tx, &plan.added).await?;
        insert_events(&mut tx, &sync_events(&plan, now)).await?;
        sqlx::query("select pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(serde_json::json!({"added": report.added.len(), "changed": report.changed.len(), "retired": report.retired.len()}).to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(report)
    }

    pub async fn definitions(&self) -> Result<Vec<StoredDefinition>> {
        // Row by row: 10,000 specs are ~10 MB of rows, which need not all be
        // held at once beside what is built of them.
        let mut rows = sqlx::query(
            "select slug, spec, spec_hash, enabled, paused, retired_at, updated_at from activity_definitions order by slug",
        )
        .fetch(&self.pool);
        let mut out = Vec::new();
        while let Some(r) = rows.try_next().await? {
            let spec: serde_json::Value = r.try_get("spec")?;
            // One spec this binary cannot read (a newer value) must not stop the others.
            let Some(definition) = crate::store::decode_stored(r.try_get("slug")?, spec) else {
                continue;
            };
            out.push(StoredDefinition {
                definition,
                spec_hash: r.try_get("spec_hash")?,
                enabled: r.try_get("enabled")?,
                paused: r.try_get("paused")?,
                retired_at: r.try_get::<Option<SqlTs>, _>("retired_at")?.map(SqlTs::to_jiff),
                updated_at: r.try_get::<SqlTs, _>("updated_at")?.to_jiff(),
            });
        }
        Ok(out)
    }

    pub async fn retention_rules(&self) -> Result<Vec<RetentionRule>> {
        let rows = sqlx::query(
            "select definition_id, slug, spec->'retention' as retention from activity_definitions order by slug",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let slug: String = r.try_get("slug")?;
            if let Some(retention) = crate::store::decode_retention(&slug, r.try_get("retention")?) {
                out.push(RetentionRule {
                    definition_id: r.try_get("definition_id")?,
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
            max_updated_at: r.try_get::<Option<SqlTs>, _>("m")?.map(SqlTs::to_jiff),
        })
    }

    pub async fn last_scheduled(&self) -> Result<Vec<(Uuid, Timestamp)>> {
        // One backward step along the fence index per activity, not an
        // aggregate over the whole history: at 10 million rows the
        // `group by` took 2.9 s of the worker's start-up. The redundant
        // `trigger in (…)` and `attempt = 1` match the index's predicate.
        let rows = sqlx::query(
            "select d.definition_id, l.last from activity_definitions d
             cross join lateral (select r.scheduled_for as last from activity_runs r
                 where r.definition_id = d.definition_id and r.trigger in ('schedule', 'fallback') and r.attempt = 1
                   and r.trigger = 'schedule' and r.scheduled_for is not null
                 order by r.scheduled_for desc limit 1) l",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("definition_id")?, r.try_get::<SqlTs, _>("last")?.to_jiff())))
            .collect()
    }
}

async fn upsert(tx: &mut Transaction<'_, Postgres>, list: &[Upsert]) -> Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = list.iter().map(|u| u.definition.id).collect();
    let names: Vec<&str> = list.iter().map(|u| u.definition.name.as_str()).collect();
    let slugs: Vec<&str> = list.iter().map(|u| u.definition.slug.as_str()).collect();
    let specs: Vec<sqlx::types::Json<&serde_json::Value>> = list.iter().map(|u| sqlx::types::Json(&u.spec)).collect();
    let hashes: Vec<&str> = list.iter().map(|u| u.spec_hash.as_str()).collect();
    let enabled: Vec<bool> = list.iter().map(|u| u.definition.enabled).collect();
    let files: Vec<&str> = list.iter().map(|u| u.source_file.as_str()).collect();
    // `paused` is not in the column list: sync never touches the operator's flag.
    sqlx::query(
        "insert into activity_definitions (definition_id, name, slug, spec, spec_hash, enabled, source_file, created_at, updated_at, retired_at)
         select u.id, u.name, u.slug, u.spec, u.hash, u.enabled, u.file, now(), now(), null
         from unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::bool[], $7::text[])
              as u(id, name, slug, spec, hash, enabled, file)
         on conflict (definition_id) do update set name = excluded.name, slug = excluded.slug, spec = excluded.spec,
              spec_hash = excluded.spec_hash, enabled = excluded.enabled, source_file = excluded.source_file,
              updated_at = excluded.updated_at, retired_at = null",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&slugs)
    .bind(&specs)
    .bind(&hashes)
    .bind(&enabled)
    .bind(&files)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
