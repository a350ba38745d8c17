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
