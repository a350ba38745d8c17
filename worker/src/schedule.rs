//! Pure schedule maths: the next instants of a cron expression in a time
//! zone (DST per docs/reference/scheduling.md, `vixie`), deterministic jitter, and missed
//! instants. No I/O and no clock: every function takes the time it reasons about.
//!
//! DST, `vixie`: croner 4 walks the wall clock of the zone. A schedule whose
//! hour field starts with `*` (`*/15 * * * *`, `0 * * * *`, `@hourly`) follows
//! real time: a wall time skipped by a spring-forward gap does not exist and
//! does not fire, a wall time repeated on fall-back fires on both instants.
//! Any other schedule has fixed hours: a matching wall time inside a gap fires
//! once, at the end of the gap, and a repeated wall time fires only on its
//! first instant. croner does this natively only for single-time patterns
//! (`30 2 * * *`); for lists, ranges and steps under a fixed hour
//! (`0,30 2 * * *`, `*/15 1 * * *`) [`Schedule::next_after`] corrects it.

use std::fmt;

use croner::parser::{CronParser, Seconds, Year};
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use uuid::Uuid;

use crate::duration::Dur;

/// A parsed cron expression bound to a time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: croner::Cron,
    tz: TimeZone,
    has_seconds: bool,
    /// The hour field does not start with `*`: gap and fold corrections apply.
    fixed_hour: bool,
}

/// Why a cron/time-zone pair was refused. `key` is `cron` or `timezone`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleError {
    pub key: &'static str,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.key, self.message, self.fix)
    }
}

impl std::error::Error for ScheduleError {}

const CRON_FIX: &str = r#"use "min hour day-of-month month day-of-week", e.g. "*/15 * * * *", optionally with a leading seconds field, e.g. "30 */15 * * * *""#;
const TIMEZONE_FIX: &str = r#"use an IANA time zone name such as "Europe/Berlin", "America/New_York" or "UTC""#;

/// One cron field: its name in messages and its numeric range.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
}

/// Seconds first; a 5-field expression uses `FIELDS[1..]`.
const FIELDS: [Field; 6] = [
    field("second", 0, 59),
    field("minute", 0, 59),
    field("hour", 0, 23),
    field("day-of-month", 1, 31),
    field("month", 1, 12),
    field("day-of-week", 0, 7),
];

const fn field(name: &'static str, min: u32, max: u32) -> Field {
    Field { name, min, max }
}

fn cron_error(message: String, fix: impl Into<String>) -> ScheduleError {
    ScheduleError {
        key: "cron",
        message,
        fix: fix.into(),
    }
}

impl Schedule {
    /// Parses a 5-field Vixie expression (or 6 with a leading seconds field)
    /// and an IANA time zone name.
    ///
    /// `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight` and
    /// `@hourly` are accepted; year fields, `@reboot` and patterns that can
    /// never fire (`0 0 30 2 *`) are refused, so a bad file fails at sync.
    pub fn new(cron: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        let expression = expand_nickname(cron.trim())?;
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let specs = match fields.len() {
            5 => &FIELDS[1..],
            6 => &FIELDS[..],
            0 => return Err(cron_error("cron expression is empty".into(), CRON_FIX)),
            n => {
                return Err(cron_error(
                    format!(
                        "cron `{}`: expected 5 fields (or 6 with leading seconds), got {n}",
                        cron.trim()
                    ),
                    CRON_FIX,
                ));
            }
        };
        for (text, field) in fields.iter().zip(specs) {
            check_field(text, field)?;
        }
        let parsed = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(&vixie_day_rule(&fields))
            .map_err(|e| cron_error(format!("cron `{}` is invalid: {e}", cron.trim()), CRON_FIX))?;
        // A pattern that matches no real date (30 February) would silently never fire.
        if parsed
            .find_next_occurrence(&DateTime::constant(2000, 1, 1, 0, 0, 0, 0), false)
            .is_err()
        {
            return Err(cron_error(
                format!("cron `{}` never matches a real date", cron.trim()),
                "check the day-of-month and month fields, e.g. February has no day 30 or 31",
            ));
        }
        let hour_index = if fields.len() == 6 { 2 } else { 1 };
        Ok(Schedule {
            cron: parsed,
            tz: parse_time_zone(timezone)?,
            has_seconds: fields.len() == 6,
            fixed_hour: !fields[hour_index].starts_with('*'),
        })
    }

