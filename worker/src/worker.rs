//! The worker loop: reconcile definitions, sleep until the next instant,
//! claim every activity due at it in one statement, execute the winners,
//! record the results in batches, keep leases alive, reap the dead's runs,
//! and shut down without losing a row.
//!
//! Every replica runs this same loop; the store's unique index on
//! `(definition_id, scheduled_for)` decides who executes an instant.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};
use uuid::Uuid;

use crate::action::{HttpExecutor, PreparedRequest, RunHeaders};
use crate::classify::{Classification, Exchange, classify};
use crate::definition::{Definition, Overlap};
use crate::error::Result;
use crate::run::{ErrorCode, Outcome, Source, State, Trigger};
use crate::schedule::{self, Schedule};
use crate::store::{ClaimBatch, ClaimItem, FinishRun, NewEvent, NewRun, Store, StoredDefinition};
use crate::template;

/// How a worker behaves; the CLI fills it from flags and the environment.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// This replica's name in `activity_runs.worker_id`.
    pub worker_id: String,
    /// A run's lease; renewed every third of it while the run is in flight.
    pub lease: Duration,
    /// How long runs in flight may finish after shutdown is requested
    /// (None: the longest action timeout plus 5 s).
    pub shutdown_grace: Option<Duration>,
    /// Re-read definitions this often even without a notification.
    pub reread: Duration,
}

/// One activity as the loop holds it: everything the hot path needs,
/// computed when the definition is loaded, not when it fires.
struct Activity {
    definition: Arc<Definition>,
    spec_hash: String,
    /// Shared by the activities with the same cron and time zone: a parsed
    /// cron holds a few KiB of tables, which 10,000 activities would repeat.
    schedule: Arc<Schedule>,
    /// The request with `${VAR}`s resolved, or why it cannot be built.
    request: Arc<std::result::Result<PreparedRequest, String>>,
    /// The next scheduled instant and when to fire it (instant + jitter).
    next: Option<(Timestamp, Timestamp)>,
}

impl Activity {
    /// Takes the stored definition by value: 10,000 of them are moved into
    /// the timers, not copied next to the list they were loaded in.
    fn new(stored: StoredDefinition, schedules: &mut ScheduleCache) -> std::result::Result<Activity, String> {
        let StoredDefinition {
            definition, spec_hash, ..
        } = stored;
        let definition = Arc::new(definition);
        let key = (definition.schedule.cron.clone(), definition.schedule.timezone.clone());
        let schedule = match schedules.get(&key) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(definition.parsed_schedule().map_err(|e| e.message)?);
                schedules.insert(key, s.clone());
                s
            }
        };
        // `${ACTCORE_SOURCE}` names who fires the run unless the environment overrides it.
        let lookup = |name: &str| {
            template::env_lookup(name)
                .or_else(|| (name == "ACTCORE_SOURCE").then(|| Source::ActivityCore.as_str().to_string()))
        };
        let request = Arc::new(crate::action::prepare(&definition.action, lookup));
        Ok(Activity {
            definition,
            spec_hash,
            schedule,
            request,
            next: None,
        })
    }

    fn fire_time(&self, instant: Timestamp) -> Timestamp {
        let j = schedule::jitter(self.definition.id, instant, self.definition.schedule.jitter);
        instant + j.signed()
    }
}

/// Parsed schedules by (cron, time zone), shared between activities.
type ScheduleCache = HashMap<(String, String), Arc<Schedule>>;

/// The timers: activities keyed by their next fire time, earliest first.
#[derive(Default)]
struct Timers {
    activities: HashMap<Uuid, Activity>,
    queue: BTreeSet<(Timestamp, Uuid)>,
}

impl Timers {
    fn set_next(&mut self, id: Uuid, instant: Option<Timestamp>) {
        let Some(a) = self.activities.get_mut(&id) else { return };
        if let Some((_, fire)) = a.next.take() {
            self.queue.remove(&(fire, id));
        }
        if let Some(i) = instant {
            let fire = a.fire_time(i);
            a.next = Some((i, fire));
            self.queue.insert((fire, id));
        }
    }

