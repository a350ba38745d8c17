//! `actcore fallback run|status|import|units`: the emergency local fallback
//! (docs/reference/cli.md, runbooks/fallback.md).

use crate::fallback::import::Imported;
use crate::fallback::journal::{self, Journal};
use crate::fallback::run::{Decision, RunOptions};
use crate::fallback::{import, run, units};
use crate::run::Outcome;

use super::*;

#[derive(Debug, Subcommand)]
pub enum FallbackCmd {
    /// One shot of the fallback for SLUG, for a systemd timer (`fallback units`).
    ///
    /// Stands for the latest instant of the schedule not after now; later
    /// than the misfire grace after it, it is skipped. With the cluster's
    /// database reachable (DATABASE_URL), it does nothing while the cluster
    /// is healthy (a run in flight, or one ended ok, with assessment failures
    /// or lock skipped within two intervals), else claims the instant through
    /// the workers' fence (or runs as the next attempt after a failed cluster
    /// run). With the database out of reach, it checks the definition's canary
    /// (State Hub's progress events) and records the run in the journal.
    /// The request says it comes from the fallback (`X-Actcore-Source` and
    /// `${ACTCORE_SOURCE}` = local-fallback).
    ///
    /// Exit 0: ran ok, with assessment failures or lock skipped, or skipped
    /// (another call running, misfire, cluster healthy, slot taken). Exit 1:
    /// the run ended in an automation error (recorded), or the journal or
    /// database could not be written (nothing sent).
    Run(FallbackRunArgs),
    /// What the journal holds, and which runs are not yet imported.
    Status(JournalArg),
    /// Copy the journal's runs into the cluster's database (DATABASE_URL).
    ///
    /// Idempotent by run_id: a second import changes nothing. An instant the
    /// cluster also fired is kept outside the fence (attempt 0, duplicate_of
    /// the cluster's run), reported and audited (fallback_duplicate_fire).
    Import(JournalArg),
    /// Write the systemd service and timer of SLUG's fallback (shipped disabled).
    ///
    /// `actcore-fallback-SLUG.service` (oneshot; EnvironmentFile
    /// /etc/actcore/fallback.env for STATE_HUB_URL, DATABASE_URL and
    /// ACTCORE_DEFINITIONS) and `actcore-fallback-SLUG.timer` (OnCalendar in
    /// UTC, AccuracySec=1s, Persistent=false, no randomized delay). A cron
    /// OnCalendar cannot express exactly is refused (exit 78).
    Units(UnitsArgs),
}

#[derive(Debug, Args)]
pub struct JournalArg {
    /// The fallback's journal: an embedded store file.
    #[arg(long, env = "ACTCORE_JOURNAL", default_value = journal::DEFAULT_PATH)]
    pub journal: PathBuf,
}

#[derive(Debug, Args)]
pub struct FallbackRunArgs {
    /// The activity's slug (its definition file is read from --definitions).
    pub slug: String,
    #[command(flatten)]
    pub journal: JournalArg,
    /// Run even when the cluster looks healthy, the activity is paused or the
    /// canary saw the cluster's sweep; audited (fallback_forced). The fence
    /// still refuses an instant the cluster already ran or is running.
    #[arg(long)]
    pub force: bool,
    /// Who forces the run, in the audit (default: the OS user).
    #[arg(long)]
    pub actor: Option<String>,
    /// Why, in the audit.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct UnitsArgs {
    pub slug: String,
    /// Directory to write the two files into.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// The actcore binary ExecStart runs (default: this binary's own path).
    #[arg(long)]
    pub exec: Option<PathBuf>,
}

pub(super) async fn fallback(g: &Global, cmd: &FallbackCmd) -> Result<()> {
    match cmd {
        FallbackCmd::Run(args) => fallback_run(g, args).await,
        FallbackCmd::Status(args) => fallback_status(g, &args.journal).await,
        FallbackCmd::Import(args) => fallback_import(g, &args.journal).await,
        FallbackCmd::Units(args) => fallback_units(g, args),
    }
}

async fn fallback_run(g: &Global, args: &FallbackRunArgs) -> Result<()> {
    let opts = RunOptions {
        slug: args.slug.clone(),
        definitions: g.definitions.clone(),
        database_url: g.database_url.clone(),
        journal: args.journal.journal.clone(),
        force: args.force,
        actor: args.actor.clone().unwrap_or_else(crate::audit::os_user),
        reason: args.reason.clone(),
    };
    let report = run::run(&opts).await?;
    if g.json {
        print_json(&report)?;
    } else {
        let slot = report.slot.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        out!("{} {slot}: {}", report.slug, report.message);
        if let (Some(id), Some(place)) = (report.run_id, report.recorded_in) {
            let where_ = match &report.journal {
                Some(j) => format!("the journal {}", j.display()),
                None => "the cluster's database".into(),
            };
            out!(
                "  run {id} (attempt {}) recorded in {where_}{}",
                report.attempt.unwrap_or(1),
                if place == "journal" {
                    "; import it with `actcore fallback import` once the database is back"
                } else {
                    ""
                }
            );
        }
    }
    if report.decision == Decision::Ran && report.outcome == Some(Outcome::AutomationError) {
        return Err(Error::Automation(format!(
            "fallback run of {} ended in an automation error (recorded)",
            report.slug
        )));
    }
    Ok(())
}

