//! The worker: reconcile definitions, sleep until the next instant, claim
//! every activity due at it, execute the winners, record the results, keep
//! leases alive, reap the dead's runs, and shut down without losing a row.
//!
//! Every replica runs this same loop; the store's unique index on
//! `(definition_id, scheduled_for)` decides who executes an instant.
//!
//! - [`timers`]: pure: the timer queue and reconcile, given `now`.
//! - [`fire`]: deciding what is due, claiming it, releasing it at its fire time.
//! - [`execute`]: one run, supervised.
//! - [`recorder`]: results to rows, through outages and unstorable bodies.
//! - [`ledger`]: instants not fired (misfires, lost claims) to rows.
//! - [`leases`]: the runs this process owns, and their leases.
//! - [`queue`]: retries, manual triggers and buffered instants, from the durable queue.
//! - [`clock`]: the injectable clock that lets tests skip the waiting.

pub mod clock;
pub(crate) mod execute;
mod fire;
mod leases;
mod ledger;
mod load;
mod queue;
mod recorder;
mod retry;
mod shutdown;
mod timers;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

pub use self::clock::Clock;
use self::leases::Owned;
use self::ledger::{Ledger, Unfired};
use self::load::{reload, start};
use self::recorder::Recorder;
pub(crate) use self::retry::is_transient;
use self::shutdown::{Services, drain, stop_services};
use self::timers::{Specs, Timers};
use crate::action::HttpExecutor;
use crate::error::{Error, Result};
use crate::run::ErrorCode;
use crate::store::{DefinitionSource, FinishRun, RunStore, Store};

/// How a worker behaves; the CLI fills it from flags and the environment.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// This replica's name in `activity_runs.worker_id`.
    pub worker_id: String,
    /// A run's lease; renewed every third of it while the run is owned.
    pub lease: Duration,
    /// How long runs in flight may finish after shutdown is requested
    /// (None: the longest action timeout, preflight included, plus 5 s).
    pub shutdown_grace: Option<Duration>,
    /// Re-read definitions this often even without a notification.
    pub reread: Duration,
}

/// Most HTTP requests in flight at once. Thousands of activities due at one
/// instant then share this many kept-alive connections instead of opening
/// one socket (and its buffers) each; a run waiting for a slot is claimed
/// and its lease kept, it only starts sending a little later.
const MAX_CONCURRENT_REQUESTS: usize = 256;

/// The loop's longest sleep: it stamps the admin API's heartbeat on each wake.
const HEARTBEAT_EVERY: SignedDuration = SignedDuration::from_secs(crate::api::heartbeat::LOOP_EVERY.as_secs() as i64);

/// What the loop, the claim tasks and the run tasks share.
pub(crate) struct Core<S> {
    store: S,
    config: WorkerConfig,
    clock: Clock,
    executor: HttpExecutor,
    owned: Arc<Owned>,
    results: mpsc::UnboundedSender<FinishRun>,
    unfired: mpsc::UnboundedSender<Unfired>,
    request_slots: Semaphore,
    /// Claim, release and run tasks.
    tasks: TaskTracker,
    /// Shutdown requested: no new claim, no new HTTP call.
    stopping: CancellationToken,
    /// The shutdown grace is over: runs still executing are dropped.
    hard_stop: CancellationToken,
    /// Every loaded activity's spec, for runs that come from the queue or the reaper.
    specs: std::sync::RwLock<Arc<Specs>>,
    /// When the loop next claims (Unix ms; `i64::MAX`: nothing scheduled,
    /// `i64::MIN`: not started), for the pruner's gate.
    next_claim: AtomicI64,
}

/// The receiving ends that the recorder and the ledger take.
struct Channels {
    results: mpsc::UnboundedReceiver<FinishRun>,
    unfired: mpsc::UnboundedReceiver<Unfired>,
}

impl<S: RunStore> Core<S> {
    fn new(store: S, config: WorkerConfig, clock: Clock, request_slots: usize) -> (Arc<Core<S>>, Channels) {
        let (results, results_rx) = mpsc::unbounded_channel();
        let (unfired, unfired_rx) = mpsc::unbounded_channel();
        let core = Arc::new(Core {
            store,
            config,
            clock,
            executor: HttpExecutor::new(),
            owned: Arc::new(Owned::default()),
            results,
            unfired,
            request_slots: Semaphore::new(request_slots),
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            specs: Default::default(),
            next_claim: AtomicI64::new(i64::MIN),
        });
        (
            core,
            Channels {
                results: results_rx,
                unfired: unfired_rx,
            },
        )
    }

