//! Rendered manifests (`kubectl kustomize`, which works offline) parsed into
//! k8s-openapi types, so the checks read typed fields, not YAML paths.

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::Value;

use crate::error::{Error, Result};

/// One object of a rendering.
#[derive(Clone, Debug)]
pub enum Object {
    Deployment(Box<Deployment>),
    Job(Box<Job>),
    ConfigMap(Box<ConfigMap>),
    /// Another built-in kind, parsed and checked for shape only.
    Builtin {
        kind: String,
        name: String,
    },
    /// A custom resource (the PrometheusRule): no k8s-openapi type exists.
    Custom {
        kind: String,
        name: String,
        value: Value,
    },
}

/// The objects one overlay renders to, and where they came from.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// Shown in drifts: `k8s/overlays/NAME`, or `live:NAMESPACE` for `--live`.
    pub source: String,
    pub objects: Vec<Object>,
}

impl Object {
    pub fn kind(&self) -> &str {
        match self {
            Object::Deployment(_) => "Deployment",
            Object::Job(_) => "Job",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Builtin { kind, .. } | Object::Custom { kind, .. } => kind,
        }
    }

    pub fn name(&self) -> &str {
        let meta = match self {
            Object::Deployment(d) => &d.metadata,
            Object::Job(j) => &j.metadata,
            Object::ConfigMap(c) => &c.metadata,
            Object::Builtin { name, .. } | Object::Custom { name, .. } => return name,
        };
        meta.name.as_deref().unwrap_or("")
    }

    /// The pod spec a workload runs.
    pub fn pod_spec(&self) -> Option<&PodSpec> {
        match self {
            Object::Deployment(d) => d.spec.as_ref()?.template.spec.as_ref(),
            Object::Job(j) => j.spec.as_ref()?.template.spec.as_ref(),
            _ => None,
        }
    }

    /// A container of the workload's pod, by name.
    pub fn container(&self, name: &str) -> Option<&Container> {
        self.pod_spec()?.containers.iter().find(|c| c.name == name)
    }
}

impl Rendered {
    /// The object of this kind and name.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Object> {
        self.objects.iter().find(|o| o.kind() == kind && o.name() == name)
    }
}

/// `kubectl kustomize DIR`: the YAML an overlay renders to.
pub fn render(dir: &Path) -> Result<String> {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| {
            Error::Config(format!(
                "cannot run `kubectl kustomize {}`: {e}; install kubectl (it renders the manifests offline)",
                dir.display()
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Config(format!(
            "`kubectl kustomize {}` failed: {}; fix the kustomization it names",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| Error::Config(format!("`kubectl kustomize {}` printed invalid UTF-8", dir.display())))
}

/// Splits a multi-document YAML stream into JSON values (empty documents dropped).
pub fn documents(yaml: &str, source: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)
        .map_err(|e| Error::Config(format!("{source}: the rendered manifests are not valid YAML: {e}")))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Parses one object into its k8s-openapi type; an unknown built-in
/// apiVersion/kind or a field of the wrong type is an error naming it.
pub fn parse_object(mut value: Value, source: &str) -> Result<Object> {
    // kustomize folds long base64 values over lines; base64 ignores the breaks.
    if value.get("kind").and_then(Value::as_str) == Some("Secret")
        && let Some(Value::Object(data)) = value.get_mut("data")
    {
        for v in data.values_mut() {
            if let Value::String(s) = v {
                s.retain(|c| !c.is_whitespace());
            }
        }
    }
    let api = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let what = format!("{source}: {kind}/{name} ({api})");
    fn typed<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> Result<T> {
        serde_json::from_value(value).map_err(|e| {
            Error::Config(format!(
                "{what} does not parse as its Kubernetes type: {e}; fix the manifest"
            ))
        })
    }
    Ok(match (api.as_str(), kind.as_str()) {
        ("apps/v1", "Deployment") => Object::Deployment(Box::new(typed(value, &what)?)),
        ("batch/v1", "Job") => Object::Job(Box::new(typed(value, &what)?)),
        ("v1", "ConfigMap") => Object::ConfigMap(Box::new(typed(value, &what)?)),
        ("v1", "Namespace") => builtin::<Namespace>(value, &what, kind, name)?,
        ("v1", "ServiceAccount") => builtin::<ServiceAccount>(value, &what, kind, name)?,
        ("v1", "Service") => builtin::<Service>(value, &what, kind, name)?,
        ("v1", "Secret") => builtin::<Secret>(value, &what, kind, name)?,
        ("policy/v1", "PodDisruptionBudget") => builtin::<PodDisruptionBudget>(value, &what, kind, name)?,
        ("networking.k8s.io/v1", "NetworkPolicy") => builtin::<NetworkPolicy>(value, &what, kind, name)?,
        ("monitoring.coreos.com/v1", "PrometheusRule") => Object::Custom { kind, name, value },
        _ => {
            return Err(Error::Config(format!(
                "{what}: a kind the contract checks do not know; add it to contract::manifests::parse_object"
            )));
        }
    })
}

fn builtin<T: serde::de::DeserializeOwned>(value: Value, what: &str, kind: String, name: String) -> Result<Object> {
    serde_json::from_value::<T>(value).map_err(|e| {
        Error::Config(format!(
            "{what} does not parse as its Kubernetes type: {e}; fix the manifest"
        ))
    })?;
    Ok(Object::Builtin { kind, name })
}

/// A whole rendering, typed.
pub fn parse(yaml: &str, source: &str) -> Result<Rendered> {
    let objects = documents(yaml, source)?
        .into_iter()
        .map(|v| parse_object(v, source))
        .collect::<Result<Vec<_>>>()?;
    Ok(Rendered {
        source: source.to_string(),
        objects,
    })
}
