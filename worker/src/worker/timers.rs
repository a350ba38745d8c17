//! Pure: the timer queue (activities keyed by their next fire time) and
//! reconciling it with the stored definitions, by identity. Every function
//! takes the time as an argument.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};
use tracing::{error, info};
use uuid::Uuid;

use crate::action::PreparedRequest;
use crate::definition::Definition;
use crate::schedule::{self, Schedule};
use crate::store::StoredDefinition;
use crate::template;

/// What a claim and a run need of an activity, computed when the
/// definition is loaded (not when it fires) and shared by reference: runs
/// in flight keep the spec they started with when the definition changes.
pub(crate) struct Fireable {
    pub definition: Definition,
    pub spec_hash: String,
    /// Shared by the activities with the same cron and time zone: a parsed
    /// cron holds a few KiB of tables, which 10,000 activities would repeat.
    pub schedule: Arc<Schedule>,
    /// The request with `${VAR}`s resolved, or why it cannot be built.
    pub request: Result<PreparedRequest, String>,
    /// Its `[retry]`/`[guard]`: its automated runs are admitted and settled
    /// in the guard's transactions.
    pub policy: Arc<crate::guard::Policy>,
    /// Its `actcore_runs_total` series, kept per outcome.
    pub counters: crate::api::metrics::RunCounters,
    /// The latest instant taken off the timers (Unix ms): a claim still
    /// retrying for an older one is superseded by it.
    latest_planned: AtomicI64,
}

impl Fireable {
    /// Takes the stored definition by value: 10,000 of them are moved into
    /// the timers, not copied next to the list they were loaded in.
    fn new(stored: StoredDefinition, schedules: &mut ScheduleCache) -> Result<Fireable, String> {
        let StoredDefinition {
            definition, spec_hash, ..
        } = stored;
        let key = (definition.schedule.cron.clone(), definition.schedule.timezone.clone());
        let schedule = match schedules.get(&key) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(definition.parsed_schedule().map_err(|e| e.message)?);
                schedules.insert(key, s.clone());
                s
            }
        };
        let request = crate::action::prepare(&definition.action, template::worker_lookup);
        let policy = Arc::new(crate::guard::Policy::of(&definition, &schedule, jiff::Timestamp::now()));
        Ok(Fireable {
            definition,
            spec_hash,
            schedule,
            request,
            policy,
            counters: Default::default(),
            latest_planned: AtomicI64::new(i64::MIN),
        })
    }

    /// Notes that `instant` was taken off the timers.
    pub fn planned(&self, instant: Timestamp) {
        self.latest_planned
            .fetch_max(instant.as_millisecond(), Ordering::Relaxed);
    }

    /// A later instant of this activity has come due since `instant`.
    pub fn superseded(&self, instant: Timestamp) -> bool {
        self.latest_planned.load(Ordering::Relaxed) > instant.as_millisecond()
    }

    /// When to send `instant`: the instant plus its jitter.
    pub fn fire_time(&self, instant: Timestamp) -> Timestamp {
        let j = schedule::jitter(self.definition.id, instant, self.definition.schedule.jitter);
        // Saturating: a row synced by an older binary may hold any jitter.
        instant.checked_add(j.signed()).unwrap_or(Timestamp::MAX)
    }

    /// The grace, counted from the fire time.
    pub fn grace(&self) -> SignedDuration {
        self.definition.schedule.misfire_grace.signed()
    }
}

/// An activity's next instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Next {
    instant: Timestamp,
    fire: Timestamp,
    /// The instant is the schedule's first one strictly after this.
    after: Timestamp,
}

struct Activity {
    spec: Arc<Fireable>,
    next: Option<Next>,
}

/// Parsed schedules by (cron, time zone), shared between activities.
type ScheduleCache = HashMap<(String, String), Arc<Schedule>>;

/// An activity taken off the timers.
#[derive(Clone)]
pub(crate) struct Due {
    pub spec: Arc<Fireable>,
    pub instant: Timestamp,
    /// When to send it (the instant plus its jitter).
    pub fire: Timestamp,
    /// The instant was the first one after this: `(after, instant]` holds
    /// exactly this instant, which is what a lost claim records.
    pub after: Timestamp,
}

