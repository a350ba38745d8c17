//! The run store: one narrow interface, two backends.
//!
//! Postgres is the production store and the exactly-once fence for any
//! number of replicas; SQLite is the embedded single-node default for
//! newcomers and the local fallback. Both keep the public tables of
//! docs/reference/tables.md, and one conformance suite (`tests/store_conformance.rs`)
//! runs against each.

mod api;
mod decode;
pub mod guard;
mod pg_listen;
mod postgres;
pub mod queue;
mod redact;
pub mod roles;
pub mod schema;
mod sqlite;
pub mod time;

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

pub use self::api::{DefinitionSource, HistoryStore, RunStore, WarmUp};
pub(crate) use self::decode::{decode_retention, decode_stored};
pub use self::guard::{CircuitOverride, GuardRow, GuardStore, RunQuery};
pub use self::postgres::PgStore;
pub use self::queue::{AdmitItem, Dequeued, Expired, Queued, Settle};
pub use self::redact::redact_url;
pub use self::sqlite::SqliteStore;
use crate::definition::{Definition, Loaded};
use crate::error::{Error, Result};
use crate::run::{ErrorCode, Outcome, Source, State, Trigger};
use crate::sync::{Existing, Plan, SyncReport};

/// The Postgres channel a sync notifies; workers treat it as a wake-up and re-read.
pub const NOTIFY_CHANNEL: &str = "actcore_definitions";

/// Where the embedded store lives when no `DATABASE_URL` is given.
pub const DEFAULT_SQLITE_DIR: &str = ".actcore";

/// A store, chosen by URL: `postgres://…` or `sqlite://PATH`.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// An activity as the worker needs it.
#[derive(Clone, Debug)]
pub struct StoredDefinition {
    pub definition: Definition,
    pub spec_hash: String,
    pub enabled: bool,
    pub paused: bool,
    pub retired_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

/// What a pruning pass needs of an activity ([`DefinitionSource::retention_rules`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RetentionRule {
    pub definition_id: Uuid,
    pub slug: String,
    pub retention: crate::definition::RetentionSpec,
}

impl StoredDefinition {
    /// Fires on schedule: enabled, not paused by an operator, not retired.
    pub fn is_active(&self) -> bool {
        self.enabled && !self.paused && self.retired_at.is_none()
    }
}

/// A run row to insert.
#[derive(Clone, Debug, Serialize)]
pub struct NewRun {
    pub run_id: Uuid,
    pub definition_id: Uuid,
    pub fired_at: Timestamp,
    pub scheduled_for: Option<Timestamp>,
    pub trigger: Trigger,
    pub source: Source,
    pub attempt: i32,
    pub state: State,
    pub outcome: Option<Outcome>,
    pub automation_error: bool,
    pub assessment_failures: i32,
    pub error_code: Option<ErrorCode>,
    pub error_message: Option<String>,
    pub context_snapshot: serde_json::Value,
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub spec_hash: Option<String>,
    /// The first run of the chain this attempt follows (a retry, a fallback
    /// attempt after a failed cluster run).
    pub retry_of: Option<Uuid>,
    /// Who asked for it (a manual trigger, a forced fallback run).
    pub actor: Option<String>,
    /// An imported fallback run for an instant the cluster also ran: the cluster's run.
    pub duplicate_of: Option<Uuid>,
}

/// One activity due at an instant, for a batched claim.
#[derive(Clone, Debug)]
pub struct ClaimItem {
    pub run_id: Uuid,
    pub definition_id: Uuid,
    pub spec_hash: String,
    /// With `overlap = "skip"`: record `skipped_overlap` instead if a run is in flight.
    pub skip_if_running: bool,
    /// With `overlap = "buffer_one"` (and `skip_if_running`): queue the
    /// instant instead, until this time (its grace), if none is queued yet.
    pub buffer_until: Option<Timestamp>,
    /// Written into the row's snapshot at claim time (trigger, lateness, spec hash).
    pub snapshot: crate::snapshot::Stored,
}