    fn remove(&mut self, id: Uuid) {
        if let Some(a) = self.activities.remove(&id)
            && let Some((_, fire)) = a.next
        {
            self.queue.remove(&(fire, id));
        }
    }

    fn earliest(&self) -> Option<Timestamp> {
        self.queue.first().map(|(t, _)| *t)
    }

    /// How many activities fire at exactly `at` (the size of that claim).
    fn count_at(&self, at: Timestamp) -> usize {
        self.queue
            .range((at, Uuid::nil())..)
            .take_while(|(t, _)| *t == at)
            .count()
    }

    /// Removes and returns every activity whose fire time is at or before
    /// `until`, with its instant and fire time.
    fn take_due(&mut self, until: Timestamp) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some(&(fire, id)) = self.queue.first() {
            if fire > until {
                break;
            }
            self.queue.pop_first();
            if let Some(a) = self.activities.get_mut(&id)
                && let Some((instant, _)) = a.next.take()
            {
                due.push(Due { id, instant, fire });
            }
        }
        due
    }
}

/// An activity taken off the timers: its scheduled instant and when to
/// send it (the instant plus its jitter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Due {
    id: Uuid,
    instant: Timestamp,
    fire: Timestamp,
}

/// How long before its fire time an instant is claimed. The claim is a
/// durable write (a WAL flush, ~30 µs per row on top): written ahead, the
/// POST leaves at the instant itself instead of after the commit. A little
/// more per activity due, so that even 10,000 are claimed in time.
fn claim_ahead(due: usize) -> SignedDuration {
    const BASE: SignedDuration = SignedDuration::from_millis(20);
    const PER_ACTIVITY: SignedDuration = SignedDuration::from_micros(50);
    const MAX: SignedDuration = SignedDuration::from_secs(1);
    (BASE + PER_ACTIVITY * i32::try_from(due).unwrap_or(i32::MAX)).min(MAX)
}

/// Sleeps until `at` to within a few microseconds: tokio's timer has a
/// 1 ms resolution and wakes up to a millisecond late, so it sleeps to just
/// before and yields (other tasks keep running) for the rest.
async fn sleep_until_exactly(at: Timestamp) {
    const SPIN: SignedDuration = SignedDuration::from_millis(2);
    let left = at.duration_since(Timestamp::now());
    if left > SPIN {
        tokio::time::sleep((left - SPIN).unsigned_abs()).await;
    }
    while Timestamp::now() < at {
        tokio::task::yield_now().await;
    }
}

/// Shared between the loop and the run tasks.
struct Shared {
    store: Store,
    config: WorkerConfig,
    executor: HttpExecutor,
    finished: mpsc::UnboundedSender<FinishRun>,
    in_flight: AtomicUsize,
    idle: Notify,
    /// Bounds the HTTP requests in flight (see [`MAX_CONCURRENT_REQUESTS`]).
    request_slots: tokio::sync::Semaphore,
}

/// Most HTTP requests in flight at once. Thousands of activities due at one
/// instant then share this many kept-alive connections instead of opening
/// one socket (and its buffers) each; a run waiting for a slot is claimed
/// and its lease kept, it only starts sending a little later.
const MAX_CONCURRENT_REQUESTS: usize = 256;

