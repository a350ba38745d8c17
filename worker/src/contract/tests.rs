//! The drift checks, each shown catching the drift it exists for, on the
//! repository's own contract, manifests (rendered by `kubectl kustomize`)
//! and definitions with that one drift injected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::CommandFactory;

use super::manifests::{self, Object, Rendered};
use super::*;
use crate::definition::{self, Loaded};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn contract() -> Contract {
    Contract::load(&root().join(CONTRACT_FILE)).unwrap()
}

fn rendered(overlay: &str) -> Rendered {
    let yaml = manifests::render(&root().join("k8s/overlays").join(overlay)).unwrap();
    manifests::parse(&yaml, &format!("k8s/overlays/{overlay}")).unwrap()
}

fn definitions() -> Vec<Loaded> {
    definition::load_dir(&root().join("definitions")).unwrap()
}

fn pod_mut<'a>(r: &'a mut Rendered, kind: &str, name: &str) -> &'a mut k8s_openapi::api::core::v1::PodSpec {
    let obj = r
        .objects
        .iter_mut()
        .find(|o| o.kind() == kind && o.name() == name)
        .unwrap();
    match obj {
        Object::Deployment(d) => d.spec.as_mut().unwrap().template.spec.as_mut().unwrap(),
        Object::Job(j) => j.spec.as_mut().unwrap().template.spec.as_mut().unwrap(),
        _ => unreachable!(),
    }
}

fn reread() -> Duration {
    verify::reread_default()
}

#[test]
fn the_repository_keeps_its_contract() {
    let c = contract();
    let defs = definitions();
    for overlay in verify::OVERLAYS {
        let r = rendered(overlay);
        let mut d = checks::env(&c, &r);
        d.extend(checks::images(&c, &r));
        d.extend(checks::grace(&c, &r, &defs));
        d.extend(checks::mounts(&c, &r));
        d.extend(checks::probes(&c, &r, reread()));
        d.extend(checks::definitions_config_map(&r, &defs));
        assert!(d.is_empty(), "{overlay}: {d:#?}");
    }
    assert!(checks::timeouts(&c, &defs).is_empty());
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert_eq!(checks::dockerfile(&c, &dockerfile), vec![]);
    assert_eq!(checks::flagship(&c, &defs, None), vec![]);
}

#[test]
fn every_rendered_object_is_a_known_kubernetes_type() {
    for overlay in verify::OVERLAYS {
        let r = rendered(overlay);
        let kinds: Vec<&str> = r.objects.iter().map(Object::kind).collect();
        for k in [
            "Namespace",
            "ServiceAccount",
            "Deployment",
            "Job",
            "Service",
            "ConfigMap",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "PrometheusRule",
        ] {
            assert!(kinds.contains(&k), "{overlay} renders no {k}: {kinds:?}");
        }
        let custom: Vec<_> = r
            .objects
            .iter()
            .filter(|o| matches!(o, Object::Custom { .. }))
            .collect();
        assert_eq!(custom.len(), 1, "only the PrometheusRule lacks a k8s-openapi type");
    }
}

#[test]
fn a_manifest_of_the_wrong_shape_is_refused_naming_it() {
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: two\n";
    let err = manifests::parse(yaml, "k8s/overlays/t").unwrap_err().to_string();
    assert!(err.contains("k8s/overlays/t: Deployment/x"), "{err}");
}

#[test]
fn a_missing_or_renamed_variable_is_drift() {
    let c = contract();
    let mut r = rendered("railiance");
    let env = pod_mut(&mut r, "Deployment", "actcore-worker").containers[0]
        .env
        .as_mut()
        .unwrap();
    let hub = env.iter_mut().find(|e| e.name == "STATE_HUB_URL").unwrap();
    hub.name = "STATEHUB_URL".into();
    let d = checks::env(&c, &r);
    assert_eq!(d.len(), 2, "{d:#?}");
    assert_eq!(d[0].file, "k8s/overlays/railiance");
    assert!(d[0].field.contains("Deployment/actcore-worker") && d[0].field.ends_with("env STATE_HUB_URL"));
    assert_eq!(d[0].found, "missing");
    assert!(d[1].field.ends_with("env STATEHUB_URL"), "{:?}", d[1]);
}

