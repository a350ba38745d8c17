//! Checks of the workloads a rendering (or the live cluster) runs.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::CONTRACT;
use crate::contract::manifests::{Object, Rendered};
use crate::contract::{Contract, Drift, PROBE_PATHS};
use crate::definition::Loaded;

/// How long the worker itself adds to the longest action on SIGTERM (its
/// default `--shutdown-grace` is the longest action, plus its preflight, plus 5 s).
pub const WORKER_SHUTDOWN_EXTRA: Duration = Duration::from_secs(5);

/// The workloads of the contract found in a rendering: (role, object, container).
fn workloads<'a>(
    contract: &'a Contract,
    r: &'a Rendered,
    drifts: &mut Vec<Drift>,
) -> Vec<(&'a str, &'a Object, &'a Container)> {
    let mut found = Vec::new();
    for (role, w) in &contract.workloads {
        let Some(obj) = r.find(&w.kind, &w.name) else {
            drifts.push(Drift::new(
                &r.source,
                format!("{}/{}", w.kind, w.name),
                format!("the {role} workload"),
                "absent",
                format!(
                    "add {} {} to k8s/base, or correct [workloads.{role}] in {CONTRACT}",
                    w.kind, w.name
                ),
            ));
            continue;
        };
        let Some(c) = obj.container(&w.container) else {
            drifts.push(Drift::new(
                &r.source,
                format!("{}/{} containers", w.kind, w.name),
                format!("a container named {}", w.container),
                "absent",
                format!(
                    "name the container {} or correct [workloads.{role}].container",
                    w.container
                ),
            ));
            continue;
        };
        found.push((role.as_str(), obj, c));
    }
    found
}

fn field(obj: &Object, container: &Container, rest: &str) -> String {
    format!("{}/{} container {} {rest}", obj.kind(), obj.name(), container.name)
}

/// Environment variables: each one the contract gives a workload is set in
/// its container, and the container sets none the contract does not name
/// (a renamed variable shows as one missing and one unknown).
pub fn env(contract: &Contract, r: &Rendered) -> Vec<Drift> {
    let mut drifts = Vec::new();
    for (role, obj, c) in workloads(contract, r, &mut drifts) {
        let set: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        for var in contract.env_for(role) {
            if !set.contains(&var.name.as_str()) {
                drifts.push(Drift::new(
                    &r.source,
                    field(obj, c, &format!("env {}", var.name)),
                    format!("set ({})", var.set_by),
                    "missing",
                    format!("add {} to the container's env in k8s/base", var.name),
                ));
            } else if let Some(want) = var.path.as_deref().and_then(|k| contract.path(k)) {
                let value = c
                    .env
                    .iter()
                    .flatten()
                    .find(|e| e.name == var.name)
                    .and_then(|e| e.value.as_deref());
                if value != Some(want) {
                    drifts.push(Drift::new(
                        &r.source,
                        field(obj, c, &format!("env {}", var.name)),
                        want,
                        value.unwrap_or("(not a literal value)"),
                        format!("set {} to {want}, the mount path in {CONTRACT} [paths]", var.name),
                    ));
                }
            }
        }
        let contracted: Vec<&str> = contract.env_for(role).map(|v| v.name.as_str()).collect();
        for name in set {
            if !contracted.contains(&name) {
                drifts.push(Drift::new(
                    &r.source,
                    field(obj, c, &format!("env {name}")),
                    format!("only the variables {CONTRACT} gives the {role}"),
                    format!("{name}, which the contract does not name"),
                    format!("rename it to the contract's name, or add an [[env]] entry for {name} to {CONTRACT}"),
                ));
            }
        }
        let want = &contract.workloads[role].args;
        if &c.args.clone().unwrap_or_default() != want {
            drifts.push(Drift::new(
                &r.source,
                field(obj, c, "args"),
                format!("{want:?}"),
                format!("{:?}", c.args.clone().unwrap_or_default()),
                format!("set args to {want:?}, or correct [workloads.{role}].args"),
            ));
        }
    }
    drifts
}

