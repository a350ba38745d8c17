//! The manual canary: `actcore trigger SLUG` and `POST
//! /v1/activities/{slug}/trigger` queue a `manual` run that a worker claims
//! from the durable queue (or, with `--local`, this process executes), and
//! `--wait` follows it to its end and, with a `[canary]`, confirms on the
//! remote that it arrived. Both surfaces call [`enqueue`]: one refusal
//! rule, one audit row.
//!
//! - [`local`]: executing a queued run in this process.
//! - [`wait`]: following a run to its end; the report and its exit code.

pub mod local;
pub mod wait;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use uuid::Uuid;

use crate::audit::Audit;
use crate::error::{Error, Result};
use crate::guard::{CLOSED, OPEN};
use crate::run::{Source, Trigger};
use crate::store::{GuardRow, GuardStore, Queued, RunStore, StoredDefinition};

/// How long a queued manual run waits for a worker by default.
pub const DEFAULT_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);

/// What the operator asked for.
#[derive(Clone, Debug)]
pub struct Request {
    pub actor: String,
    pub reason: Option<String>,
    /// Bypass an open circuit, a spent budget or a pause, once (audited).
    pub force: bool,
    /// Expire the queued run if no worker claims it within this.
    pub timeout: SignedDuration,
}

/// The run that was queued.
#[derive(Clone, Debug, Serialize)]
pub struct Enqueued {
    pub run_id: Uuid,
    pub slug: String,
    pub definition_id: Uuid,
    pub actor: String,
    pub forced: bool,
    /// What `--force` bypassed (None when nothing stood in the way).
    pub bypassed: Option<String>,
    pub expires_at: Timestamp,
}

/// The queued row of a manual run: source `manual`, no instant, expiring
/// after `timeout`.
pub fn manual_run(definition_id: Uuid, actor: &str, now: Timestamp, timeout: SignedDuration) -> Queued {
    let mut q = Queued::new(
        definition_id,
        Trigger::Manual,
        Source::Manual,
        1,
        None,
        (now, Some(now + timeout)),
        serde_json::json!({"trigger": "manual", "lateness_ms": 0}),
    );
    q.run.actor = Some(actor.to_string());
    q
}

/// Why a manual run must not go ahead without `--force`: the activity is
/// paused, or its circuit is open (held by an operator or tripped).
pub fn refusal(def: &StoredDefinition, guard: Option<&GuardRow>, now: Timestamp) -> Option<String> {
    let slug = &def.definition.slug;
    if def.paused {
        return Some(format!(
            "{slug} is paused by an operator; `actcore resume {slug}` first, or pass --force to run it once anyway"
        ));
    }
    let g = guard.filter(|g| g.circuit != CLOSED)?;
    let since = g.circuit_since.map(|t| format!(" since {t}")).unwrap_or_default();
    let why = match (g.circuit.as_str(), g.half_open_at, &g.circuit_actor) {
        (OPEN, None, actor) => format!(
            "held open by {}{}",
            actor.as_deref().unwrap_or("an operator"),
            g.circuit_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        (OPEN, Some(at), _) if at > now => format!(
            "open after {} automation errors in a row; it half-opens at {at}",
            g.consecutive_errors
        ),
        _ => "half-open: its probe is due or running".to_string(),
    };
    Some(format!(
        "{slug}'s circuit is {why}{since}; fix the cause (`actcore status {slug}` says what to check), \
         then `actcore circuit reset {slug}`, or pass --force to run it once anyway"
    ))
}

/// Queues a manual run of `def` (refused when [`refusal`] says so, unless
/// forced) and writes its audit row (`manual_trigger`, with actor, reason
/// and what `--force` bypassed) in the same transaction.
pub async fn enqueue<S: RunStore + GuardStore>(
    store: &S,
    def: &StoredDefinition,
    req: &Request,
    now: Timestamp,
) -> Result<Enqueued> {
    let d = &def.definition;
    if !def.enabled {
        return Err(Error::Config(format!(
            "{} is disabled in its definition file (enabled = false); enable it and `actcore sync`",
            d.slug
        )));
    }
    let guard = store.guards(&[d.id]).await?;
    let stop = refusal(def, guard.first(), now);
    if let Some(why) = &stop
        && !req.force
    {
        return Err(Error::Automation(format!("trigger refused: {why}")));
    }
    let q = manual_run(d.id, &req.actor, now, req.timeout);
    let mut audit = Audit::new("manual_trigger", d.id, &d.slug)
        .run(q.run.run_id)
        .actor(req.actor.clone())
        .with("forced", req.force)
        .with("expires_at", q.expires_at.map(|t| t.to_string()));
    if let Some(r) = &req.reason {
        audit = audit.reason(r.clone());
    }
    if let Some(why) = &stop {
        audit = audit.with("bypassed", why.clone());
    }
    store.enqueue(&q, &[audit.event(now)]).await?;
    audit.log();
    Ok(Enqueued {
        run_id: q.run.run_id,
        slug: d.slug.clone(),
        definition_id: d.id,
        actor: req.actor.clone(),
        forced: req.force && stop.is_some(),
        bypassed: stop,
        expires_at: q.expires_at.unwrap_or(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::State;

    fn stored(paused: bool) -> StoredDefinition {
        StoredDefinition {
            definition: crate::definition::sample(Uuid::from_u128(1), "sweep", "*/15 * * * *", "http://127.0.0.1:9/x"),
            spec_hash: "h".into(),
            enabled: true,
            paused,
            retired_at: None,
            updated_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_paused_activity_or_an_open_circuit_refuses_and_says_how_to_proceed() {
        let now: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
        let why = refusal(&stored(true), None, now).unwrap();
        assert!(why.contains("actcore resume sweep") && why.contains("--force"), "{why}");
        let mut g = GuardRow {
            circuit: OPEN.into(),
            consecutive_errors: 4,
            half_open_at: Some(now + SignedDuration::from_mins(10)),
            ..GuardRow::default()
        };
        let why = refusal(&stored(false), Some(&g), now).unwrap();
        assert!(
            why.contains("4 automation errors") && why.contains("circuit reset sweep"),
            "{why}"
        );
        g.half_open_at = None;
        g.circuit_actor = Some("alice".into());
        assert!(
            refusal(&stored(false), Some(&g), now)
                .unwrap()
                .contains("held open by alice")
        );
        g.circuit = CLOSED.into();
        assert_eq!(refusal(&stored(false), Some(&g), now), None);
    }

    #[test]
    fn a_manual_run_is_queued_with_its_source_actor_and_deadline() {
        let now: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
        let q = manual_run(Uuid::from_u128(1), "alice", now, DEFAULT_TIMEOUT);
        assert_eq!(
            (q.run.trigger, q.run.source, q.run.state),
            (Trigger::Manual, Source::Manual, State::Queued)
        );
        assert_eq!(q.run.actor.as_deref(), Some("alice"));
        assert_eq!(q.expires_at, Some(now + SignedDuration::from_mins(2)));
        assert_eq!(q.run.scheduled_for, None);
    }
}