    fn specs(&self) -> Arc<Specs> {
        self.specs.read().expect("specs lock").clone()
    }

    /// Publishes the timers' specs after a (re)load.
    fn set_specs(&self, timers: &Timers) {
        *self.specs.write().expect("specs lock") = Arc::new(timers.specs());
    }

    fn lease(&self) -> SignedDuration {
        SignedDuration::try_from(self.config.lease).unwrap_or(SignedDuration::from_secs(30))
    }

    /// Hands a run's result to the recorder; the run stays owned until its row is written.
    fn finish(&self, f: FinishRun) {
        self.owned.finished(f.run_id);
        if let Err(mpsc::error::SendError(f)) = self.results.send(f) {
            // Only after the recorder stopped; the shutdown sweep records the row.
            error!(run_id = %f.run_id, "result arrived after the recorder stopped");
        }
    }

    fn unfired(&self, u: Unfired) {
        if self.unfired.send(u).is_err() {
            error!("missed instants arrived after the ledger stopped");
        }
    }

    fn recorder(&self, give_up: &CancellationToken) -> Recorder<S> {
        Recorder {
            store: self.store.clone(),
            owned: self.owned.clone(),
            give_up: give_up.clone(),
        }
    }

    /// Publishes when the loop next claims (`None`: nothing is scheduled).
    fn set_next_claim(&self, at: Option<Timestamp>) {
        self.next_claim
            .store(at.map_or(i64::MAX, |t| t.as_millisecond()), Ordering::Relaxed);
    }

    fn ledger(&self, give_up: &CancellationToken) -> Ledger<S> {
        Ledger {
            store: self.store.clone(),
            clock: self.clock.clone(),
            worker_id: self.config.worker_id.clone(),
            give_up: give_up.clone(),
        }
    }
}

/// The pruner's view of the firing: busy while any claim, run or unwritten
/// result is in flight, else quiet until the next claim.
impl<S: RunStore> crate::retention::Firing for Core<S> {
    fn quiet_for(&self) -> Option<Duration> {
        if !self.tasks.is_empty() || self.owned.len() > 0 {
            return None;
        }
        let next = self.next_claim.load(Ordering::Relaxed);
        if next == i64::MAX {
            return Some(Duration::MAX);
        }
        let left = next.saturating_sub(self.clock.now().as_millisecond());
        (left > 0).then(|| Duration::from_millis(left as u64))
    }
}

/// Runs the worker on `store` until `shutdown` is cancelled, then drains:
/// runs in flight get the grace period, the rest are recorded `abandoned`
/// (`shutdown`), and it returns Ok (exit 0). A background part that dies
/// (recorder, ledger, lease keeper, listener) stops it with an error (exit 1).
pub async fn run(store: Store, config: WorkerConfig, shutdown: CancellationToken) -> Result<()> {
    run_with(store, config, Clock::System, shutdown).await
}

