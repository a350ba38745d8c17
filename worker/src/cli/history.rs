//! `runs` and `runs summary`: what the store recorded, for operators.
//! Every filter is applied by the store, in SQL (`GuardStore::query_runs`,
//! `HistoryStore::run_counts`), so `--limit` counts matching runs only.

use std::collections::BTreeMap;

use clap::ValueEnum;
use clap::builder::PossibleValue;
use serde::Serialize;

use super::*;
use crate::run::{Outcome, Trigger};
use crate::store::{GuardStore, HistoryStore, RunCount, RunCountQuery, RunQuery};

/// `actcore runs [FILTERS]`, or `actcore runs summary`.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  \
actcore runs --slug state-hub-consistency-sweep --limit 5\n  \
actcore runs --since 24h --outcome automation_error       # the last day's automation errors\n  \
actcore runs --since 2026-11-30T00:00:00Z --trigger fallback\n  \
actcore runs --since 7d --outcome blocked_circuit_open --json | jq -r '.[].run_id'\n  \
actcore runs summary --since-hours 24                      # cluster vs local-fallback, by outcome\n\
Outcomes: docs/reference/classification.md. Columns: docs/reference/tables.md (activity_runs)."
)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: Option<RunsCmd>,
    /// Only this activity.
    #[arg(long)]
    pub slug: Option<String>,
    #[command(flatten)]
    pub window: WindowArgs,
    /// Only runs that ended with this outcome.
    #[arg(long)]
    pub outcome: Option<Outcome>,
    /// Only runs started this way.
    #[arg(long)]
    pub trigger: Option<Trigger>,
    /// At most this many rows (1 to 10000), the newest, counted after filtering.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub limit: i64,
}

#[derive(Debug, Subcommand)]
pub enum RunsCmd {
    /// Counts of runs by source, trigger and outcome over a window (default
    /// the last 24 hours), with totals per source: the cluster
    /// (`activity-core`) against the local fallback (`local-fallback`).
    #[command(after_help = "Examples:\n  \
actcore runs summary                                  # the last 24 hours, every activity\n  \
actcore runs summary --since-hours 24 --slug state-hub-consistency-sweep\n  \
actcore runs summary --since 7d --json | jq '.by_source'\n\
An outcome `-` (null in JSON) counts runs still queued or running.")]
    Summary(SummaryArgs),
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Only this activity.
    #[arg(long)]
    pub slug: Option<String>,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// When a window starts: `--since` or its older spelling `--since-hours`.
#[derive(Debug, Clone, Args)]
pub struct WindowArgs {
    /// Only runs fired in the last DURATION (`90m`, `24h`, `7d`; 1s to
    /// 3650d), or since an RFC 3339 time (`2026-11-30T00:00:00Z`).
    #[arg(long, value_name = "DURATION|RFC3339", value_parser = since, conflicts_with = "since_hours")]
    pub since: Option<Since>,
    /// Only runs fired in the last N hours (1 to 87600, ten years); the same
    /// as --since Nh.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=87_600))]
    pub since_hours: Option<u32>,
}

/// The start of a window as written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// That long before now.
    Ago(Dur),
    /// This time.
    At(Timestamp),
}

/// `--since`: from 1s to ten years back, as `--since-hours` allows.
pub const SINCE: Bounds = Bounds::new(Dur::from_secs(1), Dur::from_days(3650));

fn since(text: &str) -> std::result::Result<Since, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(Since::At(t));
    }
    match text.parse::<Dur>() {
        Ok(d) => SINCE.check(d).map(Since::Ago),
        Err(e) => Err(format!(
            "neither a duration nor an RFC 3339 time ({e}); e.g. --since 24h, --since 7d or --since 2026-11-30T00:00:00Z"
        )),
    }
}

impl WindowArgs {
    /// The window's start, given now; None when neither flag is set.
    pub fn start(&self, now: Timestamp) -> Option<Timestamp> {
        match (self.since, self.since_hours) {
            (Some(Since::At(t)), _) => Some(t),
            // Bounded to ten years: always within jiff's range from any real now.
            (Some(Since::Ago(d)), _) => Some(now.checked_sub(d.signed()).unwrap_or(Timestamp::MIN)),
            (None, Some(h)) => Some(now - jiff::SignedDuration::from_hours(i64::from(h))),
            (None, None) => None,
        }
    }
}

impl ValueEnum for Outcome {
    fn value_variants<'a>() -> &'a [Self] {
        Outcome::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.as_str()))
    }
}

impl ValueEnum for Trigger {
    fn value_variants<'a>() -> &'a [Self] {
        Trigger::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.as_str()))
    }
}