/// Runs the worker until `shutdown` is cancelled, then drains: runs in
/// flight get the grace period, the rest are recorded `abandoned`
/// (`shutdown`), and it returns Ok (exit 0).
pub async fn run(store: Store, config: WorkerConfig, shutdown: CancellationToken) -> Result<()> {
    let (finish_tx, finish_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        store: store.clone(),
        config: config.clone(),
        executor: HttpExecutor::new(),
        finished: finish_tx,
        in_flight: AtomicUsize::new(0),
        idle: Notify::new(),
        request_slots: tokio::sync::Semaphore::new(MAX_CONCURRENT_REQUESTS),
    });
    let recorder = tokio::spawn(record_finished(store.clone(), finish_rx));
    let background = CancellationToken::new();
    let mut services = JoinSet::new();
    services.spawn(keep_leases(shared.clone(), background.clone()));
    let wake = Arc::new(Notify::new());
    if let Store::Postgres(pg) = &store {
        services.spawn(listen_for_changes(pg.clone(), wake.clone(), background.clone()));
    }

    // A run left `running` under this worker's own id belongs to a previous
    // life of this replica (same pod name after a crash): it is lost.
    let leftover = store
        .abandon_worker_runs(
            &config.worker_id,
            ErrorCode::WorkerLost,
            "the worker restarted while this run was in flight",
            Timestamp::now(),
        )
        .await?;
    if leftover > 0 {
        warn!(
            runs = leftover,
            "runs left running by this worker's previous life recorded as abandoned (worker_lost)"
        );
    }
    let mut timers = Timers::default();
    let mut version = store.definitions_version().await?;
    let stored = store.definitions().await?;
    let cursors: HashMap<Uuid, Timestamp> = store.last_scheduled().await?.into_iter().collect();
    reconcile(&mut timers, stored, |d| {
        // Resume after the last recorded instant (or the last change of the
        // spec): what lies between is missed and handled by the misfire policy.
        let last = cursors.get(&d.definition.id).copied();
        Some(match last {
            Some(l) if l > d.updated_at => l,
            _ => d.updated_at,
        })
    });
    drop(cursors);
    info!(worker_id = %config.worker_id, store = store.backend(), activities = timers.activities.len(), "worker started");
    log_next(&timers);
    let mut runs = JoinSet::new();
    let mut reread = tokio::time::interval(config.reread);
    reread.tick().await;

    // The lead for the earliest fire time, counted once per fire time: the
    // loop also wakes for every finished run, and counting 10,000 timers on
    // each of 10,000 wake-ups would be quadratic.
    let mut lead: Option<(Timestamp, SignedDuration)> = None;
    loop {
        // Wake a little before the earliest fire time: its claim is written
        // ahead so that the requests leave at the instant (`claim_ahead`).
        let earliest = timers.earliest();
        let ahead = match (earliest, lead) {
            (Some(t), Some((at, d))) if at == t => d,
            (Some(t), _) => {
                let d = claim_ahead(timers.count_at(t));
                lead = Some((t, d));
                d
            }
            (None, _) => SignedDuration::ZERO,
        };
        let sleep_for = match earliest.map(|t| t - ahead) {
            Some(t) if t <= Timestamp::now() => Duration::ZERO,
            Some(t) => t.duration_since(Timestamp::now()).unsigned_abs(),
            None => Duration::from_secs(3600),
        }
        .min(Duration::from_secs(3600));
        let deadline = tokio::time::Instant::now() + sleep_for;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => {}
            _ = wake.notified() => {
                reload(&store, &mut timers, &mut version, true).await;
                lead = None;
                continue;
            }
            _ = reread.tick() => {
                reload(&store, &mut timers, &mut version, false).await;
                lead = None;
                continue;
            }
            Some(_) = runs.join_next(), if !runs.is_empty() => continue,
        }
        let now = Timestamp::now();
        let due = timers.take_due(now + ahead);
        if due.is_empty() {
            continue;
        }
        fire_due(&shared, &mut timers, &mut runs, due, now).await;
    }

    drain(
        shared,
        runs,
        config.shutdown_grace.unwrap_or_else(|| default_grace(&timers)),
    )
    .await;
    background.cancel();
    while services.join_next().await.is_some() {}
    let _ = recorder.await;
    // Whatever is still running past the grace is recorded, never lost.
    let abandoned = store
        .abandon_worker_runs(
            &config.worker_id,
            ErrorCode::Shutdown,
            "worker shut down before the run finished",
            Timestamp::now(),
        )
        .await?;
    if abandoned > 0 {
        warn!(
            abandoned,
            "runs still in flight after the shutdown grace were recorded as abandoned (shutdown)"
        );
    }
    info!("worker stopped");
    Ok(())
}

fn default_grace(timers: &Timers) -> Duration {
    let longest = timers
        .activities
        .values()
        .map(|a| a.definition.action.timeout.std())
        .max()
        .unwrap_or_default();
    longest + Duration::from_secs(5)
}

