//! The definition file format (docs/reference/definitions.md): parsing, strict validation, the
//! canonical spec and its hash.
//!
//! A file is read into `raw` structs that refuse unknown keys, then checked
//! field by field into a [`Definition`]. Every problem becomes a
//! [`Problem`] naming the file, the key and the fix; all problems of all
//! files are reported together so one `check` shows everything to mend.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use jiff::Timestamp;

use crate::duration::{Bounds, Dur};
use crate::schedule::{Period, Schedule, shortest_period};
use crate::template;

mod load;
mod raw;
mod validate;

use self::load::*;
pub use self::load::{Loaded, Problem, Problems, load_dir, parse_str};
use self::validate::*;

/// One activity, validated. Its JSON form is the canonical spec stored in
/// `activity_definitions.spec`; workers run from that, not from files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub enabled: bool,
    pub schedule: ScheduleSpec,
    pub action: ActionSpec,
    pub result: ResultSpec,
    pub retry: RetrySpec,
    pub guard: GuardSpec,
    /// What `trigger --wait` (and the fallback, when the store is out of
    /// reach) checks after a run; absent when the file has no `[canary]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,
    /// How long finished runs are kept ([`crate::retention`]); left out of
    /// the canonical spec at the defaults, so files without `[retention]`
    /// keep their spec_hash.
    #[serde(default, skip_serializing_if = "is_default")]
    pub retention: RetentionSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub cron: String,
    pub timezone: String,
    pub misfire: Misfire,
    /// How late an instant may still fire: 60 s by default, from 1 s to 7 days.
    pub misfire_grace: Dur,
    /// Only with `misfire = "fire_once"`: how far back a missed instant may
    /// be caught up; from 1 s to a year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_window: Option<Dur>,
    pub overlap: Overlap,
    /// Deterministic delay per (activity, instant): 0 s by default, at most a
    /// day, and strictly below `misfire_grace` and the schedule's shortest period.
    pub jitter: Dur,
    pub dst: DstPolicy,
}

/// What to do with an instant noticed later than `misfire_grace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Never fire late: record `skipped_misfire` and wait for the next instant.
    Skip,
    /// Fire the latest missed instant once, if within `catchup_window`.
    FireOnce,
}

/// What to do with an instant due while the previous run is still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Record the instant as `skipped_overlap` (the default).
    Skip,
    /// Run it alongside the one still running.
    Allow,
    /// Queue one instant behind the running run. Named in the format but not
    /// built yet: `definitions check` and `sync` refuse it.
    BufferOne,
}

/// DST handling; `vixie` is the only policy (docs/reference/scheduling.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DstPolicy {
    Vixie,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    pub kind: ActionKind,
    pub method: String,
    /// May hold `${VAR}`; resolved from the environment at execution.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// 30 s by default; from 100 ms to a day.
    pub timeout: Dur,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Http,
}

/// JSON pointers into the response body (RFC 6901), used by classification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultSpec {
    pub snapshot_key: String,
    pub automation_error: String,
    pub assessment_failures: String,
    pub lock_skipped: String,
    pub exit_code: String,
}

impl ResultSpec {
    /// The contract's pointers (`/automation_error`, …) under a snapshot key.
    pub fn standard(snapshot_key: &str) -> ResultSpec {
        ResultSpec {
            snapshot_key: snapshot_key.to_string(),
            automation_error: "/automation_error".into(),
            assessment_failures: "/assessment_failures".into(),
            lock_skipped: "/lock_skipped".into(),
            exit_code: "/exit_code".into(),
        }
    }
}

/// Retries of automation errors (never of assessment failures).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    pub max_attempts: u32,
    /// 30 s by default; from 1 s to a day.
    pub initial_interval: Dur,
    pub backoff_coefficient: f64,
    /// 5 min by default; from 1 s to a week, and at least `initial_interval`.
    pub max_interval: Dur,
}

