//! `actcore fallback import`: copies the journal's runs into the cluster's
//! database, idempotently by `run_id`.
//!
//! Each run lands as what the cluster's rows for its instant make it:
//! - nothing there: the instant's first attempt, inside the fence;
//! - only failed or blocked runs: the next attempt of that chain (`retry_of`);
//! - a run in flight or ended healthy: both fired the instant. The fallback's
//!   run is kept outside the fence (`attempt = 0`, `duplicate_of` naming the
//!   cluster's run), reported, and audited (`fallback_duplicate_fire`).
//!
//! A run already there (by `run_id`) is not written again, except that a
//! row left `running` (the database went away during the run, so the result
//! was journaled) gets its result; every run is
//! marked imported in the journal, so a second import changes nothing.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::journal::{Entry, Journal};
use super::slot::{self, SlotClaim};
use crate::audit::{self, Audit};
use crate::error::{Error, Result};
use crate::run::State;
use crate::store::{DefinitionSource, FinishRun, HistoryStore, NewRun, RunStore, Store, redact_url};

/// How one journaled run was imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Imported {
    /// Written as the instant's first attempt.
    FirstAttempt,
    /// Written as the next attempt after the cluster's failed ones.
    NextAttempt,
    /// The cluster fired the instant too: written outside the fence.
    Duplicate,
    /// Already in the database (an earlier import whose mark was lost).
    AlreadyPresent,
    /// Its row was in the database still `running` (the database went away
    /// during the run): the journaled result was written into it.
    ResultWritten,
}

/// One imported run.
#[derive(Clone, Debug, Serialize)]
pub struct ImportedRun {
    pub run_id: Uuid,
    pub slug: String,
    pub scheduled_for: Option<Timestamp>,
    pub outcome: Option<String>,
    pub attempt: i32,
    pub imported_as: Imported,
    /// For a duplicate: the cluster's run of the same instant.
    pub duplicate_of: Option<Uuid>,
    pub retry_of: Option<Uuid>,
}

/// What an import did (`--json` prints it).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    pub imported: Vec<ImportedRun>,
    /// Runs imported before: left alone.
    pub already_imported: usize,
    /// Runs still in flight in the journal: imported once they end.
    pub still_running: Vec<Uuid>,
}

impl ImportReport {
    pub fn duplicates(&self) -> impl Iterator<Item = &ImportedRun> {
        self.imported.iter().filter(|r| r.imported_as == Imported::Duplicate)
    }
}

/// Imports every pending run of `journal` into `store`.
pub async fn import(journal: &Journal, store: &Store, target_url: &str) -> Result<ImportReport> {
    // A run whose fallback process died mid-request: abandoned, like the cluster's reaper does.
    journal.store().reap_expired().await?;
    let known: Vec<Uuid> = store.definitions().await?.iter().map(|d| d.definition.id).collect();
    let mut report = ImportReport::default();
    for entry in journal.entries().await? {
        if entry.imported.is_some() {
            report.already_imported += 1;
            continue;
        }
        if entry.run.state == State::Running {
            report.still_running.push(entry.run.run_id);
            continue;
        }
        if !known.contains(&entry.run.definition_id) {
            return Err(Error::Config(format!(
                "{} ({}) is not in the cluster's database: run `actcore sync` there, then import again",
                entry.slug, entry.run.definition_id
            )));
        }
        let done = import_one(store, &entry).await?;
        if matches!(
            done.imported_as,
            Imported::FirstAttempt | Imported::NextAttempt | Imported::Duplicate
        ) {
            // The run's own audit (a `--force`) goes with it.
            store.record_events(&journal.audits_of(entry.run.run_id).await?).await?;
        }
        let now = Timestamp::now();
        journal
            .mark_imported(
                entry.run.run_id,
                entry.run.definition_id,
                json!({"into": redact_url(target_url), "as": done.imported_as, "attempt": done.attempt,
                       "duplicate_of": done.duplicate_of, "retry_of": done.retry_of}),
                now,
            )
            .await?;
        report.imported.push(done);
    }
    Ok(report)
}

async fn import_one(store: &Store, entry: &Entry) -> Result<ImportedRun> {
    let mut run = entry.run.clone();
    let done = |run: &NewRun, imported_as: Imported| ImportedRun {
        run_id: run.run_id,
        slug: entry.slug.clone(),
        scheduled_for: run.scheduled_for,
        outcome: run.outcome.map(|o| o.to_string()),
        attempt: run.attempt,
        imported_as,
        duplicate_of: run.duplicate_of,
        retry_of: run.retry_of,
    };
    let Some(instant) = run.scheduled_for else {
        // Not a fallback slot run: nothing fences it.
        store.insert_run(&run).await?;
        return Ok(done(&run, Imported::FirstAttempt));
    };
    // Twice at most: a cluster run may take the fence between the read and the insert.
    for _ in 0..2 {
        let slot_runs = store.slot_runs(run.definition_id, instant).await?;
        if let Some(present) = slot_runs.iter().find(|r| r.run_id == run.run_id) {
            run.attempt = present.attempt;
            if present.state == State::Running.as_str()
                && let Some(outcome) = run.outcome
                && let Some(finished_at) = run.finished_at
            {
                let finish = FinishRun {
                    run_id: run.run_id,
                    state: run.state,
                    outcome,
                    automation_error: run.automation_error,
                    assessment_failures: run.assessment_failures,
                    error_code: run.error_code,
                    error_message: run.error_message.clone(),
                    snapshot: crate::snapshot::to_stored(&run.context_snapshot),
                    finished_at,
                    settle: None,
                };
                if store.finish_runs(&[finish]).await? == 1 {
                    return Ok(done(&run, Imported::ResultWritten));
                }
            }
            return Ok(done(&run, Imported::AlreadyPresent));
        }
        let imported_as = match slot::claim_of(&slot_runs, None) {
            SlotClaim::Free => {
                run.attempt = 1;
                run.retry_of = None;
                Imported::FirstAttempt
            }
            SlotClaim::NextAttempt { attempt, retry_of } => {
                run.attempt = attempt;
                run.retry_of = Some(retry_of);
                Imported::NextAttempt
            }
            SlotClaim::Taken { run_id } => {
                run.attempt = 0;
                run.retry_of = None;
                run.duplicate_of = Some(run_id);
                Imported::Duplicate
            }
        };
        if store.insert_run(&run).await? {
            if imported_as == Imported::Duplicate {
                let a = Audit::new("fallback_duplicate_fire", run.definition_id, &entry.slug)
                    .run(run.run_id)
                    .reason("the cluster and the local fallback both fired this instant")
                    .with("scheduled_for", instant.to_string())
                    .with("duplicate_of", run.duplicate_of.map(|u| u.to_string()))
                    .with("fallback_outcome", run.outcome.map(|o| o.to_string()));
                audit::record(store, Timestamp::now(), &[a]).await?;
            }
            return Ok(done(&run, imported_as));
        }
    }
    Err(Error::Internal(format!(
        "run {} could not be imported: the instant's rows kept changing",
        run.run_id
    )))
}
