//! actcore: a scheduled activity worker.
//!
//! Activity definitions (`definitions/*.toml`) are synced into a store;
//! every worker replica fires their cron schedules exactly once per instant
//! (the store's unique index is the fence), executes the HTTP action, and
//! records one `activity_runs` row per firing.
//!
//! The module map, pure parts first:
//! - [`duration`], [`template`], [`run`]: small vocabularies.
//! - [`definition`]: the file format, validation, canonical spec and hash.
//! - [`schedule`]: pure schedule maths (next instants, DST, jitter, misfires).
//! - [`misfire`]: pure: fire, skip or catch up an instant that came due late.
//! - [`classify`]: pure: an HTTP exchange → an outcome (docs/reference/classification.md).
//! - [`sync`]: files → store, as a diff by identity.
//! - [`action`]: executing the HTTP call; [`snapshot`]: the shape of `context_snapshot`.
//! - [`store`]: the narrow store interface; Postgres and SQLite.
//! - [`worker`]: the loop: reconcile, claim, execute, record, leases, shutdown.
//! - [`retention`]: which finished runs are past their `[retention]` (pure), and the pruning task.
//! - [`status`]: per-activity status and the recommended action; [`ops`]: the
//!   operator's audited overrides; [`api`]: the admin API, metrics and status page.
//! - [`fallback`]: the emergency local fallback (one shot per timer tick, journal, import, systemd units).
//! - [`contract`]: the runtime contract (k8s/contract.toml) and its drift checks.
//! - [`cli`]: the commands and their output; [`telemetry`]: logs.

pub mod action;
pub mod api;
pub mod audit;
pub mod canary;
pub mod classify;
pub mod cli;
pub mod contract;
pub mod definition;
pub mod demo;
pub mod duration;
pub mod error;
pub mod fallback;
pub mod guard;
pub mod misfire;
pub mod ops;
pub mod retention;
pub mod run;
pub mod schedule;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod template;
pub mod trigger;
pub mod worker;

pub use error::{Error, Result};
