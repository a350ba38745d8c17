//! What `fallback run` is asked (`RunOptions`) and what it says it did
//! (`RunReport`, printed by the CLI; `--json` prints it whole).

use std::path::PathBuf;

use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

use crate::run::{ErrorCode, Outcome};

/// What `fallback run` was asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub slug: String,
    pub definitions: PathBuf,
    /// The cluster's database; None (unset) counts as out of reach.
    pub database_url: Option<String>,
    pub journal: PathBuf,
    /// Run even when the cluster looks healthy or the canary saw its sweep (audited).
    pub force: bool,
    pub actor: String,
    pub reason: Option<String>,
}

/// What one call decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The action was executed and its run recorded.
    Ran,
    /// Another `fallback run` of this activity holds the lock: nothing done.
    SkippedLocked,
    /// Called later than the misfire grace after its slot: nothing done.
    SkippedMisfire,
    /// The cluster's database shows a run in flight or a recent healthy one.
    ClusterHealthy,
    /// The slot's first attempt is held by a run in flight or a healthy one (the fence).
    SlotTaken,
    /// The database is out of reach, and State Hub's progress events show the cluster's sweep of this slot.
    CanarySeen,
    /// An operator paused the activity in the cluster.
    Paused,
}

/// The report of one call (`--json` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub slug: String,
    pub decision: Decision,
    /// The instant this call stands for.
    pub slot: Option<Timestamp>,
    /// `cluster` (the database) or `journal`, when a run was recorded.
    pub recorded_in: Option<&'static str>,
    pub journal: Option<PathBuf>,
    pub run_id: Option<Uuid>,
    pub attempt: Option<i32>,
    pub retry_of: Option<Uuid>,
    pub outcome: Option<Outcome>,
    pub error_code: Option<ErrorCode>,
    pub error_message: Option<String>,
    /// The run (or event) that made this call stand down.
    pub because_of: Option<Uuid>,
    /// One line for the operator.
    pub message: String,
}

impl RunReport {
    pub(super) fn new(slug: &str, decision: Decision, slot: Option<Timestamp>, message: String) -> RunReport {
        RunReport {
            slug: slug.to_string(),
            decision,
            slot,
            recorded_in: None,
            journal: None,
            run_id: None,
            attempt: None,
            retry_of: None,
            outcome: None,
            error_code: None,
            error_message: None,
            because_of: None,
            message,
        }
    }
}