/// The instant-wide part of a claim.
#[derive(Clone, Debug)]
pub struct ClaimBatch<'a> {
    pub scheduled_for: Timestamp,
    pub fired_at: Timestamp,
    pub worker_id: &'a str,
    /// The lease from the claim on, counted on the database's clock.
    pub lease: jiff::SignedDuration,
    pub items: &'a [ClaimItem],
    /// Runs this worker has finished whose rows are not written yet: the
    /// overlap check does not count them as running.
    pub finished_unwritten: &'a [Uuid],
}

/// A row this replica inserted: it owns the run (`running`) or recorded the overlap (`skipped`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub run_id: Uuid,
    pub definition_id: Uuid,
    pub state: State,
}

/// The end of a run, written in batches.
#[derive(Clone, Debug)]
pub struct FinishRun {
    pub run_id: Uuid,
    pub state: State,
    pub outcome: Outcome,
    pub automation_error: bool,
    pub assessment_failures: i32,
    pub error_code: Option<ErrorCode>,
    pub error_message: Option<String>,
    /// Merged into the snapshot written at claim time.
    pub snapshot: crate::snapshot::Stored,
    pub finished_at: Timestamp,
    /// A guarded activity's automated run: its guard update and retry are
    /// written in the same transaction as this result.
    pub settle: Option<Box<Settle>>,
}

impl FinishRun {
    /// A run that succeeded (`ok`), with nothing for the guard to settle:
    /// the warm start's sample run, the benches' and the tests' finishes.
    pub fn ok(run_id: Uuid, snapshot: crate::snapshot::Stored, finished_at: Timestamp) -> FinishRun {
        FinishRun {
            run_id,
            state: State::Succeeded,
            outcome: Outcome::Ok,
            automation_error: false,
            assessment_failures: 0,
            error_code: None,
            error_message: None,
            snapshot,
            finished_at,
            settle: None,
        }
    }
}

/// A run whose worker was lost, marked `abandoned` by the reaper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abandoned {
    pub run_id: Uuid,
    pub definition_id: Uuid,
    pub trigger: Trigger,
    pub attempt: i32,
    pub retry_of: Option<Uuid>,
    pub scheduled_for: Option<Timestamp>,
    pub finished_at: Timestamp,
}

/// An `activity_events` row to append.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub at: Timestamp,
    pub definition_id: Option<Uuid>,
    pub run_id: Option<Uuid>,
    pub kind: String,
    pub detail: serde_json::Value,
}

/// A run as read back (CLI `runs`, tests).
#[derive(Clone, Debug, Serialize)]
pub struct RunRow {
    pub run_id: Uuid,
    pub definition_id: Uuid,
    pub fired_at: Timestamp,
    pub scheduled_for: Option<Timestamp>,
    pub trigger: String,
    pub source: String,
    pub attempt: i32,
    pub state: String,
    pub outcome: Option<String>,
    pub automation_error: bool,
    pub assessment_failures: i32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub context_snapshot: serde_json::Value,
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

/// Which runs to read.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub definition_id: Option<Uuid>,
    pub since: Option<Timestamp>,
    pub limit: i64,
}

/// Which runs `actcore runs summary` counts: those fired in `[since, until]`.
#[derive(Clone, Debug)]
pub struct RunCountQuery {
    pub definition_id: Option<Uuid>,
    pub since: Timestamp,
    pub until: Timestamp,
}

/// How many runs of one (source, trigger, outcome) a window holds; the
/// outcome is None for runs still queued or running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunCount {
    pub source: String,
    pub trigger: String,
    pub outcome: Option<String>,
    pub count: i64,
}

/// A cheap fingerprint of the definitions table: when it is unchanged, a
/// worker's periodic re-read can skip loading the specs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefinitionsVersion {
    pub count: i64,
    pub max_updated_at: Option<Timestamp>,
}

/// The embedded store's URL under `dir` (`.actcore/actcore.db`).
pub fn default_sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join(DEFAULT_SQLITE_DIR).join("actcore.db").display())
}