/// One image, one tag: every workload runs the contract's repository at the
/// tag the worker runs.
pub fn images(contract: &Contract, r: &Rendered) -> Vec<Drift> {
    let mut drifts = Vec::new();
    let found = workloads(contract, r, &mut drifts);
    let reference = found
        .iter()
        .find(|(role, ..)| *role == "worker")
        .or(found.first())
        .and_then(|(_, o, c)| Some((o.name().to_string(), c.image.clone()?)));
    for (_, obj, c) in &found {
        let image = c.image.clone().unwrap_or_default();
        let (repo, _tag) = image.rsplit_once(':').unwrap_or((&image, ""));
        if repo != contract.image.repository {
            drifts.push(Drift::new(
                &r.source,
                field(obj, c, "image"),
                format!("{}:<tag>", contract.image.repository),
                &image,
                format!("set the image to {} (kustomize `images:`)", contract.image.repository),
            ));
        }
        if let Some((ref_name, ref_image)) = &reference
            && &image != ref_image
        {
            drifts.push(Drift::new(
                &r.source,
                field(obj, c, "image"),
                format!("{ref_image} (as {ref_name} runs)"),
                &image,
                "give every workload the same image and tag (set it once, in the overlay's `images:`)",
            ));
        }
    }
    drifts
}

/// The longest a worker may need after SIGTERM: the slowest action, its
/// preflight, and the worker's own margin.
pub fn longest_run(definitions: &[Loaded]) -> Duration {
    definitions
        .iter()
        .map(|l| {
            let a = &l.definition.action;
            a.timeout.std()
                + if a.preflight.is_some() {
                    crate::action::PREFLIGHT_TIMEOUT
                } else {
                    Duration::ZERO
                }
        })
        .max()
        .unwrap_or_default()
        + WORKER_SHUTDOWN_EXTRA
}

/// The worker's grace period covers the longest run plus the contract's margin.
pub fn grace(contract: &Contract, r: &Rendered, definitions: &[Loaded]) -> Vec<Drift> {
    let mut drifts = Vec::new();
    let Some(w) = contract.workloads.get("worker") else {
        return drifts;
    };
    let Some(obj) = r.find(&w.kind, &w.name) else {
        return drifts;
    };
    let need = longest_run(definitions) + contract.timeouts.grace_margin.std();
    let found = obj
        .pod_spec()
        .and_then(|p| p.termination_grace_period_seconds)
        .unwrap_or(30);
    if (found as u64) < need.as_secs() {
        drifts.push(Drift::new(
            &r.source,
            format!("{}/{} terminationGracePeriodSeconds", w.kind, w.name),
            format!(
                "at least {} (longest action with preflight {} s + margin {})",
                need.as_secs(),
                longest_run(definitions).as_secs(),
                contract.timeouts.grace_margin
            ),
            found.to_string(),
            format!(
                "raise terminationGracePeriodSeconds to {} or more in k8s/base/worker.yaml",
                need.as_secs()
            ),
        ));
    }
    drifts
}

/// The definitions volume is mounted at the contract's path in every
/// workload (the worker, the API and the sync Job read the same files).
pub fn mounts(contract: &Contract, r: &Rendered) -> Vec<Drift> {
    let mut drifts = Vec::new();
    for (role, obj, c) in workloads(contract, r, &mut drifts) {
        let volumes = obj.pod_spec().and_then(|p| p.volumes.as_ref());
        let defs_volume = volumes.into_iter().flatten().find(|v| {
            v.config_map
                .as_ref()
                .is_some_and(|cm| cm.name.starts_with("actcore-definitions"))
        });
        let Some(vol) = defs_volume else {
            drifts.push(Drift::new(
                &r.source,
                format!("{}/{} volumes", obj.kind(), obj.name()),
                "a volume of the actcore-definitions ConfigMap",
                "none",
                "mount the definitions ConfigMap (see k8s/base/worker.yaml)",
            ));
            continue;
        };
        let mount = c.volume_mounts.iter().flatten().find(|m| m.name == vol.name);
        let path = mount.map(|m| m.mount_path.as_str());
        if path != Some(contract.paths.definitions.as_str()) {
            drifts.push(Drift::new(
                &r.source,
                field(obj, c, &format!("volumeMounts {}", vol.name)),
                &contract.paths.definitions,
                path.unwrap_or("not mounted"),
                format!(
                    "mount the definitions at {} in the {role} as in every workload ({CONTRACT} paths.definitions)",
                    contract.paths.definitions
                ),
            ));
        }
        if role == "worker" {
            let writable = c
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == contract.paths.lock_dir && m.read_only != Some(true));
            if !writable {
                drifts.push(Drift::new(
                    &r.source,
                    field(obj, c, "volumeMounts"),
                    format!("a writable mount at {} (paths.lock_dir)", contract.paths.lock_dir),
                    "none",
                    "mount an emptyDir there: the root filesystem is read-only",
                ));
            }
        }
    }
    drifts
}

