//! The operator's overrides: pause, resume, circuit open, circuit reset.
//! The CLI (`actcore pause` ...) and the admin API (`POST
//! /v1/activities/{slug}/pause` ...) call these same functions, so both
//! write the same state and the same audit row (kind, actor, reason).

use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

use crate::audit::Audit;
use crate::error::{Error, Result};
use crate::store::{CircuitOverride, DefinitionSource, GuardStore, StoredDefinition};

/// An override to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Pause,
    Resume,
    CircuitOpen,
    CircuitReset,
}

impl Op {
    /// The audit kind (`activity_events.kind`).
    pub const fn event_kind(self) -> &'static str {
        match self {
            Op::Pause => "paused",
            Op::Resume => "resumed",
            Op::CircuitOpen => "circuit_opened_by_operator",
            Op::CircuitReset => "circuit_reset",
        }
    }

    /// Whether the operator must say why (pause and circuit open hold an
    /// activity back; the next operator needs to know the reason).
    pub const fn needs_reason(self) -> bool {
        matches!(self, Op::Pause | Op::CircuitOpen)
    }

    /// The command, as an operator types it.
    pub const fn command(self) -> &'static str {
        match self {
            Op::Pause => "pause",
            Op::Resume => "resume",
            Op::CircuitOpen => "circuit open",
            Op::CircuitReset => "circuit reset",
        }
    }

    /// The verb in a message.
    pub const fn done(self) -> &'static str {
        match self {
            Op::Pause => "paused",
            Op::Resume => "resumed",
            Op::CircuitOpen => "circuit held open",
            Op::CircuitReset => "circuit reset (closed, errors and churn window cleared)",
        }
    }
}

/// What an override did, for `--json` and the API.
#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    pub slug: String,
    pub definition_id: Uuid,
    pub op: Op,
    pub event: &'static str,
    pub actor: String,
    pub reason: Option<String>,
    pub at: Timestamp,
}

/// The live (not retired) activity named `slug`; `Error::Usage` naming the
/// known slugs otherwise.
pub async fn find<S: DefinitionSource>(store: &S, slug: &str) -> Result<StoredDefinition> {
    let defs = store.definitions().await?;
    if let Some(d) = defs
        .iter()
        .find(|d| d.retired_at.is_none() && d.definition.slug == slug)
    {
        return Ok(d.clone());
    }
    let mut known: Vec<&str> = defs
        .iter()
        .filter(|d| d.retired_at.is_none())
        .map(|d| d.definition.slug.as_str())
        .collect();
    known.sort_unstable();
    let shown = if known.len() > 20 {
        format!("{} ... ({} in all)", known[..20].join(", "), known.len())
    } else {
        known.join(", ")
    };
    Err(Error::Usage(format!(
        "no activity with slug `{slug}` in the store (run `actcore sync` first?); known: {shown}"
    )))
}

/// Applies `op` to `def`, audited with `actor` and `reason`, in one
/// transaction with its `activity_events` row, and logs the same fields.
pub async fn apply<S: GuardStore>(
    store: &S,
    def: &StoredDefinition,
    op: Op,
    actor: &str,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<Applied> {
    let actor = actor.trim();
    if actor.is_empty() {
        return Err(Error::Usage(
            "the actor is empty: pass --actor NAME (default: the OS user)".into(),
        ));
    }
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if op.needs_reason() && reason.is_none() {
        return Err(Error::Usage(format!(
            "{} needs a reason for the next operator: pass --reason \"...\" (in the API: {{\"reason\": \"...\"}})",
            op.command()
        )));
    }
    let id = def.definition.id;
    let slug = &def.definition.slug;
    let mut audit = Audit::new(op.event_kind(), id, slug).actor(actor);
    if let Some(r) = reason {
        audit = audit.reason(r);
    }
    let event = audit.event(now);
    match op {
        Op::Pause | Op::Resume => {
            if !store.pause_audited(id, op == Op::Pause, &event).await? {
                return Err(Error::Usage(format!("activity `{slug}` is no longer in the store")));
            }
        }
        Op::CircuitOpen => {
            store
                .override_circuit(id, CircuitOverride::Open, actor, reason, &event)
                .await?
        }
        Op::CircuitReset => {
            store
                .override_circuit(id, CircuitOverride::Reset, actor, reason, &event)
                .await?
        }
    }
    audit.log();
    Ok(Applied {
        slug: slug.clone(),
        definition_id: id,
        op,
        event: op.event_kind(),
        actor: actor.to_string(),
        reason: reason.map(str::to_string),
        at: now,
    })
}
