use super::*;

const FLAGSHIP: &str = include_str!("../../../definitions/state-hub-consistency-sweep.toml");

fn parse(text: &str) -> Result<Definition, Vec<Problem>> {
    parse_str(Path::new("definitions/x.toml"), text)
}

fn problems(text: &str) -> Vec<Problem> {
    parse(text).expect_err("should be refused")
}

fn one_problem(text: &str, key: &str) -> Problem {
    let ps = problems(text);
    ps.iter()
        .find(|p| p.key == key)
        .cloned()
        .unwrap_or_else(|| panic!("no problem on `{key}` in {ps:#?}"))
}

const MINIMAL: &str = r#"
id = "0b9e8f3a-1111-4c4c-9d9d-000000000001"
slug = "minimal"
[schedule]
cron = "*/5 * * * *"
[action]
url = "http://127.0.0.1:9/x"
"#;

#[test]
fn flagship_parses_with_contract_values() {
    let d = parse(FLAGSHIP).unwrap();
    assert_eq!(d.id.to_string(), "7c4e9a12-8f3b-4d5e-9c6a-1b2d3e4f5a6b");
    assert_eq!(d.slug, "state-hub-consistency-sweep");
    assert_eq!(d.schedule.cron, "*/15 * * * *");
    assert_eq!(d.schedule.timezone, "UTC");
    assert_eq!(d.schedule.misfire, Misfire::Skip);
    assert!(d.enabled);
    assert_eq!(d.action.method, "POST");
    assert_eq!(d.action.url, "${STATE_HUB_URL}/consistency/sweep/remote-all");
    assert_eq!(d.action.timeout.as_millis(), 330_000);
    assert_eq!(d.action.body.as_ref().unwrap()["max_seconds"], 300);
    assert_eq!(d.result.snapshot_key, "consistency_sweep_remote_all");
    assert_eq!(d.template_vars(), ["ACTCORE_SOURCE", "STATE_HUB_URL"]);
}

#[test]
fn defaults_fill_a_minimal_file() {
    let d = parse(MINIMAL).unwrap();
    assert_eq!(d.schedule.misfire_grace.as_millis(), 60_000);
    assert_eq!(d.schedule.overlap, Overlap::Skip);
    assert_eq!(d.result.snapshot_key, "minimal");
    assert_eq!(d.retry.max_attempts, 3);
    assert_eq!(d.name, "minimal");
}

#[test]
fn canonical_hash_ignores_formatting_but_not_meaning() {
    let a = parse(MINIMAL).unwrap();
    let reformatted = MINIMAL.replace("[action]", "[action]\ntimeout = \"30s\"\n# a comment");
    assert_eq!(a.spec_hash(), parse(&reformatted).unwrap().spec_hash());
    let changed = MINIMAL.replace("*/5", "*/10");
    assert_ne!(a.spec_hash(), parse(&changed).unwrap().spec_hash());
    // The canonical JSON round-trips: workers run from the stored spec.
    let back: Definition = serde_json::from_value(a.canonical_json()).unwrap();
    assert_eq!(back, a);
}

#[test]
fn toml_syntax_error_names_the_line() {
    let p = &problems("id = \"x\"\nslug = \n")[0];
    assert!(p.message.contains("line 2"), "{p}");
    assert!(p.to_string().starts_with("definitions/x.toml"), "{p}");
}

#[test]
fn unknown_key_is_named_with_the_expected_ones() {
    let p = one_problem(&MINIMAL.replace("cron =", "cronn = \"x\"\ncron ="), "schedule.cronn");
    assert!(p.fix.contains("cron"), "{p}");
    assert!(p.message.starts_with("line 5:"), "the line of the unknown key: {p}");
    let p = one_problem(&MINIMAL.replace("slug =", "nmae = \"x\"\nslug ="), "nmae");
    assert!(p.message.starts_with("line 3:"), "{p}");
}

#[test]
fn missing_required_keys_are_each_named() {
    for key in ["id", "slug"] {
        let text: String = MINIMAL
            .lines()
            .filter(|l| !l.starts_with(&format!("{key} =")))
            .collect::<Vec<_>>()
            .join("\n");
        let p = one_problem(&text, key);
        assert!(p.message.contains("missing"), "{p}");
    }
    let p = one_problem(&MINIMAL.replace("cron = \"*/5 * * * *\"", ""), "schedule.cron");
    assert!(p.fix.contains("*/15 * * * *"), "{p}");
    let p = one_problem(&MINIMAL.replace("url = \"http://127.0.0.1:9/x\"", ""), "action.url");
    assert!(p.message.contains("missing"), "{p}");
}

