//! `actcore contract verify`: reads a checkout (the contract, the rendered
//! overlays, the definitions and their generated copy under k8s/, the
//! Dockerfile, the fallback timer, the alert rules, the runbooks) and runs
//! every check.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::CommandFactory;
use serde::Serialize;

use super::manifests::{self, Rendered};
use super::{Contract, Drift, checks, runbooks};
use crate::definition::{self, Loaded};
use crate::error::{Error, Result};

/// The overlays a checkout renders.
pub const OVERLAYS: &[&str] = &["railiance", "dev"];
/// The generated copy of `definitions/` the base kustomization reads.
pub const DEFINITIONS_COPY: &str = "k8s/base/definitions";
/// The alert rules promtool checks; the PrometheusRule carries the same groups.
pub const ALERT_RULES: &str = "k8s/alerts/actcore.rules.yml";

/// What `verify` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub contract: String,
    pub version: u32,
    pub overlays: Vec<String>,
    pub drifts: Vec<Drift>,
    /// Runbook blocks waiting for a command from another branch.
    pub pending: Vec<String>,
    /// Things not checked and why (the fallback units not generated yet).
    pub notes: Vec<String>,
    /// `--live` only: what the cluster runs that the repository does not say.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub live: Vec<Drift>,
}

/// The loop's wake-up period: `actcore worker --reread`'s default, read from
/// the command tree so the liveness check follows the code.
pub fn reread_default() -> Duration {
    let cmd = crate::cli::Cli::command();
    cmd.find_subcommand("worker")
        .and_then(|w| w.get_arguments().find(|a| a.get_id() == "reread"))
        .and_then(|a| a.get_default_values().first())
        .and_then(|v| v.to_str())
        .and_then(|v| v.parse::<crate::duration::Dur>().ok())
        .map(|d| d.std())
        .unwrap_or(Duration::from_secs(30))
}

/// Every repository-side check over the checkout at `root`.
pub fn verify(
    root: &Path,
    contract_path: &Path,
    overlays: &[String],
) -> Result<(Contract, Vec<Rendered>, Vec<Loaded>, Report)> {
    let contract = Contract::load(contract_path)?;
    let mut report = Report {
        contract: contract_path.display().to_string(),
        version: contract.version,
        overlays: overlays.to_vec(),
        ..Report::default()
    };
    let defs_dir = root.join("definitions");
    let definitions = definition::load_dir(&defs_dir)?;
    let definitions: Vec<Loaded> = definitions
        .into_iter()
        .map(|mut l| {
            l.file = l.file.strip_prefix(root).map(Path::to_path_buf).unwrap_or(l.file);
            l
        })
        .collect();

    let mut rendered = Vec::new();
    for o in overlays {
        let dir = root.join("k8s/overlays").join(o);
        let yaml = manifests::render(&dir)?;
        rendered.push(manifests::parse(&yaml, &format!("k8s/overlays/{o}"))?);
    }
    let d = &mut report.drifts;
    d.extend(definitions_copy(root)?);
    d.extend(checks::timeouts(&contract, &definitions));
    let reread = reread_default();
    let rules_text = read_opt(&root.join(ALERT_RULES))?;
    let rules: Option<serde_json::Value> = match &rules_text {
        Some(t) => {
            Some(serde_saphyr::from_str(t).map_err(|e| Error::Config(format!("{ALERT_RULES}: not valid YAML: {e}")))?)
        }
        None => {
            d.push(Drift::new(
                ALERT_RULES,
                "file",
                "the alert rules",
                "absent",
                "restore the file",
            ));
            None
        }
    };
    for r in &rendered {
        d.extend(checks::env(&contract, r));
        d.extend(checks::images(&contract, r));
        d.extend(checks::grace(&contract, r, &definitions));
        d.extend(checks::mounts(&contract, r));
        d.extend(checks::probes(&contract, r, reread));
        d.extend(checks::definitions_config_map(r, &definitions));
        if let Some(rules) = &rules {
            d.extend(checks::alerts(ALERT_RULES, rules, r));
        }
    }
    match read_opt(&root.join("Dockerfile"))? {
        Some(text) => d.extend(checks::dockerfile(&contract, &text)),
        None => d.push(Drift::new(
            "Dockerfile",
            "file",
            "the image's Dockerfile",
            "absent",
            "restore it",
        )),
    }
    let units_dir = root.join(&contract.fallback.units_dir);
    let timer_rel = format!("{}/{}", contract.fallback.units_dir, contract.fallback.timer);
    let timer_text = if units_dir.is_dir() {
        match read_opt(&root.join(&timer_rel))? {
            Some(t) => Some(t),
            None => {
                d.push(Drift::new(
                    &timer_rel,
                    "file",
                    "the fallback timer",
                    "absent",
                    "generate the units with `actcore fallback units`",
                ));
                None
            }
        }
    } else {
        report.notes.push(format!(
            "{} not present: the fallback units are not generated in this checkout; the timer's schedule is not checked",
            contract.fallback.units_dir
        ));
        None
    };
    report.drifts.extend(checks::flagship(
        &contract,
        &definitions,
        timer_text.as_deref().map(|t| (timer_rel.as_str(), t)),
    ));
    let blocks = runbooks::load(root, Path::new("runbooks"))?;
    let (drifts, pending) = runbooks::check(&blocks, &crate::cli::Cli::command());
    report.drifts.extend(drifts);
    report.pending = pending;
    Ok((contract, rendered, definitions, report))
}

fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io(e)),
    }
}

/// `k8s/base/definitions/` is a byte-for-byte copy of `definitions/`.
pub fn definitions_copy(root: &Path) -> Result<Vec<Drift>> {
    let list = |dir: &Path| -> Result<Vec<(String, Vec<u8>)>> {
        let mut files = Vec::new();
        if dir.is_dir() {
            for e in std::fs::read_dir(dir)? {
                let p: PathBuf = e?.path();
                if p.extension().is_some_and(|x| x == "toml") {
                    let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    files.push((name, std::fs::read(&p)?));
                }
            }
        }
        files.sort();
        Ok(files)
    };
    let source = list(&root.join("definitions"))?;
    let copy = list(&root.join(DEFINITIONS_COPY))?;
    let fix = "copy them again: cp definitions/*.toml k8s/base/definitions/ (and list new files in k8s/base/kustomization.yaml)";
    let mut drifts = Vec::new();
    for (name, bytes) in &source {
        match copy.iter().find(|(n, _)| n == name) {
            None => drifts.push(Drift::new(
                format!("{DEFINITIONS_COPY}/{name}"),
                "file",
                format!("a copy of definitions/{name}"),
                "absent",
                fix,
            )),
            Some((_, c)) if c != bytes => drifts.push(Drift::new(
                format!("{DEFINITIONS_COPY}/{name}"),
                "content",
                format!("identical to definitions/{name}"),
                "different",
                fix,
            )),
            _ => {}
        }
    }
    for (name, _) in &copy {
        if !source.iter().any(|(n, _)| n == name) {
            drifts.push(Drift::new(
                format!("{DEFINITIONS_COPY}/{name}"),
                "file",
                "no file definitions/ lacks",
                "a copy of a removed definition",
                "delete it (and its line in k8s/base/kustomization.yaml)",
            ));
        }
    }
    Ok(drifts)
}
