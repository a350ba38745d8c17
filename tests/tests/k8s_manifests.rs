//! The manifests as Kubernetes and Prometheus see them: every object both
//! overlays render passes the official schemas with unknown fields
//! rejected (`kubernetes-validate --strict`, offline), and the alert rules
//! pass `promtool check rules`. The tools come from scripts/lib/tools.sh
//! (scripts/test installs them); a missing tool fails, it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kubernetes version the manifests target (k8s-openapi's `v1_33`).
const KUBERNETES_VERSION: &str = "1.33.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(env: &str, fallback: &str) -> PathBuf {
    let path = std::env::var(env)
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(fallback));
    let found = path.exists()
        || Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {}", path.display()))
            .output()
            .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{} not found: run scripts/test, which installs it (scripts/lib/tools.sh)",
        path.display()
    );
    path
}

fn kubernetes_validate() -> PathBuf {
    let venv = repo().join("target/tools-venv/bin/kubernetes-validate");
    tool("ACTCORE_KUBERNETES_VALIDATE", venv.to_str().unwrap())
}

fn render(overlay: &str, dir: &Path) -> PathBuf {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("k8s/overlays").join(overlay))
        .output()
        .expect("kubectl (scripts/lib/tools.sh installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = dir.join(format!("{overlay}.yaml"));
    std::fs::write(&file, out.stdout).unwrap();
    file
}

fn validate(file: &Path) -> (bool, String) {
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn both_overlays_pass_the_official_schemas_strictly() {
    let dir = tempfile::tempdir().unwrap();
    for overlay in ["railiance", "dev"] {
        let file = render(overlay, dir.path());
        let yaml = std::fs::read_to_string(&file).unwrap();
        let objects = yaml.split("\n---\n").count();
        let (ok, text) = validate(&file);
        assert!(ok, "{overlay}: {text}");
        // Every built-in object was checked; only the PrometheusRule has no schema.
        let passed = text.lines().filter(|l| l.contains("passed for resource")).count();
        assert_eq!(passed, objects - 1, "{overlay}: {text}");
        assert!(text.contains("PrometheusRule"), "{text}");
    }
}

#[test]
fn strict_validation_rejects_an_unknown_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = render("railiance", dir.path());
    let yaml = std::fs::read_to_string(&file).unwrap();
    let broken = yaml.replacen("terminationGracePeriodSeconds:", "terminationGracePeriod:", 1);
    assert_ne!(broken, yaml);
    std::fs::write(&file, broken).unwrap();
    let (ok, text) = validate(&file);
    assert!(!ok, "an unknown field passed: {text}");
    assert!(text.contains("terminationGracePeriod"), "{text}");
}

#[test]
fn the_alert_rules_pass_promtool() {
    let promtool = tool("ACTCORE_PROMTOOL", "promtool");
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(repo().join("k8s/alerts/actcore.rules.yml"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 4 rules found"), "{text}");
}