fn log_next(timers: &Timers) {
    if timers.activities.len() > 20 {
        if let Some(t) = timers.earliest() {
            info!(next = %t, activities = timers.activities.len(), "next fire");
        }
        return;
    }
    for a in timers.activities.values() {
        if let Some((instant, _)) = a.next {
            info!(activity = %a.definition.slug, next = %instant, cron = %a.definition.schedule.cron, "next fire");
        }
    }
}

/// Brings the timers in line with the store, by identity: an unchanged
/// activity keeps its timer; a changed one restarts from its next instant
/// (runs in flight keep the spec they started with); gone, paused or
/// retired ones stop. `start_after` says where a new activity's schedule begins.
fn reconcile(
    timers: &mut Timers,
    stored: Vec<StoredDefinition>,
    start_after: impl Fn(&StoredDefinition) -> Option<Timestamp>,
) {
    let mut live = std::collections::HashSet::with_capacity(stored.len());
    let mut schedules: ScheduleCache = timers
        .activities
        .values()
        .map(|a| {
            let s = &a.definition.schedule;
            ((s.cron.clone(), s.timezone.clone()), a.schedule.clone())
        })
        .collect();
    for d in stored.into_iter().filter(|d| d.is_active()) {
        let id = d.definition.id;
        live.insert(id);
        if timers.activities.get(&id).is_some_and(|a| a.spec_hash == d.spec_hash) {
            continue;
        }
        let changed = timers.activities.contains_key(&id);
        timers.remove(id);
        let from = if changed {
            Some(Timestamp::now())
        } else {
            start_after(&d)
        }
        .unwrap_or_else(Timestamp::now);
        let slug = d.definition.slug.clone();
        match Activity::new(d, &mut schedules) {
            Ok(a) => {
                let first = a.schedule.next_after(from);
                if changed {
                    info!(activity = %slug, spec_hash = %a.spec_hash, "definition changed: new schedule from its next instant");
                }
                timers.activities.insert(id, a);
                timers.set_next(id, first);
            }
            Err(e) => {
                error!(activity = %slug, error = %e, "stored definition has an invalid schedule; not firing it")
            }
        }
    }
    let gone: Vec<Uuid> = timers
        .activities
        .keys()
        .filter(|id| !live.contains(id))
        .copied()
        .collect();
    for id in gone {
        if let Some(a) = timers.activities.get(&id) {
            info!(activity = %a.definition.slug, "activity retired, paused or disabled: no longer firing");
        }
        timers.remove(id);
    }
}

async fn reload(store: &Store, timers: &mut Timers, version: &mut crate::store::DefinitionsVersion, notified: bool) {
    let result = async {
        let v = store.definitions_version().await?;
        if !notified && v == *version {
            return Ok::<_, crate::Error>(false);
        }
        let stored = store.definitions().await?;
        reconcile(timers, stored, |_| Some(Timestamp::now()));
        *version = v;
        Ok(true)
    }
    .await;
    match result {
        Ok(true) => debug!(activities = timers.activities.len(), "definitions reloaded"),
        Ok(false) => {}
        Err(e) => warn!(error = %e, "could not re-read definitions; keeping the current ones"),
    }
}

