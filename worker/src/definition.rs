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

/// A duration key's default and range (inclusive). The ranges are the
/// contract for definition files; `definitions check` names them.
#[derive(Clone, Copy, Debug)]
struct Limits {
    default: Dur,
    bounds: Bounds,
}

const fn limits(default: Dur, min: Dur, max: Dur) -> Limits {
    Limits {
        default,
        bounds: Bounds::new(min, max),
    }
}

const SECOND: Dur = Dur::from_secs(1);
const DAY: Dur = Dur::from_days(1);
/// `schedule.misfire_grace`: 60 s; from 1 s to 7 days.
const MISFIRE_GRACE: Limits = limits(Dur::from_secs(60), SECOND, Dur::from_days(7));
/// `schedule.jitter`: 0 s; up to a day, and strictly below both the grace
/// and the schedule's shortest period.
const JITTER: Limits = limits(Dur::ZERO, Dur::ZERO, DAY);
/// `schedule.catchup_window`: from 1 s to a year.
const CATCHUP_WINDOW: Limits = limits(Dur::from_secs(3600), SECOND, Bounds::LONGEST);
/// `action.timeout`: 30 s; from 100 ms to a day.
const TIMEOUT: Limits = limits(Dur::from_secs(30), Dur::from_millis(100), DAY);
/// `retry.initial_interval`: 30 s; from 1 s to a day.
const INITIAL_INTERVAL: Limits = limits(Dur::from_secs(30), SECOND, DAY);
/// `retry.max_interval`: 5 min; from 1 s to a week, and at least the initial interval.
const MAX_INTERVAL: Limits = limits(Dur::from_secs(300), SECOND, Dur::from_days(7));
/// `guard.cooldown`: 2 min; from 0 (none) to a day.
const COOLDOWN: Limits = limits(Dur::from_secs(120), Dur::ZERO, DAY);
/// `guard.window`: 1 h; from 1 s to 31 days.
const WINDOW: Limits = limits(Dur::from_secs(3600), SECOND, Dur::from_days(31));
/// `guard.open_for`: 30 min; from 1 s to a week.
const OPEN_FOR: Limits = limits(Dur::from_secs(1800), SECOND, Dur::from_days(7));

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
        out.sort();
        out.dedup();
        out
    }
}

/// One problem in one file: what is wrong with which key, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: PathBuf,
    /// Dotted key path (`schedule.cron`), or empty for the file as a whole.
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, " (fix: {})", self.fix)?;
        }
        Ok(())
    }
}

/// Every problem found in a directory of definitions.
#[derive(Clone, Debug, thiserror::Error, Serialize)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the definitions (nothing was written):",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// A validated definition and the file it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub file: PathBuf,
    pub definition: Definition,
}

/// Reads and validates every `*.toml` in `dir` (sorted by name). Either all
/// files are valid and unique, or every problem is returned.
pub fn load_dir(dir: &Path) -> Result<Vec<Loaded>, Problems> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            return Err(Problems(vec![Problem {
                file: dir.to_path_buf(),
                key: String::new(),
                message: format!("cannot read the definitions directory: {e}"),
                fix: "pass --definitions DIR (or set ACTCORE_DEFINITIONS) to a directory of *.toml files".into(),
            }]));
        }
    };
    // Every `*.toml` is a definition: one that cannot be read (a dangling
    // symlink, a loop, a directory, no permission) is a problem, never skipped.
    let mut problems = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) if e.path().extension().is_some_and(|x| x == "toml") => files.push(e.path()),
            Ok(_) => {}
            Err(e) => problems.push(problem(
                dir,
                "",
                format!("cannot list the definitions directory: {e}"),
                "check the directory's permissions and the disk",
            )),
        }
    }
    files.sort();

    // Files are independent: parse them on every core, in contiguous
    // chunks so that results and problems keep the sorted file order.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
        .min(files.len().div_ceil(MIN_FILES_PER_THREAD))
        .max(1);
    let chunk = files.len().div_ceil(threads).max(1);
    let results: Vec<(Vec<Loaded>, Vec<Problem>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = files.chunks(chunk).map(|c| scope.spawn(|| load_files(c))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    let mut loaded = Vec::new();
    for (mut l, mut p) in results {
        loaded.append(&mut l);
        problems.append(&mut p);
    }
    check_unique(&loaded, &mut problems);
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(Problems(problems))
    }
}

