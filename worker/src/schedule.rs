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

/// Replaces an `@name` shortcut with its 5-field expression.
fn expand_nickname(cron: &str) -> Result<String, ScheduleError> {
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

/// Instants of `schedule` in `(after, upto]`: how many, the first and the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Missed {
    pub count: u64,
    pub first: Timestamp,
    pub last: Timestamp,
}

/// Counts the instants in `(after, upto]` (stops counting at `limit`, but
/// `last` is always the true last instant). None when there are none.
///
/// `count == limit` means "`limit` or more"; a `limit` of 0 counts as 1. The
/// work is about `limit` + 2·log2(seconds in the range) steps, so a day-long
/// outage of a per-second schedule stays cheap.
pub fn missed_between(schedule: &Schedule, after: Timestamp, upto: Timestamp, limit: u64) -> Option<Missed> {
    let first = schedule.next_after(after).filter(|t| *t <= upto)?;
    let mut count = 1;
    let mut last = first;
    while count < limit.max(1) {
        match schedule.next_after(last) {
            Some(next) if next <= upto => {
                count += 1;
                last = next;
            }
            _ => return Some(Missed { count, first, last }),
        }
    }
    let last = last_at_or_before(schedule, last, upto);
    Some(Missed { count, first, last })
}

/// The last instant `<= upto`, given an instant `known <= upto`, in a
/// logarithmic number of steps (see [`last_at_or_before_counted`]).
pub fn last_at_or_before(schedule: &Schedule, known: Timestamp, upto: Timestamp) -> Timestamp {
    last_at_or_before_counted(schedule, known, upto, &mut 0)
}

