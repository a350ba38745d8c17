//! Writes finished runs in batches: whatever is waiting when the previous
//! write returns goes in the next one, so 10,000 results of one instant
//! cost a handful of statements, and a crash loses at most the last few
//! milliseconds of results (those runs are then reaped, never lost).
//!
//! Faults it survives: a database that is away (the batch is kept and
//! retried with back-off; the runs stay owned, so their leases are renewed
//! and the overlap check knows they finished), and a row the database
//! refuses (the batch is split so the rest lands; the refused row is
//! written with its snapshot replaced by the reason). Retries end when the
//! shutdown grace does. Back-off waits are real time (not the worker's
//! clock): they pace a database, not a schedule.

use std::sync::Arc;

use jiff::SignedDuration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::leases::Owned;
use super::retry::{Backoff, is_transient};
use crate::error::{Error, Result};
use crate::store::{FinishRun, RunStore};

/// Most results in one statement.
const MAX_BATCH: usize = 1000;

pub(crate) struct Recorder<S> {
    pub store: S,
    pub owned: Arc<Owned>,
    /// Cancelled when the shutdown grace is over: stop retrying.
    pub give_up: CancellationToken,
}

impl<S: RunStore> Recorder<S> {
    /// Runs until `stop` is cancelled and every result already sent is
    /// written (or given up on).
    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<FinishRun>, stop: CancellationToken) -> Result<()> {
        let mut batch = Vec::with_capacity(64);
        loop {
            tokio::select! {
                biased;
                n = rx.recv_many(&mut batch, MAX_BATCH) => if n == 0 { return Ok(()) },
                _ = stop.cancelled() => {
                    rx.close();
                    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                        self.write(&mut batch).await;
                    }
                    return Ok(());
                }
            }
            // What waits to be written: this batch and what queued behind it.
            crate::api::metrics::recorder_backlog(batch.len() + rx.len());
            self.write(&mut batch).await;
            crate::api::metrics::recorder_backlog(rx.len());
        }
    }

    /// Writes `batch` (and empties it): the whole batch while it can, row
    /// by row once the database refuses it.
    pub async fn write(&self, batch: &mut Vec<FinishRun>) {
        let ids: Vec<_> = batch.iter().map(|r| r.run_id).collect();
        match self.with_retries(batch).await {
            Ok(n) => log_short(n, batch.len()),
            Err(e) if batch.len() > 1 => {
                warn!(error = %e, runs = batch.len(), "the database refused a batch of results; writing them one by one");
                for row in batch.iter_mut() {
                    self.write_one(row).await;
                }
            }
            Err(_) => self.write_one(&mut batch[0]).await,
        }
        self.owned.released(ids);
        batch.clear();
    }

    /// One row; if the database refuses it, once more with the snapshot
    /// replaced by why (the outcome and error columns are kept).
    async fn write_one(&self, row: &mut FinishRun) {
        let e = match self.with_retries(std::slice::from_mut(row)).await {
            Ok(n) => return log_short(n, 1),
            Err(e) => e,
        };
        row.snapshot = crate::snapshot::unstorable(&e.to_string());
        if let Some(m) = &mut row.error_message {
            *m = crate::classify::truncate_chars(m, 1000);
        }
        match self.with_retries(std::slice::from_mut(row)).await {
            Ok(n) => {
                warn!(run_id = %row.run_id, error = %e, "a run's result could not be stored; recorded without its snapshot");
                log_short(n, 1)
            }
            Err(e2) => {
                error!(run_id = %row.run_id, error = %e2, "a run's result could not be stored at all; its lease will expire and it will be reaped")
            }
        }
    }

    /// `finish_runs`, retried while the error is transient and the grace lasts.
    async fn with_retries(&self, rows: &[FinishRun]) -> Result<u64> {
        let mut backoff = Backoff::new(SignedDuration::from_millis(50), SignedDuration::from_secs(5));
        loop {
            match self.store.finish_runs(rows).await {
                Ok(n) => return Ok(n),
                Err(e) if is_transient(&e) && !self.give_up.is_cancelled() => {
                    let delay = backoff.step();
                    warn!(error = %e, runs = rows.len(), retry_in_ms = delay.as_millis(), "could not record finished runs; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay.unsigned_abs()) => {}
                        _ = self.give_up.cancelled() => {}
                    }
                }
                Err(e) if is_transient(&e) => {
                    error!(error = %e, runs = rows.len(), "shutdown grace over: results not recorded; the runs are recorded abandoned if the database allows");
                    return Err(Error::Internal(format!(
                        "gave up recording {} results: {e}",
                        rows.len()
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn log_short(written: u64, sent: usize) {
    if (written as usize) < sent {
        warn!(
            sent,
            written,
            "fewer run rows updated than results sent: the others were no longer running (reaped as worker_lost?)"
        );
    }
}
