//! Counting the instants an outage missed, cheaply however long it was.

use super::*;

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
pub(super) fn last_at_or_before_counted(
    schedule: &Schedule,
    known: Timestamp,
    upto: Timestamp,
    probes: &mut u32,
) -> Timestamp {
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