/// Probes: the workloads that serve the admin API have liveness and
/// readiness probes on paths it serves, at its port, and liveness spans at
/// least three of the loop's wake-ups (`reread`).
pub fn probes(contract: &Contract, r: &Rendered, reread: Duration) -> Vec<Drift> {
    let mut drifts = Vec::new();
    for (role, obj, c) in workloads(contract, r, &mut drifts) {
        if !contract.workloads[role].probes {
            continue;
        }
        for (what, probe) in [
            ("livenessProbe", &c.liveness_probe),
            ("readinessProbe", &c.readiness_probe),
        ] {
            let Some(p) = probe else {
                drifts.push(Drift::new(
                    &r.source,
                    field(obj, c, what),
                    "an httpGet probe on /healthz or /readyz",
                    "none",
                    format!("add {what} (see k8s/base/worker.yaml)"),
                ));
                continue;
            };
            drifts.extend(probe_target(contract, r, obj, c, what, p));
            if what == "livenessProbe" && role == "worker" {
                let span = p.period_seconds.unwrap_or(10) as u64 * p.failure_threshold.unwrap_or(3) as u64;
                if span < 3 * reread.as_secs() {
                    drifts.push(Drift::new(
                        &r.source,
                        field(obj, c, "livenessProbe periodSeconds x failureThreshold"),
                        format!("at least {} s (three wake-ups of the loop, --reread {} s)", 3 * reread.as_secs(), reread.as_secs()),
                        format!("{span} s"),
                        "raise periodSeconds or failureThreshold: a shorter span restarts a healthy worker between wake-ups",
                    ));
                }
            }
        }
    }
    drifts
}

fn probe_target(contract: &Contract, r: &Rendered, obj: &Object, c: &Container, what: &str, p: &Probe) -> Vec<Drift> {
    let mut drifts = Vec::new();
    let Some(get) = &p.http_get else {
        drifts.push(Drift::new(
            &r.source,
            field(obj, c, what),
            "an httpGet probe",
            "another kind of probe",
            "probe the admin API over HTTP",
        ));
        return drifts;
    };
    let path = get.path.as_deref().unwrap_or("/");
    if !PROBE_PATHS.contains(&path) {
        drifts.push(Drift::new(
            &r.source,
            field(obj, c, &format!("{what}.httpGet.path")),
            format!("a path the admin API serves ({})", PROBE_PATHS.join(", ")),
            path,
            "probe /healthz (liveness) or /readyz (readiness)",
        ));
    }
    let port = match &get.port {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    };
    if port != Some(i32::from(contract.image.port)) {
        drifts.push(Drift::new(
            &r.source,
            field(obj, c, &format!("{what}.httpGet.port")),
            contract.image.port.to_string(),
            port.map_or("an unknown port name".to_string(), |p| p.to_string()),
            format!("probe the admin port {} (image.port)", contract.image.port),
        ));
    }
    drifts
}

/// The definitions ConfigMap carries exactly the files of `definitions/`
/// (kustomize's `files:` list must name each one).
pub fn definitions_config_map(r: &Rendered, definitions: &[Loaded]) -> Vec<Drift> {
    let mut drifts = Vec::new();
    let maps: Vec<&Object> = r
        .objects
        .iter()
        .filter(|o| o.kind() == "ConfigMap" && o.name().starts_with("actcore-definitions"))
        .collect();
    let [Object::ConfigMap(cm)] = maps.as_slice() else {
        drifts.push(Drift::new(
            &r.source,
            "ConfigMap/actcore-definitions",
            "one ConfigMap of the definitions",
            format!("{} of them", maps.len()),
            "keep the configMapGenerator actcore-definitions in k8s/base/kustomization.yaml",
        ));
        return drifts;
    };
    let keys: Vec<&String> = cm.data.iter().flatten().map(|(k, _)| k).collect();
    let files: Vec<String> = definitions
        .iter()
        .filter_map(|l| l.file.file_name().map(|f| f.to_string_lossy().into_owned()))
        .collect();
    for f in &files {
        if !keys.contains(&f) {
            drifts.push(Drift::new(
                &r.source,
                format!("ConfigMap/{} data {f}", cm.metadata.name.as_deref().unwrap_or_default()),
                format!("definitions/{f}"),
                "absent",
                format!("list definitions/{f} under the actcore-definitions configMapGenerator files in k8s/base/kustomization.yaml"),
            ));
        }
    }
    for k in keys {
        if !files.contains(k) {
            drifts.push(Drift::new(
                &r.source,
                format!("ConfigMap/{} data {k}", cm.metadata.name.as_deref().unwrap_or_default()),
                "only files of definitions/",
                format!("{k}, which definitions/ lacks"),
                "remove it from the configMapGenerator files in k8s/base/kustomization.yaml",
            ));
        }
    }
    drifts
}
