//! `actcore fallback run SLUG`: one shot of the emergency fallback, for a
//! systemd timer. See the module docs of [`super`] for how it stays
//! exactly-once with the cluster and loses no record.

use std::path::Path;

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use super::journal::Journal;
use super::lock;
pub use super::report::{Decision, RunOptions, RunReport};
use super::slot::{self, Slot, SlotClaim};
use crate::action::{self, PREFLIGHT_TIMEOUT, PreparedRequest, RunHeaders};
use crate::audit::{self, Audit};
use crate::definition::{self, Definition, Loaded};
use crate::error::{Error, Result};
use crate::run::{Outcome, Source, State, Trigger};
use crate::store::{DefinitionSource, FinishRun, HistoryStore, NewRun, RunStore, Store};
use crate::{canary, snapshot, template};

/// Runs one fallback call. Err only for what stops it before a run is
/// recorded (bad files, an unwritable journal, a database error); a run
/// that ended in an automation error is a report with that outcome.
pub async fn run(opts: &RunOptions) -> Result<RunReport> {
    let files = definition::load_dir(&opts.definitions)?;
    let loaded = files
        .iter()
        .find(|l| l.definition.slug == opts.slug)
        .ok_or_else(|| unknown_slug(&files, &opts.slug, &opts.definitions))?;
    let def = &loaded.definition;
    let schedule = def.parsed_schedule().map_err(|e| Error::Config(e.to_string()))?;

    let Some(_lock) = lock::try_lock(&lock::path_for(&opts.journal, &def.slug))? else {
        return Ok(RunReport::new(
            &def.slug,
            Decision::SkippedLocked,
            None,
            "another `fallback run` of this activity is running; skipped, nothing recorded".into(),
        ));
    };
    let now = Timestamp::now();
    let slot = slot::slot_at(&schedule, now).ok_or_else(|| {
        Error::Config(format!(
            "{}: schedule `{}` had no instant in the last eight years",
            def.slug, def.schedule.cron
        ))
    })?;
    let grace = def.schedule.misfire_grace.signed();
    if slot::is_misfire(&slot, now, grace) {
        return Ok(RunReport::new(
            &def.slug,
            Decision::SkippedMisfire,
            Some(slot.instant),
            format!(
                "called {} s after the slot {} (grace {}): a misfire, skipped as the cluster would skip it",
                now.duration_since(slot.instant).as_secs(),
                slot.instant,
                def.schedule.misfire_grace
            ),
        ));
    }
    let request = action::prepare(&def.action, template::source_lookup(Source::LocalFallback));
    let cluster = match opts.database_url.as_deref().filter(|u| !u.trim().is_empty()) {
        None => Err("DATABASE_URL is not set".to_string()),
        Some(url) => match Store::open(Some(url)).await {
            Ok(store) => Ok(store),
            Err(e @ Error::Connect { .. }) => Err(e.to_string()),
            Err(e) => return Err(e),
        },
    };
    let ctx = Ctx {
        opts,
        files: &files,
        def,
        slot,
        request,
    };
    match cluster {
        Ok(store) => ctx.in_cluster(&store).await,
        Err(why) => ctx.in_journal(&why).await,
    }
}

struct Ctx<'a> {
    opts: &'a RunOptions,
    files: &'a [Loaded],
    def: &'a Definition,
    slot: Slot,
    request: std::result::Result<PreparedRequest, String>,
}

