//! The recommended action: what an on-call operator should do about an
//! activity, in plain words naming the command. Pure: the first rule that
//! matches wins, most urgent first (docs/operations.md lists the table).

use serde::Serialize;

use super::ActivityStatus;

/// How urgent the recommendation is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Nothing to do.
    #[default]
    Ok,
    /// Worth knowing; no action needed now.
    Info,
    /// Needs a look soon.
    Warning,
    /// The activity is not doing its job: act now.
    Critical,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What to do, in words, and how urgent it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Recommendation {
    pub action: String,
    pub severity: Severity,
}

fn rec(severity: Severity, action: String) -> Recommendation {
    Recommendation { action, severity }
}

fn times(n: u32) -> String {
    match n {
        1 => "once".into(),
        2 => "twice".into(),
        n => format!("{n} times running"),
    }
}

/// The cause of an automation error streak and the fix, by error code.
fn cause_and_fix(code: Option<&str>, slug: &str) -> (&'static str, String, bool) {
    // (what happened, what to check, whether a retry can help)
    match code {
        Some("transport" | "timeout" | "http_5xx") => (
            "bridge unreachable",
            "check the ops-bridge tunnel (State Hub is reached through it) and State Hub's health".into(),
            true,
        ),
        Some("remote") => (
            "State Hub reported its own automation error (C-00)",
            "look at State Hub's sweep logs for the C-00 cause".into(),
            true,
        ),
        Some(c @ ("http_4xx" | "config" | "bad_response")) => (
            match c {
                "http_4xx" => "State Hub refused the request (4xx)",
                "config" => "the action could not be built (an unset ${VAR} or a bad URL)",
                _ => "State Hub's answer was not the JSON the definition expects",
            },
            format!(
                "fix the definition or the environment (`actcore definitions check --env`, then `actcore sync`); \
                 no retry will help until then; confirm with `actcore trigger {slug} --wait`"
            ),
            false,
        ),
        Some("worker_lost" | "shutdown" | "internal") => (
            "the worker running it was lost",
            "check the worker pods' restarts and logs (`kubectl get pods`)".into(),
            true,
        ),
        Some("preflight") => (
            "the preflight check failed",
            "check what the definition's preflight checks".into(),
            true,
        ),
        Some("expired") => (
            "a queued run expired before any worker started it",
            "check that workers are running (`kubectl get pods`)".into(),
            true,
        ),
        _ => (
            "automation errors",
            format!("read the last run's error (`actcore runs --slug {slug} --limit 5`)"),
            true,
        ),
    }
}

/// Pure: the recommendation for one activity's status.
pub fn recommend(s: &ActivityStatus) -> Recommendation {
    let slug = s.slug.as_str();
    let fmt_t = |t: Option<jiff::Timestamp>| t.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
    match s.state.as_str() {
        "retired" => {
            return rec(
                Severity::Ok,
                "retired: its file was removed from definitions/; nothing to do".into(),
            );
        }
        "disabled" => {
            return rec(
                Severity::Info,
                "disabled in its definition file (enabled = false): set enabled = true and `actcore sync` to fire it"
                    .into(),
            );
        }
        _ => {}
    }
    if s.paused {
        return rec(
            Severity::Warning,
            format!("paused by an operator: no instant fires; when the reason is resolved, `actcore resume {slug}`"),
        );
    }
    let errors = s.consecutive_automation_errors;
    let (cause, fix, retry_helps) = cause_and_fix(s.last_error_code.as_deref(), slug);
    match s.circuit.state.as_str() {
        "open" if s.circuit.held_by_operator => {
            return rec(
                Severity::Warning,
                format!(
                    "circuit held open by {} since {} ({}): no instant runs until `actcore circuit reset {slug}`",
                    s.circuit.actor.as_deref().unwrap_or("an operator"),
                    fmt_t(s.circuit.since),
                    s.circuit.reason.as_deref().unwrap_or("no reason given"),
                ),
            );
        }
        "open" => {
            return rec(
                Severity::Critical,
                format!(
                    "{cause} {}; circuit open since {} (a probe at {}): {fix}, then `actcore circuit reset {slug}`",
                    times(errors.max(1)),
                    fmt_t(s.circuit.since),
                    fmt_t(s.circuit.half_open_at),
                ),
            );
        }
        "half_open" => {
            return rec(
                Severity::Warning,
                format!(
                    "circuit half-open after {cause}: the next instant is one probe (success closes it, failure reopens it); \
                     to probe now, `actcore trigger {slug} --wait --force`"
                ),
            );
        }
        _ => {}
    }
    if s.budget_exhausted() {
        return rec(
            Severity::Warning,
            format!(
                "churn budget used ({} of {} automated attempts; attempts are recorded blocked_budget until {}): \
                 find why it keeps retrying (`actcore runs --slug {slug}`)",
                s.attempts_in_window,
                s.max_automated_attempts,
                fmt_t(s.window_ends_at)
            ),
        );
    }
    if errors > 0 {
        let severity = if errors >= 3 || !retry_helps {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let then = if retry_helps {
            format!(", then `actcore trigger {slug} --wait` to confirm")
        } else {
            String::new()
        };
        return rec(severity, format!("{cause} {}: {fix}{then}", times(errors)));
    }
    if s.cooldown_until.is_some() {
        return rec(
            Severity::Info,
            format!(
                "cooling down after an automated attempt until {}: the next automated attempt waits",
                fmt_t(s.cooldown_until)
            ),
        );
    }
    if s.consecutive_lock_skips >= 3 {
        return rec(
            Severity::Warning,
            format!(
                "State Hub skipped the sweep {} because another sweep held its lock: look for a stuck sweep in State Hub",
                times(s.consecutive_lock_skips)
            ),
        );
    }
    let Some(last) = &s.last_run else {
        return rec(
            Severity::Info,
            format!(
                "never run yet: the first instant is {}; to try it now, `actcore trigger {slug} --wait`",
                fmt_t(s.next_instant)
            ),
        );
    };
    match last.outcome.as_deref() {
        Some("assessment_failures") => rec(
            Severity::Info,
            format!(
                "the sweep ran and found {} assessment failure{}: follow up the repositories listed in the run's snapshot; \
                 nothing is wrong with the automation",
                last.assessment_failures,
                if last.assessment_failures == 1 { "" } else { "s" }
            ),
        ),
        Some("skipped_misfire") => rec(
            Severity::Info,
            "the last instant was missed (no worker could fire it within its grace): check that workers are running"
                .into(),
        ),
        Some("skipped_overlap") => rec(
            Severity::Info,
            "the last instant was skipped because the previous run was still running: consider a longer interval"
                .into(),
        ),
        _ => rec(Severity::Ok, "healthy: nothing to do".into()),
    }
}
