//! The worker's pruning task: a first pass shortly after start, then one
//! every 10 minutes (sooner while a pass stops at its bound with rows
//! left), each bounded and pausing between statements. Definitions come
//! from the store, as the worker's own do.
//!
//! A pass that fails (the database is away, the runtime role lacks DELETE)
//! is logged and tried again at the next period: retention never stops the
//! worker. Each batch waits for a quiet moment of the worker's firing
//! (`gate`): pruning takes the time between instants, not theirs. Tuning, for benchmarks and catching up a large backlog (all
//! optional, durations like the definitions'): `ACTCORE_RETENTION_FIRST`
//! (1m), `ACTCORE_RETENTION_EVERY` (10m), `ACTCORE_RETENTION_MAX_ROWS`
//! (100000 per pass), `ACTCORE_RETENTION_PAUSE` (50ms between statements).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::gate::{Firing, Gate};
use super::policy::{self, PassLimits, PassOutcome, Plan};
use crate::duration::Dur;
use crate::error::Result;
use crate::store::{DefinitionSource, RunStore};

/// When passes run and how much each may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrunerConfig {
    /// The first pass, after start.
    pub first: Duration,
    /// Between passes.
    pub every: Duration,
    /// Between passes while a backlog remains (the last pass hit its bound).
    pub catching_up: Duration,
    pub limits: PassLimits,
}

impl Default for PrunerConfig {
    fn default() -> Self {
        PrunerConfig {
            first: Duration::from_secs(60),
            every: Duration::from_secs(600),
            catching_up: Duration::from_secs(10),
            limits: PassLimits::default(),
        }
    }
}

impl PrunerConfig {
    /// The defaults, overridden by the `ACTCORE_RETENTION_*` variables; a
    /// malformed one is logged and its default kept.
    pub fn from_env() -> PrunerConfig {
        let mut c = PrunerConfig::default();
        let dur = |name: &str, into: &mut Duration| {
            if let Ok(v) = std::env::var(name) {
                match v.parse::<Dur>() {
                    Ok(d) => *into = d.std(),
                    Err(e) => {
                        warn!(variable = name, value = %v, error = %e.0, "not a duration (e.g. \"10m\"); keeping the default")
                    }
                }
            }
        };
        dur("ACTCORE_RETENTION_FIRST", &mut c.first);
        dur("ACTCORE_RETENTION_EVERY", &mut c.every);
        dur("ACTCORE_RETENTION_PAUSE", &mut c.limits.pause);
        if let Ok(v) = std::env::var("ACTCORE_RETENTION_MAX_ROWS") {
            match v.parse::<u64>() {
                Ok(n) if n > 0 => c.limits.max_rows = n,
                _ => {
                    warn!(variable = "ACTCORE_RETENTION_MAX_ROWS", value = %v, "not a positive count; keeping the default")
                }
            }
        }
        c.catching_up = c.catching_up.min(c.every);
        c
    }
}

/// The worker's background task (`services.spawn("the pruner", …)`): runs
/// until `stop`, yielding to `firing`; never returns an error (a failed pass
/// waits for the next).
pub async fn run<S: RunStore + DefinitionSource>(
    store: S,
    worker_id: String,
    firing: Arc<dyn Firing>,
    stop: CancellationToken,
) -> Result<()> {
    if !store.prunes_history() {
        stop.cancelled().await;
        return Ok(());
    }
    let config = PrunerConfig::from_env();
    let gate = Gate::new(&stop, config.limits.pause).yielding_to(&*firing);
    let mut wait = config.first;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = match pass(&store, &worker_id, Timestamp::now(), config.limits, &gate).await {
            Ok(PassOutcome::Pruned(p)) if p.bounded => config.catching_up,
            Ok(PassOutcome::Pruned(_)) => config.every,
            Ok(PassOutcome::LockHeld) => {
                debug!("another replica is pruning the run history; skipping this pass");
                config.every
            }
            Err(e) => {
                warn!(
                    error = %e,
                    "could not prune the run history; trying again at the next period (the runtime role needs DELETE on activity_runs: `actcore db roles --print`)"
                );
                config.every
            }
        };
    }
}

/// One pass at `now`: plans from the stored definitions, prunes (each
/// statement after `gate`'s wait), and audits what it deleted (one
/// `runs_pruned` event and one log line).
pub async fn pass<S: RunStore + DefinitionSource>(
    store: &S,
    worker_id: &str,
    now: Timestamp,
    limits: PassLimits,
    gate: &Gate<'_>,
) -> Result<PassOutcome> {
    let rules = store.retention_rules().await?;
    let plan = policy::plan(
        rules.into_iter().map(|r| (r.definition_id, r.slug, r.retention)),
        now,
        limits,
    );
    let outcome = store.prune_runs(&plan, gate).await?;
    if let PassOutcome::Pruned(p) = &outcome
        && p.total() > 0
    {
        log(&plan, p);
        crate::api::metrics::runs_pruned(policy::Class::Succeeded.as_str(), p.succeeded);
        crate::api::metrics::runs_pruned(policy::Class::Failed.as_str(), p.failed);
        store.record_events(&[policy::audit_event(&plan, p, worker_id)]).await?;
    }
    Ok(outcome)
}

fn log(plan: &Plan, p: &policy::Pruned) {
    let default = &plan.groups[0].cutoffs;
    info!(
        succeeded = p.succeeded,
        failed = p.failed,
        succeeded_before = %default.succeeded_before,
        failed_before = %default.failed_before,
        groups = plan.groups.len(),
        statements = p.statements,
        bounded = p.bounded,
        "pruned expired runs from activity_runs"
    );
}
