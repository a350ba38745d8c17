//! Stopping: draining the runs in flight within the grace, then the
//! background parts (recorder, ledger, lease keeper, listener, queue), any
//! of which exiting early is a failure that stops the worker.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Core;
use crate::error::{Error, Result};
use crate::store::RunStore;

/// Stops claiming and starting requests, then waits up to `grace` for every
/// owned run's row to be written. Past the grace, runs still executing are
/// dropped (the caller records them `abandoned`).
pub(super) async fn drain<S: RunStore>(core: &Core<S>, grace: Duration) {
    core.stopping.cancel();
    let n = core.owned.len();
    if n > 0 {
        info!(
            runs = n,
            grace_s = grace.as_secs_f64(),
            "waiting for runs in flight to finish"
        );
    }
    if tokio::time::timeout(grace, core.owned.until_empty()).await.is_err() {
        warn!(
            grace_s = grace.as_secs_f64(),
            "shutdown grace over; stopping the remaining runs"
        );
    }
    core.hard_stop.cancel();
    core.tasks.close();
    core.tasks.wait().await;
}

/// Lets the recorder and the ledger write what they hold (bounded by the
/// grace, already over or not), then stops the lease keeper and listener.
pub(super) async fn stop_services<S: RunStore>(
    core: &Core<S>,
    mut services: Services,
    background: &CancellationToken,
    drained: &CancellationToken,
) {
    core.stopping.cancel();
    drained.cancel();
    background.cancel();
    // The grace bounds the writers' retries; give them a last few seconds.
    let last = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(last);
    loop {
        tokio::select! {
            exit = services.set.join_next() => match exit {
                None => break,
                Some(Ok((name, Err(e)))) => warn!(error = %e, "{name} stopped with an error"),
                Some(_) => {}
            },
            _ = &mut last, if !core.hard_stop.is_cancelled() => core.hard_stop.cancel(),
        }
    }
}

/// The background parts; one that exits before shutdown is a failure.
#[derive(Default)]
pub(super) struct Services {
    set: JoinSet<(&'static str, Result<()>)>,
}

impl Services {
    pub(super) fn spawn(&mut self, name: &'static str, work: impl Future<Output = Result<()>> + Send + 'static) {
        self.set.spawn(async move {
            let result = AssertUnwindSafe(work)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(Error::Internal(format!("{name} panicked"))));
            (name, result)
        });
    }

    /// The next part to exit (pending forever when none is running).
    pub(super) async fn next_exit(&mut self) -> (&'static str, Result<()>) {
        match self.set.join_next().await {
            Some(Ok(exit)) => exit,
            Some(Err(e)) => ("a background task", Err(Error::Internal(e.to_string()))),
            None => std::future::pending().await,
        }
    }
}
