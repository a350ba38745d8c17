//! The runtime contract (`k8s/contract.toml`): the one file saying what a
//! deployment assumes (environment, paths, timeouts, image, the flagship's
//! schedule, the fallback units), and the checks that hold the manifests,
//! the Dockerfile, the definitions, the units and the runbooks to it.
//!
//! - [`checks`]: the pure drift checks over parsed inputs;
//! - [`manifests`]: `kubectl kustomize` output into k8s-openapi objects;
//! - [`runbooks`]: the marked command blocks of `runbooks/*.md`;
//! - [`live`]: the same checks against what a cluster runs (`--live`);
//! - [`verify`]: gathers the inputs from a checkout and runs the checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::duration::Dur;
use crate::error::{Error, Result};

pub mod checks;
pub mod live;
pub mod manifests;
pub mod runbooks;
pub mod verify;

/// The contract file versions this actcore understands.
pub const CONTRACT_VERSION: u32 = 1;

/// The paths the admin API serves that a probe may use. One place until the
/// API's router is the source (the lead points this at it after the merge).
pub const PROBE_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Where the contract lives in a checkout.
pub const CONTRACT_FILE: &str = "k8s/contract.toml";

/// `k8s/contract.toml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub version: u32,
    pub image: ImageSpec,
    pub paths: Paths,
    pub timeouts: Timeouts,
    pub flagship: Flagship,
    pub fallback: FallbackSpec,
    /// By role (`worker`, `api`, `sync`): which manifest object runs it.
    pub workloads: BTreeMap<String, Workload>,
    pub env: Vec<EnvVar>,
}

/// What the image carries and how it runs.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// The image name without its tag; every workload runs the same tag.
    pub repository: String,
    pub binary: String,
    pub user: u32,
    /// The admin port (`ACTCORE_LISTEN`, probes, metrics).
    pub port: u16,
    pub contract_path: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    pub definitions: String,
    pub lock_dir: String,
    pub fallback_journal: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// The bridge proxy's cut-off: every action timeout stays below it.
    pub bridge_proxy_limit: Dur,
    /// How far the worker's grace period exceeds the longest action.
    pub grace_margin: Dur,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Flagship {
    pub slug: String,
    pub cron: String,
    pub timezone: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackSpec {
    /// Relative to the checkout; absent until `actcore fallback units` exists.
    pub units_dir: String,
    pub timer: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub kind: String,
    pub name: String,
    pub container: String,
    pub args: Vec<String>,
    /// Serves the admin API's probes.
    pub probes: bool,
}

/// One environment variable: who sets it and which workloads need it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    pub set_by: String,
    pub workloads: Vec<String>,
    /// Names a `[paths]` entry the value must equal (`definitions`).
    #[serde(default)]
    pub path: Option<String>,
}

impl Contract {
    /// Reads and parses a contract file; exit 78 naming the file on any problem.
    pub fn load(path: &Path) -> Result<Contract> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read the runtime contract {}: {e}; pass --contract FILE (or ACTCORE_CONTRACT) to k8s/contract.toml or the file the image carries",
                path.display()
            ))
        })?;
        let contract: Contract = toml::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "{}: not a valid runtime contract: {e}; fix the file (docs/reference/contract.md lists every key)",
                path.display()
            ))
        })?;
        if contract.version != CONTRACT_VERSION {
            return Err(Error::Config(format!(
                "{}: version = {} but this actcore understands version {CONTRACT_VERSION}; deploy the actcore the contract was written for, or update the contract",
                path.display(),
                contract.version
            )));
        }
        Ok(contract)
    }

    /// The value a `[paths]` key names.
    pub fn path(&self, key: &str) -> Option<&str> {
        match key {
            "definitions" => Some(&self.paths.definitions),
            "lock_dir" => Some(&self.paths.lock_dir),
            "fallback_journal" => Some(&self.paths.fallback_journal),
            _ => None,
        }
    }

    /// The variables a workload needs.
    pub fn env_for<'a>(&'a self, workload: &'a str) -> impl Iterator<Item = &'a EnvVar> + 'a {
        self.env
            .iter()
            .filter(move |v| v.workloads.iter().any(|w| w == workload))
    }
}

/// One disagreement between the contract and what a file (or the cluster) says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub file: String,
    pub field: String,
    pub expected: String,
    pub found: String,
    pub fix: String,
}

impl Drift {
    pub fn new(
        file: impl Into<String>,
        field: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) -> Drift {
        Drift {
            file: file.into(),
            field: field.into(),
            expected: expected.into(),
            found: found.into(),
            fix: fix.into(),
        }
    }
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: expected {}, found {}; fix: {}",
            self.file, self.field, self.expected, self.found, self.fix
        )
    }
}

/// The start-up half of the contract: the environment and paths a workload
/// needs. Pure: the environment and the file system are passed in.
pub fn check_runtime(
    contract: &Contract,
    workload: &str,
    env: &dyn Fn(&str) -> Option<String>,
    is_dir: &dyn Fn(&Path) -> bool,
) -> Vec<Drift> {
    let mut drifts = Vec::new();
    for var in contract.env_for(workload) {
        match env(&var.name).filter(|v| !v.is_empty()) {
            None => drifts.push(Drift::new(
                "environment",
                &var.name,
                format!("set (by {})", var.set_by),
                "unset or empty",
                format!(
                    "set {} in the {workload}'s environment as k8s/contract.toml says",
                    var.name
                ),
            )),
            Some(value) => {
                if let Some(want) = var.path.as_deref().and_then(|k| contract.path(k)) {
                    if value != want {
                        drifts.push(Drift::new(
                            "environment",
                            &var.name,
                            want,
                            &value,
                            format!("set {}={want}, where the manifests mount it", var.name),
                        ));
                    } else if !is_dir(Path::new(&value)) {
                        drifts.push(Drift::new(
                            "environment",
                            &var.name,
                            format!("a directory at {value}"),
                            "no such directory",
                            "mount the definitions ConfigMap there (k8s/base/worker.yaml)",
                        ));
                    }
                }
            }
        }
    }
    drifts
}

/// Renders drifts as the lines `contract verify` and the start-up check print.
pub fn describe(drifts: &[Drift]) -> String {
    drifts.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n")
}

/// The start-up check of `actcore worker --contract FILE`: exit 78 with every
/// drift rather than run half configured.
pub fn enforce_at_startup(path: &Path, workload: &str) -> Result<()> {
    let contract = Contract::load(path)?;
    // Given by --contract, the contract is set however ACTCORE_CONTRACT is.
    let given = path.display().to_string();
    let env = |k: &str| match std::env::var(k).ok() {
        None if k == "ACTCORE_CONTRACT" => Some(given.clone()),
        v => v,
    };
    let drifts = check_runtime(&contract, workload, &env, &|p| p.is_dir());
    if drifts.is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "the runtime contract {} is not met ({} problem{}); refusing to start half configured:\n{}",
        path.display(),
        drifts.len(),
        if drifts.len() == 1 { "" } else { "s" },
        describe(&drifts)
    )))
}

/// A checkout's root: the directory holding `k8s/contract.toml`.
pub fn default_root() -> PathBuf {
    PathBuf::from(".")
}

#[cfg(test)]
mod tests;
