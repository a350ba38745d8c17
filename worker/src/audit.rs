//! The audit trail: every self-healing decision (retry scheduled or dropped,
//! circuit transitions, blocked attempts) and every operator override
//! (trigger, force, pause, resume, circuit open/reset) is one
//! `activity_events` row and one log line carrying the same fields, so the
//! SQL and the logs tell the same story.
//!
//! Built in one place: [`Audit`] is the shape, [`Audit::event`] the row,
//! [`Audit::log`] the line.

use jiff::Timestamp;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::Result;
use crate::store::{NewEvent, RunStore};

/// One audited decision or override.
#[derive(Clone, Debug, PartialEq)]
pub struct Audit {
    /// The event kind, e.g. `retry_scheduled`, `circuit_opened`, `manual_trigger`.
    pub kind: &'static str,
    pub definition_id: Uuid,
    pub slug: String,
    pub run_id: Option<Uuid>,
    /// Who decided: an operator (`--actor`, a token's name) or `None` for actcore itself.
    pub actor: Option<String>,
    /// Why, in words: the operator's `--reason`, or the rule that decided.
    pub reason: Option<String>,
    /// Further fields of this kind (attempt numbers, times, counts).
    pub detail: Map<String, Value>,
}

impl Audit {
    pub fn new(kind: &'static str, definition_id: Uuid, slug: &str) -> Audit {
        Audit {
            kind,
            definition_id,
            slug: slug.to_string(),
            run_id: None,
            actor: None,
            reason: None,
            detail: Map::new(),
        }
    }

    pub fn run(mut self, run_id: Uuid) -> Audit {
        self.run_id = Some(run_id);
        self
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Audit {
        self.actor = Some(actor.into());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Audit {
        self.reason = Some(reason.into());
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Audit {
        self.detail.insert(key.to_string(), value.into());
        self
    }

    /// The `activity_events` row: `detail` holds the slug, actor and reason
    /// next to the kind's own fields.
    pub fn event(&self, at: Timestamp) -> NewEvent {
        let mut detail = self.detail.clone();
        detail.insert("slug".into(), self.slug.clone().into());
        if let Some(a) = &self.actor {
            detail.insert("actor".into(), a.clone().into());
        }
        if let Some(r) = &self.reason {
            detail.insert("reason".into(), r.clone().into());
        }
        NewEvent {
            at,
            definition_id: Some(self.definition_id),
            run_id: self.run_id,
            kind: self.kind.to_string(),
            detail: Value::Object(detail),
        }
    }

    /// The log line, with the row's fields.
    pub fn log(&self) {
        let detail = Value::Object(self.detail.clone());
        tracing::info!(
            event = self.kind,
            activity = %self.slug,
            definition_id = %self.definition_id,
            run_id = ?self.run_id,
            actor = self.actor.as_deref().unwrap_or("actcore"),
            reason = self.reason.as_deref().unwrap_or(""),
            %detail,
            "audit"
        );
    }
}

/// Logs each decision and writes their rows in one call.
pub async fn record<S: RunStore>(store: &S, at: Timestamp, audits: &[Audit]) -> Result<()> {
    if audits.is_empty() {
        return Ok(());
    }
    for a in audits {
        a.log();
    }
    let events: Vec<NewEvent> = audits.iter().map(|a| a.event(at)).collect();
    store.record_events(&events).await
}

/// The default `--actor`: the operating-system user running the command.
pub fn os_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown-user".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_carries_slug_actor_reason_and_the_kinds_fields() {
        let id = Uuid::from_u128(7);
        let run = Uuid::from_u128(8);
        let a = Audit::new("circuit_opened", id, "sweep")
            .run(run)
            .actor("alice")
            .reason("bridge down")
            .with("consecutive_errors", 4);
        let e = a.event(Timestamp::UNIX_EPOCH);
        assert_eq!(
            (e.kind.as_str(), e.definition_id, e.run_id),
            ("circuit_opened", Some(id), Some(run))
        );
        assert_eq!(
            e.detail,
            serde_json::json!({"slug": "sweep", "actor": "alice", "reason": "bridge down", "consecutive_errors": 4})
        );
        let plain = Audit::new("retry_dropped", id, "sweep").event(Timestamp::UNIX_EPOCH);
        assert_eq!(plain.detail, serde_json::json!({"slug": "sweep"}));
    }
}