impl Ctx<'_> {
    fn report(&self, decision: Decision, message: String) -> RunReport {
        RunReport::new(&self.def.slug, decision, Some(self.slot.instant), message)
    }

    /// The database is reachable: the cluster guard, then the workers' fence.
    async fn in_cluster(&self, store: &Store) -> Result<RunReport> {
        let def = self.def;
        let stored = store
            .definitions()
            .await?
            .into_iter()
            .find(|d| d.definition.id == def.id)
            .ok_or_else(|| {
                Error::Config(format!(
                    "{} ({}) is not in the cluster's database: run `actcore sync` there first",
                    def.slug, def.id
                ))
            })?;
        let since = slot::guard_since(&self.slot);
        let live = store.live_or_healthy_since(def.id, since).await?;
        let evidence = slot::cluster_evidence(&live);
        if self.opts.force {
            let a = self
                .forced()
                .with("recorded_in", "cluster")
                .with("paused", stored.paused)
                .with("guard_would_stand_down_for", evidence.map(|r| r.run_id.to_string()));
            audit::record(store, Timestamp::now(), &[a]).await?;
        } else {
            if stored.paused {
                return Ok(self.report(
                    Decision::Paused,
                    "an operator paused this activity in the cluster; not run (--force overrides, audited)".into(),
                ));
            }
            if let Some(live) = evidence {
                let mut r = self.report(
                    Decision::ClusterHealthy,
                    format!(
                        "the cluster is healthy: run {} ({}, {}) since {since}; nothing to do (--force overrides, audited)",
                        live.run_id,
                        live.state,
                        live.outcome.as_deref().unwrap_or("in flight")
                    ),
                );
                r.because_of = Some(live.run_id);
                return Ok(r);
            }
        }
        self.execute(store, "cluster").await
    }

    /// The database is out of reach: the canary, then the journal.
    async fn in_journal(&self, why: &str) -> Result<RunReport> {
        let def = self.def;
        tracing::warn!(activity = %def.slug, reason = %why, "the cluster's database is out of reach: the run goes to the journal");
        if let (Some(spec), false) = (&def.canary, self.opts.force) {
            match self.canary(spec).await {
                Ok(v) if v.found => {
                    let at = v.event_at.map(|t| t.to_string()).unwrap_or_default();
                    return Ok(self.report(
                        Decision::CanarySeen,
                        format!(
                            "State Hub shows an activity-core sweep at {at} for this slot: the cluster swept it; nothing to do"
                        ),
                    ));
                }
                Ok(_) => {}
                // State Hub's sweep lock remains the guard; the import reports any double fire.
                Err(e) => tracing::warn!(activity = %def.slug, error = %e, "canary check failed; running anyway"),
            }
        }
        let journal = Journal::open_for_run(&self.opts.journal, self.files, Timestamp::now()).await?;
        let mut report = self.execute(journal.store(), "journal").await?;
        report.journal = Some(journal.path().to_path_buf());
        Ok(report)
    }

    async fn canary(&self, spec: &crate::definition::CanarySpec) -> std::result::Result<canary::Verdict, String> {
        let url = template::render_with(&spec.verify, template::source_lookup(Source::LocalFallback))
            .map_err(|e| format!("canary.verify: {e}"))?;
        let client = reqwest::Client::builder()
            .connect_timeout(action::CONNECT_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        canary::fetch(&client, &url, spec, Source::ActivityCore, self.slot.instant).await
    }

    /// The audit of a `--force`: who overrode the guards, why, for which instant.
    fn forced(&self) -> Audit {
        let def = self.def;
        let a = Audit::new("fallback_forced", def.id, &def.slug)
            .actor(self.opts.actor.clone())
            .with("scheduled_for", self.slot.instant.to_string());
        match &self.opts.reason {
            Some(reason) => a.reason(reason.clone()),
            None => a,
        }
    }

    /// Claims the slot in `store` (the fence, or the next attempt after a
    /// failed one), writes the `running` row, sends, records the result.
    async fn execute(&self, store: &Store, recorded_in: &'static str) -> Result<RunReport> {
        let def = self.def;
        let mut row = self.running_row(1, None);
        if !store.insert_run(&row).await? {
            match slot::claim_of(&store.slot_runs(def.id, self.slot.instant).await?, None) {
                SlotClaim::Taken { run_id } => {
                    let mut r = self.report(
                        Decision::SlotTaken,
                        format!("run {run_id} already holds this slot (in flight or healthy): the fence refused a second run"),
                    );
                    r.because_of = Some(run_id);
                    return Ok(r);
                }
                SlotClaim::NextAttempt { attempt, retry_of } => {
                    row = self.running_row(attempt, Some(retry_of));
                    if !store.insert_run(&row).await? {
                        return Err(Error::Internal(format!("run {} could not be inserted", row.run_id)));
                    }
                }
                SlotClaim::Free => {
                    return Err(Error::Internal(
                        "the fence refused the slot's first attempt but no run holds it".into(),
                    ));
                }
            }
        }
        if self.opts.force && recorded_in == "journal" {
            // Kept with the run: `fallback import` copies it into the cluster's database.
            let a = self.forced().run(row.run_id).with("recorded_in", "journal");
            audit::record(store, Timestamp::now(), &[a]).await?;
        }
        let finish = self.send(&row).await;
        let mut journaled = None;
        if let Err(e) = finish_with_retries(store, &finish).await {
            if recorded_in != "cluster" {
                return Err(e);
            }
            // The cluster's database went away during the run: the result goes
            // to the journal, and `fallback import` writes it into the run's row.
            tracing::warn!(activity = %def.slug, run_id = %row.run_id, error = %e,
                "the result cannot be written to the cluster's database; recording it in the journal");
            let journal = Journal::open_for_run(&self.opts.journal, self.files, Timestamp::now()).await?;
            journal.store().insert_run(&finished_row(&row, &finish)).await?;
            journaled = Some(journal.path().to_path_buf());
        }
        let recorded_in = if journaled.is_some() { "journal" } else { recorded_in };
        let mut r = self.report(
            Decision::Ran,
            match finish.outcome {
                Outcome::AutomationError => format!(
                    "ran: automation error ({}): {}",
                    finish.error_code.map(|c| c.as_str()).unwrap_or("?"),
                    finish.error_message.as_deref().unwrap_or("")
                ),
                o => format!("ran: {o} (assessment failures: {})", finish.assessment_failures),
            },
        );
        r.recorded_in = Some(recorded_in);
        r.journal = journaled;
        r.run_id = Some(row.run_id);
        r.attempt = Some(row.attempt);
        r.retry_of = row.retry_of;
        r.outcome = Some(finish.outcome);
        r.error_code = finish.error_code;
        r.error_message = finish.error_message;
        Ok(r)
    }

    /// The `running` row written before the request. Its lease outlasts the
    /// action (and preflight), so no cluster reaper takes it while it runs.
    fn running_row(&self, attempt: i32, retry_of: Option<Uuid>) -> NewRun {
        let def = self.def;
        let now = Timestamp::now();
        let lease = def.action.timeout.signed()
            + SignedDuration::try_from(PREFLIGHT_TIMEOUT).unwrap_or_default()
            + SignedDuration::from_secs(60);
        let spec_hash = def.spec_hash();
        let lateness = now.duration_since(self.slot.instant).as_millis();
        NewRun {
            run_id: Uuid::now_v7(),
            definition_id: def.id,
            fired_at: now,
            scheduled_for: Some(self.slot.instant),
            trigger: Trigger::Fallback,
            source: Source::LocalFallback,
            attempt,
            state: State::Running,
            outcome: None,
            automation_error: false,
            assessment_failures: 0,
            error_code: None,
            error_message: None,
            context_snapshot: snapshot::started(
                Trigger::Fallback,
                &spec_hash,
                &self.slot.instant.to_string(),
                i64::try_from(lateness).unwrap_or(i64::MAX),
            ),
            worker_id: Some(worker_id()),
            lease_expires_at: Some(now + lease),
            started_at: Some(now),
            finished_at: None,
            spec_hash: Some(spec_hash),
            retry_of,
            actor: self.opts.force.then(|| self.opts.actor.clone()),
            duplicate_of: None,
        }
    }

    /// Sends the request (saying it comes from the fallback) and classifies the answer.
    async fn send(&self, row: &NewRun) -> FinishRun {
        let headers = RunHeaders {
            run_id: row.run_id,
            scheduled_for: Some(self.slot.instant),
            source: Source::LocalFallback,
        };
        crate::worker::execute::send_once(self.def, &self.request, &headers, self.slot.instant).await
    }
}