/// Handles the activities taken off the timers: misfires are recorded, the
/// rest claimed per (instant, fire time) in as few statements as possible,
/// and the winners sent at their fire time.
async fn fire_due(shared: &Arc<Shared>, timers: &mut Timers, runs: &mut JoinSet<()>, due: Vec<Due>, now: Timestamp) {
    // Only ids here: the claim rows (with their snapshots) are built one
    // chunk at a time, so 10,000 due at once never hold 10,000 snapshots.
    let mut groups: BTreeMap<(Timestamp, Timestamp), Vec<Uuid>> = BTreeMap::new();
    let mut misfires = Vec::new();
    for Due { id, instant, fire } in due {
        let Some(a) = timers.activities.get(&id) else { continue };
        let def = &a.definition;
        let decision = crate::misfire::decide(&a.schedule, &def.schedule, instant, now);
        if let Some(m) = decision.missed {
            misfires.push(misfire_row(&shared.config.worker_id, def, &a.spec_hash, m, now));
        }
        if let Some(i) = decision.fire {
            // A caught-up instant (`fire_once`) goes now; others at their fire time.
            let fire_at = if i == instant { fire.max(now) } else { now };
            groups.entry((fire_at, i)).or_default().push(id);
        }
        let next = a.schedule.next_after(decision.resume_after);
        timers.set_next(id, next);
    }
    if !misfires.is_empty() {
        record_misfires(&shared.store, misfires).await;
    }
    let lease_until = now + SignedDuration::try_from(shared.config.lease).unwrap_or(SignedDuration::from_secs(30));
    // Earliest fire time first.
    for ((fire_at, instant), mut ids) in groups {
        ids.sort_unstable();
        // Claimed in chunks. Won runs wait for the fire time if the claim
        // was written ahead; if the claims ran past it, each chunk's runs
        // start as soon as it is won instead of after the whole instant's.
        // Chunks are contiguous in definition order, so replicas racing on
        // the instant still take the index locks in one order.
        // A failed claim is retried only while every instant in it could
        // still fire within its activity's misfire grace.
        let retry_for = ids
            .iter()
            .filter_map(|id| timers.activities.get(id))
            .map(|a| a.definition.schedule.misfire_grace.signed())
            .min()
            .unwrap_or_default()
            .min(CLAIM_RETRY_WITHIN);
        let claim = Claim {
            instant,
            fire_at,
            lease_until,
            give_up_at: instant + retry_for,
        };
        let mut waiting = Vec::new();
        let mut rest = &ids[..];
        let mut size = FIRST_CLAIM;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            let items = claim_items(timers, &claim, chunk);
            let won = claim_chunk(shared, timers, &claim, &items).await;
            drop(items);
            if Timestamp::now() < fire_at {
                waiting.extend(won);
            } else {
                spawn_runs(shared, runs, waiting.drain(..).chain(won));
            }
            rest = tail;
            size = (size * 2).min(MAX_CLAIM);
        }
        if !waiting.is_empty() {
            sleep_until_exactly(fire_at).await;
            spawn_runs(shared, runs, waiting);
        }
    }
}

/// The first claim statement of an instant is small so that, when claims
/// run late, its runs start at once; the next ones double (fewer
/// statements, less per row) while the runs already won execute.
const FIRST_CLAIM: usize = 128;
/// Most activities claimed in one statement (see `fire_due`).
const MAX_CLAIM: usize = 1024;

/// How long after its instant a failed claim is still retried (bounded by
/// the activities' misfire grace): a database hiccup costs a late run, not a
/// lost instant, while the loop stays free for the next instants.
const CLAIM_RETRY_WITHIN: SignedDuration = SignedDuration::from_secs(10);

/// What the chunks of one (instant, fire time) claim share.
struct Claim {
    instant: Timestamp,
    fire_at: Timestamp,
    lease_until: Timestamp,
    /// No retry of a failed claim starts after this.
    give_up_at: Timestamp,
}

/// The claim rows of one chunk of activities, in the chunk's order.
fn claim_items(timers: &Timers, claim: &Claim, ids: &[Uuid]) -> Vec<ClaimItem> {
    let scheduled_for = claim.instant.to_string();
    let planned_lateness = claim.fire_at.duration_since(claim.instant).as_millis();
    ids.iter()
        .filter_map(|id| timers.activities.get(id))
        .map(|a| ClaimItem {
            run_id: Uuid::now_v7(),
            definition_id: a.definition.id,
            spec_hash: a.spec_hash.clone(),
            skip_if_running: a.definition.schedule.overlap == Overlap::Skip,
            snapshot: serde_json::json!({
                "trigger": Trigger::Schedule.as_str(),
                "spec_hash": a.spec_hash,
                "scheduled_for": scheduled_for,
                // Planned here; the run's result replaces it with when the request left.
                "lateness_ms": planned_lateness,
            }),
        })
        .collect()
}

