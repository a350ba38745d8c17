//! Checks of the files around the manifests: the definitions' timeouts,
//! the Dockerfile, the flagship's schedule and its fallback timer, the alert rules.

use std::time::Duration;

use serde_json::Value;

use super::CONTRACT;
use crate::contract::manifests::{Object, Rendered};
use crate::contract::{Contract, Drift};
use crate::definition::Loaded;

/// Timeouts: every action's timeout below the bridge proxy's limit, and a
/// `max_seconds` in its body below the action's timeout.
pub fn timeouts(contract: &Contract, definitions: &[Loaded]) -> Vec<Drift> {
    let mut drifts = Vec::new();
    let limit = contract.timeouts.bridge_proxy_limit;
    for l in definitions {
        let d = &l.definition;
        let file = l.file.display().to_string();
        if d.action.timeout >= limit {
            drifts.push(Drift::new(
                &file,
                "action.timeout",
                format!("below the bridge proxy's {limit} ({CONTRACT} timeouts.bridge_proxy_limit)"),
                d.action.timeout.to_string(),
                format!(
                    "lower action.timeout below {limit}: the proxy cuts the call first and the run is recorded as a 504"
                ),
            ));
        }
        if let Some(max) = d
            .action
            .body
            .as_ref()
            .and_then(|b| b.get("max_seconds"))
            .and_then(Value::as_f64)
            && Duration::from_secs_f64(max.max(0.0)) >= d.action.timeout.std()
        {
            drifts.push(Drift::new(
                &file,
                "action.body.max_seconds",
                format!("below action.timeout ({})", d.action.timeout),
                format!("{max}"),
                "lower max_seconds (or raise action.timeout, still below the bridge limit)",
            ));
        }
    }
    drifts
}

/// The Dockerfile agrees with the contract: binary path, user, exposed port,
/// the contract file and the definitions path.
pub fn dockerfile(contract: &Contract, text: &str) -> Vec<Drift> {
    let mut drifts = Vec::new();
    // The runtime stage: instructions after the last FROM.
    let last_stage = text
        .lines()
        .rev()
        .take_while(|l| !l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .collect::<Vec<_>>();
    let instr = |name: &str| -> Vec<String> {
        last_stage
            .iter()
            .rev()
            .filter_map(|l| {
                let t = l.trim();
                let (head, rest) = t.split_once(char::is_whitespace)?;
                head.eq_ignore_ascii_case(name).then(|| rest.trim().to_string())
            })
            .collect()
    };
    let mut expect = |field: &str, ok: bool, expected: String, found: Vec<String>, fix: String| {
        if !ok {
            drifts.push(Drift::new(
                "Dockerfile",
                field,
                expected,
                if found.is_empty() {
                    "none".into()
                } else {
                    found.join(" | ")
                },
                fix,
            ));
        }
    };
    let entry = instr("ENTRYPOINT");
    expect(
        "ENTRYPOINT",
        entry
            .iter()
            .any(|e| e.contains(&format!("\"{}\"", contract.image.binary))),
        format!("[\"{}\"]", contract.image.binary),
        entry,
        format!(
            "install the binary at {} and make it the entrypoint",
            contract.image.binary
        ),
    );
    let user = instr("USER");
    let uid = contract.image.user.to_string();
    expect(
        "USER",
        user.last().is_some_and(|u| u.split(':').next() == Some(uid.as_str())),
        uid.clone(),
        user,
        format!("USER {uid}:{uid} (non-root, as the manifests' runAsUser)"),
    );
    let expose = instr("EXPOSE");
    let port = contract.image.port.to_string();
    expect(
        "EXPOSE",
        expose
            .iter()
            .any(|e| e.split_whitespace().any(|p| p.trim_end_matches("/tcp") == port)),
        port.clone(),
        expose,
        format!("EXPOSE {port}, the admin port"),
    );
    let copies = instr("COPY");
    let copies_to = |dest: &str| {
        copies
            .iter()
            .any(|c| c.trim_end_matches('/').ends_with(dest.trim_end_matches('/')))
    };
    let has_contract = copies_to(&contract.image.contract_path);
    let has_defs = copies_to(&contract.paths.definitions);
    expect(
        "COPY (contract)",
        has_contract,
        format!("a COPY to {}", contract.image.contract_path),
        copies.clone(),
        format!("COPY k8s/contract.toml {}", contract.image.contract_path),
    );
    expect(
        "COPY (definitions)",
        has_defs,
        format!("a COPY to {}", contract.paths.definitions),
        copies,
        format!("COPY definitions/ {}/", contract.paths.definitions),
    );
    drifts
}

/// The flagship's schedule: its definition's cron equals the contract's,
/// and the fallback timer's `OnCalendar=` is that cron in systemd's words.
pub fn flagship(contract: &Contract, definitions: &[Loaded], timer: Option<(&str, &str)>) -> Vec<Drift> {
    let mut drifts = Vec::new();
    let f = &contract.flagship;
    let Some(l) = definitions.iter().find(|l| l.definition.slug == f.slug) else {
        drifts.push(Drift::new(
            "definitions/",
            format!("slug {}", f.slug),
            "the flagship activity",
            "no definition with that slug",
            format!("restore definitions/{}.toml or correct [flagship].slug", f.slug),
        ));
        return drifts;
    };
    let file = l.file.display().to_string();
    let s = &l.definition.schedule;
    for (key, want, found) in [
        ("schedule.cron", &f.cron, &s.cron),
        ("schedule.timezone", &f.timezone, &s.timezone),
    ] {
        if want != found {
            drifts.push(Drift::new(
                &file,
                key,
                want,
                found,
                format!(
                    "change both together: the definition and {CONTRACT} [flagship] (and regenerate the fallback units)"
                ),
            ));
        }
    }
    if let Some((timer_file, text)) = timer {
        let on_calendar = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("OnCalendar="))
            .map(str::trim);
        match (cron_to_on_calendar(&s.cron, &s.timezone), on_calendar) {
            (_, None) => drifts.push(Drift::new(
                timer_file,
                "OnCalendar",
                format!("the schedule of {}", f.slug),
                "none",
                "regenerate the units with `actcore fallback units`",
            )),
            (Some(want), Some(found)) if want != found => drifts.push(Drift::new(
                timer_file,
                "OnCalendar",
                format!("{want} (from cron {:?} in {})", s.cron, s.timezone),
                found,
                "regenerate the units with `actcore fallback units`",
            )),
            (None, Some(found)) => drifts.push(Drift::new(
                timer_file,
                "OnCalendar",
                format!("a systemd calendar for cron {:?}", s.cron),
                format!("{found} (this cron has no translation the check knows)"),
                "keep the flagship's cron to minute/hour lists, ranges and steps",
            )),
            _ => {}
        }
    }
    drifts
}

