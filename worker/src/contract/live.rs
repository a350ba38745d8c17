//! `contract verify --live`: read what the cluster runs (the Deployments, the
//! sync Job, the definitions ConfigMap) with `kube`, hold it to the contract
//! with the same checks as the repository, and list what the cluster runs
//! that the repository does not say: the drift to see before a deploy.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::manifests::{Object, Rendered};
use super::{Contract, Drift, checks};
use crate::definition::Loaded;
use crate::error::{Error, Result};

/// What the cluster answered.
#[derive(Debug, Default)]
pub struct LiveReport {
    /// The live objects held to the contract.
    pub contract: Vec<Drift>,
    /// The live objects against the repository's rendering.
    pub differences: Vec<Drift>,
    pub notes: Vec<String>,
}

/// A client from the kubeconfig (`KUBECONFIG`, or `~/.kube/config`), an optional context.
pub async fn client(context: Option<&str>) -> Result<kube::Client> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let kubeconfig = Kubeconfig::read().map_err(|e| {
        Error::Config(format!(
            "cannot read a kubeconfig: {e}; set KUBECONFIG to the cluster's (runbooks/deploy.md)"
        ))
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| Error::Config(format!("the kubeconfig does not give a usable cluster: {e}")))?;
    kube::Client::try_from(config).map_err(|e| Error::Config(format!("cannot build a Kubernetes client: {e}")))
}

fn kube_err(what: &str, e: kube::Error) -> Error {
    Error::Internal(format!(
        "cannot read {what} from the cluster: {e}; check the kubeconfig's context and that you may get it (kubectl auth can-i get {what})"
    ))
}

/// Reads the live objects the contract names and checks them.
pub async fn check(
    client: kube::Client,
    namespace: &str,
    contract: &Contract,
    repo: &Rendered,
    definitions: &[Loaded],
    root: &std::path::Path,
    reread: std::time::Duration,
) -> Result<LiveReport> {
    let mut report = LiveReport::default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client, namespace);
    let mut objects = Vec::new();
    let mut live_contract = contract.clone();
    for (role, w) in &contract.workloads {
        let found = match w.kind.as_str() {
            "Deployment" => deployments
                .get_opt(&w.name)
                .await
                .map_err(|e| kube_err(&format!("deployment/{}", w.name), e))?
                .map(|d| Object::Deployment(Box::new(d))),
            "Job" => jobs
                .get_opt(&w.name)
                .await
                .map_err(|e| kube_err(&format!("job/{}", w.name), e))?
                .map(|j| Object::Job(Box::new(j))),
            other => {
                return Err(Error::Config(format!(
                    "[workloads.{role}].kind = {other:?}: Deployment or Job"
                )));
            }
        };
        match found {
            Some(o) => objects.push(o),
            None if w.kind == "Job" => {
                report.notes.push(format!(
                    "no Job {} in {namespace}: normal between deploys (it is deleted before each one and expires after a day)",
                    w.name
                ));
                live_contract.workloads.remove(role);
            }
            None => {
                report.contract.push(Drift::new(
                    format!("live:{namespace}"),
                    format!("{}/{}", w.kind, w.name),
                    "running",
                    "absent",
                    "deploy it (runbooks/deploy.md)",
                ));
                live_contract.workloads.remove(role);
            }
        }
    }
    let live = Rendered {
        source: format!("live:{namespace}"),
        objects,
    };
    report.contract.extend(checks::env(&live_contract, &live));
    report.contract.extend(checks::images(&live_contract, &live));
    report
        .contract
        .extend(checks::grace(&live_contract, &live, definitions));
    report.contract.extend(checks::mounts(&live_contract, &live));
    report.contract.extend(checks::probes(&live_contract, &live, reread));

    for obj in &live.objects {
        report.differences.extend(compare(obj, repo, &live.source));
    }
    // The definitions the worker reads: the ConfigMap its pods mount.
    if let Some(w) = contract.workloads.get("worker")
        && let Some(obj) = live.find(&w.kind, &w.name)
        && let Some(name) = obj
            .pod_spec()
            .and_then(|p| p.volumes.as_ref())
            .into_iter()
            .flatten()
            .find_map(|v| v.config_map.as_ref().map(|c| c.name.clone()))
    {
        match config_maps
            .get_opt(&name)
            .await
            .map_err(|e| kube_err(&format!("configmap/{name}"), e))?
        {
            None => report.contract.push(Drift::new(
                format!("live:{namespace}"),
                format!("ConfigMap/{name}"),
                "the definitions the worker mounts",
                "absent",
                "apply the overlay again (runbooks/deploy.md): the worker's pods cannot start without it",
            )),
            Some(cm) => report
                .differences
                .extend(compare_definitions(&cm, definitions, root, namespace)),
        }
    }
    Ok(report)
}

