//! `trigger --local`: this process claims the queued run it just created
//! and executes it, for the embedded store (no worker) or a cluster whose
//! workers are down. The row goes through the same queue claim as a
//! worker's, so a worker that got there first keeps it, and it is recorded
//! the same way.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::action::{self, PREFLIGHT_TIMEOUT, RunHeaders};
use crate::error::Result;
use crate::run::Source;
use crate::store::{RunStore, StoredDefinition};
use crate::template;

/// The longest a run of `d` may take once started: its timeout, the
/// preflight's, and a minute for recording it.
pub fn deadline(d: &crate::definition::Definition) -> SignedDuration {
    d.action.timeout.signed()
        + SignedDuration::try_from(PREFLIGHT_TIMEOUT).unwrap_or_default()
        + SignedDuration::from_secs(60)
}

/// Claims `run_id` and executes it here. False when it was no longer
/// queued (a worker claimed it first: `--wait` follows that one).
pub async fn execute<S: RunStore>(store: &S, def: &StoredDefinition, run_id: Uuid) -> Result<bool> {
    let d = &def.definition;
    // Long enough that nothing needs renewing: the whole exchange and a minute.
    let lease = deadline(d);
    let worker_id = format!("trigger-local-{}", std::process::id());
    let claimed = store
        .claim_queued(&worker_id, lease, Timestamp::now(), 1, Some(run_id))
        .await?;
    if claimed.is_empty() {
        return Ok(false);
    }
    let request = action::prepare(&d.action, template::source_lookup(Source::Manual));
    let headers = RunHeaders {
        run_id,
        scheduled_for: None,
        source: Source::Manual,
    };
    let finish = crate::worker::execute::send_once(d, &request, &headers, Timestamp::now()).await;
    let mut wait = Duration::from_millis(250);
    for _ in 0..4 {
        match store.finish_runs(std::slice::from_ref(&finish)).await {
            Ok(_) => return Ok(true),
            Err(e) if crate::worker::is_transient(&e) => {
                tracing::warn!(error = %e, "could not record the run; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    store.finish_runs(std::slice::from_ref(&finish)).await?;
    Ok(true)
}