/// A cron (minute and hour fields: `*`, numbers, lists, ranges, `*/N`; the
/// rest `*`) as systemd's `OnCalendar=`, e.g. `*/15 * * * *` in UTC →
/// `*-*-* *:00/15:00 UTC`. `None` for anything else.
pub fn cron_to_on_calendar(cron: &str, timezone: &str) -> Option<String> {
    let f: Vec<&str> = cron.split_whitespace().collect();
    if f.len() != 5 || f[2..].iter().any(|x| *x != "*") {
        return None;
    }
    fn field(x: &str) -> Option<String> {
        if x == "*" {
            return Some("*".into());
        }
        if let Some(step) = x.strip_prefix("*/") {
            let n: u32 = step.parse().ok()?;
            return Some(format!("00/{n:02}"));
        }
        let parts: Option<Vec<String>> = x
            .split(',')
            .map(|p| match p.split_once('-') {
                Some((a, b)) => Some(format!("{:02}..{:02}", a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)),
                None => Some(format!("{:02}", p.parse::<u32>().ok()?)),
            })
            .collect();
        Some(parts?.join(","))
    }
    Some(format!("*-*-* {}:{}:00 {timezone}", field(f[1])?, field(f[0])?))
}

/// The PrometheusRule carries exactly the groups of the rules file promtool checks.
pub fn alerts(rules_file: &str, rules: &Value, r: &Rendered) -> Vec<Drift> {
    let mut drifts = Vec::new();
    let Some(Object::Custom { value, name, .. }) = r.find("PrometheusRule", "actcore") else {
        drifts.push(Drift::new(
            &r.source,
            "PrometheusRule/actcore",
            format!("the groups of {rules_file}"),
            "absent",
            "add k8s/base/prometheusrule.yaml to the base kustomization",
        ));
        return drifts;
    };
    let rendered = value.pointer("/spec/groups");
    if rendered != rules.get("groups") {
        drifts.push(Drift::new(
            &r.source,
            format!("PrometheusRule/{name} spec.groups"),
            format!("the groups of {rules_file}"),
            "different rules",
            format!("copy the groups of {rules_file} into k8s/base/prometheusrule.yaml"),
        ));
    }
    drifts
}
