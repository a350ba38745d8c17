//! The vocabulary of an `activity_runs` row (docs/reference/tables.md): why a run
//! exists, who started it, where it is, and how it ended. The strings are
//! public: operators filter on them in SQL.

use serde::{Deserialize, Serialize};

macro_rules! sql_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// The text stored in the database and printed.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Every variant, for `--help` and validation.
            pub const ALL: &'static [$name] = &[$(Self::$variant),+];
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(
                        "unknown {} `{other}` (expected one of: {})",
                        stringify!($name).to_lowercase(),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

sql_enum! {
    /// Why a run exists.
    Trigger {
        Schedule => "schedule",
        Manual => "manual",
        Retry => "retry",
        Fallback => "fallback",
    }
}

sql_enum! {
    /// Who fired it: the cluster worker, an operator, or the local fallback.
    Source {
        ActivityCore => "activity-core",
        Manual => "manual",
        LocalFallback => "local-fallback",
    }
}

sql_enum! {
    /// Where a run is in its life.
    State {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Skipped => "skipped",
        Abandoned => "abandoned",
    }
}

sql_enum! {
    /// How a run ended (docs/reference/classification.md). Only `automation_error` fails a run.
    Outcome {
        Ok => "ok",
        AssessmentFailures => "assessment_failures",
        LockSkipped => "lock_skipped",
        AutomationError => "automation_error",
        SkippedMisfire => "skipped_misfire",
        SkippedOverlap => "skipped_overlap",
        SkippedPaused => "skipped_paused",
        BlockedCircuitOpen => "blocked_circuit_open",
        BlockedBudget => "blocked_budget",
    }
}

sql_enum! {
    /// The kind of automation error, in `activity_runs.error_code`.
    ErrorCode {
        /// No response: connect, DNS, TLS.
        Transport => "transport",
        /// No response within the definition's timeout.
        Timeout => "timeout",
        Http5xx => "http_5xx",
        Http4xx => "http_4xx",
        /// 2xx, but not JSON or over the size limit.
        BadResponse => "bad_response",
        /// The remote reported its own automation error (State Hub's C-00).
        Remote => "remote",
        NonzeroExit => "nonzero_exit",
        /// The action could not be built: an unset `${VAR}`, a bad URL.
        Config => "config",
        /// The worker running it disappeared (its lease expired).
        WorkerLost => "worker_lost",
        /// The worker stopped before the run finished, past its grace.
        Shutdown => "shutdown",
        /// The preflight check failed.
        Preflight => "preflight",
        /// The worker itself failed while running it (a bug: a panicked run task).
        Internal => "internal",
        /// A queued run (manual trigger, retry, buffered instant) that no worker
        /// started before its deadline; it never runs later.
        Expired => "expired",
    }
}

impl Outcome {
    /// The terminal state a run with this outcome ends in.
    pub const fn state(self) -> State {
        match self {
            Outcome::Ok | Outcome::AssessmentFailures | Outcome::LockSkipped => State::Succeeded,
            Outcome::AutomationError => State::Failed,
            Outcome::SkippedMisfire
            | Outcome::SkippedOverlap
            | Outcome::SkippedPaused
            | Outcome::BlockedCircuitOpen
            | Outcome::BlockedBudget => State::Skipped,
        }
    }
}

impl ErrorCode {
    /// Whether the retry policy applies (docs/reference/classification.md, "retryable").
    pub const fn retryable(self) -> bool {
        match self {
            ErrorCode::Transport
            | ErrorCode::Timeout
            | ErrorCode::Http5xx
            | ErrorCode::Remote
            | ErrorCode::NonzeroExit
            | ErrorCode::WorkerLost
            | ErrorCode::Preflight => true,
            ErrorCode::Http4xx
            | ErrorCode::BadResponse
            | ErrorCode::Config
            | ErrorCode::Shutdown
            | ErrorCode::Internal
            | ErrorCode::Expired => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(o.as_str().parse::<Outcome>().unwrap(), *o);
        }
        for c in ErrorCode::ALL {
            assert_eq!(c.as_str().parse::<ErrorCode>().unwrap(), *c);
        }
        assert_eq!(Source::ActivityCore.as_str(), "activity-core");
        assert!("bogus".parse::<State>().unwrap_err().contains("queued"));
    }
}
