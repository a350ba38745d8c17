//! The operator's commands from the shell: `status` with the recommended
//! action, `pause` / `resume` / `circuit open` / `circuit reset`, audited
//! with `--actor` and `--reason` (the embedded store; the API's tests cover
//! Postgres through the same functions).

use actcore_tests::{fresh_sqlite_url, run_cli, sync_dir, write_definition};
use serde_json::Value;

fn json(out: &(i32, String, String)) -> Value {
    assert_eq!(out.0, 0, "{}{}", out.1, out.2);
    serde_json::from_str(&out.1).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.1))
}

#[test]
fn overrides_are_audited_and_status_recommends_the_command() {
    let (_dir, url) = fresh_sqlite_url();
    let defs = tempfile::tempdir().unwrap();
    write_definition(
        defs.path(),
        "sweep",
        uuid::Uuid::new_v4(),
        "*/15 * * * *",
        "http://127.0.0.1:9/x",
        "",
    );
    assert_eq!(run_cli(&["migrate"], &[("DATABASE_URL", &url)]).0, 0);
    sync_dir(defs.path(), &url);
    let cli = |args: &[&str]| run_cli(args, &[("DATABASE_URL", &url)]);

    let never = json(&cli(&["status", "--json"]));
    let a = &never["activities"][0];
    assert_eq!(a["recommendation"]["severity"], "info");
    assert!(
        a["recommendation"]["action"]
            .as_str()
            .unwrap()
            .contains("never run yet"),
        "{a}"
    );

    let (code, _, err) = cli(&["pause", "sweep"]);
    assert_eq!(code, 2, "a pause without a reason: {err}");
    assert!(err.contains("--reason"), "{err}");
    let (code, _, err) = cli(&["circuit", "open", "nope", "--reason", "x"]);
    assert_eq!(code, 2, "an unknown slug: {err}");
    assert!(err.contains("known: sweep"), "{err}");

    let opened = json(&cli(&[
        "circuit",
        "open",
        "sweep",
        "--reason",
        "bridge rebuild",
        "--actor",
        "alice",
        "--json",
    ]));
    assert_eq!(
        (opened["actor"].as_str(), opened["event"].as_str()),
        (Some("alice"), Some("circuit_opened_by_operator"))
    );
    let held = json(&cli(&["status", "sweep", "--json"]));
    let a = &held["activities"][0];
    assert_eq!(a["circuit"]["held_by_operator"], true, "{a}");
    let action = a["recommendation"]["action"].as_str().unwrap();
    assert!(
        action.contains("held open by alice") && action.contains("actcore circuit reset sweep"),
        "{action}"
    );
    let (code, table, _) = cli(&["status"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("sweep") && table.contains("=> circuit held open by alice"),
        "{table}"
    );

    assert_eq!(cli(&["circuit", "reset", "sweep", "--actor", "bob"]).0, 0);
    assert_eq!(
        json(&cli(&["status", "--json"]))["activities"][0]["circuit"]["state"],
        "closed"
    );
    let paused = json(&cli(&["pause", "sweep", "--reason", "maintenance", "--json"]));
    assert_eq!(paused["reason"], "maintenance");
    let a = &json(&cli(&["status", "--json"]))["activities"][0];
    assert_eq!(
        (a["state"].as_str(), a["next_instant"].is_null()),
        (Some("paused"), true),
        "{a}"
    );
    assert_eq!(cli(&["resume", "sweep"]).0, 0);
    assert_eq!(json(&cli(&["status", "--json"]))["activities"][0]["state"], "active");
}
