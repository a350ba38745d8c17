//! The order and bookkeeping of a pass's `delete` statements, shared by
//! both stores so that each keeps only its SQL: group by group, class by
//! class, one batch per statement until a statement deletes fewer than a
//! batch; never past the pass's row bound; each statement sent through the
//! [`Gate`], which is told how long the one before it took.
//!
//! A store drives it as a cursor (no closure borrowing its connection):
//!
//! ```text
//! let mut batches = Batches::new(plan, gate);
//! while let Some(b) = batches.next().await {
//!     let n = /* delete up to b.limit runs of b.class in b.group */;
//!     batches.deleted(n);
//! }
//! let pruned = batches.finish();
//! ```

use std::time::{Duration, Instant};

use super::{Class, Gate, Group, Plan, Pruned};

/// The statement to send next.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'p> {
    /// The group's index in the plan (a store may cache per group).
    pub index: usize,
    pub group: &'p Group,
    pub class: Class,
    /// Rows per statement (`LIMIT`).
    pub limit: i64,
}

/// A pass in progress (see the module doc).
pub struct Batches<'p, 'g> {
    plan: &'p Plan,
    gate: &'p Gate<'g>,
    /// Where the next statement is: group, then class (an index into [`Class::ALL`]).
    group: usize,
    class: usize,
    /// When the statement named by `next` was handed out.
    sent: Option<Instant>,
    last: Option<Duration>,
    pruned: Pruned,
}

impl<'p, 'g> Batches<'p, 'g> {
    pub fn new(plan: &'p Plan, gate: &'p Gate<'g>) -> Self {
        Batches {
            plan,
            gate,
            group: 0,
            class: 0,
            sent: None,
            last: None,
            pruned: Pruned::default(),
        }
    }

    /// Waits at the gate, then names the next statement; `None` once the
    /// pass is done, or bounded (its row bound reached, or stopped).
    pub async fn next(&mut self) -> Option<Batch<'p>> {
        let group = self.plan.groups.get(self.group)?;
        if self.pruned.total() >= self.plan.limits.max_rows || !self.gate.ready(self.last).await {
            self.pruned.bounded = true;
            self.group = self.plan.groups.len();
            return None;
        }
        self.sent = Some(Instant::now());
        Some(Batch {
            index: self.group,
            group,
            class: Class::ALL[self.class],
            limit: i64::from(self.plan.limits.batch),
        })
    }

    /// Records what the statement `next` named deleted: `n` under the
    /// batch size moves on to the next class (then group).
    pub fn deleted(&mut self, n: u64) {
        self.last = self.sent.take().map(|at| at.elapsed());
        self.pruned.statements += 1;
        self.pruned.add(Class::ALL[self.class], n);
        if n < u64::from(self.plan.limits.batch) {
            self.class += 1;
            if self.class == Class::ALL.len() {
                self.class = 0;
                self.group += 1;
            }
        }
    }

    /// What the pass deleted, and whether it stopped at its bound.
    pub fn finish(self) -> Pruned {
        self.pruned
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::retention::{PassLimits, plan};

    fn two_groups(batch: u32, max_rows: u64) -> Plan {
        let special = crate::definition::RetentionSpec {
            succeeded: crate::duration::Dur::from_secs(3600),
            ..Default::default()
        };
        plan(
            [(uuid::Uuid::from_u128(1), "hourly".to_string(), special)],
            Timestamp::UNIX_EPOCH,
            PassLimits {
                batch,
                max_rows,
                pause: Duration::ZERO,
            },
        )
    }

    /// Drives a pass whose statements delete what `rows` says, in order,
    /// and returns the (group, class) of each statement sent.
    async fn drive(plan: &Plan, stop: &CancellationToken, rows: &[u64]) -> (Vec<(usize, Class)>, Pruned) {
        let gate = Gate::new(stop, Duration::ZERO);
        let mut batches = Batches::new(plan, &gate);
        let mut sent = Vec::new();
        let mut rows = rows.iter();
        while let Some(b) = batches.next().await {
            assert_eq!(b.limit, i64::from(plan.limits.batch));
            sent.push((b.index, b.class));
            batches.deleted(*rows.next().expect("a statement the test did not expect"));
        }
        (sent, batches.finish())
    }

    #[tokio::test]
    async fn full_batches_repeat_a_class_and_a_short_one_moves_on() {
        let plan = two_groups(10, 1000);
        let stop = CancellationToken::new();
        let (sent, pruned) = drive(&plan, &stop, &[10, 10, 3, 0, 7, 10, 2]).await;
        use Class::{Failed, Succeeded};
        assert_eq!(
            sent,
            [
                (0, Succeeded),
                (0, Succeeded),
                (0, Succeeded),
                (0, Failed),
                (1, Succeeded),
                (1, Failed),
                (1, Failed)
            ]
        );
        assert_eq!((pruned.succeeded, pruned.failed, pruned.statements), (30, 12, 7));
        assert!(!pruned.bounded);
    }

    #[tokio::test]
    async fn the_row_bound_stops_the_pass_after_the_batch_that_crosses_it() {
        let plan = two_groups(10, 25);
        let stop = CancellationToken::new();
        let (sent, pruned) = drive(&plan, &stop, &[10, 10, 10]).await;
        assert_eq!(sent.len(), 3);
        assert_eq!((pruned.total(), pruned.statements), (30, 3));
        assert!(pruned.bounded);
    }

    #[tokio::test]
    async fn a_stopped_pass_sends_nothing_and_says_it_was_bounded() {
        let plan = two_groups(10, 1000);
        let stop = CancellationToken::new();
        stop.cancel();
        let (sent, pruned) = drive(&plan, &stop, &[]).await;
        assert!(sent.is_empty());
        assert!(pruned.bounded && pruned.statements == 0);
    }
}