/// Claims `items` and returns the runs this replica won (overlaps are
/// recorded by the claim itself and only logged here).
async fn claim_chunk(shared: &Arc<Shared>, timers: &Timers, claim: &Claim, items: &[ClaimItem]) -> Vec<RunTask> {
    let batch = ClaimBatch {
        scheduled_for: claim.instant,
        fired_at: claim.fire_at,
        worker_id: &shared.config.worker_id,
        lease_expires_at: claim.lease_until,
        items,
    };
    // A claim is one statement and its conflict clause makes a retry safe:
    // rows a lost-but-committed attempt wrote are not returned again, stay
    // `running` under this worker and are reaped as `worker_lost`.
    let mut delay = std::time::Duration::from_millis(50);
    let claimed = loop {
        match shared.store.claim(&batch).await {
            Ok(c) => break c,
            Err(e) if Timestamp::now() + delay < claim.give_up_at => {
                warn!(error = %e, instant = %claim.instant, activities = items.len(), retry_in_ms = delay.as_millis(), "claim failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(1));
            }
            Err(e) => {
                // Another replica may still win these; if none does, the next
                // start records them as missed. Nothing half-written here.
                error!(error = %e, instant = %claim.instant, activities = items.len(), "claim failed; instant not fired by this replica");
                return Vec::new();
            }
        }
    };
    debug!(instant = %claim.instant, due = items.len(), won = claimed.len(), "claimed");
    let mut won = Vec::with_capacity(claimed.len());
    for c in claimed {
        let Some(a) = timers.activities.get(&c.definition_id) else {
            continue;
        };
        if c.state != State::Running {
            info!(activity = %a.definition.slug, scheduled_for = %claim.instant, "previous run still running: skipped_overlap");
            continue;
        }
        // Counted in flight from the claim: the lease keeper and the drain see it.
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        won.push(RunTask {
            run_id: c.run_id,
            definition: a.definition.clone(),
            request: a.request.clone(),
            scheduled_for: claim.instant,
        });
    }
    won
}

fn spawn_runs(shared: &Arc<Shared>, runs: &mut JoinSet<()>, tasks: impl IntoIterator<Item = RunTask>) {
    for task in tasks {
        let span = info_span!("run", activity = %task.definition.slug, run_id = %task.run_id, scheduled_for = %task.scheduled_for);
        runs.spawn(execute(shared.clone(), task).instrument(span));
    }
}

fn misfire_row(worker_id: &str, def: &Definition, spec_hash: &str, m: schedule::Missed, now: Timestamp) -> NewRun {
    warn!(activity = %def.slug, missed = m.count, first = %m.first, last = %m.last, "instants missed past the grace: recorded as skipped_misfire, not fired late");
    NewRun {
        run_id: Uuid::now_v7(),
        definition_id: def.id,
        fired_at: now,
        scheduled_for: Some(m.last),
        trigger: Trigger::Schedule,
        source: Source::ActivityCore,
        attempt: 1,
        state: State::Skipped,
        outcome: Some(Outcome::SkippedMisfire),
        automation_error: false,
        assessment_failures: 0,
        error_code: None,
        error_message: None,
        context_snapshot: serde_json::json!({
            "trigger": "schedule",
            "spec_hash": spec_hash,
            "misfire": {"count": m.count, "first": m.first.to_string(), "last": m.last.to_string(),
                        "grace_ms": def.schedule.misfire_grace.as_millis(), "policy": def.schedule.misfire},
            "lateness_ms": now.duration_since(m.last).as_millis(),
        }),
        worker_id: Some(worker_id.to_string()),
        lease_expires_at: None,
        started_at: None,
        finished_at: Some(now),
        spec_hash: Some(spec_hash.to_string()),
    }
}

async fn record_misfires(store: &Store, rows: Vec<NewRun>) {
    let mut events = Vec::new();
    for r in &rows {
        match store.insert_run(r).await {
            Ok(true) => events.push(NewEvent {
                at: r.fired_at,
                definition_id: Some(r.definition_id),
                run_id: Some(r.run_id),
                kind: "misfire".into(),
                detail: r.context_snapshot["misfire"].clone(),
            }),
            Ok(false) => {} // another replica recorded it
            Err(e) => error!(error = %e, "could not record a misfire"),
        }
    }
    if let Err(e) = store.record_events(&events).await {
        warn!(error = %e, "could not record misfire events");
    }
}

struct RunTask {
    run_id: Uuid,
    definition: Arc<Definition>,
    request: Arc<std::result::Result<PreparedRequest, String>>,
    scheduled_for: Timestamp,
}

/// Executes one claimed run and hands its result to the recorder.
async fn execute(shared: Arc<Shared>, task: RunTask) {
    let def = &task.definition;
    let (classification, snapshot) = match task.request.as_ref() {
        Ok(req) => {
            let headers = RunHeaders {
                run_id: task.run_id,
                scheduled_for: Some(task.scheduled_for),
                source: Source::ActivityCore,
            };
            let (report, sent_at) = {
                // Never closed, so acquiring only fails if it were: then send anyway.
                let _slot = shared.request_slots.acquire().await.ok();
                let sent_at = Timestamp::now();
                // Boxed: a task waiting for a slot then holds a pointer, not
                // the HTTP client's whole state machine (10,000 of them wait
                // at once when 10,000 activities share an instant).
                (
                    Box::pin(shared.executor.execute(req, &headers, &def.result)).await,
                    sent_at,
                )
            };
            let mut snapshot = report.snapshot_parts(req);
            snapshot["lateness_ms"] = serde_json::json!(sent_at.duration_since(task.scheduled_for).as_millis());
            if let Some(body) = &report.classification.body {
                snapshot[def.result.snapshot_key.as_str()] = body.clone();
            }
            (report.classification, snapshot)
        }
        Err(message) => {
            let c = classify(
                &def.result,
                &Exchange::NoResponse {
                    code: ErrorCode::Config,
                    message: message.clone(),
                },
            );
            (c, serde_json::json!({}))
        }
    };
    let finish = finish_of(task.run_id, classification, snapshot);
    match finish.outcome {
        Outcome::AutomationError => {
            warn!(outcome = %finish.outcome, error_code = finish.error_code.map(|c| c.as_str()).unwrap_or(""), error = finish.error_message.as_deref().unwrap_or(""), "run failed")
        }
        _ => info!(outcome = %finish.outcome, assessment_failures = finish.assessment_failures, "run finished"),
    }
    let _ = shared.finished.send(finish);
    if shared.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
        shared.idle.notify_waiters();
    }
}