/// Self-healing limits: cooldown, churn budget, circuit breaker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardSpec {
    /// 2 min by default; from 0 to a day.
    pub cooldown: Dur,
    pub max_automated_attempts: u32,
    /// 1 h by default; from 1 s to 31 days.
    pub window: Dur,
    pub open_after: u32,
    /// 30 min by default; from 1 s to a week.
    pub open_for: Dur,
}

/// Where to confirm that a run reached the remote: an endpoint listing its
/// recent events (State Hub's progress events), and JSON pointers into each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    /// A GET URL; may hold `${VAR}`, resolved like the action's.
    pub verify: String,
    /// Where the array of events is in the answer: `""` (the whole body) by default.
    pub events_pointer: String,
    /// In each event, the source that fired it (`/detail/source` by default).
    pub source_pointer: String,
    /// In each event, its RFC 3339 time (`/created_at` by default).
    pub time_pointer: String,
}

/// How long the worker keeps this activity's finished runs in
/// `activity_runs` (`[retention]`; docs/reference/definitions.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    /// `ok`, `lock_skipped`, skipped and blocked runs: 14 days by default.
    pub succeeded: Dur,
    /// Everything else that ended (assessment failures, automation errors,
    /// abandoned): 90 days by default.
    pub failed: Dur,
}

impl Default for RetentionSpec {
    fn default() -> Self {
        RetentionSpec {
            succeeded: RETENTION_SUCCEEDED.default,
            failed: RETENTION_FAILED.default,
        }
    }
}

impl Definition {
    /// Reads a canonical spec as stored by `sync`: tolerant where files are
    /// strict. Keys this binary does not know (a newer `sync` wrote them)
    /// are ignored, each logged once per process with the activity; see
    /// [`Definition::from_stored_spec`].
    pub fn from_stored(spec: serde_json::Value) -> Result<Definition, serde_json::Error> {
        let (definition, unknown) = Definition::from_stored_spec(spec)?;
        if !unknown.is_empty() {
            static LOGGED: std::sync::Mutex<Option<std::collections::HashSet<(Uuid, String)>>> =
                std::sync::Mutex::new(None);
            let mut logged = LOGGED.lock().unwrap_or_else(|e| e.into_inner());
            for key in unknown {
                if logged.get_or_insert_default().insert((definition.id, key.clone())) {
                    tracing::warn!(
                        activity = %definition.slug,
                        definition_id = %definition.id,
                        key = %key,
                        "the stored spec has a key this version of actcore does not know (a newer sync wrote it); ignoring it"
                    );
                }
            }
        }
        Ok(definition)
    }

    /// [`Definition::from_stored`] without the logging: the definition and
    /// the dotted paths of the keys it ignored (`schedule.buffer`, `canary`).
    /// Values under `action.body` and `action.headers` are the user's, never unknown.
    pub fn from_stored_spec(mut spec: serde_json::Value) -> Result<(Definition, Vec<String>), serde_json::Error> {
        static KNOWN: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
        let known = KNOWN.get_or_init(|| {
            // Every optional key set, so that every key this binary knows is present.
            let mut full = sample(Uuid::nil(), "known", "* * * * *", "http://known");
            full.schedule.catchup_window = Some(Dur::ZERO);
            full.action.body = Some(serde_json::Value::Null);
            full.action.headers.insert("known".into(), String::new());
            full.action.preflight = Some(String::new());
            full.canary = Some(CanarySpec {
                verify: String::new(),
                events_pointer: String::new(),
                source_pointer: String::new(),
                time_pointer: String::new(),
            });
            full.retention.succeeded = Dur::ZERO;
            full.canonical_json()
        });
        let mut unknown = Vec::new();
        prune_unknown(&mut spec, known, "", &mut unknown);
        Ok((serde_json::from_value(spec)?, unknown))
    }

