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
use crate::store::{DefinitionSource, HistoryStore, RunFilter, Store, schema};
use crate::telemetry::LogFormat;
use crate::worker::{self, WorkerConfig};
use crate::{action, schedule, template};

/// `println!` that returns the write's error (see [`stdout_error`]) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(stdout_error)?
    };
}

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
    Worker(WorkerArgs),
    /// The newcomer's mode: embedded store, sync definitions/, run the worker in the foreground.
    Dev(WorkerArgs),
    /// Recent runs, newest first.
    Runs(RunsArgs),
    /// Pause an activity (operator state; sync never clears it).
    Pause { slug: String },
    /// Resume a paused activity.
    Resume { slug: String },
    /// Activities and their state.
    Status,
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
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only this activity.
    #[arg(long)]
    pub slug: Option<String>,
    /// How many rows (1 to 10000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub limit: i64,
    /// Only runs fired in the last N hours (1 to 87600, ten years).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=87_600))]
    pub since_hours: Option<u32>,
}

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
        Command::Worker(args) => {
            let store = Store::open(g.database_url.as_deref()).await?;
            let _lock = hold_embedded_lock(&store)?;
            run_worker(store, args).await
        }
        Command::Dev(args) => {
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
            run_worker(store, args).await
        }
        Command::Runs(args) => runs(g, args).await,
        Command::Pause { slug } | Command::Resume { slug } => {
            let paused = matches!(cli.command, Command::Pause { .. });
            let store = Store::open(g.database_url.as_deref()).await?;
            let id = find_slug(&store, slug).await?;
            store.set_paused(id, paused, Timestamp::now()).await?;
            if g.json {
                print_json(&serde_json::json!({"slug": slug, "definition_id": id, "paused": paused}))?;
            } else {
                out!("{slug}: {}", if paused { "paused" } else { "resumed" });
            }
            Ok(())
        }
        Command::Status => status(g).await,
    }
}

/// The `${VAR}`s of a definition the worker could not resolve here (its defaults count as set).
fn unset_vars(definition: &definition::Definition) -> Vec<String> {
    definition
        .template_vars()
        .into_iter()
        .filter(|v| template::worker_lookup(v).is_none())
        .collect()
}

fn check(dir: &Path, env: bool, json: bool) -> Result<()> {
    let loaded = definition::load_dir(dir)?;
    let mut problems = Vec::new();
    if env {
        for l in &loaded {
            let unset = unset_vars(&l.definition);
            for var in &unset {
                problems.push(Problem {
                    file: l.file.clone(),
                    key: "action".into(),
                    message: format!("${{{var}}} is not set in this environment"),
                    fix: format!("export {var}=… before running the worker (it is resolved at each execution)"),
                });
            }
            // With every variable set, the action resolves as the worker will resolve it.
            if unset.is_empty()
                && let Err(e) = action::prepare(&l.definition.action, template::worker_lookup)
            {
                let (key, message) = e.split_once(": ").unwrap_or(("action", &e));
                problems.push(Problem {
                    file: l.file.clone(),
                    key: key.into(),
                    message: format!("with this environment: {message}"),
                    fix: "set the variables to values that make a full http(s) URL, e.g. STATE_HUB_URL=http://state-hub:8080"
                        .into(),
                });
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Definitions(Problems(problems)));
    }
    if json {
        let list: Vec<_> = loaded
            .iter()
            .map(|l| serde_json::json!({"file": l.file, "id": l.definition.id, "slug": l.definition.slug, "spec_hash": l.definition.spec_hash()}))
            .collect();
        print_json(&serde_json::json!({"ok": true, "definitions": list}))?;
    } else {
        out!("{}: {} definitions, all valid", dir.display(), loaded.len());
        for l in &loaded {
            out!(
                "  {:<40} {}  {}",
                l.definition.slug,
                l.definition.schedule.cron,
                l.file.display()
            );
        }
    }
    Ok(())
}

/// A migration on the way to another command is logged, not printed: stdout is that command's.
fn report_migration(report: &schema::MigrateReport) {
    for a in &report.applied {
        tracing::info!(version = a.version, description = %a.description, "applied a schema migration");
    }
}

fn find_loaded<'a>(loaded: &'a [Loaded], slug: &str) -> Result<&'a Loaded> {
    loaded.iter().find(|l| l.definition.slug == slug).ok_or_else(|| {
        let known: Vec<&str> = loaded.iter().map(|l| l.definition.slug.as_str()).collect();
        Error::Usage(format!("no definition with slug `{slug}`; known: {}", known.join(", ")))
    })
}

