//! Prometheus metrics through the `metrics` crate and its Prometheus
//! exporter, rendered from our own `/metrics` route (the exporter's HTTP
//! listener is not built). Names are public: the alert rules use them
//! (docs/operations.md).
//!
//! Process counters and histograms are recorded where things happen
//! ([`run_finished`], [`instant_skipped`], [`claim_took`]); the per-activity
//! gauges are read from the database at scrape time ([`scrape`]), so every
//! replica and `actcore api` report the same numbers, and an alert can use
//! `absent()` when every worker is gone. Labels stay bounded: `slug` (the
//! definitions) and `outcome`/`reason` (fixed sets); never a run id.

use std::sync::OnceLock;
use std::time::Duration;

use jiff::Timestamp;
use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::Result;
use crate::run::Outcome;
use crate::status::ActivityStatus;

pub const RUNS_TOTAL: &str = "actcore_runs_total";
pub const SKIPPED_INSTANTS_TOTAL: &str = "actcore_skipped_instants_total";
pub const FIRE_LATENESS: &str = "actcore_fire_lateness_seconds";
pub const RUN_DURATION: &str = "actcore_run_duration_seconds";
pub const CLAIM_SECONDS: &str = "actcore_claim_seconds";
pub const RECORDER_BACKLOG: &str = "actcore_recorder_backlog";
pub const CIRCUIT_OPEN: &str = "actcore_circuit_open";
pub const CONSECUTIVE_ERRORS: &str = "actcore_consecutive_automation_errors";
pub const LAST_SUCCESS: &str = "actcore_last_success_timestamp_seconds";
pub const LAST_ASSESSMENT_FAILURES: &str = "actcore_last_run_assessment_failures";
pub const UP: &str = "actcore_up";
pub const RUNS_PRUNED_TOTAL: &str = "actcore_runs_pruned_total";

/// Why an instant was not executed (`actcore_skipped_instants_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    Misfire,
    Overlap,
    Paused,
    CircuitOpen,
    Budget,
}

impl SkipReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipReason::Misfire => "misfire",
            SkipReason::Overlap => "overlap",
            SkipReason::Paused => "paused",
            SkipReason::CircuitOpen => "circuit_open",
            SkipReason::Budget => "budget",
        }
    }

    /// The skip reason of a not-executed outcome.
    pub const fn of(outcome: Outcome) -> Option<SkipReason> {
        match outcome {
            Outcome::SkippedMisfire => Some(SkipReason::Misfire),
            Outcome::SkippedOverlap => Some(SkipReason::Overlap),
            Outcome::SkippedPaused => Some(SkipReason::Paused),
            Outcome::BlockedCircuitOpen => Some(SkipReason::CircuitOpen),
            Outcome::BlockedBudget => Some(SkipReason::Budget),
            _ => None,
        }
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder once (later calls return the same handle).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let buckets = [
                (
                    FIRE_LATENESS,
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ][..],
                ),
                (
                    RUN_DURATION,
                    &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0][..],
                ),
                (
                    CLAIM_SECONDS,
                    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0][..],
                ),
            ];
            let builder = buckets.iter().fold(builder, |b, (name, values)| {
                b.set_buckets_for_metric(Matcher::Full((*name).to_string()), values)
                    .expect("non-empty buckets")
            });
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows only the database gauges");
            }
            describe();
            gauge!(UP).set(1.0);
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(RUNS_TOTAL, "Runs finished by this process, by activity and outcome.");
    describe_counter!(
        RUNS_PRUNED_TOTAL,
        "Finished runs this process deleted past their retention, by class (succeeded, failed)."
    );
    describe_counter!(
        SKIPPED_INSTANTS_TOTAL,
        "Instants this process recorded as not executed, by activity and reason (misfire, overlap, paused, circuit_open, budget)."
    );
    describe_histogram!(
        FIRE_LATENESS,
        metrics::Unit::Seconds,
        "How late requests left after their fire time."
    );
    describe_histogram!(RUN_DURATION, metrics::Unit::Seconds, "How long executed runs took.");
    describe_histogram!(CLAIM_SECONDS, metrics::Unit::Seconds, "Latency of the claim statement.");
    describe_gauge!(RECORDER_BACKLOG, "Finished runs waiting to be written.");
    describe_gauge!(
        CIRCUIT_OPEN,
        "1 while the activity's circuit is open (from the database)."
    );
    describe_gauge!(CONSECUTIVE_ERRORS, "Automation errors in a row (from the database).");
    describe_gauge!(
        LAST_SUCCESS,
        "End of the last run that was ok, had assessment failures or was lock-skipped, in Unix seconds (from the database)."
    );
    describe_gauge!(
        LAST_ASSESSMENT_FAILURES,
        "Assessment failures of the last finished run (from the database)."
    );
    describe_gauge!(UP, "1 per actcore process serving metrics.");
}

