//! `trigger`: the manual canary ([`crate::trigger`]).

use super::*;
use crate::trigger::{self, Request};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
actcore trigger state-hub-consistency-sweep --wait --reason \"canary after the bridge upgrade\"\n  \
actcore trigger state-hub-consistency-sweep --wait --local      # no worker: run it in this process\n  \
actcore trigger state-hub-consistency-sweep --force --reason \"probe before circuit reset\"\n\n\
Exit codes: 0 queued (or, with --wait, ended ok, with assessment failures or lock skipped, and the canary \
event was found); 1 refused (paused, circuit open: the message says what to do), an automation error, a \
timeout, or no canary event; 2 usage; 78 configuration.")]
pub struct TriggerArgs {
    /// The activity's slug (`actcore status` lists them).
    pub slug: String,
    /// Follow the run to its end: print its outcome, error code and summary,
    /// then check the definition's [canary] (an event from `manual` newer than the run).
    #[arg(long)]
    pub wait: bool,
    /// Run it once even if the activity is paused or its circuit is open (audited).
    #[arg(long)]
    pub force: bool,
    /// Execute it in this process instead of waiting for a worker (the
    /// embedded store, or workers that are down). Implies --wait.
    #[arg(long)]
    pub local: bool,
    /// How long the queued run waits for a worker; past it, it is recorded
    /// abandoned (expired) and never fires (1s to 1d).
    #[arg(long, default_value = "2m", value_parser = timeout)]
    pub timeout: Dur,
    /// Who is asking, in the audit row (default: the OS user).
    #[arg(long)]
    pub actor: Option<String>,
    /// Why, in the audit row.
    #[arg(long)]
    pub reason: Option<String>,
}

fn timeout(text: &str) -> std::result::Result<Dur, String> {
    Bounds::new(Dur::from_secs(1), Dur::from_days(1))
        .parse(text)
        .map_err(|e| format!("{e}; e.g. --timeout 2m (the default)"))
}

pub(super) async fn run_trigger(g: &Global, args: &TriggerArgs) -> Result<()> {
    let store = Store::open(g.database_url.as_deref()).await?;
    let def = crate::ops::find(&store, &args.slug).await?;
    let req = Request {
        actor: args.actor.clone().unwrap_or_else(crate::audit::os_user),
        reason: args.reason.clone(),
        force: args.force,
        timeout: args.timeout.signed(),
    };
    let queued = trigger::enqueue(&store, &def, &req, Timestamp::now()).await?;
    if !(args.wait || args.local) {
        if g.json {
            print_json(&queued)?;
        } else {
            out!(
                "{}: manual run {} queued by {}{}; a worker starts it within a second or two \
                 (expires {} if none does). Follow it: actcore runs --slug {} --trigger manual",
                queued.slug,
                queued.run_id,
                queued.actor,
                if queued.forced { " (forced)" } else { "" },
                queued.expires_at,
                queued.slug
            );
        }
        return Ok(());
    }
    if !g.json {
        eprintln!("{}: manual run {} queued; waiting for it…", queued.slug, queued.run_id);
    }
    if args.local && !trigger::local::execute(&store, &def, queued.run_id).await? && !g.json {
        eprintln!("a worker claimed it first; following that run");
    }
    let report = trigger::wait::follow(&store, &def, queued.run_id, queued.expires_at).await?;
    if g.json {
        print_json(&report)?;
    } else {
        out!(
            "run {}: {}{}{}",
            report.run_id,
            report.outcome.as_deref().unwrap_or(&report.state),
            report
                .error_code
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default(),
            report
                .worker_id
                .as_deref()
                .map(|w| format!(" on {w}"))
                .unwrap_or_default()
        );
        out!("summary: {}", report.summary);
        if let Some(c) = &report.canary {
            match (&c.verdict, c.found) {
                (Some(v), true) => out!(
                    "canary: found the event from manual at {} ({})",
                    v.event_at.map(|t| t.to_string()).unwrap_or_default(),
                    c.url
                ),
                _ => out!("canary: NOT found ({})", c.url),
            }
        }
    }
    match report.reason {
        None => Ok(()),
        Some(why) => Err(Error::Automation(why)),
    }
}