pub(super) async fn find_slug(store: &Store, slug: &str) -> Result<uuid::Uuid> {
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

async fn slug_id(store: &Store, slug: Option<&str>) -> Result<Option<uuid::Uuid>> {
    match slug {
        Some(s) => Ok(Some(find_slug(store, s).await?)),
        None => Ok(None),
    }
}

pub(super) async fn runs(g: &Global, args: &RunsArgs) -> Result<()> {
    if let Some(RunsCmd::Summary(s)) = &args.command {
        return summary(g, s).await;
    }
    let store = Store::open(g.database_url.as_deref()).await?;
    let rows = store
        .query_runs(&RunQuery {
            definition_id: slug_id(&store, args.slug.as_deref()).await?,
            since: args.window.start(Timestamp::now()),
            outcome: args.outcome.map(|o| o.as_str().to_string()),
            trigger: args.trigger.map(|t| t.as_str().to_string()),
            limit: args.limit,
        })
        .await?;
    if g.json {
        print_json(&rows)?;
        return Ok(());
    }
    out!(
        "{:<36}  {:<24}  {:<24}  {:<14}  {:<9}  {:>7}  {:<10}  {:<20}  error",
        "run_id",
        "fired_at",
        "scheduled_for",
        "source",
        "trigger",
        "attempt",
        "state",
        "outcome"
    );
    for r in rows {
        out!(
            "{:<36}  {:<24}  {:<24}  {:<14}  {:<9}  {:>7}  {:<10}  {:<20}  {}",
            r.run_id,
            r.fired_at
                .round(jiff::Unit::Millisecond)
                .unwrap_or(r.fired_at)
                .to_string(),
            r.scheduled_for.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
            r.source,
            r.trigger,
            r.attempt,
            r.state,
            r.outcome.unwrap_or_default(),
            r.error_code.unwrap_or_default()
        );
    }
    Ok(())
}

/// `runs summary --json`.
#[derive(Debug, Serialize)]
struct Summary {
    since: Timestamp,
    until: Timestamp,
    slug: Option<String>,
    rows: Vec<RunCount>,
    /// Runs per source.
    by_source: BTreeMap<String, i64>,
    total: i64,
}

/// The last day, when neither --since nor --since-hours is given.
const SUMMARY_DEFAULT_HOURS: i64 = 24;

async fn summary(g: &Global, args: &SummaryArgs) -> Result<()> {
    let store = Store::open(g.database_url.as_deref()).await?;
    let until = Timestamp::now();
    let since = args
        .window
        .start(until)
        .unwrap_or_else(|| until - jiff::SignedDuration::from_hours(SUMMARY_DEFAULT_HOURS));
    let rows = store
        .run_counts(&RunCountQuery {
            definition_id: slug_id(&store, args.slug.as_deref()).await?,
            since,
            until,
        })
        .await?;
    let mut by_source = BTreeMap::new();
    for r in &rows {
        *by_source.entry(r.source.clone()).or_insert(0) += r.count;
    }
    let s = Summary {
        since,
        until,
        slug: args.slug.clone(),
        total: rows.iter().map(|r| r.count).sum(),
        rows,
        by_source,
    };
    if g.json {
        return print_json(&s);
    }
    let round = |t: Timestamp| t.round(jiff::Unit::Second).unwrap_or(t);
    out!(
        "runs of {} fired from {} to {}",
        s.slug.as_deref().unwrap_or("every activity"),
        round(s.since),
        round(s.until)
    );
    if s.rows.is_empty() {
        out!("  none");
        return Ok(());
    }
    out!("{:<16}  {:<9}  {:<20}  {:>7}", "source", "trigger", "outcome", "count");
    for r in &s.rows {
        out!(
            "{:<16}  {:<9}  {:<20}  {:>7}",
            r.source,
            r.trigger,
            r.outcome.as_deref().unwrap_or("-"),
            r.count
        );
    }
    out!("");
    out!("{:<16}  {:>7}", "per source", "runs");
    for (source, n) in &s.by_source {
        out!("{source:<16}  {n:>7}");
    }
    out!("{:<16}  {:>7}", "all", s.total);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let start = |text: &str| {
            WindowArgs {
                since: Some(since(text).unwrap()),
                since_hours: None,
            }
            .start(now)
            .unwrap()
            .to_string()
        };
        assert_eq!(start("90m"), "2026-12-01T10:30:00Z");
        assert_eq!(start("7d"), "2026-11-24T12:00:00Z");
        assert_eq!(start("2026-11-30T00:00:00Z"), "2026-11-30T00:00:00Z");
        let hours = WindowArgs {
            since: None,
            since_hours: Some(24),
        };
        assert_eq!(hours.start(now).unwrap().to_string(), "2026-11-30T12:00:00Z");
        assert!(since("0s").unwrap_err().contains("from 1s to 3650d"));
        assert!(since("yesterday").unwrap_err().contains("--since 24h"));
    }
}