/// A run ended: counted by outcome; executed runs also give their duration
/// and the lateness of their request.
pub fn run_finished(slug: &str, outcome: Outcome, duration: Option<Duration>, lateness: Option<Duration>) {
    if let Some(reason) = SkipReason::of(outcome) {
        instant_skipped(slug, reason);
    }
    counter!(RUNS_TOTAL, "slug" => slug.to_string(), "outcome" => outcome.as_str()).increment(1);
    timings(duration, lateness);
}

fn timings(duration: Option<Duration>, lateness: Option<Duration>) {
    static DURATION: OnceLock<Histogram> = OnceLock::new();
    static LATENESS: OnceLock<Histogram> = OnceLock::new();
    if let Some(d) = duration {
        cached(&DURATION, || histogram!(RUN_DURATION)).record(d.as_secs_f64());
    }
    if let Some(l) = lateness {
        cached(&LATENESS, || histogram!(FIRE_LATENESS)).record(l.as_secs_f64());
    }
}

/// The handle in `cell`, fetched once the process's recorder is installed
/// (before that a handle would be a no-op for good, so it is not kept).
fn cached<T: Clone>(cell: &OnceLock<T>, make: impl FnOnce() -> T) -> T {
    match HANDLE.get() {
        Some(_) => cell.get_or_init(make).clone(),
        None => make(),
    }
}

/// `n` instants of an activity were recorded as not executed.
pub fn instant_skipped(slug: &str, reason: SkipReason) {
    counter!(SKIPPED_INSTANTS_TOTAL, "slug" => slug.to_string(), "reason" => reason.as_str()).increment(1);
}

/// One activity's run counters, fetched from the recorder on first use
/// and kept: building the labelled key (the slug copied, the labels
/// hashed, the registry searched) on every run cost more than the
/// increment. Same series as [`run_finished`].
#[derive(Default)]
pub struct RunCounters {
    runs: [OnceLock<Counter>; Outcome::ALL.len()],
}

impl std::fmt::Debug for RunCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunCounters")
    }
}

impl RunCounters {
    /// [`run_finished`] with the cached handles.
    pub fn finished(&self, slug: &str, outcome: Outcome, duration: Option<Duration>, lateness: Option<Duration>) {
        if let Some(reason) = SkipReason::of(outcome) {
            instant_skipped(slug, reason);
        }
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        cached(
            &self.runs[i],
            || counter!(RUNS_TOTAL, "slug" => slug.to_string(), "outcome" => outcome.as_str()),
        )
        .increment(1);
        timings(duration, lateness);
    }
}

/// One claim statement took `d`.
pub fn claim_took(d: Duration) {
    static CLAIM: OnceLock<Histogram> = OnceLock::new();
    cached(&CLAIM, || histogram!(CLAIM_SECONDS)).record(d.as_secs_f64());
}

/// Runs a retention pass deleted, per class (`succeeded`, `failed`).
pub fn runs_pruned(class: &'static str, n: u64) {
    counter!(RUNS_PRUNED_TOTAL, "class" => class).increment(n);
}

/// Finished runs not yet written.
pub fn recorder_backlog(n: usize) {
    static BACKLOG: OnceLock<Gauge> = OnceLock::new();
    cached(&BACKLOG, || gauge!(RECORDER_BACKLOG)).set(n as f64);
}

/// Sets the per-activity gauges from the activities' status, read from
/// the database now, and renders the exposition.
pub fn render(handle: &PrometheusHandle, activities: &[ActivityStatus]) -> String {
    for a in activities.iter().filter(|a| a.state != "retired") {
        let slug = a.slug.clone();
        gauge!(CIRCUIT_OPEN, "slug" => slug.clone()).set(if a.circuit.state == "open" { 1.0 } else { 0.0 });
        gauge!(CONSECUTIVE_ERRORS, "slug" => slug.clone()).set(a.consecutive_automation_errors as f64);
        if let Some(t) = a.last_success_at {
            gauge!(LAST_SUCCESS, "slug" => slug.clone()).set(seconds(t));
        }
        let failures = a
            .last_run
            .as_ref()
            .filter(|r| r.outcome.is_some())
            .map(|r| r.assessment_failures);
        gauge!(LAST_ASSESSMENT_FAILURES, "slug" => slug).set(failures.unwrap_or(0) as f64);
    }
    gauge!(UP).set(1.0);
    handle.run_upkeep();
    handle.render()
}

/// How often a worker drains its histograms' samples.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Until `stop`, every [`UPKEEP_EVERY`], drains the histograms' recorded
/// samples into their buckets: without a scrape they would pile up, two per
/// run (10,000 activities on */5 s record 4,000 a second). Nothing to do
/// before [`install`].
pub async fn upkeep(stop: tokio_util::sync::CancellationToken) -> crate::error::Result<()> {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = every.tick() => if let Some(handle) = HANDLE.get() {
                handle.run_upkeep();
            },
        }
    }
}

fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// The activities' status for a scrape.
pub async fn scrape(state: &super::ApiState) -> Result<Vec<ActivityStatus>> {
    let defs: Vec<_> = state
        .definitions()
        .await?
        .iter()
        .filter(|d| d.retired_at.is_none())
        .cloned()
        .collect();
    crate::status::collect(state.store(), &defs, Timestamp::now()).await
}
