//! Field-by-field validation of a parsed file into a [`Definition`], with
//! the bounds of every duration key. The core (identity, `[schedule]`) is
//! here; `action` checks `[action]` and `[result]`, `policy` the
//! self-healing, canary and retention tables.

use super::*;

mod action;
mod policy;

/// A duration key's default and range (inclusive). The ranges are the
/// contract for definition files; `definitions check` names them.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) default: Dur,
    bounds: Bounds,
}

pub(super) const fn limits(default: Dur, min: Dur, max: Dur) -> Limits {
    Limits {
        default,
        bounds: Bounds::new(min, max),
    }
}

pub(super) const SECOND: Dur = Dur::from_secs(1);
pub(super) const DAY: Dur = Dur::from_days(1);
/// `schedule.misfire_grace`: 60 s; from 1 s to 7 days.
pub(super) const MISFIRE_GRACE: Limits = limits(Dur::from_secs(60), SECOND, Dur::from_days(7));
/// `schedule.jitter`: 0 s; up to a day, and strictly below both the grace
/// and the schedule's shortest period.
pub(super) const JITTER: Limits = limits(Dur::ZERO, Dur::ZERO, DAY);
/// `schedule.catchup_window`: from 1 s to a year.
pub(super) const CATCHUP_WINDOW: Limits = limits(Dur::from_secs(3600), SECOND, Bounds::LONGEST);
/// `action.timeout`: 30 s; from 100 ms to a day.
pub(super) const TIMEOUT: Limits = limits(Dur::from_secs(30), Dur::from_millis(100), DAY);
/// `retry.initial_interval`: 30 s; from 1 s to a day.
pub(super) const INITIAL_INTERVAL: Limits = limits(Dur::from_secs(30), SECOND, DAY);
/// `retry.max_interval`: 5 min; from 1 s to a week, and at least the initial interval.
pub(super) const MAX_INTERVAL: Limits = limits(Dur::from_secs(300), SECOND, Dur::from_days(7));
/// `guard.cooldown`: 2 min; from 0 (none) to a day.
pub(super) const COOLDOWN: Limits = limits(Dur::from_secs(120), Dur::ZERO, DAY);
/// `guard.window`: 1 h; from 1 s to 31 days.
pub(super) const WINDOW: Limits = limits(Dur::from_secs(3600), SECOND, Dur::from_days(31));
/// `guard.open_for`: 30 min; from 1 s to a week.
pub(super) const OPEN_FOR: Limits = limits(Dur::from_secs(1800), SECOND, Dur::from_days(7));

/// `retention.succeeded`: 14 days; from 1 day to a year (LONGEST).
pub(super) const RETENTION_SUCCEEDED: Limits = limits(Dur::from_days(14), DAY, Bounds::LONGEST);
/// `retention.failed`: 90 days; from 1 day to a year (LONGEST).
pub(super) const RETENTION_FAILED: Limits = limits(Dur::from_days(90), DAY, Bounds::LONGEST);

pub(super) struct Validator<'a> {
    pub(super) file: &'a Path,
    pub(super) problems: Vec<Problem>,
    pub(super) checked: &'a mut CheckedSchedules,
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

    pub(super) fn definition(&mut self, raw: raw::File) -> Option<Definition> {
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
        let canary = raw.canary.map(|c| self.canary(c));
        let retention = self.retention(raw.retention.unwrap_or_default());
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
            canary: canary.flatten(),
            retention,
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
            "buffer_one" => Overlap::BufferOne,
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
}

pub(super) fn bad_escape(p: &str) -> bool {
    let b = p.as_bytes();
    b.iter()
        .enumerate()
        .any(|(i, &c)| c == b'~' && !matches!(b.get(i + 1), Some(b'0') | Some(b'1')))
}