#[test]
fn bad_cron_and_zone_are_refused() {
    one_problem(&MINIMAL.replace("*/5 * * * *", "*/5 * * *"), "schedule.cron");
    one_problem(&MINIMAL.replace("*/5 * * * *", "61 * * * *"), "schedule.cron");
    one_problem(&MINIMAL.replace("*/5 * * * *", "0 25 * * *"), "schedule.cron");
    let p = one_problem(
        &MINIMAL.replace("[schedule]", "[schedule]\ntimezone = \"Mars/Olympus\""),
        "schedule.timezone",
    );
    assert!(p.message.contains("Mars/Olympus"), "{p}");
}

#[test]
fn malformed_values_are_refused() {
    let p = one_problem(
        &MINIMAL.replace("[schedule]", "[schedule]\nmisfire_grace = \"60\""),
        "schedule.misfire_grace",
    );
    assert!(p.fix.contains("60s"), "{p}");
    one_problem(
        &MINIMAL.replace("id = \"0b9e8f3a-1111-4c4c-9d9d-000000000001\"", "id = \"nope\""),
        "id",
    );
    one_problem(&MINIMAL.replace("slug = \"minimal\"", "slug = \"Not A Slug\""), "slug");
    one_problem(
        &MINIMAL.replace("[schedule]", "[schedule]\noverlap = \"queue\""),
        "schedule.overlap",
    );
    one_problem(&MINIMAL.replace("http://127.0.0.1:9/x", "ftp://x"), "action.url");
    one_problem(
        &MINIMAL.replace("[schedule]", "[schedule]\nmisfire = \"fire_once\""),
        "schedule.catchup_window",
    );
    one_problem(
        &MINIMAL.replace("[action]", "[result]\nlock_skipped = \"lock\"\n[action]"),
        "result.lock_skipped",
    );
}

#[test]
fn unset_variable_is_not_a_parse_error() {
    let d = parse(&MINIMAL.replace("http://127.0.0.1:9", "${ACTCORE_SURELY_UNSET_VAR}")).unwrap();
    assert_eq!(d.template_vars(), ["ACTCORE_SURELY_UNSET_VAR"]);
}

#[test]
fn duplicates_across_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), MINIMAL).unwrap();
    std::fs::write(dir.path().join("b.toml"), MINIMAL).unwrap();
    let ps = load_dir(dir.path()).unwrap_err().0;
    assert!(
        ps.iter().any(|p| p.key == "id" && p.message.contains("a.toml")),
        "{ps:#?}"
    );
    assert!(ps.iter().any(|p| p.key == "slug"), "{ps:#?}");
}

/// A directory large enough to be parsed on several threads: results keep
/// the sorted file order, a bad cron is still refused after the same cron
/// was seen valid elsewhere in another zone, and duplicates are found
/// across the threads' chunks.
#[test]
fn large_directories_load_in_file_order_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3 * MIN_FILES_PER_THREAD;
    let file = |i: usize, slug: &str, zone: &str| {
        MINIMAL
            .replace(
                "0b9e8f3a-1111-4c4c-9d9d-000000000001",
                &format!("0b9e8f3a-1111-4c4c-9d9d-{i:012}"),
            )
            .replace("slug = \"minimal\"", &format!("slug = \"{slug}\""))
            .replace("[schedule]", &format!("[schedule]\ntimezone = \"{zone}\""))
    };
    for i in 0..n {
        std::fs::write(
            dir.path().join(format!("f{i:04}.toml")),
            file(i, &format!("s{i:04}"), "UTC"),
        )
        .unwrap();
    }
    let loaded = load_dir(dir.path()).unwrap();
    let slugs: Vec<_> = loaded.iter().map(|l| l.definition.slug.clone()).collect();
    let mut sorted = slugs.clone();
    sorted.sort();
    assert_eq!(slugs.len(), n);
    assert_eq!(slugs, sorted, "definitions come back in file order");

    // Same cron, a zone that does not exist: refused although the cron was valid in UTC.
    std::fs::write(dir.path().join("f0500.toml"), file(500, "s0500", "Mars/Olympus")).unwrap();
    // The last file repeats the first one's slug: a duplicate across chunks.
    std::fs::write(
        dir.path().join(format!("f{:04}.toml", n - 1)),
        file(n - 1, "s0000", "UTC"),
    )
    .unwrap();
    let ps = load_dir(dir.path()).unwrap_err().0;
    assert_eq!(ps.len(), 2, "{ps:#?}");
    assert!(
        ps[0].file.ends_with("f0500.toml") && ps[0].key == "schedule.timezone",
        "{ps:#?}"
    );
    assert!(ps[1].key == "slug" && ps[1].message.contains("f0000.toml"), "{ps:#?}");
}