    /// The canonical spec: this definition as JSON with sorted keys and
    /// canonical durations; what is stored and hashed.
    ///
    /// A key added later must keep the hash of every definition that does
    /// not use it (no churn on upgrade: a resync would otherwise mark every
    /// activity changed and restart its timer): make it optional and leave
    /// it out at its default, `#[serde(default, skip_serializing_if =
    /// "is_default")]`. The pinned hashes in the tests hold this.
    pub fn canonical_json(&self) -> serde_json::Value {
        // serde_json's Value keeps object keys sorted (no preserve_order).
        serde_json::to_value(self).expect("a definition always serialises")
    }

    /// Hex SHA-256 of the canonical spec: "changed" means this changed.
    pub fn spec_hash(&self) -> String {
        hash_spec(&self.canonical_json())
    }

    /// The parsed schedule (validated at load, so this cannot fail for a
    /// definition that came through [`load_dir`] or the store).
    pub fn parsed_schedule(&self) -> Result<Schedule, crate::schedule::ScheduleError> {
        Schedule::new(&self.schedule.cron, &self.schedule.timezone)
    }

    /// `${VAR}` names used anywhere in the action.
    pub fn template_vars(&self) -> Vec<String> {
        let mut out = Vec::new();
        template::collect_vars(&self.action.url, &mut out);
        if let Some(p) = &self.action.preflight {
            template::collect_vars(p, &mut out);
        }
        for v in self.action.headers.values() {
            template::collect_vars(v, &mut out);
        }
        if let Some(b) = &self.action.body {
            template::collect_vars_json(b, &mut out);
        }
        if let Some(c) = &self.canary {
            template::collect_vars(&c.verify, &mut out);
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Hex SHA-256 of a canonical spec's JSON text.
pub fn hash_spec(spec: &serde_json::Value) -> String {
    sha256_hex(&serde_json::to_vec(spec).expect("serialises"))
}

/// Lower-case hex SHA-256 of `bytes`: the spec hash and the snapshot's
/// body fingerprint (one string, not a `format!` per byte: the worker
/// fingerprints every activity's body when it starts).
pub fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// True for a value at its type's default: how a key added later stays out
/// of the canonical spec (and its hash) when a definition does not use it.
pub fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Removes from `spec` the object keys that `known` (a spec with every key
/// set) does not have, recording their dotted paths. The user's own maps
/// (`action.body`, `action.headers`) are left whole.
fn prune_unknown(spec: &mut serde_json::Value, known: &serde_json::Value, path: &str, unknown: &mut Vec<String>) {
    let (Some(spec), Some(known)) = (spec.as_object_mut(), known.as_object()) else {
        return;
    };
    // A key's dotted path is built only where it is needed (an unknown key,
    // or an object to descend into): the worker prunes every stored spec at
    // start, and a string per key showed as 15% of its samples while it
    // loaded 10,000 activities (docs/performance.md).
    let child = |key: &str| match path {
        "" => key.to_string(),
        _ => format!("{path}.{key}"),
    };
    spec.retain(|key, value| match known.get(key) {
        None => {
            unknown.push(child(key));
            false
        }
        Some(k) => {
            if value.is_object() && k.is_object() {
                let child = child(key);
                if !matches!(child.as_str(), "action.body" | "action.headers") {
                    prune_unknown(value, k, &child, unknown);
                }
            }
            true
        }
    });
}

/// A valid definition built in code, with the defaults a file would get:
/// for tests and benchmarks that need many activities quickly.
pub fn sample(id: Uuid, slug: &str, cron: &str, url: &str) -> Definition {
    let text = format!(
        "id = \"{id}\"\nslug = \"{slug}\"\n[schedule]\ncron = \"{cron}\"\n[action]\nurl = \"{url}\"\ntimeout = \"5s\"\n"
    );
    parse_str(Path::new("<sample>"), &text).unwrap_or_else(|p| panic!("sample definition is invalid: {p:?}"))
}

#[cfg(test)]
mod tests;