fn finish_of(run_id: Uuid, c: Classification, snapshot: serde_json::Value) -> FinishRun {
    FinishRun {
        run_id,
        state: c.outcome.state(),
        outcome: c.outcome,
        automation_error: c.automation_error,
        assessment_failures: c.assessment_failures,
        error_code: c.error_code,
        error_message: c.error_message,
        snapshot,
        finished_at: Timestamp::now(),
    }
}

/// Writes finished runs in small batches: whatever is waiting when the
/// previous write returns goes in the next one, so a crash loses at most
/// the results of the last few milliseconds (those runs are then
/// abandoned by lease expiry, never lost).
async fn record_finished(store: Store, mut rx: mpsc::UnboundedReceiver<FinishRun>) {
    const MAX_BATCH: usize = 1000;
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut delay = Duration::from_millis(50);
        loop {
            match store.finish_runs(&batch).await {
                Ok(_) => break,
                Err(e) => {
                    warn!(error = %e, runs = batch.len(), "could not record finished runs; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
    }
}

/// Renews this worker's leases and reaps the runs of workers that died.
async fn keep_leases(shared: Arc<Shared>, stop: CancellationToken) {
    let every = (shared.config.lease / 3).max(Duration::from_millis(200));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lease = SignedDuration::try_from(shared.config.lease).unwrap_or(SignedDuration::from_secs(30));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Timestamp::now();
        // Only leases set more than a third of a lease ago are extended
        // (the store filters), so every lease keeps at least a third to run
        // and a burst of short runs costs no row write at all.
        if shared.in_flight.load(Ordering::SeqCst) > 0
            && let Err(e) = shared
                .store
                .renew_leases(&shared.config.worker_id, now + lease, now + lease * 2 / 3)
                .await
        {
            warn!(error = %e, "could not renew leases");
        }
        match shared.store.reap_expired(now).await {
            Ok(lost) if !lost.is_empty() => {
                warn!(
                    runs = lost.len(),
                    "runs of a lost worker marked abandoned (worker_lost)"
                )
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "could not reap expired leases"),
        }
    }
}

/// Postgres LISTEN: a sync's NOTIFY wakes the loop to re-read. Notifications
/// can be lost while reconnecting, hence the periodic re-read as well.
async fn listen_for_changes(pg: crate::store::PgStore, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect_with(pg.pool()).await?;
            l.listen(crate::store::NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            _ = stop.cancelled() => return,
            l = listener => match l {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "cannot LISTEN for definition changes; retrying in 5 s");
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(5)) => continue }
                }
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                n = listener.recv() => match n {
                    Ok(_) => wake.notify_one(),
                    Err(e) => { warn!(error = %e, "LISTEN connection lost; reconnecting"); break; }
                }
            }
        }
    }
}