#[test]
fn shipped_definitions_directory_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../definitions");
    let loaded = load_dir(&dir).unwrap();
    assert!(
        loaded
            .iter()
            .any(|l| l.definition.slug == "state-hub-consistency-sweep")
    );
}

fn with_schedule(extra: &str) -> String {
    MINIMAL.replace("[schedule]", &format!("[schedule]\n{extra}"))
}

#[test]
fn fault3_jitter_at_the_grace_is_rejected_naming_both_values() {
    // The default grace is 60 s; the schedule's period 5 min.
    let p = one_problem(&with_schedule("jitter = \"60s\""), "schedule.jitter");
    assert!(p.message.contains("jitter 1m"), "{p}");
    assert!(p.message.contains("schedule.misfire_grace (1m)"), "{p}");
    assert!(p.message.contains("shortest period between two instants (5m"), "{p}");
    assert!(p.fix.contains("below 1m"), "{p}");
    parse(&with_schedule("jitter = \"59s\"")).unwrap();
}

#[test]
fn fault3_jitter_at_the_shortest_period_is_rejected() {
    let p = one_problem(
        &with_schedule("misfire_grace = \"1h\"\njitter = \"5m\""),
        "schedule.jitter",
    );
    assert!(p.message.contains("(5m, from "), "{p}");
    assert!(p.fix.contains("below 5m"), "{p}");
    parse(&with_schedule("misfire_grace = \"1h\"\njitter = \"4m59s\"")).unwrap();
}

/// 01:30 and 02:30 are an hour apart, except on spring-forward day, when
/// 02:30 falls in the gap and fires at 03:00: 30 minutes after 01:30.
#[test]
fn fault3_jitter_against_a_period_that_dst_shortens() {
    let text = MINIMAL.replace(
        "cron = \"*/5 * * * *\"",
        "cron = \"30 1,2 * * *\"\ntimezone = \"America/New_York\"\nmisfire_grace = \"2h\"\njitter = \"45m\"",
    );
    let p = one_problem(&text, "schedule.jitter");
    assert!(p.message.contains("(30m, from "), "{p}");
    parse(&text.replace("45m", "29m")).unwrap();
}

/// `0 0 29 2 *` fires every four years: a jitter below the grace is fine,
/// and measuring the period does not search forever.
#[test]
fn fault3_leap_day_schedule_takes_a_jitter_below_the_grace() {
    let text = MINIMAL.replace(
        "cron = \"*/5 * * * *\"",
        "cron = \"0 0 29 2 *\"\nmisfire_grace = \"2h\"\njitter = \"1h\"",
    );
    parse(&text).unwrap();
    let p = one_problem(&text.replace("jitter = \"1h\"", "jitter = \"3h\""), "schedule.jitter");
    assert!(p.message.contains("misfire_grace (2h)"), "{p}");
}

#[test]
fn fault4_huge_jitter_is_rejected() {
    let p = one_problem(
        &with_schedule("misfire_grace = \"7d\"\njitter = \"100000000d\""),
        "schedule.jitter",
    );
    assert!(p.message.contains("out of range"), "{p}");
    assert!(p.fix.contains("from 0s to 1d"), "{p}");
}

#[test]
fn fault4_huge_misfire_grace_is_rejected() {
    for huge in ["200000000000d", "100000000d", "8d"] {
        let p = one_problem(
            &with_schedule(&format!("misfire_grace = \"{huge}\"")),
            "schedule.misfire_grace",
        );
        assert!(p.fix.contains("from 1s to 7d"), "{huge}: {p}");
    }
}