impl std::fmt::Debug for Due {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Due")
            .field("id", &self.spec.definition.id)
            .field("instant", &self.instant)
            .field("fire", &self.fire)
            .finish()
    }
}

/// The timers: activities keyed by their next fire time, earliest first.
#[derive(Default)]
pub(crate) struct Timers {
    activities: HashMap<Uuid, Activity>,
    queue: BTreeSet<(Timestamp, Uuid)>,
    /// Paused activities: not firing, but a forced manual run may still execute them.
    idle: HashMap<Uuid, Arc<Fireable>>,
}

/// Every loaded activity's spec, with whether it fires on schedule (false: paused).
pub(crate) type Specs = HashMap<Uuid, (Arc<Fireable>, bool)>;

impl Timers {
    pub fn len(&self) -> usize {
        self.activities.len()
    }

    /// The firing activities' ids.
    pub fn ids(&self) -> Vec<Uuid> {
        self.activities.keys().copied().collect()
    }

    /// The specs the queue executes: the firing ones and the paused ones.
    pub fn specs(&self) -> Specs {
        let mut out: Specs = self.idle.iter().map(|(id, s)| (*id, (s.clone(), false))).collect();
        out.extend(self.activities.iter().map(|(id, a)| (*id, (a.spec.clone(), true))));
        out
    }

    /// Arms `id` for its first instant strictly after `after`.
    pub fn set_next_after(&mut self, id: Uuid, after: Timestamp) {
        let Some(a) = self.activities.get_mut(&id) else { return };
        if let Some(n) = a.next.take() {
            self.queue.remove(&(n.fire, id));
        }
        if let Some(instant) = a.spec.schedule.next_after(after) {
            let fire = a.spec.fire_time(instant);
            a.next = Some(Next { instant, fire, after });
            self.queue.insert((fire, id));
        }
    }

    fn remove(&mut self, id: Uuid) {
        if let Some(a) = self.activities.remove(&id)
            && let Some(n) = a.next
        {
            self.queue.remove(&(n.fire, id));
        }
    }

    pub fn earliest(&self) -> Option<Timestamp> {
        self.queue.first().map(|(t, _)| *t)
    }

    /// How many activities fire at exactly `at` (the size of that claim).
    pub fn count_at(&self, at: Timestamp) -> usize {
        self.queue
            .range((at, Uuid::nil())..)
            .take_while(|(t, _)| *t == at)
            .count()
    }

    /// Removes and returns every activity whose fire time is at or before
    /// `until`, earliest first. They stay disarmed until `set_next_after`.
    pub fn take_due(&mut self, until: Timestamp) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some(&(fire, id)) = self.queue.first() {
            if fire > until {
                break;
            }
            self.queue.pop_first();
            if let Some(a) = self.activities.get_mut(&id)
                && let Some(n) = a.next.take()
            {
                due.push(Due {
                    spec: a.spec.clone(),
                    instant: n.instant,
                    fire: n.fire,
                    after: n.after,
                });
            }
        }
        due
    }

    /// The longest time a run of these activities may take, preflight
    /// included: the default shutdown grace adds a margin to it.
    pub fn longest_run(&self) -> std::time::Duration {
        self.activities
            .values()
            .map(|a| {
                let action = &a.spec.definition.action;
                let preflight = if action.preflight.is_some() {
                    action.timeout.std().min(crate::action::PREFLIGHT_TIMEOUT)
                } else {
                    std::time::Duration::ZERO
                };
                action.timeout.std() + preflight
            })
            .max()
            .unwrap_or_default()
    }

    pub fn log_next(&self) {
        if self.activities.len() > 20 {
            if let Some(t) = self.earliest() {
                info!(next = %t, activities = self.activities.len(), "next fire");
            }
            return;
        }
        for a in self.activities.values() {
            if let Some(n) = a.next {
                let d = &a.spec.definition;
                info!(activity = %d.slug, next = %n.instant, cron = %d.schedule.cron, "next fire");
            }
        }
    }
}