/// Waits for runs in flight up to `grace`; what remains is abandoned by the caller.
async fn drain(shared: Arc<Shared>, mut runs: JoinSet<()>, grace: Duration) {
    let n = shared.in_flight.load(Ordering::SeqCst);
    if n > 0 {
        info!(
            runs = n,
            grace_s = grace.as_secs_f64(),
            "waiting for runs in flight to finish"
        );
    }
    let all_done = async { while runs.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all_done).await.is_err() {
        warn!(
            grace_s = grace.as_secs_f64(),
            "shutdown grace over; stopping the remaining runs"
        );
        runs.abort_all();
        while runs.join_next().await.is_some() {}
    }
    // The run tasks hold senders via `shared`; dropping it closes the recorder's channel.
    drop(shared);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored, active definition `a{id}` on `cron`; its hash changes with the cron.
    fn stored(id: u128, cron: &str) -> StoredDefinition {
        StoredDefinition {
            definition: crate::definition::sample(Uuid::from_u128(id), &format!("a{id}"), cron, "http://127.0.0.1:9/x"),
            spec_hash: format!("h{id}{cron}"),
            enabled: true,
            paused: false,
            retired_at: None,
            updated_at: "2026-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn claim_ahead_grows_with_the_instant_and_is_bounded() {
        let mut t = Timers::default();
        let from: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        reconcile(&mut t, (1..=3).map(|id| stored(id, "*/5 * * * * *")).collect(), |_| {
            Some(from)
        });
        let first = t.earliest().unwrap();
        assert_eq!(t.count_at(first), 3);
        assert_eq!(t.count_at(first + SignedDuration::from_secs(1)), 0);
        assert!(claim_ahead(1) < claim_ahead(1000));
        assert!(
            claim_ahead(1) >= SignedDuration::from_millis(5),
            "room for one WAL flush"
        );
        assert_eq!(claim_ahead(1_000_000), SignedDuration::from_secs(1), "bounded");
    }

    #[tokio::test]
    async fn sleep_until_exactly_never_returns_early() {
        for ms in [0, 1, 3, 7] {
            let at = Timestamp::now() + SignedDuration::from_millis(ms);
            sleep_until_exactly(at).await;
            assert!(Timestamp::now() >= at);
        }
    }

    #[test]
    fn timers_take_due_in_order_and_skip_replaced() {
        let mut t = Timers::default();
        let from: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        reconcile(
            &mut t,
            vec![stored(1, "* * * * * *"), stored(2, "*/2 * * * * *")],
            |_| Some(from),
        );
        assert_eq!(t.earliest(), Some("2026-01-01T00:00:01Z".parse().unwrap()));
        let due = t.take_due("2026-01-01T00:00:02Z".parse().unwrap());
        assert_eq!(due.len(), 2, "{due:?}");
        assert!(
            due.iter().all(|d| d.fire == d.instant),
            "no jitter: fires at the instant"
        );
        assert_eq!(due[0].id, Uuid::from_u128(1), "earliest first");
        // Reconciling an unchanged activity keeps nothing new in the queue;
        // replacing one's spec drops its old timer.
        reconcile(&mut t, vec![stored(1, "* * * * * *")], |_| Some(from));
        assert_eq!(t.activities.len(), 1);
        assert!(t.queue.is_empty(), "taken timers are not re-armed by a no-op reconcile");
    }
}