/// Every duration key has a range; a value outside it is a problem on that
/// key naming the range, never a panic or a wrapped negative.
#[test]
fn fault4_every_duration_key_is_bounded() {
    let full = |table: &str, line: &str| {
        if table == "schedule" || table == "action" {
            MINIMAL.replace(&format!("[{table}]"), &format!("[{table}]\n{line}"))
        } else {
            format!("{MINIMAL}\n[{table}]\n{line}\n")
        }
    };
    for (table, key, too_small, too_large, range) in [
        ("schedule", "misfire_grace", "0s", "8d", "from 1s to 7d"),
        ("schedule", "jitter", "", "2d", "from 0s to 1d"),
        ("action", "timeout", "99ms", "2d", "from 100ms to 1d"),
        ("retry", "initial_interval", "0s", "2d", "from 1s to 1d"),
        ("retry", "max_interval", "0s", "8d", "from 1s to 7d"),
        ("guard", "cooldown", "", "2d", "from 0s to 1d"),
        ("guard", "window", "0s", "32d", "from 1s to 31d"),
        ("guard", "open_for", "0s", "8d", "from 1s to 7d"),
    ] {
        for value in [too_small, too_large, "99999999999d"]
            .into_iter()
            .filter(|v| !v.is_empty())
        {
            let p = one_problem(&full(table, &format!("{key} = \"{value}\"")), &format!("{table}.{key}"));
            assert!(p.fix.contains(range), "{table}.{key} = {value}: {p}");
        }
    }
    let fire_once = |window: &str| with_schedule(&format!("misfire = \"fire_once\"\ncatchup_window = \"{window}\""));
    parse(&fire_once("1h")).unwrap();
    for bad in ["0s", "367d"] {
        let p = one_problem(&fire_once(bad), "schedule.catchup_window");
        assert!(p.fix.contains("from 1s to 366d"), "{p}");
    }
    let p = one_problem(
        &format!("{MINIMAL}\n[retry]\ninitial_interval = \"1m\"\nmax_interval = \"30s\"\n"),
        "retry.max_interval",
    );
    assert!(p.message.contains("initial_interval (1m)"), "{p}");
}

#[test]
fn fault9_url_without_a_host_is_rejected() {
    for url in [
        "http://",
        "https://",
        "http:///path",
        "http://:8080/x",
        "http://user@/x",
        "http://[::1/x",
    ] {
        let p = one_problem(&MINIMAL.replace("http://127.0.0.1:9/x", url), "action.url");
        assert!(p.message.contains(url), "{url}: {p}");
    }
    let p = one_problem(
        &MINIMAL.replace("[action]", "[action]\npreflight = \"http://\""),
        "action.preflight",
    );
    assert!(p.message.contains("no host"), "{p}");
    // A variable may stand for the host, the port or the whole URL.
    for url in [
        "${HUB}",
        "${HUB}/x",
        "http://${HOST}/x",
        "http://h:${PORT}/x",
        "https://u:${PW}@h/x",
    ] {
        parse(&MINIMAL.replace("http://127.0.0.1:9/x", url)).unwrap_or_else(|p| panic!("{url}: {p:#?}"));
    }
}

fn dir_with_minimal() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), MINIMAL).unwrap();
    dir
}

#[track_caller]
fn only_problem(dir: &Path, file: &str) -> Problem {
    let ps = load_dir(dir).expect_err("the unreadable file is a problem").0;
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert!(ps[0].file.ends_with(file), "{ps:#?}");
    ps[0].clone()
}

#[test]
fn fault9_dangling_symlink_is_a_problem() {
    let dir = dir_with_minimal();
    std::os::unix::fs::symlink(dir.path().join("gone.txt"), dir.path().join("b.toml")).unwrap();
    let p = only_problem(dir.path(), "b.toml");
    assert!(
        p.message.contains("dangling symlink") && p.message.contains("gone.txt"),
        "{p}"
    );
    assert!(p.fix.contains("remove the link"), "{p}");
}

#[test]
fn fault9_symlink_loop_is_a_problem() {
    let dir = dir_with_minimal();
    std::os::unix::fs::symlink(dir.path().join("c.toml"), dir.path().join("b.toml")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("b.toml"), dir.path().join("c.toml")).unwrap();
    let ps = load_dir(dir.path()).expect_err("loops are problems").0;
    assert_eq!(ps.len(), 2, "{ps:#?}");
    for p in &ps {
        assert!(p.message.contains("cannot be followed"), "{p}");
        assert!(p.fix.contains("loop"), "{p}");
    }
}

