//! Firing: what is due is decided at once (cheap, no database), then each
//! (fire time, instant) group is claimed by its own task, in chunks, and
//! each chunk's winners are released at their fire time on their own. A
//! claim retrying through a database hiccup therefore holds up neither the
//! loop nor the other groups; an instant whose claim cannot be written
//! within the grace is handed to the ledger, which records it as missed
//! once the database is back.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use jiff::{SignedDuration, Timestamp};
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::Core;
use super::execute::{self, RunTask};
use super::ledger::Unfired;
use super::retry::Backoff;
use super::timers::{Due, Timers};
use crate::definition::Overlap;
use crate::guard::Admission;
use crate::misfire::{self, MissedRange};
use crate::run::{Outcome, State};
use crate::snapshot::{self, MisfireReason};
use crate::store::{AdmitItem, ClaimBatch, ClaimItem, Claimed, RunStore};

/// The first claim statement of an instant is small so that, when claims
/// run late, its runs start at once; the next ones double (fewer
/// statements, less per row) while the runs already won execute.
pub(crate) const FIRST_CLAIM: usize = 128;
/// Most activities claimed in one statement.
const MAX_CLAIM: usize = 1024;
/// Claim statements of one instant in flight at once. One at a time, an
/// instant of 10,000 took as long as its lead (~0.5 s: each statement's
/// commit waits for a WAL flush while the worker builds nothing); two
/// overlap the worker's building of the next chunk and the database's
/// flush of the last. Each is in definition order, so replicas still
/// take the fence's locks in one order.
pub(crate) const CLAIMS_IN_FLIGHT: usize = 2;

/// How long after its fire time a failed claim is still retried (bounded
/// by the activities' misfire grace): a database hiccup costs a late run,
/// not a lost instant.
pub(crate) const CLAIM_RETRY_WITHIN: SignedDuration = SignedDuration::from_secs(10);

/// How long before its fire time an instant is claimed. The claim is a
/// durable write (a WAL flush, ~30 µs per row on top): written ahead, the
/// POST leaves at the instant itself instead of after the commit. A little
/// more per activity due, so that even 10,000 are claimed in time.
pub(crate) fn claim_ahead(due: usize) -> SignedDuration {
    const BASE: SignedDuration = SignedDuration::from_millis(20);
    const PER_ACTIVITY: SignedDuration = SignedDuration::from_micros(50);
    const MAX: SignedDuration = SignedDuration::from_secs(1);
    (BASE + PER_ACTIVITY * i32::try_from(due).unwrap_or(i32::MAX)).min(MAX)
}

/// Activities to claim for one instant and release at one time.
pub(crate) struct Group {
    pub release_at: Timestamp,
    pub instant: Timestamp,
    pub items: Vec<Due>,
}

/// Decides every due activity (pure but for handing misfires to the
/// ledger) and re-arms its timer. Returns the groups to claim, earliest first.
pub(crate) fn plan<S: RunStore>(core: &Core<S>, timers: &mut Timers, due: Vec<Due>, now: Timestamp) -> Vec<Group> {
    let mut groups: BTreeMap<(Timestamp, Timestamp), Vec<Due>> = BTreeMap::new();
    for d in due {
        let spec = &d.spec;
        spec.planned(d.instant);
        let decision = misfire::decide(&spec.schedule, &spec.definition.schedule, d.instant, d.fire, now);
        if let Some(range) = decision.missed {
            core.unfired(Unfired {
                spec: spec.clone(),
                range,
                reason: MisfireReason::PastGrace,
            });
        }
        timers.set_next_after(spec.definition.id, decision.resume_after);
        if let Some(i) = decision.fire {
            // A caught-up instant (`fire_once`) goes now; others at their fire time.
            let (release_at, fire) = if i == d.instant {
                (d.fire.max(now), d.fire)
            } else {
                (now, now)
            };
            let after = if i == d.instant {
                d.after
            } else {
                i - SignedDuration::from_nanos(1)
            };
            groups.entry((release_at, i)).or_default().push(Due {
                instant: i,
                fire,
                after,
                spec: d.spec,
            });
        }
    }
    groups
        .into_iter()
        .map(|((release_at, instant), items)| Group {
            release_at,
            instant,
            items,
        })
        .collect()
}