/// Below this many files per thread, a thread costs more than it saves.
const MIN_FILES_PER_THREAD: usize = 256;

/// Reads and parses `files` in order; one cache of checked schedules for all.
fn load_files(files: &[PathBuf]) -> (Vec<Loaded>, Vec<Problem>) {
    let mut checked = CheckedSchedules::default();
    let mut problems = Vec::new();
    let mut loaded = Vec::with_capacity(files.len());
    for file in files {
        let text = match read_definition(file) {
            Ok(t) => t,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        match parse_checked(file, &text, &mut checked) {
            Ok(definition) => loaded.push(Loaded {
                file: file.clone(),
                definition,
            }),
            Err(mut ps) => problems.append(&mut ps),
        }
    }
    (loaded, problems)
}

/// A definition file's text, or the problem that keeps it from being read:
/// what the file is (a dangling symlink, a loop, a directory), why, and the fix.
fn read_definition(file: &Path) -> Result<String, Problem> {
    let link = std::fs::symlink_metadata(file)
        .ok()
        .filter(|m| m.file_type().is_symlink())
        .map(|_| match std::fs::read_link(file) {
            Ok(target) => format!("symlink to `{}`", target.display()),
            Err(_) => "symlink".to_string(),
        });
    let what = link.as_deref().unwrap_or("file");
    let unreadable = |message: String, fix: &str| problem(file, "", message, fix);
    let metadata = std::fs::metadata(file).map_err(|e| match (e.kind(), &link) {
        (std::io::ErrorKind::NotFound, Some(_)) => unreadable(
            format!("cannot read: dangling {what}, which does not exist"),
            "point the link at an existing definition file, or remove the link",
        ),
        (_, Some(_)) => unreadable(
            format!("cannot read: the {what} cannot be followed: {e}"),
            "a symlink loop never reaches a file: point the link at a definition file, or remove it",
        ),
        (std::io::ErrorKind::PermissionDenied, None) => unreadable(
            format!("cannot read: {e}"),
            "check the permissions of the file and its directory",
        ),
        _ => unreadable(format!("cannot read: {e}"), "check the file and the disk"),
    })?;
    if !metadata.is_file() {
        return Err(unreadable(
            format!("cannot read: this {what} is not a regular file"),
            "definitions are *.toml files: rename or remove it",
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| {
        let fix = if e.kind() == std::io::ErrorKind::PermissionDenied {
            "check the permissions of the file (the worker's user must read it)"
        } else {
            "check the file and the disk"
        };
        unreadable(format!("cannot read: {e}"), fix)
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
        let column = at - bytes[..at].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) + 1;
        unreadable(
            format!(
                "line {line}, column {column}: not valid UTF-8 (byte 0x{:02x}); TOML files must be UTF-8",
                bytes[at]
            ),
            "re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`",
        )
    })
}

fn check_unique(loaded: &[Loaded], problems: &mut Vec<Problem>) {
    let mut ids: HashMap<Uuid, &Path> = HashMap::new();
    let mut slugs: HashMap<&str, &Path> = HashMap::new();
    for l in loaded {
        if let Some(first) = ids.insert(l.definition.id, &l.file) {
            problems.push(problem(
                &l.file,
                "id",
                format!("duplicate id {} (also in {})", l.definition.id, first.display()),
                "every activity needs its own id: generate one with `uuidgen` for the newer file",
            ));
        }
        if let Some(first) = slugs.insert(&l.definition.slug, &l.file) {
            problems.push(problem(
                &l.file,
                "slug",
                format!("duplicate slug `{}` (also in {})", l.definition.slug, first.display()),
                "slugs are the CLI handle and must be unique: rename one",
            ));
        }
    }
}

fn problem(file: &Path, key: &str, message: impl Into<String>, fix: impl Into<String>) -> Problem {
    Problem {
        file: file.to_path_buf(),
        key: key.to_string(),
        message: message.into(),
        fix: fix.into(),
    }
}

/// Parses and validates one file's text. `file` is only used in messages.
pub fn parse_str(file: &Path, text: &str) -> Result<Definition, Vec<Problem>> {
    parse_checked(file, text, &mut CheckedSchedules::default())
}

/// `(cron, time zone)` pairs already found valid, with their shortest
/// period once a jitter needed it: thousands of files usually share a few
/// schedules, and parsing a cron is most of the cost of validating a file.
struct CheckedSchedules {
    /// Where shortest periods are measured from: when loading began.
    now: Timestamp,
    valid: HashMap<(String, String), CheckedSchedule>,
}

struct CheckedSchedule {
    schedule: Schedule,
    /// Measured on first use (only a non-zero jitter needs it).
    shortest: Option<Option<Period>>,
}

impl Default for CheckedSchedules {
    fn default() -> Self {
        CheckedSchedules {
            now: Timestamp::now(),
            valid: HashMap::new(),
        }
    }
}

impl CheckedSchedules {
    /// The shortest period of a valid schedule (None: fewer than two instants in eight years).
    fn shortest_period(&mut self, key: &(String, String)) -> Option<Period> {
        let now = self.now;
        let checked = self.valid.get_mut(key)?;
        *checked
            .shortest
            .get_or_insert_with(|| shortest_period(&checked.schedule, now))
    }
}

fn parse_checked(file: &Path, text: &str, checked: &mut CheckedSchedules) -> Result<Definition, Vec<Problem>> {
    let raw: raw::File = toml::from_str(text).map_err(|e| vec![toml_problem(file, text, &e)])?;
    let mut v = Validator {
        file,
        problems: Vec::new(),
        checked,
    };
    let def = v.definition(raw);
    match def {
        Some(d) if v.problems.is_empty() => Ok(d),
        _ => Err(v.problems),
    }
}

fn toml_problem(file: &Path, text: &str, e: &toml::de::Error) -> Problem {
    let before = e.span().map(|s| &text[..s.start.min(text.len())]);
    let at = before
        .map(|b| format!("line {}: ", b.matches('\n').count() + 1))
        .unwrap_or_default();
    let message = e.message().trim();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return problem(
            file,
            "",
            format!("{at}{message}"),
            "correct the TOML syntax at that line (https://toml.io)",
        );
    };
    let name = rest.split('`').next().unwrap_or_default();
    let expected = rest.split_once(", expected ").map(|x| x.1).unwrap_or("");
    // Name the key with its table, as the other problems do (`schedule.timezon`).
    let table = before.and_then(|b| {
        b.lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(['[', ']', ' ']).to_string())
    });
    let key = match table {
        Some(t) if !t.is_empty() => format!("{t}.{name}"),
        _ => name.to_string(),
    };
    problem(
        file,
        &key,
        format!("{at}unknown key `{name}`"),
        format!("remove the key or correct its spelling; expected {expected}"),
    )
}

