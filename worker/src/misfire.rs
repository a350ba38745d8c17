//! Pure: what to do with an instant that has come due, given how late it
//! was noticed (docs/reference/scheduling.md, `misfire = "skip" | "fire_once"`).

use jiff::{SignedDuration, Timestamp};

use crate::definition::{Misfire, ScheduleSpec};
use crate::schedule::{Missed, Schedule, missed_between};

/// The decision for one due instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The instant to claim and execute, if any.
    pub fire: Option<Timestamp>,
    /// Instants not fired, to record as one `skipped_misfire` row.
    pub missed: Option<Missed>,
    /// The next instant is the first one strictly after this.
    pub resume_after: Timestamp,
}

/// Most instants one summary row counts exactly (a larger outage says "at least").
pub const MISSED_COUNT_LIMIT: u64 = 100_000;

/// Within the grace an instant fires, however late. Past it, every instant
/// from this one up to `now − grace` is missed: `skip` records them and
/// fires none; `fire_once` fires the latest of them if it is within the
/// catch-up window and records the rest.
pub fn decide(schedule: &Schedule, spec: &ScheduleSpec, instant: Timestamp, now: Timestamp) -> Decision {
    let grace = spec.misfire_grace.signed();
    if now.duration_since(instant) <= grace {
        return Decision {
            fire: Some(instant),
            missed: None,
            resume_after: instant,
        };
    }
    let missed = missed_between(
        schedule,
        instant - SignedDuration::from_nanos(1),
        now - grace,
        MISSED_COUNT_LIMIT,
    )
    .unwrap_or(Missed {
        count: 1,
        first: instant,
        last: instant,
    });
    let catch_up = match (spec.misfire, spec.catchup_window) {
        (Misfire::FireOnce, Some(window)) => now.duration_since(missed.last) <= window.signed(),
        _ => false,
    };
    if !catch_up {
        return Decision {
            fire: None,
            missed: Some(missed),
            resume_after: missed.last,
        };
    }
    // The rest (all but the latest) are recorded; `last` keeps the true
    // previous instant so the summary's fence key is not the fired one.
    let rest = (missed.count > 1).then(|| {
        let previous = missed_between(
            schedule,
            instant - SignedDuration::from_nanos(1),
            missed.last - SignedDuration::from_nanos(1),
            MISSED_COUNT_LIMIT,
        );
        previous.unwrap_or(Missed {
            count: missed.count - 1,
            first: missed.first,
            last: missed.first,
        })
    });
    Decision {
        fire: Some(missed.last),
        missed: rest,
        resume_after: missed.last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::sample;

    fn spec(misfire: Misfire, window: Option<&str>) -> (Schedule, ScheduleSpec) {
        let mut d = sample(uuid::Uuid::nil(), "m", "* * * * *", "http://127.0.0.1:9/");
        d.schedule.misfire = misfire;
        d.schedule.catchup_window = window.map(|w| w.parse().unwrap());
        (d.parsed_schedule().unwrap(), d.schedule)
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn within_the_grace_fires_even_if_late() {
        let (s, sp) = spec(Misfire::Skip, None);
        let d = decide(&s, &sp, t("2026-01-01T10:00:00Z"), t("2026-01-01T10:00:59Z"));
        assert_eq!(d.fire, Some(t("2026-01-01T10:00:00Z")));
        assert_eq!(d.missed, None);
    }

    #[test]
    fn skip_records_the_whole_outage_in_one_summary_and_fires_nothing() {
        let (s, sp) = spec(Misfire::Skip, None);
        // Down from 10:00 to 10:30:30: instants 10:00..=10:29 are past the 60 s grace, 10:30 is not.
        let d = decide(&s, &sp, t("2026-01-01T10:00:00Z"), t("2026-01-01T10:30:30Z"));
        assert_eq!(d.fire, None);
        let m = d.missed.unwrap();
        assert_eq!(
            (m.count, m.first, m.last),
            (30, t("2026-01-01T10:00:00Z"), t("2026-01-01T10:29:00Z"))
        );
        assert_eq!(
            d.resume_after,
            t("2026-01-01T10:29:00Z"),
            "10:30 is next, and still within its grace"
        );
    }

    #[test]
    fn fire_once_fires_the_latest_inside_the_window_and_records_the_rest() {
        let (s, sp) = spec(Misfire::FireOnce, Some("1h"));
        let d = decide(&s, &sp, t("2026-01-01T10:00:00Z"), t("2026-01-01T10:30:30Z"));
        assert_eq!(d.fire, Some(t("2026-01-01T10:29:00Z")));
        let rest = d.missed.unwrap();
        assert_eq!(
            (rest.count, rest.first, rest.last),
            (29, t("2026-01-01T10:00:00Z"), t("2026-01-01T10:28:00Z"))
        );
    }

    #[test]
    fn fire_once_outside_the_window_behaves_like_skip() {
        let (s, sp) = spec(Misfire::FireOnce, Some("30s"));
        let d = decide(&s, &sp, t("2026-01-01T10:00:00Z"), t("2026-01-01T12:00:30Z"));
        assert_eq!(d.fire, None);
        assert_eq!(d.missed.unwrap().count, 120);
    }
}