/// Claims one group in chunks (contiguous in definition order, so replicas
/// racing on the instant take the index locks in one order),
/// [`CLAIMS_IN_FLIGHT`] at a time, and releases each chunk's winners at the
/// group's time.
pub(crate) async fn claim_group<S: RunStore>(core: Arc<Core<S>>, mut group: Group) {
    group.items.sort_unstable_by_key(|d| d.spec.definition.id);
    // Retried only while every instant in it could still fire within its grace.
    let earliest_fire = group.items.iter().map(|d| d.fire).min().unwrap_or(group.release_at);
    let retry_for = group
        .items
        .iter()
        .map(|d| d.spec.grace())
        .min()
        .unwrap_or_default()
        .min(CLAIM_RETRY_WITHIN);
    let give_up_at = earliest_fire + retry_for;
    let mut chunks = Vec::new();
    let (mut rest, mut size) = (&group.items[..], FIRST_CLAIM);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(chunk);
        rest = tail;
        size = (size * 2).min(MAX_CLAIM);
    }
    let (core, group) = (&core, &group);
    futures_util::stream::iter(chunks)
        .for_each_concurrent(CLAIMS_IN_FLIGHT, |chunk| async move {
            if core.stopping.is_cancelled() {
                // Not claimed, nothing written: another replica, or this
                // activity's next start, fires or records these instants.
                return;
            }
            let mut chunk = chunk.to_vec();
            let mut items = claim_items(group.instant, &chunk);
            if let Some(claimed) = claim_with_retry(core, group, &mut chunk, &mut items, give_up_at).await {
                release(core, group, &chunk, claimed);
            }
        })
        .await;
}

/// One chunk's claim rows. Their run ids are reused by every retry, so
/// that a retry adopts what an attempt whose reply was lost committed.
fn claim_items(instant: Timestamp, chunk: &[Due]) -> Vec<ClaimItem> {
    let scheduled_for = instant.to_string();
    chunk
        .iter()
        .map(|d| ClaimItem {
            run_id: Uuid::now_v7(),
            definition_id: d.spec.definition.id,
            spec_hash: d.spec.spec_hash.clone(),
            skip_if_running: d.spec.definition.schedule.overlap != Overlap::Allow,
            buffer_until: (d.spec.definition.schedule.overlap == Overlap::BufferOne).then(|| d.fire + d.spec.grace()),
            snapshot: snapshot::claimed(
                &d.spec.spec_hash,
                &scheduled_for,
                d.fire.duration_since(d.instant).as_millis() as i64,
            ),
        })
        .collect()
}

/// The claim, retried on failure until `give_up_at`; None if it never
/// went through. An activity whose next instant has come due meanwhile
/// leaves the retry (one claim in flight per activity: after an outage the
/// latest instant fires, not a burst of stale ones). What is given up goes
/// to the ledger, recorded as missed once the database takes it.
async fn claim_with_retry<S: RunStore>(
    core: &Core<S>,
    group: &Group,
    chunk: &mut Vec<Due>,
    items: &mut Vec<ClaimItem>,
    give_up_at: Timestamp,
) -> Option<Vec<Claimed>> {
    let mut backoff = Backoff::new(SignedDuration::from_millis(50), SignedDuration::from_secs(1));
    loop {
        // Only this chunk's activities matter to its overlap check (the
        // chunk is in definition order).
        let finished = core
            .owned
            .finished_unwritten(|d| chunk.binary_search_by_key(&d, |c| c.spec.definition.id).is_ok());
        let batch = ClaimBatch {
            scheduled_for: group.instant,
            fired_at: group.release_at,
            worker_id: &core.config.worker_id,
            lease: core.lease(),
            items,
            finished_unwritten: &finished,
        };
        // An attempt may not outlast the retry window (a dead connection
        // can hang far longer than the pool's acquire timeout).
        let left = give_up_at
            .duration_since(core.clock.now())
            .max(SignedDuration::from_millis(500));
        let claim_started = std::time::Instant::now();
        let result = match tokio::time::timeout(left.unsigned_abs(), core.store.claim(&batch)).await {
            Ok(r) => r,
            Err(_) => Err(crate::Error::Db(sqlx::Error::PoolTimedOut)),
        };
        crate::api::metrics::claim_took(claim_started.elapsed());
        let e = match result {
            Ok(c) => return Some(c),
            Err(e) => e,
        };
        let retry = core.clock.now() + backoff.peek() < give_up_at && !core.stopping.is_cancelled();
        // Keep retrying only the activities with no later instant due (in
        // their definition order, which the lock order relies on).
        let before = chunk.len();
        let (mut kept_chunk, mut kept_items) = (Vec::with_capacity(before), Vec::with_capacity(before));
        for (d, item) in chunk.drain(..).zip(items.drain(..)) {
            if retry && !d.spec.superseded(group.instant) {
                kept_chunk.push(d);
                kept_items.push(item);
            } else {
                core.unfired(Unfired {
                    range: MissedRange {
                        after: d.after,
                        upto: d.instant,
                    },
                    spec: d.spec,
                    reason: MisfireReason::ClaimFailed,
                });
            }
        }
        (*chunk, *items) = (kept_chunk, kept_items);
        if chunk.len() < before {
            error!(error = %e, instant = %group.instant, activities = before - chunk.len(),
                   "claim failed within the retry window (or a later instant came due); recorded as missed once the database takes it");
        }
        if chunk.is_empty() {
            return None;
        }
        let delay = backoff.step();
        warn!(error = %e, instant = %group.instant, activities = chunk.len(), retry_in_ms = delay.as_millis(), "claim failed; retrying");
        core.clock.sleep(delay).await;
    }
}

