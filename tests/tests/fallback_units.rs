//! The fallback's systemd units: generated from the definition, accepted
//! by `systemd-analyze verify`, firing at the definition's own instants
//! (`systemd-analyze calendar`), and the committed flagship pair equal to
//! what the command generates. systemd-analyze is required (scripts/test
//! installs it): these tests do not skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use actcore::schedule::Schedule;
use actcore_tests::{actcore_bin, run_cli};
use jiff::Timestamp;

const FLAGSHIP: &str = "state-hub-consistency-sweep";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .env("TZ", "UTC")
        .output()
        .expect("systemd-analyze is installed (scripts/test installs the systemd package)")
}

/// `actcore fallback units SLUG --out DIR --exec EXEC`; returns the OnCalendar value.
fn generate(definitions: &Path, slug: &str, out: &Path, exec: &Path) -> String {
    let (code, stdout, stderr) = run_cli(
        &[
            "fallback",
            "units",
            slug,
            "--definitions",
            definitions.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--exec",
            exec.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    v["on_calendar"].as_str().unwrap().to_string()
}

fn write_definition(dir: &Path, slug: &str, cron: &str, tz: &str) {
    let text = format!(
        "id = \"{}\"\nslug = \"{slug}\"\n[schedule]\ncron = \"{cron}\"\ntimezone = \"{tz}\"\n[action]\nurl = \"http://127.0.0.1:9/x\"\n",
        uuid::Uuid::new_v4()
    );
    std::fs::write(dir.join(format!("{slug}.toml")), text).unwrap();
}

/// The next `n` elapses systemd computes for `on_calendar` after `base`, in UTC.
fn systemd_elapses(on_calendar: &str, base: Timestamp, n: usize) -> Vec<Timestamp> {
    let base_arg = format!("--base-time={}", base.strftime("%Y-%m-%d %H:%M:%S UTC"));
    let out = systemd_analyze(&["calendar", &format!("--iterations={n}"), &base_arg, on_calendar]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    text.lines()
        .filter(|l| l.contains("Next elapse:") || l.contains("Iter. #"))
        .map(|l| {
            // "    Next elapse: Mon 2026-11-30 21:30:00 UTC"
            let parts: Vec<&str> = l.split_whitespace().collect();
            let (date, time) = (parts[parts.len() - 3], parts[parts.len() - 2]);
            format!("{date}T{time}Z").parse().unwrap_or_else(|e| panic!("{l}: {e}"))
        })
        .collect()
}

fn schedule_instants(cron: &str, tz: &str, base: Timestamp, n: usize) -> Vec<Timestamp> {
    let s = Schedule::new(cron, tz).unwrap();
    let mut out = Vec::new();
    let mut at = base;
    while out.len() < n {
        at = s.next_after(at).unwrap();
        out.push(at);
    }
    out
}

#[test]
fn the_generated_units_pass_systemd_analyze_verify() {
    let out = tempfile::tempdir().unwrap();
    generate(&repo().join("definitions"), FLAGSHIP, out.path(), &actcore_bin());
    let service = out.path().join(format!("actcore-fallback-{FLAGSHIP}.service"));
    let timer = out.path().join(format!("actcore-fallback-{FLAGSHIP}.timer"));
    let result = systemd_analyze(&["verify", service.to_str().unwrap(), timer.to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        result.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    // And verify is a real check: a unit whose ExecStart does not exist fails it.
    generate(
        &repo().join("definitions"),
        FLAGSHIP,
        out.path(),
        Path::new("/nonexistent/actcore"),
    );
    let broken = systemd_analyze(&["verify", service.to_str().unwrap(), timer.to_str().unwrap()]);
    assert!(!broken.status.success(), "verify must refuse a missing ExecStart");
}

#[test]
fn oncalendar_fires_at_the_definitions_instants() {
    let defs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let base: Timestamp = "2026-03-27T22:07:13Z".parse().unwrap();
    let cases = [
        ("every-15", "*/15 * * * *", "UTC"),
        ("nightly", "30 2 * * *", "UTC"),
        ("office", "0 9-17 * * mon-fri", "UTC"),
        ("twice-monthly", "0 0 1,15 * *", "UTC"),
        ("seconds", "30 */10 * * * *", "UTC"),
        ("odd-days-monday", "0 6 */2 * 1", "UTC"),
        // Across Berlin's spring-forward night (2026-03-29): real-time minutes, the same in UTC.
        ("berlin-quarter", "*/15 * * * *", "Europe/Berlin"),
    ];
    for (slug, cron, tz) in cases {
        write_definition(defs.path(), slug, cron, tz);
    }
    for (slug, cron, tz) in cases {
        let on_calendar = generate(defs.path(), slug, out.path(), &actcore_bin());
        let n = 40;
        assert_eq!(
            systemd_elapses(&on_calendar, base, n),
            schedule_instants(cron, tz, base, n),
            "{slug}: `{cron}` in {tz} as OnCalendar={on_calendar}"
        );
    }
}

#[test]
fn a_schedule_oncalendar_cannot_express_is_refused_naming_the_file() {
    let defs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_definition(defs.path(), "berlin-night", "30 2 * * *", "Europe/Berlin");
    let (code, stdout, stderr) = run_cli(
        &[
            "fallback",
            "units",
            "berlin-night",
            "--definitions",
            defs.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 78, "{stdout}{stderr}");
    assert!(
        stderr.contains("berlin-night.toml") && stderr.contains("daylight saving"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "nothing half-written"
    );
}

#[test]
fn the_committed_flagship_units_are_what_the_command_generates() {
    let out = tempfile::tempdir().unwrap();
    generate(
        &repo().join("definitions"),
        FLAGSHIP,
        out.path(),
        Path::new("/usr/local/bin/actcore"),
    );
    for ext in ["service", "timer"] {
        let name = format!("actcore-fallback-{FLAGSHIP}.{ext}");
        let committed = std::fs::read_to_string(repo().join("scripts/systemd").join(&name))
            .unwrap_or_else(|e| panic!("scripts/systemd/{name}: {e}"));
        let generated = std::fs::read_to_string(out.path().join(&name)).unwrap();
        assert_eq!(
            committed, generated,
            "scripts/systemd/{name} drifted from the definition: regenerate it with \
             `actcore fallback units {FLAGSHIP} --out scripts/systemd --exec /usr/local/bin/actcore`"
        );
    }
}