/// [`run`] on any store and clock (tests inject faults and time).
pub async fn run_with<S: RunStore + DefinitionSource>(
    store: S,
    config: WorkerConfig,
    clock: Clock,
    shutdown: CancellationToken,
) -> Result<()> {
    let (core, channels) = Core::new(store.clone(), config.clone(), clock.clone(), MAX_CONCURRENT_REQUESTS);
    let background = CancellationToken::new();
    let drained = CancellationToken::new();
    let give_up = core.hard_stop.clone();
    let wake = Arc::new(Notify::new());
    let mut services = Services::default();
    services.spawn(
        "the recorder",
        core.recorder(&give_up).run(channels.results, drained.clone()),
    );
    services.spawn(
        "the ledger",
        core.ledger(&give_up).run(channels.unfired, drained.clone()),
    );
    services.spawn("the lease keeper", leases::keep(core.clone(), background.clone()));
    services.spawn(
        "the pruner",
        crate::retention::pruner::run(
            store.clone(),
            config.worker_id.clone(),
            core.clone(),
            background.clone(),
        ),
    );
    services.spawn("the metrics upkeep", crate::api::metrics::upkeep(background.clone()));
    let (listener, wake2, stop2) = (store.clone(), wake.clone(), background.clone());
    services.spawn(
        "the definitions listener",
        async move { listener.watch(wake2, stop2).await },
    );

    let started = start(&core, &store).await;
    let (mut timers, mut version) = match started {
        Ok(s) => s,
        Err(e) => {
            stop_services(&core, services, &background, &drained).await;
            return Err(e);
        }
    };
    core.set_specs(&timers);
    services.spawn("the queue", queue::run(core.clone(), background.clone()));
    let mut reread = tokio::time::interval(config.reread);
    reread.tick().await;
    let mut failure = None;

    // The lead for the earliest fire time, counted once per fire time (not
    // on every wake-up: counting 10,000 timers each time would be quadratic).
    let mut lead: Option<(Timestamp, SignedDuration)> = None;
    loop {
        // Wake a little before the earliest fire time: its claim is written
        // ahead so that the requests leave at the instant (`claim_ahead`).
        let earliest = timers.earliest();
        let ahead = match (earliest, lead) {
            (Some(t), Some((at, d))) if at == t => d,
            (Some(t), _) => {
                let d = fire::claim_ahead(timers.count_at(t));
                lead = Some((t, d));
                d
            }
            (None, _) => SignedDuration::ZERO,
        };
        core.set_next_claim(earliest.map(|t| t - ahead));
        let wake_at = earliest.map_or(clock.now() + SignedDuration::from_hours(1), |t| t - ahead);
        let wake_at = wake_at.min(clock.now() + SignedDuration::from_hours(1));
        // Liveness for /healthz (admin API): stamped on every wake-up, and
        // the sleep bounded so that it wakes at least every LOOP_EVERY.
        crate::api::heartbeat::LOOP.stamp();
        let wake_at = wake_at.min(clock.now() + HEARTBEAT_EVERY);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            (name, result) = services.next_exit() => {
                failure = Some(Error::Internal(match result {
                    Ok(()) => format!("{name} stopped unexpectedly; stopping the worker"),
                    Err(e) => format!("{name} failed: {e}; stopping the worker"),
                }));
                break;
            }
            _ = clock.sleep_until(wake_at) => {}
            _ = wake.notified() => {
                reload(&core.store, &mut timers, &mut version, clock.now(), true).await;
                core.set_specs(&timers);
                lead = None;
                continue;
            }
            _ = reread.tick() => {
                if reload(&core.store, &mut timers, &mut version, clock.now(), false).await {
                    core.set_specs(&timers);
                }
                lead = None;
                continue;
            }
        }
        step(&core, &mut timers, clock.now(), ahead);
    }
    if let Some(e) = &failure {
        error!(error = %e, "a background part of the worker died");
    }
    let grace = config
        .shutdown_grace
        .unwrap_or_else(|| timers.longest_run() + Duration::from_secs(5));
    drain(&core, grace).await;
    stop_services(&core, services, &background, &drained).await;
    // Whatever is still running past the grace is recorded, never lost.
    match core
        .store
        .abandon_worker_runs(
            &config.worker_id,
            ErrorCode::Shutdown,
            "worker shut down before the run finished",
            clock.now(),
        )
        .await
    {
        Ok(0) => {}
        Ok(n) => warn!(
            abandoned = n,
            "runs still in flight after the shutdown grace were recorded as abandoned (shutdown)"
        ),
        Err(e) => {
            error!(error = %e, "could not record the unfinished runs as abandoned; their leases will expire and they will be reaped")
        }
    }
    info!("worker stopped");
    failure.map_or(Ok(()), Err)
}

/// One step of the loop: takes off the timers what fires by `now + ahead`,
/// decides it, and spawns a claim task per group.
pub(crate) fn step<S: RunStore>(core: &Arc<Core<S>>, timers: &mut Timers, now: Timestamp, ahead: SignedDuration) {
    let due = timers.take_due(now + ahead);
    if due.is_empty() {
        return;
    }
    for group in fire::plan(core, timers, due, now) {
        core.tasks.spawn(fire::claim_group(core.clone(), group));
    }
}