struct Validator<'a> {
    file: &'a Path,
    problems: Vec<Problem>,
    checked: &'a mut CheckedSchedules,
}

impl Validator<'_> {
    fn push(&mut self, key: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(problem(self.file, key, message, fix));
    }

    fn required<T>(&mut self, value: Option<T>, key: &str, fix: &str) -> Option<T> {
        if value.is_none() {
            self.push(key, "required key is missing", fix);
        }
        value
    }

    /// A duration key, or its default; None (and a problem) when it is
    /// malformed or outside the key's range.
    fn duration(&mut self, value: Option<String>, key: &str, limits: Limits) -> Option<Dur> {
        let Some(text) = value else {
            return Some(limits.default);
        };
        // `catchup_window` has no default: `fire_once` requires it.
        let without = if key == "schedule.catchup_window" {
            "misfire = \"fire_once\" requires it".to_string()
        } else {
            format!("without the key it is {}", limits.default)
        };
        let fix = format!(
            "write a duration {}: a number and a unit (ms, s, m, h or d), e.g. \"60s\" or \"1h30m\"; {without}",
            limits.bounds.describe(),
        );
        match text.parse::<Dur>() {
            Ok(d) => match limits.bounds.check(d) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.push(key, format!("out of range: {e}"), fix);
                    None
                }
            },
            Err(e) => {
                self.push(key, format!("malformed duration: {}", e.0), fix);
                None
            }
        }
    }

    fn pointer(&mut self, value: Option<String>, key: &str, default: &str) -> String {
        let p = value.unwrap_or_else(|| default.to_string());
        if !(p.is_empty() || p.starts_with('/')) || p.contains("~2") || bad_escape(&p) {
            self.push(
                key,
                format!("`{p}` is not a JSON pointer"),
                "write an RFC 6901 pointer such as \"/automation_error\" (leading slash; ~0 for ~ and ~1 for /)",
            );
        }
        p
    }

    fn definition(&mut self, raw: raw::File) -> Option<Definition> {
        let id = self.required(
            raw.id,
            "id",
            "add `id = \"<uuid>\"` (generate one with `uuidgen`); the id is the activity's identity",
        );
        let id = id.and_then(|s| match Uuid::parse_str(&s) {
            Ok(u) => Some(u),
            Err(e) => {
                self.push(
                    "id",
                    format!("`{s}` is not a UUID: {e}"),
                    "use a UUID such as one from `uuidgen`",
                );
                None
            }
        });
        let slug = self.required(
            raw.slug,
            "slug",
            "add `slug = \"lower-case-with-dashes\"`, the CLI and API handle",
        );
        if let Some(s) = &slug
            && (s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                || s.starts_with('-'))
        {
            self.push(
                "slug",
                format!("`{s}` is not a slug"),
                "use lower-case letters, digits and dashes, e.g. \"state-hub-consistency-sweep\"",
            );
        }
        let name = raw.name.or_else(|| slug.clone()).unwrap_or_default();

        let schedule = match self.required(
            raw.schedule,
            "schedule",
            "add a [schedule] table with at least `cron = \"*/15 * * * *\"`",
        ) {
            Some(s) => self.schedule(s),
            None => None,
        };
        let action = match self.required(
            raw.action,
            "action",
            "add an [action] table with `kind = \"http\"` and a `url`",
        ) {
            Some(a) => self.action(a),
            None => None,
        };
        let result = self.result(raw.result.unwrap_or_default(), slug.as_deref().unwrap_or_default());
        let retry = self.retry(raw.retry.unwrap_or_default());
        let guard = self.guard(raw.guard.unwrap_or_default());
        Some(Definition {
            id: id?,
            name,
            slug: slug?,
            enabled: raw.enabled.unwrap_or(true),
            schedule: schedule?,
            action: action?,
            result,
            retry,
            guard,
        })
    }

    fn schedule_problem(&mut self, e: crate::schedule::ScheduleError, timezone: &str) {
        self.push(&format!("schedule.{}", e.key), e.message, e.fix);
        // The cron is checked first; check the zone on its own so both are reported.
        if e.key == "cron"
            && let Err(z) = Schedule::new("* * * * *", timezone)
        {
            self.push(&format!("schedule.{}", z.key), z.message, z.fix);
        }
    }

    fn schedule(&mut self, s: raw::Schedule) -> Option<ScheduleSpec> {
        let cron = self.required(
            s.cron,
            "schedule.cron",
            "add `cron = \"*/15 * * * *\"` (5 fields, or 6 with leading seconds)",
        );
        let timezone = s.timezone.unwrap_or_else(|| "UTC".to_string());
        let key = cron.as_ref().map(|c| (c.clone(), timezone.clone()));
        if let Some(key) = key.as_ref().filter(|k| !self.checked.valid.contains_key(*k)) {
            match Schedule::new(&key.0, &key.1) {
                Ok(schedule) => {
                    let checked = CheckedSchedule {
                        schedule,
                        shortest: None,
                    };
                    self.checked.valid.insert(key.clone(), checked);
                }
                Err(e) => self.schedule_problem(e, &key.1),
            }
        }
        let misfire = match s.misfire.as_deref().unwrap_or("skip") {
            "skip" => Misfire::Skip,
            "fire_once" => Misfire::FireOnce,
            other => {
                self.push(
                    "schedule.misfire",
                    format!("unknown policy `{other}`"),
                    "use \"skip\" or \"fire_once\"",
                );
                Misfire::Skip
            }
        };
        let overlap = match s.overlap.as_deref().unwrap_or("skip") {
            "skip" => Overlap::Skip,
            "allow" => Overlap::Allow,
            "buffer_one" => {
                // In the contract, not built yet: refusing it beats silently
                // running overlapping instants the operator asked to queue.
                self.push(
                    "schedule.overlap",
                    "`buffer_one` (queue one instant behind a running run) is not supported by this version",
                    "use \"skip\" (the default: record the instant as skipped_overlap) or \"allow\" (run concurrently)",
                );
                Overlap::BufferOne
            }
            other => {
                self.push(
                    "schedule.overlap",
                    format!("unknown policy `{other}`"),
                    "use \"skip\", \"allow\" or \"buffer_one\"",
                );
                Overlap::Skip
            }
        };
        let dst = match s.dst.as_deref().unwrap_or("vixie") {
            "vixie" => DstPolicy::Vixie,
            other => {
                self.push(
                    "schedule.dst",
                    format!("unknown DST policy `{other}`"),
                    "use \"vixie\" (the only policy; see docs/reference/scheduling.md)",
                );
                DstPolicy::Vixie
            }
        };
        let misfire_grace = self.duration(s.misfire_grace, "schedule.misfire_grace", MISFIRE_GRACE);
        let jitter = self.duration(s.jitter, "schedule.jitter", JITTER);
        if let (Some(grace), Some(jitter)) = (misfire_grace, jitter)
            && !jitter.is_zero()
        {
            let shortest = key
                .filter(|k| self.checked.valid.contains_key(k))
                .map(|k| self.checked.shortest_period(&k));
            self.jitter(jitter, grace, shortest);
        }
        let catchup_window = s
            .catchup_window
            .map(|w| self.duration(Some(w), "schedule.catchup_window", CATCHUP_WINDOW));
        match (misfire, catchup_window) {
            (Misfire::FireOnce, None) => self.push(
                "schedule.catchup_window",
                "`misfire = \"fire_once\"` needs a catch-up window",
                "add `catchup_window = \"1h\"` (how late a missed instant may still fire)",
            ),
            (Misfire::Skip, Some(_)) => self.push(
                "schedule.catchup_window",
                "only meaningful with `misfire = \"fire_once\"`",
                "remove it, or set `misfire = \"fire_once\"`",
            ),
            _ => {}
        }
        Some(ScheduleSpec {
            cron: cron?,
            timezone,
            misfire,
            misfire_grace: misfire_grace?,
            catchup_window: catchup_window.map(|w| w.unwrap_or_default()),
            overlap,
            jitter: jitter?,
            dst,
        })
    }

    /// A jittered instant must still fire within its grace and before the
    /// next instant: the jitter stays strictly below both. `shortest` is
    /// None when the schedule itself is invalid (already reported).
    fn jitter(&mut self, jitter: Dur, grace: Dur, shortest: Option<Option<Period>>) {
        let length = |p: &Period| Dur::from_millis(u64::try_from(p.length.as_millis()).unwrap_or(0));
        let below_period = shortest.flatten().is_none_or(|p| jitter < length(&p));
        if jitter < grace && below_period {
            return;
        }
        let (period, limit) = match shortest {
            Some(Some(p)) => (
                format!(
                    " and the schedule's shortest period between two instants ({}, from {} to {})",
                    length(&p),
                    p.from,
                    p.to
                ),
                length(&p).min(grace),
            ),
            Some(None) => (
                " and the schedule's shortest period between two instants (none: it fires less than twice in eight years)"
                    .to_string(),
                grace,
            ),
            None => (String::new(), grace),
        };
        self.push(
            "schedule.jitter",
            format!(
                "jitter {jitter} must be strictly below {}schedule.misfire_grace ({grace}){period}",
                if period.is_empty() { "" } else { "both " }
            ),
            format!(
                "lower the jitter below {limit} (or raise misfire_grace): a longer jitter would fire an instant \
                 past its grace or after the next instant"
            ),
        );
    }

    fn action(&mut self, a: raw::Action) -> Option<ActionSpec> {
        let kind = match a.kind.as_deref().unwrap_or("http") {
            "http" => ActionKind::Http,
            other => {
                self.push("action.kind", format!("unknown action kind `{other}`"), "use \"http\"");
                ActionKind::Http
            }
        };
        let method = a.method.unwrap_or_else(|| "POST".into()).to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            self.push(
                "action.method",
                format!("unsupported method `{method}`"),
                "use GET, POST, PUT, PATCH or DELETE",
            );
        }
        let url = self.required(
            a.url,
            "action.url",
            "add `url = \"${STATE_HUB_URL}/...\"`: an http action needs a url",
        );
        for (key, value) in [
            ("action.url", url.as_deref()),
            ("action.preflight", a.preflight.as_deref()),
        ] {
            if let Some(v) = value {
                self.url(key, v);
            }
        }
        let body = a
            .body
            .map(|b| serde_json::to_value(b).expect("TOML values are JSON values"));
        let timeout = self.duration(a.timeout, "action.timeout", TIMEOUT);
        for name in a.headers.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            {
                self.push(
                    &format!("action.headers.{name}"),
                    "not a valid header name",
                    "use letters, digits and dashes",
                );
            }
        }
        Some(ActionSpec {
            kind,
            method,
            url: url?,
            body,
            headers: a.headers,
            timeout: timeout?,
            preflight: a.preflight,
        })
    }

    fn url(&mut self, key: &str, value: &str) {
        if let Err(e) = template::check_syntax(value) {
            self.push(
                key,
                e,
                "write variables as ${NAME} with letters, digits and underscores",
            );
            return;
        }
        // A leading ${VAR} holds the scheme and host: only `check --env` and
        // the worker, which resolve it, can check the URL.
        if value.starts_with("${") {
            return;
        }
        let Some(rest) = value.strip_prefix("http://").or_else(|| value.strip_prefix("https://")) else {
            self.push(
                key,
                format!("`{value}` is not an http(s) URL"),
                "start with http://, https:// or a ${VAR} holding one",
            );
            return;
        };
        // Variables after the scheme stand for some text; the rest must be a URL with a host.
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let sample = template::render_with(value, |_| Some("1".into())).unwrap_or_default();
        let problem = if host.is_empty() || host.starts_with(':') {
            Some("has no host".to_string())
        } else {
            reqwest::Url::parse(&sample)
                .err()
                .map(|e| format!("is not a valid URL: {e}"))
        };
        if let Some(p) = problem {
            self.push(
                key,
                format!("`{value}` {p}"),
                "write a full URL such as \"http://state-hub:8080/health\" or \"${STATE_HUB_URL}/health\"",
            );
        }
    }

    fn result(&mut self, r: raw::Result, slug: &str) -> ResultSpec {
        let snapshot_key = r.snapshot_key.unwrap_or_else(|| slug.replace('-', "_"));
        if snapshot_key.is_empty() {
            self.push(
                "result.snapshot_key",
                "must not be empty",
                "set e.g. `snapshot_key = \"consistency_sweep_remote_all\"`",
            );
        }
        ResultSpec {
            snapshot_key,
            automation_error: self.pointer(r.automation_error, "result.automation_error", "/automation_error"),
            assessment_failures: self.pointer(
                r.assessment_failures,
                "result.assessment_failures",
                "/assessment_failures",
            ),
            lock_skipped: self.pointer(r.lock_skipped, "result.lock_skipped", "/lock_skipped"),
            exit_code: self.pointer(r.exit_code, "result.exit_code", "/exit_code"),
        }
    }

    fn retry(&mut self, r: raw::Retry) -> RetrySpec {
        let max_attempts = r.max_attempts.unwrap_or(3);
        if max_attempts == 0 {
            self.push(
                "retry.max_attempts",
                "must be at least 1 (the first attempt counts)",
                "set `max_attempts = 1` for no retries",
            );
        }
        let backoff_coefficient = r.backoff_coefficient.unwrap_or(2.0);
        if !(1.0..=100.0).contains(&backoff_coefficient) {
            self.push(
                "retry.backoff_coefficient",
                format!("{backoff_coefficient} is out of range"),
                "use a value from 1.0 to 100.0, e.g. 2.0",
            );
        }
        let initial_interval = self.duration(r.initial_interval, "retry.initial_interval", INITIAL_INTERVAL);
        let max_interval = self.duration(r.max_interval, "retry.max_interval", MAX_INTERVAL);
        if let (Some(initial), Some(max)) = (initial_interval, max_interval)
            && max < initial
        {
            self.push(
                "retry.max_interval",
                format!("{max} is below retry.initial_interval ({initial})"),
                "the backoff grows from initial_interval up to max_interval: raise max_interval or lower initial_interval",
            );
        }
        RetrySpec {
            max_attempts,
            initial_interval: initial_interval.unwrap_or(INITIAL_INTERVAL.default),
            backoff_coefficient,
            max_interval: max_interval.unwrap_or(MAX_INTERVAL.default),
        }
    }

    fn guard(&mut self, g: raw::Guard) -> GuardSpec {
        let open_after = g.open_after.unwrap_or(4);
        if open_after == 0 {
            self.push(
                "guard.open_after",
                "must be at least 1",
                "set e.g. `open_after = 4` consecutive automation errors",
            );
        }
        GuardSpec {
            cooldown: self
                .duration(g.cooldown, "guard.cooldown", COOLDOWN)
                .unwrap_or_default(),
            max_automated_attempts: g.max_automated_attempts.unwrap_or(6),
            window: self.duration(g.window, "guard.window", WINDOW).unwrap_or_default(),
            open_after,
            open_for: self
                .duration(g.open_for, "guard.open_for", OPEN_FOR)
                .unwrap_or_default(),
        }
    }
}