fn preview(dir: &Path, slug: &str, from: Option<Timestamp>, count: usize, json: bool) -> Result<()> {
    let loaded = definition::load_dir(dir)?;
    let l = find_loaded(&loaded, slug)?;
    let sched = l.definition.parsed_schedule().map_err(|e| Error::Config(e.message))?;
    let entries = schedule::preview(&sched, from.unwrap_or_else(Timestamp::now), count);
    if json {
        print_json(&entries)?;
    } else {
        out!(
            "{slug}: `{}` in {}",
            l.definition.schedule.cron,
            l.definition.schedule.timezone
        );
        for e in &entries {
            out!(
                "  {:<22} {:<27}{}",
                e.utc,
                e.local,
                if e.dst_transition_day {
                    "  DST transition day"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

async fn find_slug(store: &Store, slug: &str) -> Result<uuid::Uuid> {
    let defs = store.definitions().await?;
    defs.iter()
        .filter(|d| d.retired_at.is_none())
        .find(|d| d.definition.slug == slug)
        .map(|d| d.definition.id)
        .ok_or_else(|| {
            let known: Vec<&str> = defs
                .iter()
                .filter(|d| d.retired_at.is_none())
                .map(|d| d.definition.slug.as_str())
                .collect();
            Error::Usage(format!(
                "no activity with slug `{slug}` in the store (run `actcore sync` first?); known: {}",
                known.join(", ")
            ))
        })
}

async fn runs(g: &Global, args: &RunsArgs) -> Result<()> {
    let store = Store::open(g.database_url.as_deref()).await?;
    let definition_id = match &args.slug {
        Some(s) => Some(find_slug(&store, s).await?),
        None => None,
    };
    let since = args
        .since_hours
        .map(|h| Timestamp::now() - jiff::SignedDuration::from_hours(h as i64));
    let rows = store
        .runs(&RunFilter {
            definition_id,
            since,
            limit: args.limit,
        })
        .await?;
    if g.json {
        print_json(&rows)?;
        return Ok(());
    }
    out!(
        "{:<36}  {:<24}  {:<24}  {:<9}  {:<10}  {:<20}  error",
        "run_id",
        "fired_at",
        "scheduled_for",
        "trigger",
        "state",
        "outcome"
    );
    for r in rows {
        out!(
            "{:<36}  {:<24}  {:<24}  {:<9}  {:<10}  {:<20}  {}",
            r.run_id,
            r.fired_at
                .round(jiff::Unit::Millisecond)
                .unwrap_or(r.fired_at)
                .to_string(),
            r.scheduled_for.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
            r.trigger,
            r.state,
            r.outcome.unwrap_or_default(),
            r.error_code.unwrap_or_default()
        );
    }
    Ok(())
}

async fn status(g: &Global) -> Result<()> {
    let store = Store::open(g.database_url.as_deref()).await?;
    let defs = store.definitions().await?;
    let now = Timestamp::now();
    let mut out = Vec::new();
    for d in &defs {
        let next = if d.is_active() {
            d.definition.parsed_schedule().ok().and_then(|s| s.next_after(now))
        } else {
            None
        };
        let state = if d.retired_at.is_some() {
            "retired"
        } else if d.paused {
            "paused"
        } else if !d.enabled {
            "disabled"
        } else {
            "active"
        };
        out.push(serde_json::json!({
            "slug": d.definition.slug, "definition_id": d.definition.id, "state": state,
            "cron": d.definition.schedule.cron, "timezone": d.definition.schedule.timezone,
            "next": next.map(|t| t.to_string()), "spec_hash": d.spec_hash,
        }));
    }
    if g.json {
        print_json(&serde_json::json!({"store": store.backend(), "activities": out}))?;
    } else {
        out!("store: {}", store.backend());
        out!("{:<40}  {:<9}  {:<16}  next", "slug", "state", "cron");
        for o in &out {
            out!(
                "{:<40}  {:<9}  {:<16}  {}",
                o["slug"].as_str().unwrap_or_default(),
                o["state"].as_str().unwrap_or_default(),
                o["cron"].as_str().unwrap_or_default(),
                o["next"].as_str().unwrap_or("-")
            );
        }
    }
    Ok(())
}

/// The embedded store is single node: a second worker on the same file
/// refuses to start and names the process holding it.
fn hold_embedded_lock(store: &Store) -> Result<Option<std::fs::File>> {
    let Store::Sqlite(s) = store else { return Ok(None) };
    let lock_path = s.path().with_extension("lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            writeln!(file, "{}", std::process::id())?;
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
            Err(Error::Locked(format!(
                "the embedded store {} is in use by another worker (pid {}); the embedded store is single node: \
                 stop that process, or run replicas against Postgres (DATABASE_URL=postgres://…)",
                s.path().display(),
                holder.trim()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Io(e)),
    }
}

async fn run_worker(store: Store, args: &WorkerArgs) -> Result<()> {
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: no new claims; waiting for runs in flight");
        signal_token.cancel();
    });
    let config = WorkerConfig {
        worker_id: args.worker_id.clone().unwrap_or_else(default_worker_id),
        lease: args.lease.std(),
        shutdown_grace: args.shutdown_grace.map(Dur::std),
        reread: args.reread.std(),
    };
    worker::run(store, config, shutdown).await
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into());
    format!("{host}-{}", std::process::id())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
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
