//! The HTTP action: one attempt of an `http` action, reduced to a
//! [`Classification`](crate::classify::Classification) and the
//! request/response facts the snapshot keeps.
//!
//! Work is split so the instant itself stays cheap: [`prepare`] (in
//! `prepare.rs`) resolves `${VAR}`s, renders and serialises the body and
//! checks the URL and headers ahead of time; [`HttpExecutor::execute`] (in
//! `http.rs`) only sends. Every failure becomes a classified outcome:
//! nothing here panics or returns an error to the scheduler.

use std::time::Duration;

mod http;
mod prepare;

pub use http::{ActionReport, HttpExecutor, RunHeaders};
pub(crate) use prepare::redact_url;
pub use prepare::{PreparedRequest, prepare};

/// Default cap on a response body: a sweep result is a few KiB, so 1 MiB
/// only stops a misbehaving peer from filling memory.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// How much of a non-JSON or truncated body the snapshot keeps as text.
pub const SNAPSHOT_TEXT_LIMIT: usize = 4 * 1024;
/// Upper bound of the preflight's timeout: it is a fast-fail probe.
pub const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting is bounded separately from the action's (long) timeout so an
/// unreachable host fails in seconds, not after `action.timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests;
