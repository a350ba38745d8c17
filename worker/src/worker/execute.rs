//! Executing one claimed run: the HTTP action, classified, handed to the
//! recorder. Every claimed run ends as exactly one result: executed, not
//! started because the worker is stopping (`abandoned`/`shutdown`), too late
//! to send (`skipped_misfire`), or its task panicked (`internal`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use jiff::Timestamp;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::Core;
use super::timers::Fireable;
use crate::action::RunHeaders;
use crate::classify::{Classification, Exchange, classify};
use crate::guard::Ended;
use crate::run::{ErrorCode, Outcome, Source, State, Trigger};
use crate::snapshot;
use crate::store::{FinishRun, RunStore, Settle};

/// A run this worker won, to execute at its fire time.
pub(crate) struct RunTask {
    pub run_id: Uuid,
    pub spec: Arc<Fireable>,
    /// The scheduled instant (None for a manual run).
    pub instant: Option<Timestamp>,
    /// The planned fire time (instant + jitter): the grace counts from it.
    pub fire: Timestamp,
    pub trigger: Trigger,
    pub source: Source,
    pub attempt: i32,
    /// The first run of its retry chain (None: this run is the first).
    pub retry_of: Option<Uuid>,
}

impl RunTask {
    /// A scheduled instant's first attempt.
    pub fn scheduled(run_id: Uuid, spec: Arc<Fireable>, instant: Timestamp, fire: Timestamp) -> RunTask {
        RunTask {
            run_id,
            spec,
            instant: Some(instant),
            fire,
            trigger: Trigger::Schedule,
            source: Source::ActivityCore,
            attempt: 1,
            retry_of: None,
        }
    }

    /// The guard's part of this run's result: automated runs of a guarded
    /// activity feed its error streak, circuit and retries (a run stopped
    /// by a shutdown does not: the deploy is not the remote's fault).
    fn settle(&self, f: &FinishRun) -> Option<Box<Settle>> {
        let policy = self.spec.policy.clone();
        if !matches!(self.trigger, Trigger::Schedule | Trigger::Retry) || f.error_code == Some(ErrorCode::Shutdown) {
            return None;
        }
        Some(Box::new(Settle {
            policy,
            ended: Ended {
                run_id: self.run_id,
                trigger: self.trigger,
                attempt: self.attempt,
                root: self.retry_of.unwrap_or(self.run_id),
                scheduled_for: self.instant,
                outcome: f.outcome,
                error_code: f.error_code,
                finished_at: f.finished_at,
                next_instant: self.instant.and_then(|i| self.spec.schedule.next_after(i)),
            },
        }))
    }
}

/// Spawns `task` on the worker's tracker, supervised: a panic is recorded
/// as the run's result instead of leaving its row `running`. No span per
/// run (building and entering one cost as much as the run's log line): the
/// lines a run logs name it themselves.
pub(crate) fn spawn<S: RunStore>(core: &Arc<Core<S>>, task: RunTask) {
    core.tasks
        .spawn(supervised(core.clone(), task.run_id, execute(core.clone(), task)));
}

/// Runs `work` (which records its own result); if it panics, records one.
pub(crate) async fn supervised<S: RunStore>(core: Arc<Core<S>>, run_id: Uuid, work: impl Future<Output = ()>) {
    if let Err(panic) = AssertUnwindSafe(work).catch_unwind().await {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        error!(%run_id, panic = %what, "a run's task panicked; recorded as an automation error (internal)");
        core.finish(not_executed(
            run_id,
            State::Failed,
            Outcome::AutomationError,
            Some(ErrorCode::Internal),
            format!("the worker failed while running this: {what}"),
            "panic",
            core.clock.now(),
        ));
    }
}

async fn execute<S: RunStore>(core: Arc<Core<S>>, task: RunTask) {
    let def = &task.spec.definition;
    let done = |mut f: FinishRun| {
        f.settle = task.settle(&f);
        core.finish(f)
    };
    if core.stopping.is_cancelled() {
        return done(shutdown(&core, &task));
    }
    // Re-checked here, not only when the instant came due: a claim that
    // took long must not send past the grace.
    let late = core.clock.now().duration_since(task.fire);
    if late > task.spec.grace() {
        task.spec
            .counters
            .finished(&def.slug, Outcome::SkippedMisfire, None, None);
        warn!(
            activity = %def.slug,
            run_id = %task.run_id,
            scheduled_for = task.instant.map(tracing::field::display),
            late_ms = late.as_millis(),
            "claimed too late to send within the grace: skipped_misfire"
        );
        return done(not_executed(
            task.run_id,
            State::Skipped,
            Outcome::SkippedMisfire,
            None,
            format!("claimed {} ms after its fire time, past the grace", late.as_millis()),
            "claimed_past_grace",
            core.clock.now(),
        ));
    }
    // A run waiting for a request slot when the worker stops never starts.
    // 10,000 runs of one instant wait here at once, so what waits is kept
    // small: the exchange's state (request, response, snapshot) is only
    // allocated, boxed, once the run holds a slot.
    let _slot = tokio::select! {
        biased;
        _ = core.stopping.cancelled() => return done(shutdown(&core, &task)),
        slot = core.request_slots.acquire() => slot.ok(),
    };
    let (finish, timing) = match Box::pin(send(&core, &task)).await {
        Sent::Done(finish, timing) => (finish, timing),
        Sent::Stopped(finish) => return done(finish),
        // Past the grace the row is recorded abandoned by the shutdown sweep.
        Sent::Dropped => return,
    };
    task.spec
        .counters
        .finished(&def.slug, finish.outcome, timing.map(|t| t.0), timing.map(|t| t.1));
    match finish.outcome {
        Outcome::AutomationError => {
            warn!(activity = %def.slug, run_id = %task.run_id, scheduled_for = task.instant.map(tracing::field::display), trigger = %task.trigger,
                  attempt = task.attempt, outcome = %finish.outcome,
                  error_code = finish.error_code.map(|c| c.as_str()).unwrap_or(""),
                  error = finish.error_message.as_deref().unwrap_or(""), "run failed")
        }
        _ => {
            info!(activity = %def.slug, run_id = %task.run_id, scheduled_for = task.instant.map(tracing::field::display), trigger = %task.trigger,
                   attempt = task.attempt, outcome = %finish.outcome,
                   assessment_failures = finish.assessment_failures, "run finished")
        }
    }
    done(finish);
}

