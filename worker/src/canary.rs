//! The canary check (`[canary]` in a definition): after a run, confirm on the
//! remote's own event list that the run reached it, as the runbook's manual
//! canary asks ("a progress event newer than the run, from its source").
//!
//! `trigger --wait` uses it to prove a canary end to end; the fallback uses
//! it to skip a slot the cluster already swept when its database is out of
//! reach. [`find`] is pure (tests feed it the fixture); [`fetch`] does the GET.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::Value;

use crate::definition::CanarySpec;
use crate::run::Source;

/// How much the remote's clock may lag the database's: an event this much
/// older than the run's start still counts.
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(5);
/// The check's own deadline: a canary is a quick read.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// What the check found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// An event from `source` at or after `since - CLOCK_SKEW` was found.
    pub found: bool,
    /// The matching event's time, when found.
    pub event_at: Option<Timestamp>,
    /// How many events the answer listed, and how many of those came from `source`.
    pub events: usize,
    pub from_source: usize,
    /// The newest event of any source, for the operator's message.
    pub newest: Option<Timestamp>,
}

/// Looks for an event from `source` no older than `since` (less the skew).
/// Errors name what in the answer did not fit the pointers.
pub fn find(body: &Value, spec: &CanarySpec, source: Source, since: Timestamp) -> Result<Verdict, String> {
    let events = body
        .pointer(&spec.events_pointer)
        .and_then(Value::as_array)
        .ok_or_else(|| {
            format!(
                "the answer has no array of events at `{}` (canary.events_pointer)",
                spec.events_pointer
            )
        })?;
    let oldest = since.checked_sub(CLOCK_SKEW).unwrap_or(since);
    let mut verdict = Verdict {
        found: false,
        event_at: None,
        events: events.len(),
        from_source: 0,
        newest: None,
    };
    for event in events {
        let at = event
            .pointer(&spec.time_pointer)
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<Timestamp>().ok());
        if let Some(at) = at {
            verdict.newest = verdict.newest.max(Some(at));
        }
        if event.pointer(&spec.source_pointer).and_then(Value::as_str) != Some(source.as_str()) {
            continue;
        }
        verdict.from_source += 1;
        if let Some(at) = at.filter(|at| *at >= oldest)
            && verdict.event_at.is_none_or(|seen| at > seen)
        {
            verdict.found = true;
            verdict.event_at = Some(at);
        }
    }
    Ok(verdict)
}

/// GETs the rendered `verify` URL and applies [`find`]. The error is one
/// line for the operator: the URL, and what went wrong.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    spec: &CanarySpec,
    source: Source,
    since: Timestamp,
) -> Result<Verdict, String> {
    let answer = client
        .get(url)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("canary check GET {url}: {e}"))?;
    let status = answer.status();
    if !status.is_success() {
        return Err(format!("canary check GET {url}: HTTP {status}"));
    }
    let body: Value = answer
        .json()
        .await
        .map_err(|e| format!("canary check GET {url}: the answer is not JSON: {e}"))?;
    find(&body, spec, source, since).map_err(|e| format!("canary check GET {url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CanarySpec {
        CanarySpec {
            verify: "http://hub/progress".into(),
            events_pointer: String::new(),
            source_pointer: "/detail/source".into(),
            time_pointer: "/created_at".into(),
        }
    }

    fn fixture() -> Value {
        serde_json::from_str(include_str!("../../tests/fixtures/state-hub/progress-recent.json")).unwrap()
    }

    #[test]
    fn finds_the_event_of_the_runs_source_after_its_start() {
        let v = find(
            &fixture(),
            &spec(),
            Source::ActivityCore,
            "2026-11-30T15:45:00Z".parse().unwrap(),
        )
        .unwrap();
        assert!(v.found);
        assert_eq!(v.event_at, Some("2026-11-30T15:45:14.912Z".parse().unwrap()));
        assert_eq!((v.events, v.from_source), (2, 1));
    }

    #[test]
    fn an_older_event_or_another_source_is_not_enough() {
        // The manual event is at 15:30:12; a manual run started at 15:40 has none after it.
        let v = find(
            &fixture(),
            &spec(),
            Source::Manual,
            "2026-11-30T15:40:00Z".parse().unwrap(),
        )
        .unwrap();
        assert!(!v.found);
        assert_eq!(v.from_source, 1);
        assert_eq!(v.newest, Some("2026-11-30T15:45:14.912Z".parse().unwrap()));
        let v = find(
            &fixture(),
            &spec(),
            Source::LocalFallback,
            "2026-11-30T15:00:00Z".parse().unwrap(),
        )
        .unwrap();
        assert!(!v.found);
    }

    #[test]
    fn a_few_seconds_of_clock_skew_are_allowed() {
        // The remote's clock lags: its event reads 15:45:14.9, the run started at 15:45:18.
        let v = find(
            &fixture(),
            &spec(),
            Source::ActivityCore,
            "2026-11-30T15:45:18Z".parse().unwrap(),
        )
        .unwrap();
        assert!(v.found);
        let v = find(
            &fixture(),
            &spec(),
            Source::ActivityCore,
            "2026-11-30T15:45:21Z".parse().unwrap(),
        )
        .unwrap();
        assert!(!v.found);
    }

    #[test]
    fn an_answer_without_the_array_names_the_pointer() {
        let mut s = spec();
        s.events_pointer = "/items".into();
        let e = find(&fixture(), &s, Source::ActivityCore, Timestamp::UNIX_EPOCH).unwrap_err();
        assert!(e.contains("/items") && e.contains("canary.events_pointer"), "{e}");
    }
}
