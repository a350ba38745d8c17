//! The `actcore` command line (docs/reference/cli.md): human tables by default,
//! `--json` everywhere, exit codes 0 done, 1 database, I/O or internal error, 2 usage,
//! 78 config.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::definition::{self, Loaded, Problem, Problems};
use crate::duration::{Bounds, Dur};
use crate::error::{Error, Result};
use crate::store::{DefinitionSource, Store, schema};
use crate::telemetry::LogFormat;
use crate::worker::{self, WorkerConfig};
use crate::{action, schedule, template};

/// `println!` that returns the write's error (see [`stdout_error`]) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(stdout_error)?
    };
}

mod contract;
mod definitions;
mod fallback;
mod history;
mod ops;
mod run_worker;
mod serve;
mod trigger;

pub use self::contract::{ContractCmd, DbCmd, VerifyArgs};
use self::contract::{contract_verify, db_roles};
use self::definitions::*;
pub use self::fallback::FallbackCmd;
use self::fallback::*;
use self::history::*;
pub use self::history::{RunsArgs, RunsCmd, SummaryArgs, WindowArgs};
pub use self::ops::{CircuitCmd, OverrideArgs, StatusArgs};
use self::run_worker::*;
pub(crate) use self::run_worker::{hold_embedded_lock, run_worker};
pub use self::serve::ApiArgs;
pub use self::trigger::TriggerArgs;

/// actcore: fire activity definitions on their cron schedules, exactly once
/// across replicas, and record every firing in `activity_runs`.
#[derive(Debug, Parser)]
#[command(name = "actcore", version, propagate_version = true, max_term_width = 100)]
#[command(
    after_help = "Start with `actcore dev` (embedded store, no setup), or see README.md.\n\
Exit codes: 0 done, 1 database, I/O or internal error, 2 usage, 78 configuration."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Store URL: postgres://… for production and replicas; unset for the
    /// embedded SQLite file under .actcore/ (single node).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Directory of activity definitions (*.toml).
    #[arg(long, env = "ACTCORE_DEFINITIONS", default_value = "definitions", global = true)]
    pub definitions: PathBuf,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t, env = "ACTCORE_LOG_FORMAT", global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate definition files without touching any database.
    #[command(subcommand)]
    Definitions(DefinitionsCmd),
    /// Sync definitions/ into the store: add, change, retire; one transaction.
    Sync {
        /// Show what would change and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply pending schema migrations first, as `actcore migrate` does
        /// (the sync Job of a rollout); without it, or with --dry-run (which
        /// writes nothing), sync needs a migrated schema.
        #[arg(long)]
        migrate: bool,
    },
    /// Apply the schema migrations this version has and the database lacks.
    ///
    /// The one command that changes the schema (besides `dev` and `sync
    /// --migrate`): run it before rolling out a new version; every other
    /// command exits 78 on a schema older than it needs. Migrations are
    /// additive, so the replicas still running the previous version keep
    /// working. A schema newer than this version (a later one migrated it)
    /// is left as it is. Safe to run again, and from several places at once.
    Migrate,
    /// Schedule maths from the definition file (no database).
    #[command(subcommand)]
    Schedule(ScheduleCmd),
    /// Run the scheduler: fire due instants, execute, record. Run 2+ replicas on Postgres.
    Worker(WorkerRunArgs),
    /// The newcomer's mode: embedded store, sync definitions/, run the
    /// worker in the foreground, and serve the status page on 127.0.0.1:8080.
    Dev(DevArgs),
    /// Recent runs, newest first, filtered by activity, time, outcome and
    /// trigger; `runs summary` counts them by source, trigger and outcome.
    Runs(RunsArgs),
    /// The manual canary: queue a `manual` run that a worker executes
    /// (--local: this process), and with --wait follow it to its end and
    /// check the remote received it. Refused while paused or the circuit is open, unless --force.
    Trigger(TriggerArgs),
    /// Pause an activity: no instant fires until `resume` (operator state;
    /// sync never clears it). Audited with --actor and --reason.
    Pause(OverrideArgs),
    /// Resume a paused activity. Audited.
    Resume(OverrideArgs),
    /// Hold an activity's circuit open, or reset it. Audited.
    #[command(subcommand)]
    Circuit(CircuitCmd),
    /// Per activity: next instant, last outcome and its lateness, error
    /// streak, churn budget, cooldown, circuit, and the recommended action.
    #[command(
        after_help = "The recommended action names the cause and the command, for example:\n  \
bridge unreachable 4 times running: check the ops-bridge tunnel (State Hub is reached through it) and \
State Hub's health, then `actcore circuit reset state-hub-consistency-sweep`\n  \
the sweep ran and found 2 assessment failures: follow up the repositories listed in the run's snapshot; \
nothing is wrong with the automation\n\
Every situation and its words: docs/operations.md. The same data: GET /v1/status on the admin API."
    )]
    Status(StatusArgs),
    /// Serve the admin API and the status page without firing anything (the
    /// `actcore-api` deployment, scaled apart from the workers).
    Api(ApiArgs),
    /// The emergency local fallback: a one-shot run for a systemd timer, its
    /// journal, the import into Postgres, and the units (runbooks/fallback.md).
    #[command(subcommand)]
    Fallback(FallbackCmd),
    /// The runtime contract (k8s/contract.toml): check the deployment against it.
    #[command(subcommand)]
    Contract(ContractCmd),
    /// Database administration: the least-privilege roles.
    #[command(subcommand)]
    Db(DbCmd),
}