    /// The first instant strictly after `after`, or None if there is none.
    ///
    /// Instants are whole seconds; a sub-second `after` is fine. DST follows
    /// the module docs (`vixie`).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let mut from = after;
        loop {
            let next = self.croner_next(from)?;
            if !self.fixed_hour {
                return Some(next);
            }
            if let Some(gap_end) = self.gap_firing(from, next) {
                return Some(gap_end);
            }
            match self.later_half_end(next) {
                // A repeated wall time of a fixed-hour schedule already fired on its first instant.
                Some(end) => from = end.checked_sub(SignedDuration::from_nanos(1)).ok()?,
                None => return Some(next),
            }
        }
    }

    /// The zone instants are computed in, for showing them in local time.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// True when the expression has a seconds field.
    pub fn has_seconds(&self) -> bool {
        self.has_seconds
    }

    /// True when the civil day of `at` (in the schedule's zone) has a DST transition.
    ///
    /// Any change of UTC offset counts, so operators see why that day's
    /// instants are irregular.
    pub fn is_dst_transition_day(&self, at: Timestamp) -> bool {
        let zoned = at.to_zoned(self.tz.clone());
        let (Ok(start), Some(end)) = (
            zoned.start_of_day(),
            zoned
                .date()
                .tomorrow()
                .ok()
                .and_then(|day| day.to_zoned(self.tz.clone()).ok())
                .and_then(|next| next.start_of_day().ok()),
        ) else {
            return false;
        };
        let Ok(before_start) = start.timestamp().checked_sub(SignedDuration::from_nanos(1)) else {
            return false;
        };
        self.tz
            .following(before_start)
            .take_while(|transition| transition.timestamp() < end.timestamp())
            .any(|transition| self.offset_before(transition.timestamp()) != Some(transition.offset()))
    }

    /// croner's next instant strictly after `from`, in the zone.
    fn croner_next(&self, from: Timestamp) -> Option<Timestamp> {
        let mut next = self
            .cron
            .find_next_occurrence(&from.to_zoned(self.tz.clone()), false)
            .ok()?;
        // croner compares with one second of slack inside a fold; keep "strictly after" exact.
        while next.timestamp() <= from {
            next = self.cron.find_next_occurrence(&next, false).ok()?;
        }
        Some(next.timestamp())
    }

    /// The end of the first spring-forward gap in `(from, upto]` that skipped a
    /// wall time this schedule matches: where that time fires instead.
    fn gap_firing(&self, from: Timestamp, upto: Timestamp) -> Option<Timestamp> {
        for transition in self.tz.following(from) {
            let at = transition.timestamp();
            if at > upto {
                break;
            }
            let Some(old) = self.offset_before(at) else { continue };
            let new = transition.offset();
            if new <= old {
                continue;
            }
            let (skipped_from, skipped_to) = (old.to_datetime(at), new.to_datetime(at));
            if self
                .cron
                .find_next_occurrence(&skipped_from, true)
                .is_ok_and(|wall| wall < skipped_to)
            {
                return Some(at);
            }
        }
        None
    }

    /// When `at` is the second instant of a wall time repeated on fall-back,
    /// the end of that repeated stretch (the first instant after it).
    fn later_half_end(&self, at: Timestamp) -> Option<Timestamp> {
        let wall = self.tz.to_datetime(at);
        let ambiguous = self.tz.to_ambiguous_timestamp(wall);
        let AmbiguousOffset::Fold { before, after } = ambiguous.offset() else {
            return None;
        };
        if ambiguous.later().ok()? != at {
            return None;
        }
        let transition = self
            .tz
            .preceding(at.checked_add(SignedDuration::from_nanos(1)).ok()?)
            .next()?;
        let repeated = SignedDuration::from_secs(i64::from(before.seconds() - after.seconds()));
        transition.timestamp().checked_add(repeated).ok()
    }

    /// The offset in force just before `at`.
    fn offset_before(&self, at: Timestamp) -> Option<jiff::tz::Offset> {
        Some(self.tz.to_offset(at.checked_sub(SignedDuration::from_nanos(1)).ok()?))
    }
}

/// Resolves an IANA name, suggesting the full name for a bare city (`Berlin`).
fn parse_time_zone(name: &str) -> Result<TimeZone, ScheduleError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ScheduleError {
            key: "timezone",
            message: "time zone is empty".into(),
            fix: TIMEZONE_FIX.into(),
        });
    }
    TimeZone::get(name).map_err(|_| {
        let city = name.rsplit('/').next().unwrap_or(name).replace(' ', "_");
        let db = jiff::tz::db();
        let similar: Vec<String> = db
            .available()
            .filter(|known| {
                known
                    .as_str()
                    .rsplit('/')
                    .next()
                    .is_some_and(|c| c.eq_ignore_ascii_case(&city))
            })
            .take(3)
            .map(|known| format!("\"{}\"", known.as_str()))
            .collect();
        let fix = if similar.is_empty() {
            TIMEZONE_FIX.to_string()
        } else {
            format!("did you mean {}? {TIMEZONE_FIX}", similar.join(" or "))
        };
        ScheduleError {
            key: "timezone",
            message: format!("unknown time zone `{name}`"),
            fix,
        }
    })
}