/// Writes the result, retrying a few times (3.5 s in all) over a database that blinks.
async fn finish_with_retries(store: &Store, finish: &FinishRun) -> Result<()> {
    let mut wait = std::time::Duration::from_millis(500);
    for _ in 0..3 {
        match store.finish_runs(std::slice::from_ref(finish)).await {
            Ok(_) => return Ok(()),
            Err(e) => tracing::warn!(error = %e, "writing the fallback run's result failed; retrying"),
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    store.finish_runs(std::slice::from_ref(finish)).await.map(|_| ())
}

/// The whole row of a finished run: the `running` row with its result applied.
fn finished_row(row: &NewRun, finish: &FinishRun) -> NewRun {
    let mut snapshot = row.context_snapshot.clone();
    if let (Some(into), serde_json::Value::Object(add)) =
        (snapshot.as_object_mut(), snapshot::to_value(&finish.snapshot))
    {
        into.extend(add);
    }
    NewRun {
        state: finish.state,
        outcome: Some(finish.outcome),
        automation_error: finish.automation_error,
        assessment_failures: finish.assessment_failures,
        error_code: finish.error_code,
        error_message: finish.error_message.clone(),
        context_snapshot: snapshot,
        lease_expires_at: None,
        finished_at: Some(finish.finished_at),
        ..row.clone()
    }
}

/// This machine in `worker_id`: `fallback@HOST`.
fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("fallback@{host}")
}

fn unknown_slug(files: &[Loaded], slug: &str, dir: &Path) -> Error {
    let known: Vec<&str> = files.iter().map(|l| l.definition.slug.as_str()).collect();
    Error::Usage(format!(
        "no definition with slug `{slug}` in {} (--definitions / ACTCORE_DEFINITIONS); known: {}",
        dir.display(),
        known.join(", ")
    ))
}
