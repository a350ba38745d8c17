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