#[test]
fn a_job_image_tag_unlike_the_deployments_is_drift() {
    let c = contract();
    let mut r = rendered("railiance");
    pod_mut(&mut r, "Job", "actcore-sync").containers[0].image = Some("ghcr.io/railiance/actcore:older".into());
    let d = checks::images(&c, &r);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(d[0].field.starts_with("Job/actcore-sync") && d[0].field.ends_with("image"));
    assert_eq!(d[0].found, "ghcr.io/railiance/actcore:older");
    assert!(d[0].expected.contains("railiance01-prod"));
}

#[test]
fn an_action_timeout_at_the_bridge_limit_is_drift() {
    let c = contract();
    let mut defs = definitions();
    defs[0].definition.action.timeout = "360s".parse().unwrap();
    let d = checks::timeouts(&c, &defs);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(d[0].file.ends_with("state-hub-consistency-sweep.toml"));
    assert_eq!(d[0].field, "action.timeout");
    // max_seconds at or above the action's timeout is drift as well.
    defs[0].definition.action.timeout = "300s".parse().unwrap();
    let d = checks::timeouts(&c, &defs);
    assert_eq!(d[0].field, "action.body.max_seconds", "{d:#?}");
}

#[test]
fn a_grace_period_shorter_than_the_action_is_drift() {
    let c = contract();
    let mut r = rendered("railiance");
    pod_mut(&mut r, "Deployment", "actcore-worker").termination_grace_period_seconds = Some(300);
    let d = checks::grace(&c, &r, &definitions());
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(d[0].field.ends_with("terminationGracePeriodSeconds"));
    assert_eq!(d[0].found, "300");
    // 330 s action + 5 s preflight + 5 s worker + 30 s margin.
    assert!(d[0].expected.starts_with("at least 370"), "{}", d[0].expected);
}

#[test]
fn a_definitions_mount_unlike_the_contracts_is_drift() {
    let c = contract();
    let mut r = rendered("railiance");
    pod_mut(&mut r, "Job", "actcore-sync").containers[0]
        .volume_mounts
        .as_mut()
        .unwrap()[0]
        .mount_path = "/definitions".into();
    let d = checks::mounts(&c, &r);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(d[0].field.starts_with("Job/actcore-sync"), "{:?}", d[0]);
    assert_eq!(
        (d[0].expected.as_str(), d[0].found.as_str()),
        ("/etc/actcore/definitions", "/definitions")
    );
}

#[test]
fn a_probe_on_a_path_the_api_does_not_serve_is_drift() {
    let c = contract();
    let mut r = rendered("railiance");
    let probe = pod_mut(&mut r, "Deployment", "actcore-api").containers[0]
        .liveness_probe
        .as_mut()
        .unwrap();
    probe.http_get.as_mut().unwrap().path = Some("/health".into());
    let d = checks::probes(&c, &r, reread());
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(d[0].field.ends_with("livenessProbe.httpGet.path"));
    assert_eq!(d[0].found, "/health");
}

#[test]
fn a_liveness_shorter_than_three_wake_ups_is_drift() {
    let c = contract();
    let mut r = rendered("railiance");
    let probe = pod_mut(&mut r, "Deployment", "actcore-worker").containers[0]
        .liveness_probe
        .as_mut()
        .unwrap();
    probe.failure_threshold = Some(2);
    let d = checks::probes(&c, &r, Duration::from_secs(30));
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].found, "30 s");
}

#[test]
fn a_fallback_timer_off_the_definitions_schedule_is_drift() {
    let c = contract();
    let defs = definitions();
    let good = "[Timer]\nOnCalendar=*-*-* *:00/15:00 UTC\nPersistent=false\n";
    assert_eq!(
        checks::flagship(&c, &defs, Some(("scripts/systemd/t.timer", good))),
        vec![]
    );
    let bad = "[Timer]\nOnCalendar=*-*-* *:00/30:00 UTC\n";
    let d = checks::flagship(&c, &defs, Some(("scripts/systemd/t.timer", bad)));
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        (d[0].file.as_str(), d[0].field.as_str()),
        ("scripts/systemd/t.timer", "OnCalendar")
    );
    assert_eq!(d[0].found, "*-*-* *:00/30:00 UTC");
}

#[test]
fn cron_translates_to_on_calendar() {
    assert_eq!(
        checks::cron_to_on_calendar("*/15 * * * *", "UTC").unwrap(),
        "*-*-* *:00/15:00 UTC"
    );
    assert_eq!(
        checks::cron_to_on_calendar("5,35 2-4 * * *", "Europe/Berlin").unwrap(),
        "*-*-* 02..04:05,35:00 Europe/Berlin"
    );
    assert_eq!(checks::cron_to_on_calendar("0 0 1 * *", "UTC"), None);
}