#[test]
fn fault9_a_directory_named_toml_is_a_problem() {
    let dir = dir_with_minimal();
    std::fs::create_dir(dir.path().join("b.toml")).unwrap();
    let p = only_problem(dir.path(), "b.toml");
    assert!(p.message.contains("not a regular file"), "{p}");
}

#[test]
fn fault9_invalid_utf8_names_the_line_not_the_permissions() {
    let dir = dir_with_minimal();
    let mut bytes = MINIMAL.replace("slug = \"minimal\"", "slug = \"other\"").into_bytes();
    let at = bytes.windows(4).position(|w| w == b"[act").unwrap();
    bytes.splice(at..at, b"# caf\xe9\n".iter().copied());
    std::fs::write(dir.path().join("b.toml"), &bytes).unwrap();
    let p = only_problem(dir.path(), "b.toml");
    assert!(
        p.message.starts_with("line 6, column 6: not valid UTF-8 (byte 0xe9)"),
        "{p}"
    );
    assert!(p.fix.contains("UTF-8") && !p.fix.contains("permission"), "{p}");
}

// ---------------------------------------------------------------- evolution (issue 8)

/// Files are strict where people write them; specs in the database are
/// read tolerantly: a newer `sync` may have written keys this binary does
/// not know. They are dropped and named; the user's body is left whole.
#[test]
fn a_stored_spec_with_unknown_keys_is_read_and_the_keys_named() {
    let d = parse(FLAGSHIP).unwrap();
    let mut spec = d.canonical_json();
    spec["notify"] = serde_json::json!({"webhook": "${CHAT_URL}"});
    spec["schedule"]["buffer"] = serde_json::json!(1);
    spec["action"]["retry_on"] = serde_json::json!([502]);
    spec["action"]["body"]["a_body_key"] = serde_json::json!("the user's own");
    spec["guard"]["budget"] = serde_json::json!({"per_day": 10});
    let (read, unknown) = Definition::from_stored_spec(spec.clone()).unwrap();
    assert_eq!(
        unknown,
        ["action.retry_on", "guard.budget", "notify", "schedule.buffer"]
    );
    assert_eq!(read.action.body.as_ref().unwrap()["a_body_key"], "the user's own");
    let mut expected = d.clone();
    expected.action.body.as_mut().unwrap()["a_body_key"] = serde_json::json!("the user's own");
    assert_eq!(read, expected);
    assert_eq!(Definition::from_stored(spec).unwrap(), expected);
    // The same keys in a file are still refused.
    one_problem(
        &FLAGSHIP.replace("[schedule]", "[schedule]\nbuffer = 1"),
        "schedule.buffer",
    );
    one_problem(&format!("{FLAGSHIP}\n[notify]\nwebhook = \"x\"\n"), "notify");
}

/// The canonical form of today's definitions, pinned: a change to it
/// (a new key written at its default, a renamed field) changes every
/// stored spec_hash, and the next sync marks every activity changed.
#[test]
fn the_canonical_form_is_pinned() {
    assert_eq!(
        parse(MINIMAL).unwrap().spec_hash(),
        "dd44087882e4fb20ecd5dd3facd684805da558a06056e52438b591fd963b515b",
        "the canonical spec changed: keep new keys out of it at their default (is_default)"
    );
    assert_eq!(
        parse(FLAGSHIP).unwrap().spec_hash(),
        "b5bb94382eebb7a16509c0ffba99f0e36bd4cae49b164ea6303b695854599bd8"
    );
}

/// How a later version adds a key: optional, left out at its default. A
/// definition that does not use it keeps its spec_hash (no churn on
/// upgrade); one that does gets a new hash, and this (older) binary reads
/// that spec, ignoring the key.
#[test]
fn adding_an_optional_key_at_its_default_leaves_spec_hash_unchanged() {
    #[derive(serde::Serialize, Default, PartialEq)]
    struct Notify {
        webhook: String,
    }
    #[derive(serde::Serialize)]
    struct Newer {
        #[serde(flatten)]
        current: Definition,
        #[serde(default, skip_serializing_if = "is_default")]
        notify: Option<Notify>,
        #[serde(default, skip_serializing_if = "is_default")]
        max_concurrent: u32,
    }
    for text in [MINIMAL, FLAGSHIP] {
        let d = parse(text).unwrap();
        let newer = |notify, max_concurrent| {
            serde_json::to_value(Newer {
                current: d.clone(),
                notify,
                max_concurrent,
            })
            .unwrap()
        };
        let at_default = newer(None, 0);
        assert_eq!(at_default, d.canonical_json());
        assert_eq!(hash_spec(&at_default), d.spec_hash());

        let used = newer(Some(Notify { webhook: "x".into() }), 2);
        assert_ne!(hash_spec(&used), d.spec_hash());
        let (read, unknown) = Definition::from_stored_spec(used).unwrap();
        assert_eq!(read, d);
        assert_eq!(unknown, ["max_concurrent", "notify"]);
    }
}

