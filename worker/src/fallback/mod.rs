//! The emergency local fallback: `actcore fallback run|status|import|units`.
//!
//! When the cluster's schedule is broken, an operator enables a systemd
//! timer on a workstation (runbooks/fallback.md). Each tick runs one
//! [`run::run`], which must never double-fire with the cluster and never
//! lose a record:
//! - a lock file per activity makes concurrent calls on one machine a no-op;
//! - the call stands for the latest instant not after it ([`slot`]); past
//!   the misfire grace it is skipped, as the cluster would skip it;
//! - with the cluster's database reachable, the *cluster guard* stands down
//!   when a run is in flight or ended healthy within two intervals, and the
//!   run is claimed through the workers' own fence (the unique index on first
//!   attempts of `schedule` and `fallback` runs); after a failed cluster run
//!   of the slot it runs as the next attempt, linked by `retry_of`;
//! - with it out of reach nothing can fence: the definition's canary check
//!   (State Hub's progress events) skips a slot the cluster already swept,
//!   State Hub's own sweep lock is the last guard, and the run is recorded
//!   in the [`journal`] (written before the request: no journal, no request);
//! - [`import`] later copies the journal into Postgres by `run_id`, keeping
//!   an instant both fired as a reported, audited duplicate.
//!
//! [`units`] generates the systemd pair from the definition.

pub mod import;
pub mod journal;
pub mod lock;
mod report;
pub mod run;
pub mod slot;
pub mod units;