/// Hex SHA-256 of a canonical spec's JSON text.
pub fn hash_spec(spec: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(spec).expect("serialises");
    let digest = Sha256::digest(&bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
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
    spec.retain(|key, value| {
        let child = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match known.get(key) {
            None => {
                unknown.push(child);
                false
            }
            Some(k) => {
                if !matches!(child.as_str(), "action.body" | "action.headers") {
                    prune_unknown(value, k, &child, unknown);
                }
                true
            }
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

fn bad_escape(p: &str) -> bool {
    let b = p.as_bytes();
    b.iter()
        .enumerate()
        .any(|(i, &c)| c == b'~' && !matches!(b.get(i + 1), Some(b'0') | Some(b'1')))
}

/// The file's shape as written: everything optional, so that missing keys
/// become named problems rather than serde's generic message.
mod raw {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub id: Option<String>,
        pub name: Option<String>,
        pub slug: Option<String>,
        pub enabled: Option<bool>,
        pub schedule: Option<Schedule>,
        pub action: Option<Action>,
        pub result: Option<Result>,
        pub retry: Option<Retry>,
        pub guard: Option<Guard>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Schedule {
        pub cron: Option<String>,
        pub timezone: Option<String>,
        pub misfire: Option<String>,
        pub misfire_grace: Option<String>,
        pub catchup_window: Option<String>,
        pub overlap: Option<String>,
        pub jitter: Option<String>,
        pub dst: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Action {
        pub kind: Option<String>,
        pub method: Option<String>,
        pub url: Option<String>,
        pub body: Option<toml::Value>,
        #[serde(default)]
        pub headers: BTreeMap<String, String>,
        pub timeout: Option<String>,
        pub preflight: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Result {
        pub snapshot_key: Option<String>,
        pub automation_error: Option<String>,
        pub assessment_failures: Option<String>,
        pub lock_skipped: Option<String>,
        pub exit_code: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Retry {
        pub max_attempts: Option<u32>,
        pub initial_interval: Option<String>,
        pub backoff_coefficient: Option<f64>,
        pub max_interval: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Guard {
        pub cooldown: Option<String>,
        pub max_automated_attempts: Option<u32>,
        pub window: Option<String>,
        pub open_after: Option<u32>,
        pub open_for: Option<String>,
    }
}

#[cfg(test)]
mod tests;