impl Store {
    /// Opens the store at `url` and checks that its schema has every
    /// migration this binary needs (else exit 78 naming `actcore migrate`,
    /// see [`schema`]). With no URL, the embedded SQLite file under
    /// `.actcore/` in the working directory.
    pub async fn open(url: Option<&str>) -> Result<Store> {
        let store = Store::connect(url).await?;
        schema::check(&store).await?;
        Ok(store)
    }

    /// Opens the store and applies the migrations it lacks: `actcore
    /// migrate`, `dev`, and test harnesses on a fresh database.
    pub async fn open_and_migrate(url: Option<&str>) -> Result<Store> {
        let store = Store::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the store at `url` without looking at its schema.
    pub async fn connect(url: Option<&str>) -> Result<Store> {
        let url = match url {
            Some(u) if !u.trim().is_empty() => u.to_string(),
            _ => default_sqlite_url(Path::new(".")),
        };
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Store::Postgres(PgStore::connect(&url).await?)
        } else if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            Store::Sqlite(SqliteStore::open(&PathBuf::from(path)).await?)
        } else {
            return Err(Error::Config(format!(
                "DATABASE_URL `{}` is neither postgres://… nor sqlite://PATH; set it to one, or unset it for the embedded store under .actcore/",
                redact_url(&url)
            )));
        };
        Ok(store)
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Applies the embedded migrations (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Store::Postgres(s) => s.migrate().await,
            Store::Sqlite(s) => s.migrate().await,
        }
    }

    /// Syncs validated files in one transaction: adds, changes, retires,
    /// events, and (Postgres) a NOTIFY. A dry run or an empty plan writes nothing.
    pub async fn sync(&self, files: &[Loaded], now: Timestamp, dry_run: bool) -> Result<SyncReport> {
        match self {
            Store::Postgres(s) => s.sync(files, now, dry_run).await,
            Store::Sqlite(s) => s.sync(files, now, dry_run).await,
        }
    }

    /// Sets the operator's pause flag; records an event. False if no such activity.
    /// Without an actor: the audited form ([`crate::ops::apply`]) is what operators use.
    pub async fn set_paused(&self, id: Uuid, paused: bool, now: Timestamp) -> Result<bool> {
        let event = NewEvent {
            at: now,
            definition_id: Some(id),
            run_id: None,
            kind: if paused { "paused" } else { "resumed" }.into(),
            detail: serde_json::json!({}),
        };
        GuardStore::pause_audited(self, id, paused, &event).await
    }
}

/// What sync needs from the existing rows, shared by both backends.
pub(crate) fn plan_from(existing: Vec<Existing>, files: &[Loaded]) -> Plan {
    crate::sync::plan(&existing, files)
}

/// The events a plan records (one per change).
pub(crate) fn sync_events(plan: &Plan, now: Timestamp) -> Vec<NewEvent> {
    let mut events = Vec::new();
    for (kind, list) in [("definition_added", &plan.added), ("definition_changed", &plan.changed)] {
        for u in list {
            events.push(NewEvent {
                at: now,
                definition_id: Some(u.definition.id),
                run_id: None,
                kind: kind.into(),
                detail: serde_json::json!({
                    "slug": u.definition.slug,
                    "spec_hash": u.spec_hash,
                    "previous_hash": u.previous_hash,
                    "revived": u.revived,
                    "file": u.source_file,
                }),
            });
        }
    }
    for e in &plan.retired {
        events.push(NewEvent {
            at: now,
            definition_id: Some(e.id),
            run_id: None,
            kind: "definition_retired".into(),
            detail: serde_json::json!({ "slug": e.slug, "spec_hash": e.spec_hash }),
        });
    }
    events
}

/// Turns a connection failure into one line naming the URL and what to try.
pub(crate) fn connect_error(url: &str, err: impl std::fmt::Display) -> Error {
    Error::Connect {
        url: redact_url(url),
        reason: err.to_string(),
        hint: "check that the server is up and the URL (host, port, user, database) is right; \
               unset DATABASE_URL to use the embedded store under .actcore/"
            .into(),
    }
}