/// `actcore worker`: the loop's flags, and the contract it must meet.
#[derive(Debug, Clone, Args)]
pub struct WorkerRunArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// The runtime contract to meet before starting (the image carries
    /// /etc/actcore/contract.toml): a missing variable or definitions path
    /// exits 78 with every problem instead of running half configured.
    #[arg(long, env = "ACTCORE_CONTRACT")]
    pub contract: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DefinitionsCmd {
    /// Validate every *.toml in DIR (default: --definitions). Exit 78 on any problem.
    Check {
        dir: Option<PathBuf>,
        /// Also report ${VAR}s unset in this environment (they are resolved at execution).
        #[arg(long)]
        env: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// The next instants of an activity, in UTC and its local time, DST days marked.
    Preview {
        slug: String,
        /// Start strictly after this RFC 3339 time (default: now).
        #[arg(long)]
        from: Option<Timestamp>,
        /// How many instants (1 to 10000).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        count: u32,
    },
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// This replica's name in run rows (default: $HOSTNAME-pid).
    #[arg(long, env = "ACTCORE_WORKER_ID")]
    pub worker_id: Option<String>,
    /// How long a run's lease lasts without renewal; a dead worker's runs are
    /// abandoned after it. From 2s to 1d: it is renewed every third of it,
    /// so even 2s leaves a renewal over 600 ms for a slow database round-trip
    /// before another replica may reap the run.
    #[arg(long, default_value = "30s", env = "ACTCORE_LEASE", value_parser = lease)]
    pub lease: Dur,
    /// On SIGTERM, how long runs in flight may finish, from 0s to 1d
    /// (default: the longest action timeout, plus its preflight, plus 5s).
    #[arg(long, env = "ACTCORE_SHUTDOWN_GRACE", value_parser = shutdown_grace)]
    pub shutdown_grace: Option<Dur>,
    /// How often definitions are re-read even without a NOTIFY, from 1s to 1d.
    #[arg(long, default_value = "30s", env = "ACTCORE_REREAD", value_parser = reread)]
    pub reread: Dur,
    /// Where the admin API (probes, /metrics, the status page) listens,
    /// HOST:PORT; 127.0.0.1:0 picks a free port [default: 0.0.0.0:8080, for
    /// `dev` 127.0.0.1:8080].
    #[arg(long, env = "ACTCORE_LISTEN")]
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Also start a local State Hub stand-in answering each kind of sweep
    /// result in turn, and sync demo activities firing every 10 s (one behind
    /// a broken bridge, whose circuit opens): the page shows every outcome
    /// within a minute. Uses its own embedded store and definitions under
    /// .actcore/demo/ (not DATABASE_URL, not definitions/).
    #[arg(long)]
    pub demo: bool,
}

/// Where a worker's admin API listens without `--listen`.
pub const WORKER_LISTEN: &str = "0.0.0.0:8080";
/// Where `dev` serves it: this machine only.
pub const DEV_LISTEN: &str = "127.0.0.1:8080";

/// `--lease`: see [`WorkerArgs::lease`].
pub const LEASE: Bounds = Bounds::new(Dur::from_secs(2), Dur::from_days(1));
/// `--shutdown-grace`: 0 abandons the runs in flight at once.
pub const SHUTDOWN_GRACE: Bounds = Bounds::new(Dur::ZERO, Dur::from_days(1));
/// `--reread`: a zero interval would spin.
pub const REREAD: Bounds = Bounds::new(Dur::from_secs(1), Dur::from_days(1));

fn lease(text: &str) -> std::result::Result<Dur, String> {
    LEASE
        .parse(text)
        .map_err(|e| format!("{e}; e.g. --lease 30s (the default)"))
}

fn shutdown_grace(text: &str) -> std::result::Result<Dur, String> {
    SHUTDOWN_GRACE.parse(text).map_err(|e| {
        format!("{e}; e.g. --shutdown-grace 60s, or leave it unset for the longest action timeout (and preflight) + 5s")
    })
}

fn reread(text: &str) -> std::result::Result<Dur, String> {
    REREAD
        .parse(text)
        .map_err(|e| format!("{e}; e.g. --reread 30s (the default)"))
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match &cli.command {
        Command::Definitions(DefinitionsCmd::Check { dir, env }) => {
            check(dir.as_deref().unwrap_or(&g.definitions), *env, g.json)
        }
        Command::Sync { dry_run, migrate } => {
            let files = definition::load_dir(&g.definitions)?;
            let store = if *migrate && !*dry_run {
                let store = Store::connect(g.database_url.as_deref()).await?;
                report_migration(&schema::migrate(&store).await?);
                store
            } else {
                Store::open(g.database_url.as_deref()).await?
            };
            let report = store.sync(&files, Timestamp::now(), *dry_run).await?;
            if g.json {
                print_json(&report)?;
            } else {
                let verb = if *dry_run { "would sync" } else { "synced" };
                out!(
                    "{verb} {} definitions into {}: {} added, {} changed, {} unchanged, {} retired",
                    files.len(),
                    store.backend(),
                    report.added.len(),
                    report.changed.len(),
                    report.unchanged,
                    report.retired.len()
                );
                for (label, list) in [
                    ("added", &report.added),
                    ("changed", &report.changed),
                    ("retired", &report.retired),
                ] {
                    for slug in list {
                        out!("  {label:<8} {slug}");
                    }
                }
            }
            Ok(())
        }
        Command::Migrate => {
            let store = Store::connect(g.database_url.as_deref()).await?;
            let report = schema::migrate(&store).await?;
            if g.json {
                print_json(&report)?;
            } else {
                let latest = report.status.version.unwrap_or_default();
                out!(
                    "migrated {}: applied {} migration{}; schema at version {latest} (this actcore needs {})",
                    report.store,
                    report.applied.len(),
                    if report.applied.len() == 1 { "" } else { "s" },
                    report.status.needed
                );
                for a in &report.applied {
                    out!("  applied {} {}", a.version, a.description);
                }
                for v in &report.status.newer {
                    out!("  newer   {v} (applied by a later actcore; left as it is)");
                }
            }
            Ok(())
        }
        Command::Schedule(ScheduleCmd::Preview { slug, from, count }) => {
            preview(&g.definitions, slug, *from, *count as usize, g.json)
        }
        Command::Worker(WorkerRunArgs { worker: args, contract }) => {
            if let Some(path) = contract {
                crate::contract::enforce_at_startup(path, "worker")?;
            }
            let store = Store::open(g.database_url.as_deref()).await?;
            let _lock = hold_embedded_lock(&store)?;
            run_worker(store, args, WORKER_LISTEN).await
        }
        Command::Dev(args) => {
            if args.demo {
                return crate::demo::run(g, args).await;
            }
            if g.database_url.is_some() {
                tracing::info!("dev: using DATABASE_URL instead of the embedded store");
            }
            // The newcomer's mode owns its store: it migrates it itself.
            let store = Store::open_and_migrate(g.database_url.as_deref()).await?;
            let _lock = hold_embedded_lock(&store)?;
            let files = definition::load_dir(&g.definitions)?;
            let report = store.sync(&files, Timestamp::now(), false).await?;
            tracing::info!(
                store = store.backend(),
                added = report.added.len(),
                changed = report.changed.len(),
                unchanged = report.unchanged,
                retired = report.retired.len(),
                "dev: synced {}",
                g.definitions.display()
            );
            for l in &files {
                let unset = unset_vars(&l.definition);
                if !unset.is_empty() {
                    tracing::warn!(
                        activity = %l.definition.slug,
                        "unset: {}; its runs will be recorded as automation errors (config) until you export them",
                        unset.join(", ")
                    );
                }
            }
            run_worker(store, &args.worker, DEV_LISTEN).await
        }
        Command::Runs(args) => runs(g, args).await,
        Command::Trigger(args) => trigger::run_trigger(g, args).await,
        Command::Pause(args) => ops::run_override(g, crate::ops::Op::Pause, args).await,
        Command::Resume(args) => ops::run_override(g, crate::ops::Op::Resume, args).await,
        Command::Circuit(cmd) => ops::circuit(g, cmd).await,
        Command::Status(args) => ops::status(g, args).await,
        Command::Api(args) => serve::api(g, args).await,
        Command::Fallback(cmd) => fallback(g, cmd).await,
        Command::Contract(ContractCmd::Verify(a)) => contract_verify(g, a).await,
        Command::Db(DbCmd::Roles {
            print: _,
            owner,
            runtime,
        }) => db_roles(g, owner, runtime),
    }
}

fn report_migration(report: &schema::MigrateReport) {
    for a in &report.applied {
        tracing::info!(version = a.version, description = %a.description, "applied a schema migration");
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(stdout))
        .map_err(stdout_error)
}

/// A write to stdout that failed. A reader that went away (`actcore runs |
/// head -1`) is not a failure of the command: [`Error::StdoutClosed`] ends it quietly.
fn stdout_error(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Error::StdoutClosed
    } else {
        Error::Io(e)
    }
}
