//! The schema version: which migrations this binary needs, which a database
//! has applied (`_sqlx_migrations`), and who applies the rest.
//!
//! One owner for migrations: `actcore migrate` (the sync Job runs it, or
//! `actcore sync --migrate`) applies them; `actcore dev` migrates the store
//! it runs on. Every other command opens the store with [`check`]: a
//! database missing a migration this binary needs is refused (exit 78,
//! naming what it found and `actcore migrate`); migrations this binary does
//! not know (a newer one applied them) are accepted, because migrations are
//! additive (docs/upgrading.md). Versions are the date and time a migration
//! was written (`YYYYMMDDHHMMSS_name.sql`, after `0001_initial`), so two
//! branches never take the same number (worker/migrations/README.md).

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;
use sqlx::migrate::Migrator;

use super::Store;
use crate::error::{Error, Result};

pub(super) static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
pub(super) static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// One migration as a database recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub version: i64,
    pub description: String,
    #[serde(skip)]
    pub success: bool,
    #[serde(skip)]
    pub checksum: Vec<u8>,
}

/// Where a database stands against this binary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The latest migration this binary needs.
    pub needed: i64,
    /// The latest migration applied (None: no actcore schema at all).
    pub version: Option<i64>,
    /// Migrations this binary needs that are not applied.
    pub missing: Vec<i64>,
    /// Applied migrations this binary does not know: a newer binary's, fine while additive.
    pub newer: Vec<i64>,
}

/// The migrations embedded for a store's backend.
pub(super) fn migrator(store: &Store) -> &'static Migrator {
    match store {
        Store::Postgres(_) => &POSTGRES,
        Store::Sqlite(_) => &SQLITE,
    }
}

/// A copy of `migrator` that accepts applied migrations it does not know:
/// an older `actcore migrate` facing a newer schema applies what it has and
/// leaves the rest alone.
pub(super) fn tolerant(migrator: &Migrator) -> Migrator {
    let mut m = Migrator::with_migrations(migrator.iter().cloned().collect());
    m.set_ignore_missing(true);
    m
}

/// The migrations a database has recorded, oldest first; empty without an actcore schema.
pub async fn applied(store: &Store) -> Result<Vec<Applied>> {
    // The same two statements on either pool (their types differ).
    macro_rules! list {
        ($pool:expr, $exists:literal) => {{
            let exists: bool = sqlx::query_scalar($exists).fetch_one($pool).await?;
            if !exists {
                return Ok(Vec::new());
            }
            sqlx::query("select version, description, success, checksum from _sqlx_migrations order by version")
                .fetch_all($pool)
                .await?
                .iter()
                .map(applied_row)
                .collect::<Result<Vec<_>, _>>()?
        }};
    }
    Ok(match store {
        Store::Postgres(s) => list!(s.pool(), "select to_regclass('_sqlx_migrations') is not null"),
        Store::Sqlite(s) => list!(
            s.pool(),
            "select count(*) > 0 from sqlite_master where type = 'table' and name = '_sqlx_migrations'"
        ),
    })
}

fn applied_row<R: Row>(row: &R) -> std::result::Result<Applied, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Applied {
        version: row.try_get("version")?,
        description: row.try_get("description")?,
        success: row.try_get("success")?,
        checksum: row.try_get("checksum")?,
    })
}

/// Judges the applied migrations against the ones this binary embeds: Ok
/// when every needed one is applied (unknown newer ones are fine), else the
/// configuration error naming what was found and `actcore migrate`.
pub fn judge(migrator: &Migrator, applied: &[Applied], database: &str) -> Result<Status> {
    let known: BTreeMap<i64, &sqlx::migrate::Migration> = migrator.iter().map(|m| (m.version, m)).collect();
    let needed = known.keys().copied().max().unwrap_or(0);
    let found = applied.iter().map(|a| a.version).max();
    let found_text = match applied.iter().rev().find(|a| a.success) {
        Some(a) => format!("version {} ({})", a.version, a.description),
        None => "no actcore schema".to_string(),
    };
    if let Some(dirty) = applied.iter().find(|a| !a.success) {
        return Err(Error::Config(format!(
            "the schema of {database} is dirty: migration {} ({}) failed part way; repair the database by hand \
             (see docs/upgrading.md), then run `actcore migrate`",
            dirty.version, dirty.description
        )));
    }
    if let Some(changed) = applied
        .iter()
        .find(|a| known.get(&a.version).is_some_and(|m| *m.checksum != *a.checksum))
    {
        return Err(Error::Config(format!(
            "migration {} ({}) applied to {database} differs from the one this actcore embeds: a shipped \
             migration is never edited; restore the file and write a new migration instead",
            changed.version, changed.description
        )));
    }
    let missing: Vec<i64> = known
        .keys()
        .copied()
        .filter(|v| !applied.iter().any(|a| a.version == *v))
        .collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .map(|v| format!("{v} {}", known[v].description))
            .collect();
        return Err(Error::Config(format!(
            "the schema of {database} is older than this actcore needs: found {found_text}, needs version {needed} \
             (missing: {}); run `actcore migrate` with this version of actcore first (the sync Job does), then \
             start this command again",
            names.join(", ")
        )));
    }
    let newer = applied
        .iter()
        .map(|a| a.version)
        .filter(|v| !known.contains_key(v))
        .collect();
    Ok(Status {
        needed,
        version: found,
        missing,
        newer,
    })
}