async fn fallback_status(g: &Global, path: &Path) -> Result<()> {
    let entries = match Journal::open_existing(path).await? {
        Some(j) => j.entries().await?,
        None => Vec::new(),
    };
    let pending = entries.iter().filter(|e| e.imported.is_none()).count();
    if g.json {
        return print_json(&serde_json::json!({
            "journal": path, "exists": path.exists(), "runs": entries, "pending": pending,
        }));
    }
    if !path.exists() {
        out!(
            "no journal at {}: the fallback has recorded nothing here",
            path.display()
        );
        return Ok(());
    }
    out!(
        "journal {}: {} runs, {pending} not imported",
        path.display(),
        entries.len()
    );
    for e in &entries {
        out!(
            "  {}  {:<28} {:<22} attempt {} {:<20} {}",
            e.run.run_id,
            e.slug,
            e.run.scheduled_for.map(|t| t.to_string()).unwrap_or_default(),
            e.run.attempt,
            e.run.outcome.map(|o| o.as_str()).unwrap_or(e.run.state.as_str()),
            if e.imported.is_some() { "imported" } else { "PENDING" }
        );
    }
    Ok(())
}

async fn fallback_import(g: &Global, path: &Path) -> Result<()> {
    let url = g
        .database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| {
            Error::Usage(
            "fallback import needs the cluster's database: set DATABASE_URL (or --database-url) to its postgres://… URL"
                .into(),
        )
        })?;
    let Some(journal) = Journal::open_existing(path).await? else {
        if g.json {
            print_json(&import::ImportReport::default())?;
        } else {
            out!("no journal at {}: nothing to import", path.display());
        }
        return Ok(());
    };
    let store = Store::open(Some(url)).await?;
    let report = import::import(&journal, &store, url).await?;
    if g.json {
        return print_json(&report);
    }
    out!(
        "imported {} runs into {} ({} imported before, {} still running)",
        report.imported.len(),
        store.backend(),
        report.already_imported,
        report.still_running.len()
    );
    for r in &report.imported {
        let slot = r.scheduled_for.map(|t| t.to_string()).unwrap_or_default();
        match r.imported_as {
            Imported::Duplicate => out!(
                "  DUPLICATE FIRE {} {slot}: fallback run {} and cluster run {} both fired it (kept as attempt 0, audited)",
                r.slug,
                r.run_id,
                r.duplicate_of.map(|u| u.to_string()).unwrap_or_default()
            ),
            how => out!(
                "  {:<15} {} {slot} run {} attempt {}",
                serde_json::to_value(how)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                r.slug,
                r.run_id,
                r.attempt
            ),
        }
    }
    Ok(())
}

fn fallback_units(g: &Global, args: &UnitsArgs) -> Result<()> {
    let loaded = definition::load_dir(&g.definitions)?;
    let l = find_loaded(&loaded, &args.slug)?;
    let exec = match &args.exec {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let u = units::units(&l.definition, &exec, Timestamp::now())
        .map_err(|e| Error::Config(format!("{}: {e}", l.file.display())))?;
    std::fs::create_dir_all(&args.out)?;
    let service = args.out.join(&u.service_name);
    let timer = args.out.join(&u.timer_name);
    // Both written aside first, then renamed: never one unit without the other.
    let (service_tmp, timer_tmp) = (service.with_extension("service.tmp"), timer.with_extension("timer.tmp"));
    let written = std::fs::write(&service_tmp, &u.service)
        .and_then(|()| std::fs::write(&timer_tmp, &u.timer))
        .and_then(|()| std::fs::rename(&service_tmp, &service))
        .and_then(|()| std::fs::rename(&timer_tmp, &timer));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&service_tmp);
        let _ = std::fs::remove_file(&timer_tmp);
        return Err(Error::Io(std::io::Error::other(format!(
            "cannot write the units into {}: {e}; pass --out DIR with a writable directory",
            args.out.display()
        ))));
    }
    if g.json {
        print_json(&serde_json::json!({"service": service, "timer": timer, "on_calendar": u.on_calendar}))?;
    } else {
        out!("wrote {} and {}", service.display(), timer.display());
        out!("  OnCalendar={}", u.on_calendar);
        out!(
            "  install: copy both to /etc/systemd/system/, then `systemctl daemon-reload`; enable only in an emergency: \
             `systemctl enable --now {}` (runbooks/fallback.md)",
            u.timer_name
        );
    }
    Ok(())
}