/// Brings the timers in line with the store, by identity: an unchanged
/// activity keeps its timer; a changed one restarts from its next instant
/// after `now` (runs in flight keep the spec they started with); gone,
/// paused or retired ones stop. A new activity's schedule begins after
/// `start_after` of it, clamped to `now`: a resume point in the future (a
/// clock ahead of the database's) must not suppress instants.
pub(crate) fn reconcile(
    timers: &mut Timers,
    stored: Vec<StoredDefinition>,
    now: Timestamp,
    start_after: impl Fn(&StoredDefinition) -> Option<Timestamp>,
) {
    let mut live = HashSet::with_capacity(stored.len());
    let mut schedules: ScheduleCache = timers
        .activities
        .values()
        .map(|a| {
            let s = &a.spec.definition.schedule;
            ((s.cron.clone(), s.timezone.clone()), a.spec.schedule.clone())
        })
        .collect();
    timers.idle.clear();
    for d in stored {
        let id = d.definition.id;
        if !d.is_active() {
            if d.enabled
                && d.retired_at.is_none()
                && let Ok(spec) = Fireable::new(d, &mut schedules)
            {
                timers.idle.insert(id, Arc::new(spec));
            }
            continue;
        }
        live.insert(id);
        if timers
            .activities
            .get(&id)
            .is_some_and(|a| a.spec.spec_hash == d.spec_hash)
        {
            continue;
        }
        let changed = timers.activities.contains_key(&id);
        timers.remove(id);
        let from = if changed {
            now
        } else {
            start_after(&d).unwrap_or(now).min(now)
        };
        let slug = d.definition.slug.clone();
        match Fireable::new(d, &mut schedules) {
            Ok(spec) => {
                if changed {
                    info!(activity = %slug, spec_hash = %spec.spec_hash, "definition changed: new schedule from its next instant");
                }
                timers.activities.insert(
                    id,
                    Activity {
                        spec: Arc::new(spec),
                        next: None,
                    },
                );
                timers.set_next_after(id, from);
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
            info!(activity = %a.spec.definition.slug, "activity retired, paused or disabled: no longer firing");
        }
        timers.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored, active definition `a{id}` on `cron`; its hash changes with the cron.
    pub(crate) fn stored(id: u128, cron: &str) -> StoredDefinition {
        StoredDefinition {
            definition: crate::definition::sample(Uuid::from_u128(id), &format!("a{id}"), cron, "http://127.0.0.1:9/x"),
            spec_hash: format!("h{id}{cron}"),
            enabled: true,
            paused: false,
            retired_at: None,
            updated_at: "2026-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn timers_take_due_in_order_and_skip_replaced() {
        let mut timers = Timers::default();
        let from = t("2026-01-01T00:00:00Z");
        reconcile(
            &mut timers,
            vec![stored(1, "* * * * * *"), stored(2, "*/2 * * * * *")],
            from,
            |_| Some(from),
        );
        assert_eq!(timers.earliest(), Some(t("2026-01-01T00:00:01Z")));
        assert_eq!(timers.count_at(t("2026-01-01T00:00:01Z")), 1);
        let due = timers.take_due(t("2026-01-01T00:00:02Z"));
        assert_eq!(due.len(), 2, "{due:?}");
        assert!(
            due.iter().all(|d| d.fire == d.instant),
            "no jitter: fires at the instant"
        );
        assert_eq!(due[0].spec.definition.id, Uuid::from_u128(1), "earliest first");
        assert_eq!(due[0].after, from, "(after, instant] holds exactly the instant");
        // Reconciling an unchanged activity keeps nothing new in the queue;
        // replacing one's spec drops its old timer.
        reconcile(&mut timers, vec![stored(1, "* * * * * *")], from, |_| Some(from));
        assert_eq!(timers.len(), 1);
        assert!(
            timers.queue.is_empty(),
            "taken timers are not re-armed by a no-op reconcile"
        );
    }

    #[test]
    fn fault5_a_resume_point_in_the_future_is_clamped_to_now() {
        let mut timers = Timers::default();
        let now = t("2026-01-01T00:00:00Z");
        // `updated_at` written by a machine whose clock ran 10 minutes fast.
        reconcile(&mut timers, vec![stored(1, "* * * * * *")], now, |_| {
            Some(t("2026-01-01T00:10:00Z"))
        });
        assert_eq!(timers.earliest(), Some(t("2026-01-01T00:00:01Z")), "not 00:10:01");
    }
}