// ---------------------------------------------------------------- canary (issue 9)

#[test]
fn a_canary_table_is_read_with_its_pointer_defaults() {
    let d = parse(&format!(
        "{MINIMAL}\n[canary]\nverify = \"${{STATE_HUB_URL}}/progress/?event_type=consistency_sweep_remote_all&limit=5\"\n"
    ))
    .unwrap();
    let c = d.canary.as_ref().unwrap();
    assert_eq!(
        (
            c.events_pointer.as_str(),
            c.source_pointer.as_str(),
            c.time_pointer.as_str()
        ),
        ("", "/detail/source", "/created_at")
    );
    assert_ne!(d.spec_hash(), parse(MINIMAL).unwrap().spec_hash());
    assert!(d.template_vars().contains(&"STATE_HUB_URL".to_string()));
    // The flagship names its canary: State Hub's progress events.
    let flagship = parse(FLAGSHIP).unwrap();
    assert_eq!(flagship.canary.as_ref(), Some(c));
    one_problem(
        &format!("{MINIMAL}\n[canary]\nsource_pointer = \"/s\"\n"),
        "canary.verify",
    );
    one_problem(&format!("{MINIMAL}\n[canary]\nverify = \"ftp://x\"\n"), "canary.verify");
    one_problem(
        &format!("{MINIMAL}\n[canary]\nverify = \"http://hub/p\"\ntime_pointer = \"at\"\n"),
        "canary.time_pointer",
    );
}

// ---------------------------------------------------------------- retention (issue 13)

#[test]
fn a_retention_table_is_read_and_its_defaults_keep_the_hash() {
    let flagship = parse(FLAGSHIP).unwrap();
    assert_eq!(flagship.retention, RetentionSpec::default());
    assert_eq!(flagship.retention.succeeded, Dur::from_days(14));
    assert_eq!(flagship.retention.failed, Dur::from_days(90));
    // Written at the defaults: the same canonical spec, the same hash.
    let explicit = parse(&format!(
        "{FLAGSHIP}\n[retention]\nsucceeded = \"14d\"\nfailed = \"2160h\"\n"
    ))
    .unwrap();
    assert_eq!(explicit.spec_hash(), flagship.spec_hash());
    let d = parse(&format!("{FLAGSHIP}\n[retention]\nsucceeded = \"3d\"\n")).unwrap();
    assert_eq!(d.retention.succeeded, Dur::from_days(3));
    assert_eq!(d.retention.failed, Dur::from_days(90));
    assert_ne!(d.spec_hash(), flagship.spec_hash());
    let (read, unknown) = Definition::from_stored_spec(d.canonical_json()).unwrap();
    assert_eq!((read, unknown.len()), (d, 0));
}

#[test]
fn a_bad_retention_is_named_with_its_key_and_fix() {
    for (table, key) in [
        ("succeeded = \"soon\"", "retention.succeeded"),
        ("succeeded = \"1h\"", "retention.succeeded"),
        ("failed = \"400d\"", "retention.failed"),
    ] {
        one_problem(&format!("{FLAGSHIP}\n[retention]\n{table}\n"), key);
    }
    let p = one_problem(
        &format!("{FLAGSHIP}\n[retention]\nsucceeded = \"1h\"\n"),
        "retention.succeeded",
    );
    assert!(p.fix.contains("1d") && p.fix.contains("14d"), "{p}");
    let p = one_problem(&format!("{FLAGSHIP}\n[retention]\nkept = \"1d\"\n"), "retention.kept");
    assert!(p.fix.contains("succeeded") && p.fix.contains("failed"), "{p}");
}