/// What a run holding a request slot came to.
enum Sent {
    /// Executed, or not buildable: counted, logged and recorded, with the
    /// request's (duration, lateness) when it was sent.
    Done(FinishRun, Option<(std::time::Duration, std::time::Duration)>),
    /// The worker began stopping before the request left: recorded only.
    Stopped(FinishRun),
    /// Stopped hard while sending: the shutdown sweep records it.
    Dropped,
}

/// The exchange of a run that holds a request slot.
async fn send<S: RunStore>(core: &Core<S>, task: &RunTask) -> Sent {
    if core.stopping.is_cancelled() {
        return Sent::Stopped(shutdown(core, task));
    }
    let def = &task.spec.definition;
    // The request says who fired it: rendered again for a manual run (the
    // prepared one carries the scheduler's source).
    let per_source;
    let request = match task.source {
        Source::ActivityCore => &task.spec.request,
        other => {
            per_source = crate::action::prepare(&def.action, crate::template::source_lookup(other));
            &per_source
        }
    };
    let req = match request {
        Ok(req) => req,
        Err(message) => return Sent::Done(unbuildable(def, task.run_id, message, core.clock.now()), None),
    };
    let headers = RunHeaders {
        run_id: task.run_id,
        scheduled_for: task.instant,
        source: task.source,
    };
    let sent_at = core.clock.now();
    let report = tokio::select! {
        r = core.executor.execute(req, &headers, &def.result) => r,
        _ = core.hard_stop.cancelled() => return Sent::Dropped,
    };
    let snap = snapshot::finished(def, req, &report, sent_at, task.fire);
    let timing = (
        core.clock.now().duration_since(sent_at).unsigned_abs(),
        sent_at.duration_since(task.fire).unsigned_abs(),
    );
    Sent::Done(
        finish_of(task.run_id, report.classification, snap, core.clock.now()),
        Some(timing),
    )
}

/// The result of a run the worker stopped before its request left.
fn shutdown<S: RunStore>(core: &Core<S>, task: &RunTask) -> FinishRun {
    not_executed(
        task.run_id,
        State::Abandoned,
        Outcome::AutomationError,
        Some(ErrorCode::Shutdown),
        "the worker was shutting down before the request started".into(),
        "shutdown",
        core.clock.now(),
    )
}

/// One exchange outside the worker loop (the fallback, `trigger --local`):
/// send with a fresh client, classify, make storable. `fire` is what the
/// lateness counts from.
pub(crate) async fn send_once(
    def: &crate::definition::Definition,
    request: &Result<crate::action::PreparedRequest, String>,
    headers: &RunHeaders,
    fire: Timestamp,
) -> FinishRun {
    match request {
        Ok(req) => {
            let sent_at = Timestamp::now();
            let report = crate::action::HttpExecutor::new()
                .execute(req, headers, &def.result)
                .await;
            let snap = snapshot::finished(def, req, &report, sent_at, fire);
            finish_of(headers.run_id, report.classification, snap, Timestamp::now())
        }
        Err(message) => unbuildable(def, headers.run_id, message, Timestamp::now()),
    }
}

/// The result of a run whose request could not be built (an unset
/// `${VAR}`, a bad URL): an automation error (`config`), nothing sent.
fn unbuildable(def: &crate::definition::Definition, run_id: Uuid, message: &str, now: Timestamp) -> FinishRun {
    let c = classify(
        &def.result,
        &Exchange::NoResponse {
            code: ErrorCode::Config,
            message: message.to_string(),
        },
    );
    finish_of(run_id, c, snapshot::not_sent(), now)
}

/// The result of an executed run, made storable (see [`snapshot::storable`]).
pub(crate) fn finish_of(run_id: Uuid, c: Classification, snapshot: snapshot::Stored, now: Timestamp) -> FinishRun {
    let snapshot = snapshot::storable(snapshot);
    let mut error_message = c.error_message;
    if let Some(m) = &mut error_message {
        snapshot::storable_text(m);
    }
    FinishRun {
        run_id,
        state: c.outcome.state(),
        outcome: c.outcome,
        automation_error: c.automation_error,
        assessment_failures: c.assessment_failures,
        error_code: c.error_code,
        error_message,
        snapshot,
        finished_at: now,
        settle: None,
    }
}

pub(crate) fn not_executed(
    run_id: Uuid,
    state: State,
    outcome: Outcome,
    error_code: Option<ErrorCode>,
    message: String,
    reason: &str,
    now: Timestamp,
) -> FinishRun {
    FinishRun {
        run_id,
        state,
        outcome,
        automation_error: outcome == Outcome::AutomationError,
        assessment_failures: 0,
        error_code,
        error_message: Some(message),
        snapshot: snapshot::not_executed(reason),
        finished_at: now,
        settle: None,
    }
}