/// The last instant `<= upto`, given an instant `known <= upto`: gallops back
/// from `upto` then bisects, instead of stepping through every instant.
/// `probes` counts the `next_after` calls (tests bound it).
fn last_at_or_before_counted(schedule: &Schedule, known: Timestamp, upto: Timestamp, probes: &mut u32) -> Timestamp {
    let mut fires_by_upto = |x: Timestamp| {
        *probes += 1;
        schedule.next_after(x).is_some_and(|t| t <= upto)
    };
    // Invariant: an instant lies in (lo, upto], none lies in (hi, upto].
    let (mut lo, mut hi) = (known, upto);
    if !fires_by_upto(lo) {
        return known;
    }
    let mut back = SignedDuration::from_secs(1);
    while let Ok(x) = upto.checked_sub(back) {
        if x <= lo {
            break;
        }
        if fires_by_upto(x) {
            lo = x;
            break;
        }
        hi = x;
        back = back.checked_mul(2).unwrap_or(SignedDuration::MAX);
    }
    while hi.duration_since(lo) > SignedDuration::from_secs(1) {
        let mid = lo.checked_add(hi.duration_since(lo) / 2).unwrap_or(hi);
        if fires_by_upto(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // (lo, hi] is at most a second wide: one instant, as instants are whole
    // seconds; the loop only guards that assumption.
    let mut last = schedule.next_after(lo).unwrap_or(known);
    while let Some(next) = schedule.next_after(last).filter(|t| *t <= upto) {
        last = next;
    }
    last
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

#[cfg(test)]
mod tests {
    use super::*;

    const NEW_YORK: &str = "America/New_York";
    const BERLIN: &str = "Europe/Berlin";
    const LORD_HOWE: &str = "Australia/Lord_Howe";

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn schedule(cron: &str, tz: &str) -> Schedule {
        Schedule::new(cron, tz).unwrap_or_else(|e| panic!("{cron} in {tz}: {e}"))
    }

    /// The instants in `(from, upto]`, as UTC strings.
    fn fired(cron: &str, tz: &str, from: &str, upto: &str) -> Vec<String> {
        let s = schedule(cron, tz);
        let (mut at, upto) = (ts(from), ts(upto));
        let mut out = Vec::new();
        while let Some(next) = s.next_after(at).filter(|t| *t <= upto) {
            assert!(next > at, "{cron}: {next} is not after {at}");
            out.push(next.to_string());
            at = next;
        }
        out
    }

    /// Every `step` from `first` to `last` inclusive, as UTC strings.
    fn every(step_minutes: i64, first: &str, last: &str) -> Vec<String> {
        let (mut at, last) = (ts(first), ts(last));
        let mut out = Vec::new();
        while at <= last {
            out.push(at.to_string());
            at = at.checked_add(SignedDuration::from_mins(step_minutes)).unwrap();
        }
        out
    }

    /// The 2026 offset changes of a zone: (instant, offset before, offset after).
    fn transitions_2026(tz: &str) -> Vec<(String, i32, i32)> {
        let zone = TimeZone::get(tz).unwrap();
        zone.following(ts("2026-01-01T00:00:00Z"))
            .take_while(|t| t.timestamp() < ts("2027-01-01T00:00:00Z"))
            .map(|t| {
                let before = zone.to_offset(t.timestamp().checked_sub(SignedDuration::from_nanos(1)).unwrap());
                (
                    t.timestamp().to_string(),
                    before.seconds() / 60,
                    t.offset().seconds() / 60,
                )
            })
            .collect()
    }

    #[test]
    fn the_2026_transitions_used_below_come_from_the_tz_database() {
        // Minutes east of UTC before and after each change.
        assert_eq!(
            transitions_2026(NEW_YORK),
            [
                ("2026-03-08T07:00:00Z".into(), -300, -240),
                ("2026-11-01T06:00:00Z".into(), -240, -300)
            ]
        );
        assert_eq!(
            transitions_2026(BERLIN),
            [
                ("2026-03-29T01:00:00Z".into(), 60, 120),
                ("2026-10-25T01:00:00Z".into(), 120, 60)
            ]
        );
        // Lord Howe moves by 30 minutes: back on 5 April, forward on 4 October (local dates).
        assert_eq!(
            transitions_2026(LORD_HOWE),
            [
                ("2026-04-04T15:00:00Z".into(), 660, 630),
                ("2026-10-03T15:30:00Z".into(), 630, 660)
            ]
        );
    }

    #[test]
    fn croner_natively_handles_single_times_but_not_lists_under_a_fixed_hour() {
        // Why next_after corrects: croner treats `0,30 2` as an interval job.
        let cron = CronParser::builder().seconds(Seconds::Optional).build();
        let zone = TimeZone::get(NEW_YORK).unwrap();
        let walk = |expr: &str, from: &str, n: usize| {
            let cron = cron.parse(expr).unwrap();
            let mut at = ts(from).to_zoned(zone.clone());
            (0..n)
                .map(|_| {
                    at = cron.find_next_occurrence(&at, false).unwrap();
                    at.timestamp().to_string()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(walk("30 2 * * *", "2026-03-08T00:00:00Z", 1), ["2026-03-08T07:00:00Z"]);
        assert_eq!(
            walk("30 1 * * *", "2026-11-01T00:00:00Z", 2),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
        // The gap is skipped and the repeated hour fires twice.
        assert_eq!(
            walk("0,30 2 * * *", "2026-03-08T00:00:00Z", 1),
            ["2026-03-09T06:00:00Z"]
        );
        assert_eq!(
            walk("0,30 1 * * *", "2026-11-01T00:00:00Z", 4),
            [
                "2026-11-01T05:00:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-01T06:00:00Z",
                "2026-11-01T06:30:00Z"
            ]
        );
    }

    #[test]
    fn new_york_fixed_hour_in_the_spring_gap_fires_once_at_the_gap_end() {
        assert_eq!(
            fired("30 2 * * *", NEW_YORK, "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z"),
            ["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]
        );
        // Several matching times in the gap still fire once (corrected).
        assert_eq!(
            fired("0,30 2 * * *", NEW_YORK, "2026-03-07T12:00:00Z", "2026-03-09T12:00:00Z"),
            ["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z", "2026-03-09T06:30:00Z"]
        );
        assert_eq!(
            fired("*/15 2 * * *", NEW_YORK, "2026-03-08T00:00:00Z", "2026-03-08T23:00:00Z"),
            ["2026-03-08T07:00:00Z"]
        );
        // A time matching both the gap and its end (03:00) is one firing.
        assert_eq!(
            fired("0 2,3 * * *", NEW_YORK, "2026-03-08T00:00:00Z", "2026-03-08T23:00:00Z"),
            ["2026-03-08T07:00:00Z"]
        );
    }

    #[test]
    fn new_york_fixed_hour_repeated_on_fall_back_fires_once() {
        assert_eq!(
            fired("30 1 * * *", NEW_YORK, "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z"),
            ["2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
        assert_eq!(
            fired("0,30 1 * * *", NEW_YORK, "2026-11-01T00:00:00Z", "2026-11-02T12:00:00Z"),
            [
                "2026-11-01T05:00:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:00:00Z",
                "2026-11-02T06:30:00Z"
            ]
        );
        // Asked from inside the second 01:xx, the next firing is the next day.
        let s = schedule("30 1 * * *", NEW_YORK);
        assert_eq!(
            s.next_after(ts("2026-11-01T06:10:00Z")),
            Some(ts("2026-11-02T06:30:00Z"))
        );
        let s = schedule("*/15 1 * * *", NEW_YORK);
        assert_eq!(
            s.next_after(ts("2026-11-01T05:50:00Z")),
            Some(ts("2026-11-02T06:00:00Z"))
        );
    }

    #[test]
    fn new_york_wildcard_hour_follows_real_time() {
        assert_eq!(
            fired("*/15 * * * *", NEW_YORK, "2026-03-08T04:00:00Z", "2026-03-08T10:00:00Z"),
            every(15, "2026-03-08T04:15:00Z", "2026-03-08T10:00:00Z")
        );
        assert_eq!(
            fired("*/15 * * * *", NEW_YORK, "2026-11-01T03:00:00Z", "2026-11-01T09:00:00Z"),
            every(15, "2026-11-01T03:15:00Z", "2026-11-01T09:00:00Z")
        );
        assert_eq!(
            fired("0 * * * *", NEW_YORK, "2026-03-08T04:30:00Z", "2026-03-08T09:00:00Z"),
            every(60, "2026-03-08T05:00:00Z", "2026-03-08T09:00:00Z")
        );
        assert_eq!(
            fired("0 * * * *", NEW_YORK, "2026-11-01T03:30:00Z", "2026-11-01T09:00:00Z"),
            every(60, "2026-11-01T04:00:00Z", "2026-11-01T09:00:00Z")
        );
    }

    #[test]
    fn berlin_fixed_hour_on_both_transition_days() {
        assert_eq!(
            fired("30 2 * * *", BERLIN, "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
            ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
        );
        assert_eq!(
            fired("30 2 * * *", BERLIN, "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z"),
            ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        assert_eq!(
            fired(
                "0-59/20 2 * * *",
                BERLIN,
                "2026-10-24T12:00:00Z",
                "2026-10-25T12:00:00Z"
            ),
            ["2026-10-25T00:00:00Z", "2026-10-25T00:20:00Z", "2026-10-25T00:40:00Z"]
        );
    }

    #[test]
    fn berlin_wildcard_hour_follows_real_time() {
        for (from, upto) in [
            ("2026-03-28T22:00:00Z", "2026-03-29T04:00:00Z"),
            ("2026-10-24T22:00:00Z", "2026-10-25T04:00:00Z"),
        ] {
            let first = ts(from).checked_add(SignedDuration::from_mins(15)).unwrap().to_string();
            assert_eq!(fired("*/15 * * * *", BERLIN, from, upto), every(15, &first, upto));
            let first = ts(from).checked_add(SignedDuration::from_hours(1)).unwrap().to_string();
            assert_eq!(fired("0 * * * *", BERLIN, from, upto), every(60, &first, upto));
        }
    }

    #[test]
    fn lord_howe_half_hour_shift() {
        // Spring (4 Oct local): 02:00-02:29 does not exist.
        assert_eq!(
            fired("15 2 * * *", LORD_HOWE, "2026-10-02T12:00:00Z", "2026-10-05T00:00:00Z"),
            ["2026-10-02T15:45:00Z", "2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"]
        );
        // Autumn (5 Apr local): 01:30-01:59 happens twice.
        assert_eq!(
            fired("45 1 * * *", LORD_HOWE, "2026-04-03T12:00:00Z", "2026-04-06T00:00:00Z"),
            ["2026-04-03T14:45:00Z", "2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"]
        );
        assert_eq!(
            fired(
                "*/15 * * * *",
                LORD_HOWE,
                "2026-10-03T12:00:00Z",
                "2026-10-03T18:00:00Z"
            ),
            every(15, "2026-10-03T12:15:00Z", "2026-10-03T18:00:00Z")
        );
        assert_eq!(
            fired(
                "*/15 * * * *",
                LORD_HOWE,
                "2026-04-04T12:00:00Z",
                "2026-04-04T18:00:00Z"
            ),
            every(15, "2026-04-04T12:15:00Z", "2026-04-04T18:00:00Z")
        );
        // Hourly: the wall clock never shows 02:00 at the old offset, so the
        // step across each change is 90 minutes, with no duplicate.
        assert_eq!(
            fired("0 * * * *", LORD_HOWE, "2026-10-03T13:00:00Z", "2026-10-03T17:00:00Z"),
            [
                "2026-10-03T13:30:00Z",
                "2026-10-03T14:30:00Z",
                "2026-10-03T16:00:00Z",
                "2026-10-03T17:00:00Z"
            ]
        );
        assert_eq!(
            fired("0 * * * *", LORD_HOWE, "2026-04-04T12:30:00Z", "2026-04-04T16:30:00Z"),
            [
                "2026-04-04T13:00:00Z",
                "2026-04-04T14:00:00Z",
                "2026-04-04T15:30:00Z",
                "2026-04-04T16:30:00Z"
            ]
        );
    }

    /// An independent statement of `vixie`, checked minute by minute around
    /// every 2026 transition of several zones against `next_after`.
    #[test]
    fn matches_a_brute_force_reference_around_every_transition() {
        let patterns = [
            "*/15 * * * *",
            "0 * * * *",
            "30 * * * *",
            "0 */2 * * *",
            "30 2 * * *",
            "30 1 * * *",
            "15 2 * * *",
            "45 1 * * *",
            "0,30 2 * * *",
            "0,30 1 * * *",
            "*/15 1 * * *",
            "*/10 2 * * *",
            "* 2 * * *",
            "0 0-3 * * *",
            "5 1-3 * * *",
            "0 0 * * *",
        ];
        for zone in [NEW_YORK, BERLIN, LORD_HOWE, "America/Havana", "America/Santiago", "UTC"] {
            let tz = TimeZone::get(zone).unwrap();
            let mut centres: Vec<Timestamp> = tz
                .following(ts("2026-01-01T00:00:00Z"))
                .take_while(|t| t.timestamp() < ts("2027-01-01T00:00:00Z"))
                .map(|t| t.timestamp())
                .collect();
            centres.push(ts("2026-06-15T12:00:00Z"));
            for expr in patterns {
                let s = schedule(expr, zone);
                for centre in &centres {
                    let start = centre.checked_sub(SignedDuration::from_hours(8)).unwrap();
                    let end = centre.checked_add(SignedDuration::from_hours(8)).unwrap();
                    let expected = reference(&s, expr, start, end);
                    let mut actual = Vec::new();
                    let mut at = start;
                    while let Some(next) = s.next_after(at).filter(|t| *t <= end) {
                        actual.push(next);
                        at = next;
                    }
                    assert_eq!(actual, expected, "{expr} in {zone} around {centre}");
                }
            }
        }
    }

    /// Every whole minute in `(start, end]` whose wall time matches; with a
    /// fixed hour, not the second of a repeated time, plus each gap end whose
    /// skipped wall minutes match.
    fn reference(s: &Schedule, expr: &str, start: Timestamp, end: Timestamp) -> Vec<Timestamp> {
        let tz = s.time_zone();
        let fixed_hour = !expr.split_whitespace().nth(1).unwrap().starts_with('*');
        let matches = |wall: DateTime| s.cron.is_time_matching(&wall).unwrap();
        let mut out = Vec::new();
        let mut at = start.checked_add(SignedDuration::from_mins(1)).unwrap();
        while at <= end {
            let wall = tz.to_datetime(at);
            let ambiguous = tz.to_ambiguous_timestamp(wall);
            let second_of_repeat =
                matches!(ambiguous.offset(), AmbiguousOffset::Fold { .. }) && ambiguous.later().unwrap() == at;
            let mut fires = matches(wall) && !(fixed_hour && second_of_repeat);
            let before = tz.to_offset(at.checked_sub(SignedDuration::from_secs(1)).unwrap());
            let now = tz.to_offset(at);
            if fixed_hour && now > before {
                let mut skipped = before.to_datetime(at);
                while skipped < now.to_datetime(at) {
                    fires |= matches(skipped);
                    skipped = skipped.checked_add(SignedDuration::from_mins(1)).unwrap();
                }
            }
            if fires {
                out.push(at);
            }
            at = at.checked_add(SignedDuration::from_mins(1)).unwrap();
        }
        out
    }

    #[test]
    fn seconds_field() {
        let s = schedule("*/10 * * * * *", "UTC");
        assert!(s.has_seconds());
        assert!(!schedule("* * * * *", "UTC").has_seconds());
        assert_eq!(
            s.next_after(ts("2026-01-01T12:00:00.5Z")),
            Some(ts("2026-01-01T12:00:10Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-01-01T12:00:00Z")),
            Some(ts("2026-01-01T12:00:10Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-01-01T12:00:09.999Z")),
            Some(ts("2026-01-01T12:00:10Z"))
        );

        let every_second = schedule("* * * * * *", "UTC");
        assert_eq!(
            every_second.next_after(ts("2026-01-01T12:00:00.5Z")),
            Some(ts("2026-01-01T12:00:01Z"))
        );
        assert_eq!(
            every_second.next_after(ts("2026-01-01T12:00:00Z")),
            Some(ts("2026-01-01T12:00:01Z"))
        );

        let noon = schedule("0 12 * * *", "UTC");
        assert_eq!(
            noon.next_after(ts("2026-01-01T12:00:00Z")),
            Some(ts("2026-01-02T12:00:00Z"))
        );
        assert_eq!(
            noon.next_after(ts("2026-01-01T11:59:59.999Z")),
            Some(ts("2026-01-01T12:00:00Z"))
        );

        // Seconds under a fixed hour follow the same DST rules.
        assert_eq!(
            fired(
                "*/20 30 1 * * *",
                NEW_YORK,
                "2026-11-01T00:00:00Z",
                "2026-11-01T23:00:00Z"
            ),
            ["2026-11-01T05:30:00Z", "2026-11-01T05:30:20Z", "2026-11-01T05:30:40Z"]
        );
        assert_eq!(
            fired(
                "*/20 30 2 * * *",
                NEW_YORK,
                "2026-03-08T00:00:00Z",
                "2026-03-08T23:00:00Z"
            ),
            ["2026-03-08T07:00:00Z"]
        );
        assert_eq!(
            fired("15 0 */6 * * *", BERLIN, "2026-10-24T20:00:00Z", "2026-10-25T12:00:00Z"),
            ["2026-10-24T22:00:15Z", "2026-10-25T05:00:15Z", "2026-10-25T11:00:15Z"]
        );
    }

    #[test]
    fn shortcuts_and_names() {
        let hourly = schedule("@hourly", "UTC");
        assert!(!hourly.has_seconds());
        assert_eq!(
            hourly.next_after(ts("2026-01-01T12:00:00Z")),
            Some(ts("2026-01-01T13:00:00Z"))
        );
        // 2026-01-01 is a Thursday.
        let weekdays = schedule("0 9 * * mon-fri", "UTC");
        assert_eq!(
            weekdays.next_after(ts("2026-01-02T10:00:00Z")),
            Some(ts("2026-01-05T09:00:00Z"))
        );
        // Vixie's day rule: OR when both day fields are restricted, AND when one starts with `*`.
        assert_eq!(
            fired("0 0 1 * 1", "UTC", "2025-12-31T00:00:00Z", "2026-01-13T00:00:00Z"),
            ["2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"]
        );
        assert_eq!(
            fired("0 0 */2 * 1", "UTC", "2025-12-31T00:00:00Z", "2026-01-31T00:00:00Z"),
            ["2026-01-05T00:00:00Z", "2026-01-19T00:00:00Z"]
        );
        assert_eq!(
            // `*/7` is 0 and 7: Sunday. Sundays the 13th in 2026.
            fired("0 0 13 * */7", "UTC", "2025-12-31T00:00:00Z", "2026-12-31T00:00:00Z"),
            ["2026-09-13T00:00:00Z", "2026-12-13T00:00:00Z"]
        );
        let weekly = schedule("@weekly", "UTC");
        assert_eq!(
            weekly.next_after(ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-01-04T00:00:00Z"))
        );
    }

    #[track_caller]
    fn refused(cron: &str, tz: &str, key: &str, in_message: &str, in_fix: &str) {
        let error = Schedule::new(cron, tz).expect_err(cron);
        assert_eq!(error.key, key, "{error}");
        assert!(error.message.contains(in_message), "{cron:?}: {error}");
        assert!(error.fix.contains(in_fix), "{cron:?}: {error}");
    }

    #[test]
    fn bad_input_names_the_key_the_problem_and_a_fix() {
        refused("* * * *", "UTC", "cron", "got 4", "*/15 * * * *");
        refused("0 0 0 * * * 2026", "UTC", "cron", "got 7", "min hour day-of-month");
        refused("", "UTC", "cron", "empty", "*/15 * * * *");
        refused(
            "60 * * * *",
            "UTC",
            "cron",
            "minute 60 is out of range 0-59",
            "between 0 and 59",
        );
        refused(
            "0 24 * * *",
            "UTC",
            "cron",
            "hour 24 is out of range 0-23",
            "between 0 and 23",
        );
        refused("0 1-24 * * *", "UTC", "cron", "hour 24", "hour");
        refused(
            "61 * * * * *",
            "UTC",
            "cron",
            "second 61 is out of range 0-59",
            "second",
        );
        refused(
            "0 0 32 * *",
            "UTC",
            "cron",
            "day-of-month 32 is out of range 1-31",
            "day-of-month",
        );
        refused("0 0 0 * *", "UTC", "cron", "day-of-month 0", "between 1 and 31");
        refused("0 0 * 13 *", "UTC", "cron", "month 13", "between 1 and 12");
        refused(
            "0 0 * * 8",
            "UTC",
            "cron",
            "day-of-week 8 is out of range 0-7",
            "day-of-week",
        );
        refused("*/0 * * * *", "UTC", "cron", "step `*/0` is zero", "minute");
        refused("x * * * *", "UTC", "cron", "is invalid", "*/15 * * * *");
        refused("5/10 * * * *", "UTC", "cron", "is invalid", "*/15 * * * *");
        refused("0 0 30 2 *", "UTC", "cron", "never matches", "February");
        refused("@reboot", "UTC", "cron", "@reboot", "*/15 * * * *");
        refused("@often", "UTC", "cron", "unknown cron shortcut", "@hourly");
        refused(
            "* * * * *",
            "Mars/Olympus_Mons",
            "timezone",
            "unknown time zone `Mars/Olympus_Mons`",
            "Europe/Berlin",
        );
        refused("* * * * *", "", "timezone", "empty", "Europe/Berlin");
        refused(
            "* * * * *",
            "Berlin",
            "timezone",
            "`Berlin`",
            "did you mean \"Europe/Berlin\"",
        );
        refused("* * * * *", "+02:00", "timezone", "unknown", "IANA");
    }

    #[test]
    fn dst_transition_days() {
        let ny = schedule("0 * * * *", NEW_YORK);
        for (at, expected) in [
            ("2026-03-08T05:00:00Z", true),  // 00:00 EST, the start of the day
            ("2026-03-09T03:59:00Z", true),  // 23:59 EDT, same civil day
            ("2026-03-09T04:00:00Z", false), // 00:00 EDT, the next day
            ("2026-03-08T04:59:00Z", false), // 23:59 EST, the day before
            ("2026-11-01T12:00:00Z", true),
            ("2026-11-02T12:00:00Z", false),
            ("2026-07-01T12:00:00Z", false),
        ] {
            assert_eq!(ny.is_dst_transition_day(ts(at)), expected, "{at}");
        }
        let lord_howe = schedule("0 * * * *", LORD_HOWE);
        assert!(lord_howe.is_dst_transition_day(ts("2026-10-04T01:00:00Z")));
        assert!(!lord_howe.is_dst_transition_day(ts("2026-10-05T01:00:00Z")));
        assert!(!schedule("0 * * * *", "UTC").is_dst_transition_day(ts("2026-03-08T07:00:00Z")));
        // Havana changes at midnight: the day that starts at 01:00 is the transition day.
        let havana = schedule("0 * * * *", "America/Havana");
        let (change, _, _) = transitions_2026("America/Havana")[0].clone();
        assert!(havana.is_dst_transition_day(ts(&change)));
        assert!(!havana.is_dst_transition_day(ts(&change).checked_sub(SignedDuration::from_secs(1)).unwrap()));
    }

    #[test]
    fn jitter_is_deterministic_in_range_and_spread() {
        let id = Uuid::from_u128(0x7c4e9a12_8f3b_4d5e_9c6a_1b2d3e4f5a6b);
        let other = Uuid::from_u128(0x11111111_2222_3333_4444_555555555555);
        let max = Dur::from_secs(30);
        let at = ts("2026-03-08T07:00:00Z");
        assert_eq!(jitter(id, at, max), jitter(id, at, max));
        assert_eq!(jitter(id, at, Dur::ZERO), Dur::ZERO);
        assert_eq!(jitter(id, at, Dur::from_millis(1)), Dur::ZERO);
        // Pinned: every replica and every future build must compute these.
        assert_eq!(jitter(id, at, max), Dur::from_millis(PINNED_JITTER_MS));

        let instants: Vec<Timestamp> = (0..1000)
            .map(|i| at.checked_add(SignedDuration::from_mins(15 * i)).unwrap())
            .collect();
        let values: Vec<u64> = instants.iter().map(|t| jitter(id, *t, max).as_millis()).collect();
        assert!(values.iter().all(|v| *v < max.as_millis()));
        let mut distinct = values.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 900, "only {} distinct values", distinct.len());
        // Both halves of the range are used.
        assert!(values.iter().any(|v| *v < 15_000) && values.iter().any(|v| *v >= 15_000));
        let differs = instants
            .iter()
            .filter(|t| jitter(id, **t, max) != jitter(other, **t, max))
            .count();
        assert!(differs > 990, "ids agree on {} of 1000 instants", 1000 - differs);
    }

    /// FNV-1a over the 16 UUID bytes and the i128 little-endian Unix
    /// nanoseconds, splitmix64-finalised, modulo 30 000 (cross-checked by hand).
    const PINNED_JITTER_MS: u64 = 11_935;

    #[test]
    fn missed_between_counts_with_a_limit_and_keeps_the_true_last() {
        let s = schedule("*/15 * * * *", "UTC");
        let m = missed_between(&s, ts("2026-01-01T12:00:00Z"), ts("2026-01-01T13:00:00Z"), 100).unwrap();
        assert_eq!(
            m,
            Missed {
                count: 4,
                first: ts("2026-01-01T12:15:00Z"),
                last: ts("2026-01-01T13:00:00Z")
            }
        );
        let m = missed_between(&s, ts("2026-01-01T12:00:00Z"), ts("2026-01-01T13:00:00Z"), 2).unwrap();
        assert_eq!(
            m,
            Missed {
                count: 2,
                first: ts("2026-01-01T12:15:00Z"),
                last: ts("2026-01-01T13:00:00Z")
            }
        );
        assert_eq!(
            missed_between(&s, ts("2026-01-01T12:00:00Z"), ts("2026-01-01T12:14:59Z"), 10),
            None
        );
        assert_eq!(
            missed_between(&s, ts("2026-01-01T12:00:00Z"), ts("2026-01-01T12:00:00Z"), 10),
            None
        );

        // A day-long outage of a per-second schedule, capped.
        let s = schedule("* * * * * *", "UTC");
        let m = missed_between(&s, ts("2026-01-01T00:00:00Z"), ts("2026-01-02T00:00:00.7Z"), 50).unwrap();
        assert_eq!(
            m,
            Missed {
                count: 50,
                first: ts("2026-01-01T00:00:01Z"),
                last: ts("2026-01-02T00:00:00Z")
            }
        );
        let m = missed_between(&s, ts("2026-01-01T00:00:00Z"), ts("2026-01-01T00:00:10Z"), 1000).unwrap();
        assert_eq!(m.count, 10);

        // A monthly schedule over a year, and the fall-back rule inside the range.
        let monthly = schedule("0 9 1 * *", BERLIN);
        let m = missed_between(&monthly, ts("2026-01-01T00:00:00Z"), ts("2026-12-31T00:00:00Z"), 5).unwrap();
        assert_eq!(
            m,
            Missed {
                count: 5,
                first: ts("2026-01-01T08:00:00Z"),
                last: ts("2026-12-01T08:00:00Z")
            }
        );
        let m = missed_between(
            &schedule("30 1 * * *", NEW_YORK),
            ts("2026-11-01T00:00:00Z"),
            ts("2026-11-01T12:00:00Z"),
            1,
        )
        .unwrap();
        assert_eq!(
            m,
            Missed {
                count: 1,
                first: ts("2026-11-01T05:30:00Z"),
                last: ts("2026-11-01T05:30:00Z")
            }
        );
    }

    #[test]
    fn finding_the_last_instant_does_not_step_through_a_long_range() {
        let s = schedule("* * * * * *", "UTC");
        let mut probes = 0;
        let last = last_at_or_before_counted(
            &s,
            ts("2016-01-01T00:00:01Z"),
            ts("2026-01-01T00:00:00.5Z"),
            &mut probes,
        );
        assert_eq!(last, ts("2026-01-01T00:00:00Z"));
        assert!(probes < 10, "{probes} probes");

        let daily = schedule("0 3 * * *", "UTC");
        let mut probes = 0;
        let last = last_at_or_before_counted(
            &daily,
            ts("2016-01-01T03:00:00Z"),
            ts("2026-01-01T02:59:59Z"),
            &mut probes,
        );
        assert_eq!(last, ts("2025-12-31T03:00:00Z"));
        assert!(probes < 60, "{probes} probes");

        // The gap end of a fixed-hour schedule is a real instant to find.
        let gap = schedule("0,30 2 * * *", NEW_YORK);
        let mut probes = 0;
        let last = last_at_or_before_counted(
            &gap,
            ts("2026-01-01T07:00:00Z"),
            ts("2026-03-08T12:00:00Z"),
            &mut probes,
        );
        assert_eq!(last, ts("2026-03-08T07:00:00Z"));
    }

    #[test]
    fn preview_lists_utc_local_and_transition_days() {
        let s = schedule("30 2 * * *", NEW_YORK);
        assert_eq!(
            preview(&s, ts("2026-03-07T12:00:00Z"), 2),
            [
                PreviewEntry {
                    utc: "2026-03-08T07:00:00Z".into(),
                    local: "2026-03-08T03:00:00-04:00".into(),
                    dst_transition_day: true,
                },
                PreviewEntry {
                    utc: "2026-03-09T06:30:00Z".into(),
                    local: "2026-03-09T02:30:00-04:00".into(),
                    dst_transition_day: false,
                },
            ]
        );
        assert!(preview(&s, ts("2026-03-07T12:00:00Z"), 0).is_empty());
        let lord_howe = preview(&schedule("*/15 * * * *", LORD_HOWE), ts("2026-10-03T15:00:00Z"), 3);
        assert_eq!(lord_howe[0].local, "2026-10-04T01:45:00+10:30");
        assert_eq!(lord_howe[1].local, "2026-10-04T02:30:00+11:00");
        assert_eq!(lord_howe[1].utc, "2026-10-03T15:30:00Z");
        assert_eq!(lord_howe[2].local, "2026-10-04T02:45:00+11:00");
        let utc = preview(&schedule("0 0 1 1 *", "UTC"), ts("2026-06-01T00:00:00Z"), 1);
        assert_eq!(utc[0].utc, "2027-01-01T00:00:00Z");
        assert_eq!(utc[0].local, "2027-01-01T00:00:00+00:00");
    }
}

// ---------------------------------------------------------------- shortest period

/// The shortest time between two consecutive instants, and where it falls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub length: SignedDuration,
    pub from: Timestamp,
    pub to: Timestamp,
}

/// The shortest time between two consecutive instants after `from`, or None
/// when fewer than two fall within eight years (`0 0 29 2 *` has two).
///
/// Bounded work, about 300 instants (a millisecond) whatever the schedule:
/// the first 256 instants (within eight years, two leap cycles) give its rhythm, and the
/// instants around each UTC-offset change of the following year give what
/// DST does to it (a fixed-hour time in a spring-forward gap fires at the
/// gap's end, close to the instant before; a half-hour shift brings
/// wildcard-hour instants closer).
pub fn shortest_period(schedule: &Schedule, from: Timestamp) -> Option<Period> {
    let horizon = |days: i64| {
        from.checked_add(SignedDuration::from_hours(24 * days))
            .unwrap_or(Timestamp::MAX)
    };
    let (sample_end, dst_end) = (horizon(8 * 366), horizon(366));
    let mut shortest: Option<Period> = None;
    let mut walk = |start: Timestamp, count: usize| {
        let Some(mut prev) = schedule.next_after(start).filter(|t| *t <= sample_end) else {
            return;
        };
        for _ in 0..count {
            let Some(next) = schedule.next_after(prev).filter(|t| *t <= sample_end) else {
                return;
            };
            let length = next.duration_since(prev);
            if shortest.is_none_or(|s| length < s.length) {
                shortest = Some(Period {
                    length,
                    from: prev,
                    to: next,
                });
            }
            prev = next;
        }
    };
    walk(from, 256);
    for transition in schedule.tz.following(from) {
        let at = transition.timestamp();
        if at > dst_end {
            break;
        }
        if let Some(before) = instant_before(schedule, at, from) {
            walk(before.checked_sub(SignedDuration::from_nanos(1)).unwrap_or(before), 8);
        }
    }
    shortest
}

/// The last instant in `(floor, at)`: gallops back from `at`, then bisects.
fn instant_before(schedule: &Schedule, at: Timestamp, floor: Timestamp) -> Option<Timestamp> {
    let mut back = SignedDuration::from_secs(1);
    loop {
        let probe = at.checked_sub(back).ok()?.max(floor);
        if let Some(known) = schedule.next_after(probe).filter(|t| *t < at) {
            let upto = at.checked_sub(SignedDuration::from_nanos(1)).ok()?;
            return Some(last_at_or_before(schedule, known, upto));
        }
        if probe == floor {
            return None;
        }
        back = back.checked_mul(2)?;
    }
}

#[cfg(test)]
mod period_tests {
    use super::*;

    fn period(cron: &str, tz: &str, from: &str) -> Option<(String, String, String)> {
        let s = Schedule::new(cron, tz).unwrap();
        shortest_period(&s, from.parse().unwrap()).map(|p| {
            let length = format!("{:#}", p.length);
            (length, p.from.to_string(), p.to.to_string())
        })
    }

    fn length(cron: &str, tz: &str) -> String {
        period(cron, tz, "2026-01-01T00:00:00Z").unwrap().0
    }

    #[test]
    fn the_rhythm_of_ordinary_schedules() {
        assert_eq!(length("* * * * * *", "UTC"), "1s");
        assert_eq!(length("*/15 * * * *", "America/New_York"), "15m");
        assert_eq!(length("*/7 * * * *", "UTC"), "4m", "56 → 0 across the hour");
        assert_eq!(length("0 9 * * 1-5", "UTC"), "24h");
        assert_eq!(length("0 0 1 * *", "UTC"), "672h", "February");
        assert_eq!(length("0 0 1 1 *", "UTC"), "8760h");
    }

    #[test]
    fn a_leap_day_schedule_has_a_period_of_four_years_and_none_within_one_instant() {
        assert_eq!(
            period("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z"),
            Some((
                "35064h".into(),
                "2028-02-29T00:00:00Z".into(),
                "2032-02-29T00:00:00Z".into()
            ))
        );
        // 2096 → 2104: 2100 is not a leap year, and eight years hold one instant.
        assert_eq!(period("0 0 29 2 *", "UTC", "2096-03-01T00:00:00Z"), None);
    }

    #[test]
    fn dst_shortens_the_period_where_it_happens() {
        // 01:30 EST, then 02:30 falls in the gap and fires at its end, 03:00 EDT.
        assert_eq!(
            period("30 1,2 * * *", "America/New_York", "2026-01-01T00:00:00Z"),
            Some((
                "30m".into(),
                "2026-03-08T06:30:00Z".into(),
                "2026-03-08T07:00:00Z".into()
            ))
        );
        // Lord Howe moves by half an hour: an hourly wildcard instant comes 30 minutes early.
        assert_eq!(length("30 * * * *", "Australia/Lord_Howe"), "30m");
        // A daily time loses an hour on spring-forward day.
        assert_eq!(length("0 3 * * *", "America/New_York"), "23h");
        assert_eq!(length("0 3 * * *", "UTC"), "24h");
    }
}