#[test]
fn a_dockerfile_off_the_contract_is_drift() {
    let c = contract();
    let text = std::fs::read_to_string(root().join("Dockerfile"))
        .unwrap()
        .replace("USER 65532:65532", "USER root")
        .replace("EXPOSE 8080", "EXPOSE 9090");
    let d = checks::dockerfile(&c, &text);
    let fields: Vec<&str> = d.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["USER", "EXPOSE"], "{d:#?}");
}

#[test]
fn the_prometheus_rule_carries_the_rules_file() {
    let r = rendered("railiance");
    let text = std::fs::read_to_string(root().join(verify::ALERT_RULES)).unwrap();
    let rules: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(checks::alerts(verify::ALERT_RULES, &rules, &r), vec![]);
    let changed: serde_json::Value = serde_saphyr::from_str(&text.replace("> 2700", "> 3600")).unwrap();
    let d = checks::alerts(verify::ALERT_RULES, &changed, &r);
    assert_eq!(d.len(), 1);
    assert!(d[0].field.contains("spec.groups"));
}

#[test]
fn runbook_commands_must_exist_in_the_command_tree() {
    let cli = crate::cli::Cli::command();
    let md = "\
<!-- runbook: check -->
```bash
actcore schedule preview state-hub-consistency-sweep --count 4
DATABASE_URL=x actcore --json runs --slug s --limit 5 | head
actcore db roles --print > roles.sql 2>/dev/null
actcore contract verify --live --namespace activity-core
```

<!-- runbook: check -->
```bash
actcore schedule peek s
kubectl exec deploy/w -- actcore runs --slugg s
actcore runs --slugg s
actcore definitions
```

<!-- runbook: pending -->
```bash
actcore fallback run
```

```bash
actcore status
```
";
    let blocks = runbooks::parse("runbooks/t.md", md);
    assert_eq!(blocks.len(), 4);
    let (drifts, pending) = runbooks::check(&blocks, &cli);
    let found: Vec<(&str, &str)> = drifts.iter().map(|d| (d.file.as_str(), d.found.as_str())).collect();
    assert_eq!(drifts.len(), 5, "{drifts:#?}");
    assert_eq!(found[0].0, "runbooks/t.md:10");
    assert!(found[0].1.contains("no subcommand `peek`"), "{found:?}");
    assert!(found[1].1.contains("no flag --slugg"), "{found:?}");
    assert_eq!(drifts[1].field, "actcore runs --slugg s", "after kubectl exec's --");
    assert!(found[2].1.contains("no flag --slugg"), "{found:?}");
    assert!(found[3].1.contains("needs a subcommand"), "{found:?}");
    assert_eq!((found[4].0, drifts[4].field.as_str()), ("runbooks/t.md:22", "marker"));
    assert_eq!(pending, ["runbooks/t.md:18 (actcore fallback run)"]);
}

#[test]
fn the_start_up_check_names_each_missing_variable() {
    let c = contract();
    let env = |k: &str| match k {
        "DATABASE_URL" => Some("postgres://x".to_string()),
        "ACTCORE_DEFINITIONS" => Some("/etc/actcore/definitions".to_string()),
        "STATE_HUB_URL" => Some(String::new()),
        _ => None,
    };
    let d = check_runtime(&c, "worker", &env, &|_| true);
    let names: Vec<&str> = d.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(
        names,
        [
            "STATE_HUB_URL",
            "ACTCORE_CONTRACT",
            "ACTCORE_LISTEN",
            "ACTCORE_LOG_FORMAT",
            "ACTCORE_WORKER_ID"
        ]
    );
    let all = |k: &str| {
        if k == "ACTCORE_DEFINITIONS" {
            Some("/elsewhere".into())
        } else {
            Some("x".to_string())
        }
    };
    let d = check_runtime(&c, "worker", &all, &|_| true);
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].field.as_str(), d[0].found.as_str()),
        ("ACTCORE_DEFINITIONS", "/elsewhere")
    );
}

#[test]
fn a_definition_missing_from_the_config_map_is_drift() {
    let r = rendered("railiance");
    let mut defs = definitions();
    let mut extra = defs[0].clone();
    extra.file = extra.file.with_file_name("nightly-report.toml");
    defs.push(extra);
    let d = checks::definitions_config_map(&r, &defs);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(d[0].field.ends_with("data nightly-report.toml"), "{:?}", d[0]);
    assert_eq!(d[0].found, "absent");
}