/// What one live workload runs that the repository's rendering does not say.
fn compare(live: &Object, repo: &Rendered, source: &str) -> Vec<Drift> {
    let mut out = Vec::new();
    let at = format!("{source}:{}/{}", live.kind(), live.name());
    let fix = "deploy the repository's version (runbooks/deploy.md), or bring the cluster's change into k8s/";
    let Some(want) = repo.find(live.kind(), live.name()) else {
        out.push(Drift::new(&at, "object", "not in the repository", "running", fix));
        return out;
    };
    let (Some(lp), Some(rp)) = (live.pod_spec(), want.pod_spec()) else {
        return out;
    };
    for lc in &lp.containers {
        let Some(rc) = rp.containers.iter().find(|c| c.name == lc.name) else {
            out.push(Drift::new(
                &at,
                format!("container {}", lc.name),
                "absent",
                "running",
                fix,
            ));
            continue;
        };
        if lc.image != rc.image {
            out.push(Drift::new(
                &at,
                format!("container {} image", lc.name),
                rc.image.clone().unwrap_or_default(),
                lc.image.clone().unwrap_or_default(),
                fix,
            ));
        }
        if lc.args != rc.args {
            out.push(Drift::new(
                &at,
                format!("container {} args", lc.name),
                format!("{:?}", rc.args.clone().unwrap_or_default()),
                format!("{:?}", lc.args.clone().unwrap_or_default()),
                fix,
            ));
        }
        let env = |c: &k8s_openapi::api::core::v1::Container| -> BTreeMap<String, String> {
            c.env
                .iter()
                .flatten()
                .map(|e| {
                    let v = match (&e.value, &e.value_from) {
                        (Some(v), _) => v.clone(),
                        (None, Some(from)) => serde_json::to_string(from).unwrap_or_default(),
                        (None, None) => String::new(),
                    };
                    (e.name.clone(), v)
                })
                .collect()
        };
        let (le, re) = (env(lc), env(rc));
        for (k, v) in &le {
            match re.get(k) {
                None => out.push(Drift::new(
                    &at,
                    format!("container {} env {k}", lc.name),
                    "not set",
                    v,
                    fix,
                )),
                // Generated names (hashed ConfigMaps) differ by design between renderings.
                Some(r) if r != v && !(r.contains("actcore-config") && v.contains("actcore-config")) => {
                    out.push(Drift::new(&at, format!("container {} env {k}", lc.name), r, v, fix))
                }
                _ => {}
            }
        }
        for k in re.keys().filter(|k| !le.contains_key(*k)) {
            out.push(Drift::new(
                &at,
                format!("container {} env {k}", lc.name),
                "set",
                "not set",
                fix,
            ));
        }
    }
    if lp.termination_grace_period_seconds != rp.termination_grace_period_seconds {
        out.push(Drift::new(
            &at,
            "terminationGracePeriodSeconds",
            shown(rp.termination_grace_period_seconds, "30 (the default)"),
            shown(lp.termination_grace_period_seconds, "30 (the default)"),
            fix,
        ));
    }
    if let (Object::Deployment(l), Object::Deployment(r)) = (live, want) {
        let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas);
        if replicas(l) != replicas(r) {
            out.push(Drift::new(
                &at,
                "replicas",
                shown(replicas(r), "1 (the default)"),
                shown(replicas(l), "1 (the default)"),
                "scale back, or change the overlay if the new count is meant",
            ));
        }
    }
    out
}

fn shown<T: ToString>(value: Option<T>, unset: &str) -> String {
    value.map_or_else(|| unset.to_string(), |v| v.to_string())
}

/// The live definitions ConfigMap against `definitions/`.
fn compare_definitions(cm: &ConfigMap, definitions: &[Loaded], root: &std::path::Path, namespace: &str) -> Vec<Drift> {
    let mut out = Vec::new();
    let at = format!(
        "live:{namespace}:ConfigMap/{}",
        cm.metadata.name.as_deref().unwrap_or_default()
    );
    let data = cm.data.clone().unwrap_or_default();
    let fix =
        "deploy (runbooks/deploy.md): the hashed ConfigMap name rolls the workers onto the repository's definitions";
    for l in definitions {
        let name = l.file.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let repo = std::fs::read_to_string(root.join(&l.file)).ok();
        match data.get(&name) {
            None => out.push(Drift::new(&at, format!("data {name}"), "present", "absent", fix)),
            Some(live) if repo.as_deref().is_some_and(|r| r != live) => out.push(Drift::new(
                &at,
                format!("data {name}"),
                format!("the content of {}", l.file.display()),
                "different content",
                fix,
            )),
            _ => {}
        }
    }
    for name in data.keys() {
        if !definitions
            .iter()
            .any(|l| l.file.file_name().is_some_and(|f| f.to_string_lossy() == name.as_str()))
        {
            out.push(Drift::new(
                &at,
                format!("data {name}"),
                "absent (no such file in definitions/)",
                "present",
                fix,
            ));
        }
    }
    out
}
