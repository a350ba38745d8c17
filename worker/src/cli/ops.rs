//! `status`, `pause`, `resume`, `circuit open|reset`: the operator's view
//! and overrides, through the same functions as the admin API
//! ([`crate::status::collect`], [`crate::ops::apply`]).

use super::*;
use crate::ops::{self, Op};
use crate::status;

#[derive(Debug, Args)]
pub struct OverrideArgs {
    /// The activity's slug (`actcore status` lists them).
    pub slug: String,
    /// Why, for the next operator and the audit row (required by `pause`
    /// and `circuit open`).
    #[arg(long)]
    pub reason: Option<String>,
    /// Who is doing it, in the audit row (default: the OS user).
    #[arg(long)]
    pub actor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CircuitCmd {
    /// Hold the circuit open: every instant is recorded blocked_circuit_open
    /// and not executed, with no automatic probe, until `circuit reset`.
    Open(OverrideArgs),
    /// Close the circuit, clear the error streak and the churn window: the
    /// next instant runs normally.
    Reset(OverrideArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this activity.
    pub slug: Option<String>,
}

pub(super) async fn run_override(g: &Global, op: Op, args: &OverrideArgs) -> Result<()> {
    let store = Store::open(g.database_url.as_deref()).await?;
    let def = ops::find(&store, &args.slug).await?;
    let actor = args.actor.clone().unwrap_or_else(crate::audit::os_user);
    let applied = ops::apply(&store, &def, op, &actor, args.reason.as_deref(), Timestamp::now()).await?;
    if g.json {
        print_json(&applied)?;
    } else {
        out!(
            "{}: {} by {}{}",
            applied.slug,
            op.done(),
            applied.actor,
            applied.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }
    Ok(())
}

pub(super) async fn circuit(g: &Global, cmd: &CircuitCmd) -> Result<()> {
    match cmd {
        CircuitCmd::Open(args) => run_override(g, Op::CircuitOpen, args).await,
        CircuitCmd::Reset(args) => run_override(g, Op::CircuitReset, args).await,
    }
}

pub(super) async fn status(g: &Global, args: &StatusArgs) -> Result<()> {
    let store = Store::open(g.database_url.as_deref()).await?;
    let defs = match &args.slug {
        Some(slug) => vec![ops::find(&store, slug).await?],
        None => store.definitions().await?,
    };
    let now = Timestamp::now();
    let activities = status::collect(&store, &defs, now).await?;
    if g.json {
        return print_json(&serde_json::json!({"store": store.backend(), "now": now, "activities": activities}));
    }
    out!(
        "store: {}   now: {}",
        store.backend(),
        now.round(jiff::Unit::Second).unwrap_or(now)
    );
    out!(
        "{:<36}  {:<8}  {:<9}  {:>6}  {:<20}  {:>9}  {:<20}  {:<8}",
        "slug",
        "state",
        "circuit",
        "errors",
        "last outcome",
        "lateness",
        "next (UTC)",
        "severity"
    );
    for a in &activities {
        let last = a.last_run.as_ref();
        out!(
            "{:<36}  {:<8}  {:<9}  {:>6}  {:<20}  {:>9}  {:<20}  {:<8}",
            a.slug,
            a.state,
            a.circuit.state,
            a.consecutive_automation_errors,
            last.and_then(|r| r.outcome.clone().or_else(|| Some(r.state.clone())))
                .unwrap_or_else(|| "-".into()),
            last.and_then(|r| r.lateness_ms)
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_else(|| "-".into()),
            a.next_instant
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
            a.recommendation.severity.as_str()
        );
        if let Some(local) = &a.next_instant_local {
            out!("    next, local: {local}");
        }
        if a.attempts_in_window > 0 || a.cooldown_until.is_some() {
            out!(
                "    budget: {} of {} automated attempts in the window{}{}",
                a.attempts_in_window,
                a.max_automated_attempts,
                a.window_ends_at.map(|t| format!(" (until {t})")).unwrap_or_default(),
                a.cooldown_until
                    .map(|t| format!("; cooldown until {t}"))
                    .unwrap_or_default()
            );
        }
        if a.circuit.state != "closed" {
            out!(
                "    circuit: {} since {}{}",
                a.circuit.state,
                a.circuit.since.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
                match (a.circuit.held_by_operator, a.circuit.half_open_at) {
                    (true, _) => format!(
                        ", held by {} until `actcore circuit reset`",
                        a.circuit.actor.as_deref().unwrap_or("an operator")
                    ),
                    (false, Some(t)) => format!(", half-open at {t}"),
                    (false, None) => String::new(),
                }
            );
        }
        out!("    => {}", a.recommendation.action);
    }
    Ok(())
}
