//! History retention: `activity_runs` grows by one row per fire, so the
//! worker deletes finished runs once they are older than their
//! activity's `[retention]` (docs/design.md, "History retention").
//!
//! - [`policy`]: pure: which class a row is, the cutoffs of a pass given
//!   `now`, the groups of activities sharing a retention, the audit row.
//! - [`pruner`]: the worker's background task: a bounded pass every 10
//!   minutes (under a Postgres advisory lock, so one replica prunes at a
//!   time), audited as one `runs_pruned` event per pass that deleted rows.
//! - [`gate`]: between two batches, the pause and the wait for a quiet
//!   moment of the worker's firing (firing goes first).
//! - [`batches`]: the order of a pass's statements and their bookkeeping
//!   (rows per class, the bound, each statement through the gate), shared
//!   by both stores.
//!
//! The statements are the stores' (`store/postgres/retention.rs`,
//! `store/sqlite/retention.rs`); `activity_events` is never pruned by the
//! worker (its role may not delete from it).

pub mod batches;
pub mod gate;
pub mod policy;
pub mod pruner;

pub use self::batches::Batches;
pub use self::gate::{Firing, Gate};
pub use self::policy::{Class, Cutoffs, Group, PassLimits, PassOutcome, Plan, Pruned, Scope, plan};
