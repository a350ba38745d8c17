//! `actcore contract verify` and `actcore db roles --print`: the deployment's
//! assumptions checked, and the least-privilege SQL for a DBA.

use super::*;
use crate::contract::{self, verify};
use crate::store::roles;

#[derive(Debug, Subcommand)]
pub enum ContractCmd {
    /// Check the manifests, Dockerfile, definitions, fallback units and
    /// runbooks against k8s/contract.toml; exit 78 on any drift.
    ///
    /// Renders each overlay with `kubectl kustomize` (offline) and reports
    /// every drift as file, field, expected, found and the fix. With --live,
    /// also reads the Deployments, the sync Job and the definitions
    /// ConfigMap from the cluster of the kubeconfig (KUBECONFIG), holds them
    /// to the contract, and lists what the cluster runs that the repository
    /// does not say.
    #[command(
        after_help = "Examples:\n  actcore contract verify\n  actcore contract verify --live --namespace activity-core"
    )]
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The checkout to verify (holds definitions/, k8s/, runbooks/, Dockerfile).
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// The contract file (default: ROOT/k8s/contract.toml).
    #[arg(long)]
    pub contract: Option<PathBuf>,
    /// An overlay of k8s/overlays/ to render; repeat for several (default: all of them).
    #[arg(long = "overlay")]
    pub overlays: Vec<String>,
    /// Also compare the live cluster with the contract and the first overlay.
    #[arg(long)]
    pub live: bool,
    /// The namespace --live reads.
    #[arg(long, default_value = "activity-core")]
    pub namespace: String,
    /// The kubeconfig context --live uses (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DbCmd {
    /// The least-privilege roles: the schema owner (migrations, the sync Job)
    /// and the runtime role (workers, API) with no DDL and an append-only audit log.
    ///
    /// Prints idempotent SQL for a DBA to apply as a superuser after
    /// `actcore migrate` (and again after an upgrade adds a table); it
    /// connects to nothing.
    #[command(after_help = "Example:\n  actcore db roles --print | psql \"$ADMIN_DATABASE_URL\" -v ON_ERROR_STOP=1")]
    Roles {
        /// Print the SQL (the only mode: actcore never changes roles itself).
        #[arg(long, required = true)]
        print: bool,
        /// The schema owner's role name.
        #[arg(long, default_value = "actcore_owner")]
        owner: String,
        /// The workers' and the API's role name.
        #[arg(long, default_value = "actcore_runtime")]
        runtime: String,
    },
}

pub(super) async fn contract_verify(g: &Global, a: &VerifyArgs) -> Result<()> {
    let contract_path = a
        .contract
        .clone()
        .unwrap_or_else(|| a.root.join(contract::CONTRACT_FILE));
    let overlays: Vec<String> = if a.overlays.is_empty() {
        verify::OVERLAYS.iter().map(|s| s.to_string()).collect()
    } else {
        a.overlays.clone()
    };
    let (contract, rendered, definitions, mut report) = verify::verify(&a.root, &contract_path, &overlays)?;
    if a.live {
        let client = contract::live::client(a.context.as_deref()).await?;
        let live = contract::live::check(
            client,
            &a.namespace,
            &contract,
            &rendered[0],
            &definitions,
            &a.root,
            verify::reread_default(),
        )
        .await?;
        report.drifts.extend(live.contract);
        report.live = live.differences;
        report.notes.extend(live.notes);
    }
    if g.json {
        print_json(&report)?;
    } else {
        out!(
            "contract {} (version {}), overlays {}: {}",
            report.contract,
            report.version,
            report.overlays.join(", "),
            if report.drifts.is_empty() {
                "no drift".to_string()
            } else {
                format!(
                    "{} drift{}",
                    report.drifts.len(),
                    if report.drifts.len() == 1 { "" } else { "s" }
                )
            }
        );
        for d in &report.drifts {
            out!("  drift   {d}");
        }
        for p in &report.pending {
            out!("  pending {p}");
        }
        for n in &report.notes {
            out!("  note    {n}");
        }
        if a.live {
            if report.live.is_empty() {
                out!("live: the cluster runs what the repository says");
            } else {
                out!("live: the cluster runs what the repository does not say:");
                for d in &report.live {
                    out!("  live    {d}");
                }
            }
        }
    }
    if report.drifts.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{} drift{} from {} (listed above)",
            report.drifts.len(),
            if report.drifts.len() == 1 { "" } else { "s" },
            report.contract
        )))
    }
}

pub(super) fn db_roles(g: &Global, owner: &str, runtime: &str) -> Result<()> {
    for (flag, name) in [("--owner", owner), ("--runtime", runtime)] {
        if !roles::valid_role(name) {
            return Err(Error::Usage(format!(
                "{flag} {name:?}: a role name is lowercase letters, digits and _ (at most 63), starting with a letter or _"
            )));
        }
    }
    if owner == runtime {
        return Err(Error::Usage(
            "--owner and --runtime must differ: the runtime role must not own the schema".into(),
        ));
    }
    let sql = roles::sql(&roles::RoleNames {
        owner: owner.into(),
        runtime: runtime.into(),
    });
    if g.json {
        print_json(&serde_json::json!({"owner": owner, "runtime": runtime, "sql": sql}))?;
    } else {
        out!("{}", sql.trim_end());
    }
    Ok(())
}
