//! Pure: what to do with an instant that has come due, given how late it
//! was noticed (docs/reference/scheduling.md, `misfire = "skip" | "fire_once"`).

use jiff::{SignedDuration, Timestamp};

use crate::definition::{Misfire, ScheduleSpec};
use crate::schedule::{Missed, Schedule, last_at_or_before, missed_between};

/// The decision for one due instant. Cheap by design (it runs on the
/// firing path): the instants missed are described as a range, and whoever
/// records them counts them ([`MissedRange::count`]) off that path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The instant to claim and execute, if any.
    pub fire: Option<Timestamp>,
    /// Instants not fired, to record as one `skipped_misfire` row.
    pub missed: Option<MissedRange>,
    /// The next instant is the first one strictly after this.
    pub resume_after: Timestamp,
}

/// The instants of a schedule in `(after, upto]`, not yet counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissedRange {
    pub after: Timestamp,
    pub upto: Timestamp,
}

impl MissedRange {
    /// How many instants, the first and the last (None if there are none).
    pub fn count(&self, schedule: &Schedule) -> Option<Missed> {
        missed_between(schedule, self.after, self.upto, MISSED_COUNT_LIMIT)
    }

    /// `(self.after, other.upto]` when `other` starts where `self` ends.
    pub fn join(&self, other: &MissedRange) -> Option<MissedRange> {
        (other.after == self.upto).then_some(MissedRange {
            after: self.after,
            upto: other.upto,
        })
    }
}

/// Most instants one summary row counts exactly (a larger outage says "at least").
pub const MISSED_COUNT_LIMIT: u64 = 100_000;

/// Lateness is counted from the instant's fire time (`fire`: the instant
/// plus its jitter), so a jitter never eats into the grace. Within the
/// grace the instant fires, however late. Past it, every instant from this
/// one up to `now − grace` is missed: `skip` records them and fires none;
/// `fire_once` fires the latest of them if it is within the catch-up
/// window and records the rest.
pub fn decide(
    schedule: &Schedule,
    spec: &ScheduleSpec,
    instant: Timestamp,
    fire: Timestamp,
    now: Timestamp,
) -> Decision {
    let grace = spec.misfire_grace.signed();
    if now.duration_since(fire) <= grace {
        return Decision {
            fire: Some(instant),
            missed: None,
            resume_after: instant,
        };
    }
    let before_instant = instant - SignedDuration::from_nanos(1);
    let upto = (now - grace).max(instant);
    let catch_up = match (spec.misfire, spec.catchup_window) {
        (Misfire::FireOnce, Some(window)) => {
            let last = last_at_or_before(schedule, instant, upto);
            (now.duration_since(last) <= window.signed()).then_some(last)
        }
        _ => None,
    };
    match catch_up {
        None => Decision {
            fire: None,
            missed: Some(MissedRange {
                after: before_instant,
                upto,
            }),
            resume_after: upto,
        },
        // The rest (all but the latest) are recorded under their own last
        // instant, so the summary's fence key is not the fired one.
        Some(last) => Decision {
            fire: Some(last),
            missed: (last > instant).then(|| MissedRange {
                after: before_instant,
                upto: last - SignedDuration::from_nanos(1),
            }),
            resume_after: upto,
        },
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

    /// `decide` for an instant without jitter (fire time = instant).
    fn unjittered(s: &Schedule, sp: &ScheduleSpec, instant: &str, now: &str) -> Decision {
        decide(s, sp, t(instant), t(instant), t(now))
    }

    #[test]
    fn within_the_grace_fires_even_if_late() {
        let (s, sp) = spec(Misfire::Skip, None);
        let d = unjittered(&s, &sp, "2026-01-01T10:00:00Z", "2026-01-01T10:00:59Z");
        assert_eq!(d.fire, Some(t("2026-01-01T10:00:00Z")));
        assert_eq!(d.missed, None);
    }

    #[test]
    fn skip_records_the_whole_outage_in_one_summary_and_fires_nothing() {
        let (s, sp) = spec(Misfire::Skip, None);
        // Down from 10:00 to 10:30:30: instants 10:00..=10:29 are past the 60 s grace, 10:30 is not.
        let d = unjittered(&s, &sp, "2026-01-01T10:00:00Z", "2026-01-01T10:30:30Z");
        assert_eq!(d.fire, None);
        let m = d.missed.unwrap().count(&s).unwrap();
        assert_eq!(
            (m.count, m.first, m.last),
            (30, t("2026-01-01T10:00:00Z"), t("2026-01-01T10:29:00Z"))
        );
        assert_eq!(
            s.next_after(d.resume_after),
            Some(t("2026-01-01T10:30:00Z")),
            "10:30 is next, and still within its grace"
        );
    }

    #[test]
    fn fire_once_fires_the_latest_inside_the_window_and_records_the_rest() {
        let (s, sp) = spec(Misfire::FireOnce, Some("1h"));
        let d = unjittered(&s, &sp, "2026-01-01T10:00:00Z", "2026-01-01T10:30:30Z");
        assert_eq!(d.fire, Some(t("2026-01-01T10:29:00Z")));
        let rest = d.missed.unwrap().count(&s).unwrap();
        assert_eq!(
            (rest.count, rest.first, rest.last),
            (29, t("2026-01-01T10:00:00Z"), t("2026-01-01T10:28:00Z"))
        );
    }

    #[test]
    fn fire_once_outside_the_window_behaves_like_skip() {
        let (s, sp) = spec(Misfire::FireOnce, Some("30s"));
        let d = unjittered(&s, &sp, "2026-01-01T10:00:00Z", "2026-01-01T12:00:30Z");
        assert_eq!(d.fire, None);
        assert_eq!(d.missed.unwrap().count(&s).unwrap().count, 120);
    }

    #[test]
    fn fault3_lateness_counts_from_the_fire_time_so_jitter_never_eats_the_grace() {
        let (s, sp) = spec(Misfire::Skip, None);
        // Jitter 50 s on a 60 s grace: fired 40 s after its fire time, 90 s after the instant.
        let instant = t("2026-01-01T10:00:00Z");
        let fire = t("2026-01-01T10:00:50Z");
        let d = decide(&s, &sp, instant, fire, t("2026-01-01T10:01:30Z"));
        assert_eq!(d.fire, Some(instant), "within the grace of its fire time");
        let late = decide(&s, &sp, instant, fire, t("2026-01-01T10:01:51Z"));
        assert_eq!(late.fire, None, "61 s after the fire time is past the grace");
    }

    #[test]
    fn fault6_a_decade_long_outage_is_decided_without_counting_it() {
        let (s, sp) = spec(Misfire::Skip, None);
        let d = unjittered(&s, &sp, "2016-01-01T10:00:00Z", "2026-01-01T10:00:30Z");
        // The decision carries a range; the count is the recorder's job.
        let range = d.missed.unwrap();
        assert_eq!(range.upto, t("2026-01-01T09:59:30Z"));
        assert_eq!(s.next_after(d.resume_after), Some(t("2026-01-01T10:00:00Z")));
        let joined = range
            .join(&MissedRange {
                after: range.upto,
                upto: t("2026-01-01T10:05:00Z"),
            })
            .unwrap();
        assert_eq!((joined.after, joined.upto), (range.after, t("2026-01-01T10:05:00Z")));
    }
}
