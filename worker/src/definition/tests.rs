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
    let p = one_problem(
        &MINIMAL.replace("[schedule]", "[schedule]\noverlap = \"buffer_one\""),
        "schedule.overlap",
    );
    assert!(p.message.contains("not supported"), "{p}");
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
