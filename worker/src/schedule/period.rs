//! The shortest time between two instants of a schedule (the bound on jitter).

use super::*;

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
