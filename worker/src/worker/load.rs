//! Loading what a worker fires: at start-up (this worker id's leftovers,
//! the definitions, each activity's resume point, the guard rows, the warm
//! start) and again whenever the definitions change.

use std::collections::HashMap;

use jiff::Timestamp;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::Core;
use super::timers::{Timers, reconcile};
use crate::error::{Error, Result};
use crate::run::ErrorCode;
use crate::store::{DefinitionSource, DefinitionsVersion, RunStore};

/// Start-up: this worker id's leftovers, the definitions, the timers, the
/// guard rows, the warm start.
pub(super) async fn start<S: RunStore + DefinitionSource>(
    core: &Core<S>,
    store: &S,
) -> Result<(Timers, DefinitionsVersion)> {
    let config = &core.config;
    // A run left `running` under this worker's own id belongs to a previous
    // life of this replica (same pod name after a crash): it is lost.
    let leftover = core
        .store
        .abandon_worker_runs(
            &config.worker_id,
            ErrorCode::WorkerLost,
            "the worker restarted while this run was in flight",
            core.clock.now(),
        )
        .await?;
    if leftover > 0 {
        warn!(
            runs = leftover,
            "runs left running by this worker's previous life recorded as abandoned (worker_lost)"
        );
    }
    let mut timers = Timers::default();
    let version = store.definitions_version().await?;
    let stored = store.definitions().await?;
    let cursors: HashMap<Uuid, Timestamp> = store.last_scheduled().await?.into_iter().collect();
    // Resume after the last recorded instant (or the last change of the
    // spec, whichever is later): what lies between is missed and handled by
    // the misfire policy. `reconcile` clamps it to now.
    reconcile(&mut timers, stored, core.clock.now(), |d| {
        let last = cursors.get(&d.definition.id).copied();
        Some(last.map_or(d.updated_at, |l| l.max(d.updated_at)))
    });
    // A new fleet's guard rows, made now rather than by its first instant's
    // admission (a slow path: rows created, locked, decoded and planned).
    match store.create_guard_rows(&timers.ids()).await {
        Ok(0) => {}
        Ok(n) => debug!(activities = n, "guard rows created"),
        Err(e) => warn!(error = %e, "could not create the activities' guard rows; their first admission will"),
    }
    warm_up(&core.store).await;
    info!(worker_id = %config.worker_id, activities = timers.len(), "worker started");
    timers.log_next();
    Ok((timers, version))
}

/// The warm start ([`RunStore::warm_up`]): the store's connections opened
/// and the hot statements prepared on each before the first instant, which
/// otherwise pays for them while it is due. Best effort: a failure costs
/// that first instant its warm start, never the worker its start.
async fn warm_up<S: RunStore>(store: &S) {
    let began = std::time::Instant::now();
    match store.warm_up().await {
        Ok(w) if w.connections == 0 => {}
        Ok(w) => info!(
            connections = w.connections,
            statements = w.statements,
            took_ms = began.elapsed().as_millis() as u64,
            "database connections opened and the hot statements prepared on each"
        ),
        Err(e) => warn!(
            error = %e,
            took_ms = began.elapsed().as_millis() as u64,
            "could not warm up the database connections; the first instant opens them as it goes"
        ),
    }
}

/// Re-reads the definitions when their version moved (or a notification
/// said so); true if the timers changed. A failure keeps the current ones.
pub(super) async fn reload<S: DefinitionSource>(
    store: &S,
    timers: &mut Timers,
    version: &mut DefinitionsVersion,
    now: Timestamp,
    notified: bool,
) -> bool {
    let result = async {
        let v = store.definitions_version().await?;
        if !notified && v == *version {
            return Ok::<_, Error>(false);
        }
        let stored = store.definitions().await?;
        reconcile(timers, stored, now, |_| Some(now));
        *version = v;
        Ok(true)
    }
    .await;
    match result {
        Ok(true) => {
            debug!(activities = timers.len(), "definitions reloaded");
            true
        }
        Ok(false) => false,
        Err(e) => {
            warn!(error = %e, "could not re-read definitions; keeping the current ones");
            false
        }
    }
}