/// The store as messages name it: its URL without the password, or its file.
fn display(store: &Store) -> String {
    match store {
        Store::Postgres(s) => super::redact_url(s.url()),
        Store::Sqlite(s) => format!("the embedded store {}", s.path().display()),
    }
}

/// Checks that the store's schema has every migration this binary needs;
/// a newer, additive schema is accepted with a log line.
pub async fn check(store: &Store) -> Result<Status> {
    let status = judge(migrator(store), &applied(store).await?, &display(store))?;
    if !status.newer.is_empty() {
        tracing::info!(
            newer = ?status.newer,
            needed = status.needed,
            "the schema has migrations newer than this actcore (a newer version applied them); fine while they are additive"
        );
    }
    Ok(status)
}

/// What `actcore migrate` did.
#[derive(Clone, Debug, Serialize)]
pub struct MigrateReport {
    pub store: &'static str,
    /// Migrations applied by this run, oldest first.
    pub applied: Vec<Applied>,
    #[serde(flatten)]
    pub status: Status,
}

/// Applies every migration this binary has that the store lacks, and reports.
pub async fn migrate(store: &Store) -> Result<MigrateReport> {
    let before = applied(store).await?;
    store.migrate().await?;
    let after = applied(store).await?;
    let status = judge(migrator(store), &after, &display(store))?;
    let applied = after.into_iter().filter(|a| !before.contains(a)).collect();
    Ok(MigrateReport {
        store: store.backend(),
        applied,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(m: &sqlx::migrate::Migration) -> Applied {
        Applied {
            version: m.version,
            description: m.description.to_string(),
            success: true,
            checksum: m.checksum.to_vec(),
        }
    }

    /// A binary one migration ahead of the database (its embedded list plus one).
    fn newer_binary() -> Migrator {
        let mut migrations: Vec<_> = POSTGRES.iter().cloned().collect();
        let mut next = migrations[0].clone();
        next.version = 20991231235959;
        next.description = "a_newer_column".into();
        migrations.push(next);
        Migrator::with_migrations(migrations)
    }

    #[test]
    fn both_stores_have_the_same_migrations_numbered_by_date() {
        let versions = |m: &Migrator| {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            versions(&POSTGRES),
            versions(&SQLITE),
            "the stores are migrated in step"
        );
        for (version, name) in versions(&POSTGRES) {
            let text = version.to_string();
            let dated = text.len() == 14
                && jiff::civil::DateTime::strptime("%Y%m%d%H%M%S", &text).is_ok_and(|d| d.year() >= 2026);
            assert!(
                version == 1 || dated,
                "migration {version} {name}: name it YYYYMMDDHHMMSS_name.sql (worker/migrations/README.md)"
            );
        }
    }

    #[test]
    fn an_older_schema_is_refused_naming_what_was_found_and_actcore_migrate() {
        let applied: Vec<Applied> = POSTGRES.iter().map(row).collect();
        let e = judge(&newer_binary(), &applied, "postgres://h/db").unwrap_err();
        assert_eq!(e.exit_code(), 78);
        let text = e.to_string();
        let latest = POSTGRES.iter().last().unwrap();
        let found = format!("found version {} ({})", latest.version, latest.description);
        assert!(text.contains(&found), "{text}");
        assert!(text.contains("needs version 20991231235959"), "{text}");
        assert!(text.contains("missing: 20991231235959 a_newer_column"), "{text}");
        assert!(text.contains("run `actcore migrate`"), "{text}");

        let e = judge(&POSTGRES, &[], "postgres://h/db").unwrap_err();
        assert!(e.to_string().contains("found no actcore schema"), "{e}");
    }

    #[test]
    fn a_newer_schema_is_accepted_and_its_migrations_named() {
        let applied: Vec<Applied> = newer_binary().iter().map(row).collect();
        let status = judge(&POSTGRES, &applied, "db").unwrap();
        assert_eq!(status.newer, [20991231235959]);
        assert_eq!(status.version, Some(20991231235959));
        assert!(status.missing.is_empty());
    }

    #[test]
    fn a_dirty_or_edited_migration_is_refused() {
        let mut applied: Vec<Applied> = POSTGRES.iter().map(row).collect();
        applied[0].success = false;
        assert!(
            judge(&POSTGRES, &applied, "db")
                .unwrap_err()
                .to_string()
                .contains("dirty")
        );
        applied[0].success = true;
        applied[0].checksum = vec![0; 48];
        assert!(
            judge(&POSTGRES, &applied, "db")
                .unwrap_err()
                .to_string()
                .contains("never edited")
        );
    }
}