/// Replaces an `@name` shortcut with its 5-field expression (a plain
/// expression is returned as it is); the fallback's unit generator reads the fields.
pub fn expand_nickname(cron: &str) -> Result<String, ScheduleError> {
    if !cron.starts_with('@') {
        return Ok(cron.to_string());
    }
    let expanded = match cron.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        "@reboot" => {
            return Err(cron_error("`@reboot` has no instants in a schedule".into(), CRON_FIX));
        }
        _ => {
            return Err(cron_error(
                format!("unknown cron shortcut `{cron}`"),
                "use @yearly, @monthly, @weekly, @daily or @hourly, or a 5-field expression such as \"0 * * * *\"",
            ));
        }
    };
    Ok(expanded.to_string())
}

/// Vixie matches a day on day-of-month OR day-of-week only when both fields
/// are restricted; a field starting with `*` (`*/2`) makes it AND. croner
/// treats only a bare `*` that way, so such a pair gets croner's `+` (AND).
fn vixie_day_rule(fields: &[&str]) -> String {
    let mut fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    let (dom, dow) = (fields.len() - 3, fields.len() - 1);
    let bare = |f: &str| f == "*" || f == "?";
    let starred = |f: &str| f.starts_with('*') || f.starts_with('?');
    if (starred(&fields[dom]) || starred(&fields[dow]))
        && !bare(&fields[dom])
        && !bare(&fields[dow])
        && !fields[dow].starts_with('+')
    {
        fields[dow].insert(0, '+');
    }
    fields.join(" ")
}

/// Checks the numbers of one field against its range, naming the field (croner's
/// own messages do not say which field is wrong).
fn check_field(text: &str, field: &Field) -> Result<(), ScheduleError> {
    let fix = || {
        format!(
            "use a {} between {} and {} (or `*`); {CRON_FIX}",
            field.name, field.min, field.max
        )
    };
    for item in text.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(step)),
            None => (item, None),
        };
        if let Some(step) = step
            && step.parse::<u64>().is_ok_and(|s| s == 0)
        {
            return Err(cron_error(format!("{} step `{item}` is zero", field.name), fix()));
        }
        for piece in base.trim_start_matches('+').split('-') {
            // Numbers may carry croner's suffixes (`5L`, `15W`, `5#2`); names are left to croner.
            let digits: String = piece.chars().take_while(|c| c.is_ascii_digit()).collect();
            if digits.is_empty() {
                continue;
            }
            let in_range = digits
                .parse::<u32>()
                .is_ok_and(|v| (field.min..=field.max).contains(&v));
            if !in_range {
                return Err(cron_error(
                    format!("{} {digits} is out of range {}-{}", field.name, field.min, field.max),
                    fix(),
                ));
            }
        }
    }
    Ok(())
}

/// Deterministic jitter in `[0, max)` for (activity, instant): every replica
/// computes the same offset, so the exactly-once fence is unaffected.
///
/// The hash (FNV-1a then a splitmix64 finaliser over the UUID bytes and the
/// instant's Unix nanoseconds) is written out here so that it never changes
/// with the Rust version: replicas on different builds must agree.
pub fn jitter(definition_id: Uuid, instant: Timestamp, max: Dur) -> Dur {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let max_ms = max.as_millis();
    if max_ms == 0 {
        return Dur::ZERO;
    }
    let nanos = instant.as_nanosecond().to_le_bytes();
    let hash = definition_id
        .as_bytes()
        .iter()
        .chain(nanos.iter())
        .fold(FNV_OFFSET, |h, &byte| (h ^ u64::from(byte)).wrapping_mul(FNV_PRIME));
    Dur::from_millis(splitmix64(hash) % max_ms)
}

/// splitmix64's finaliser: spreads FNV's weak low bits before the modulo.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One line of `actcore schedule preview` (docs/reference/cli.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PreviewEntry {
    /// RFC 3339 in UTC with `Z`.
    pub utc: String,
    /// RFC 3339 with the zone's offset.
    pub local: String,
    pub dst_transition_day: bool,
}

/// The next `count` instants strictly after `from`.
pub fn preview(schedule: &Schedule, from: Timestamp, count: usize) -> Vec<PreviewEntry> {
    let mut entries = Vec::with_capacity(count);
    let mut cursor = from;
    while entries.len() < count {
        let Some(at) = schedule.next_after(cursor) else { break };
        entries.push(PreviewEntry {
            utc: at.to_string(),
            local: at.display_with_offset(schedule.tz.to_offset(at)).to_string(),
            dst_transition_day: schedule.is_dst_transition_day(at),
        });
        cursor = at;
    }
    entries
}

// ---------------------------------------------------------------- shortest period

mod missed;
mod period;

#[cfg(test)]
use self::missed::last_at_or_before_counted;
pub use self::missed::{Missed, last_at_or_before, missed_between};
pub use self::period::{Period, shortest_period};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod period_tests;