/// Hands the chunk's winners to execution at the group's release time,
/// after the guard admitted those of guarded activities.
fn release<S: RunStore>(core: &Arc<Core<S>>, group: &Group, chunk: &[Due], claimed: Vec<Claimed>) {
    debug!(instant = %group.instant, due = chunk.len(), won = claimed.len(), "claimed");
    let by_id: std::collections::HashMap<Uuid, &Due> = chunk.iter().map(|d| (d.spec.definition.id, d)).collect();
    let mut won = Vec::with_capacity(claimed.len());
    for c in claimed {
        let Some(d) = by_id.get(&c.definition_id) else { continue };
        match c.state {
            State::Running => won.push(RunTask::scheduled(c.run_id, d.spec.clone(), group.instant, d.fire)),
            State::Skipped => {
                crate::api::metrics::instant_skipped(&d.spec.definition.slug, crate::api::metrics::SkipReason::Overlap);
                info!(activity = %d.spec.definition.slug, scheduled_for = %group.instant, "previous run still running: skipped_overlap")
            }
            State::Queued => {
                info!(activity = %d.spec.definition.slug, scheduled_for = %group.instant, "previous run still running: buffered until it ends (buffer_one)")
            }
            other => {
                warn!(activity = %d.spec.definition.slug, state = %other, "an adopted claim was already ended; not executing it")
            }
        }
    }
    if won.is_empty() {
        return;
    }
    // Counted as owned from the claim: the lease keeper and the drain see them.
    core.owned.claimed(won.iter().map(|t| (t.run_id, t.spec.definition.id)));
    let at = group.release_at;
    let core2 = core.clone();
    core.tasks.spawn(async move {
        let won = admit(&core2, won, at).await;
        core2.clock.sleep_until(at).await;
        for t in won {
            execute::spawn(&core2, t);
        }
    });
}

/// The won runs the guard lets start: those of guarded activities go
/// through `admit` (circuit, churn budget); blocked ones are recorded by it
/// and released here. If the guard's state cannot be read within the
/// grace, the runs start unguarded (a database that is away cannot record
/// their results either; the lease and reaper cover them).
pub(crate) async fn admit<S: RunStore>(core: &Arc<Core<S>>, won: Vec<RunTask>, fire: Timestamp) -> Vec<RunTask> {
    let items: Vec<AdmitItem> = won
        .iter()
        .map(|t| AdmitItem {
            run_id: t.run_id,
            policy: t.spec.policy.clone(),
        })
        .collect();
    if items.is_empty() {
        return won;
    }
    let grace = won
        .iter()
        .map(|t| t.spec.grace())
        .min()
        .unwrap_or_default()
        .min(CLAIM_RETRY_WITHIN);
    let mut backoff = Backoff::new(SignedDuration::from_millis(50), SignedDuration::from_secs(1));
    let decided = loop {
        match core.store.admit(&items, core.clock.now()).await {
            Ok(d) => break d,
            Err(e) if core.clock.now() + backoff.peek() < fire + grace && !core.stopping.is_cancelled() => {
                warn!(error = %e, runs = items.len(), "could not read the guard state; retrying");
                core.clock.sleep(backoff.step()).await;
            }
            Err(e) => {
                error!(error = %e, runs = items.len(), "guard state unavailable within the grace; starting these runs unguarded");
                return won;
            }
        }
    };
    let blocked: std::collections::HashMap<Uuid, Outcome> = decided
        .into_iter()
        .filter_map(|(id, a)| match a {
            Admission::Blocked(o) => Some((id, o)),
            _ => None,
        })
        .collect();
    if blocked.is_empty() {
        return won;
    }
    let (mut run, mut not) = (Vec::with_capacity(won.len()), Vec::new());
    for t in won {
        match blocked.get(&t.run_id) {
            Some(o) => {
                t.spec.counters.finished(&t.spec.definition.slug, *o, None, None);
                not.push(t.run_id);
            }
            None => run.push(t),
        }
    }
    core.owned.released(not);
    run
}
