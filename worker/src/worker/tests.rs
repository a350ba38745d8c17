//! The loop's faults, each driven step by step: a real embedded store
//! wrapped in a fault-injecting one, a local HTTP server as the remote, and
//! a manual clock, so a claim that retries for seconds or a grace that runs
//! out costs no wall-clock time.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::task::JoinHandle;
use uuid::Uuid;
use wiremock::matchers::{any, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::timers::reconcile;
use super::*;
use crate::definition::{Definition, Loaded, Overlap};
use crate::store::{
    Abandoned, AdmitItem, ClaimBatch, Claimed, DefinitionsVersion, Dequeued, Expired, HistoryStore, NewEvent, NewRun,
    Queued, RetentionRule, RunFilter, RunRow, Settle, StoredDefinition,
};

mod guarded;

const OK: &str = r#"{"exit_code":0,"automation_error":false,"assessment_failures":0,"lock_skipped":false}"#;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn transient() -> Error {
    Error::Db(sqlx::Error::PoolTimedOut)
}

/// Faults a test switches on; the store behaves normally otherwise.
#[derive(Default)]
struct Faults {
    /// Claims fail without writing (the database is away).
    claims_down: AtomicBool,
    /// The next N claims fail without writing.
    claims_fail_next: AtomicUsize,
    /// Claims of batches holding this definition fail without writing.
    claim_fails_for: Mutex<Option<Uuid>>,
    /// The next N claims commit, then their reply is lost.
    claim_replies_lost: AtomicUsize,
    /// Each claim takes this long on the (manual) clock.
    claim_takes: Mutex<Option<SignedDuration>>,
    /// When each claim was attempted, by instant.
    claim_attempts: Mutex<Vec<(Timestamp, Timestamp)>>,
    /// Each claim waits here for the others (claims that are not in
    /// flight together never pass).
    claim_rendezvous: Mutex<Option<Arc<tokio::sync::Barrier>>>,
    /// Finishing runs fails (the database is away).
    finish_down: AtomicBool,
    /// Misfire inserts fail (the database is away).
    misfires_down: AtomicBool,
    /// Every run id a renewal was asked for.
    renewed: Mutex<HashSet<Uuid>>,
    /// The definitions listener dies at once.
    watch_dies: AtomicBool,
    /// The warm-up fails (the database refuses more connections).
    warm_up_fails: AtomicBool,
    /// How many times the warm-up was asked for.
    warm_ups: AtomicUsize,
}

#[derive(Clone)]
struct Faulty {
    inner: Store,
    clock: Clock,
    faults: Arc<Faults>,
}

impl RunStore for Faulty {
    async fn claim(&self, batch: &ClaimBatch<'_>) -> Result<Vec<Claimed>> {
        let f = &self.faults;
        f.claim_attempts
            .lock()
            .unwrap()
            .push((batch.scheduled_for, self.clock.now()));
        if let Some(d) = *f.claim_takes.lock().unwrap() {
            self.clock.advance_to(self.clock.now() + d);
        }
        let rendezvous = f.claim_rendezvous.lock().unwrap().clone();
        if let Some(r) = rendezvous {
            r.wait().await;
        }
        let blocked = *f.claim_fails_for.lock().unwrap();
        let fail_next = f
            .claims_fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail_next
            || f.claims_down.load(Ordering::SeqCst)
            || batch.items.iter().any(|i| Some(i.definition_id) == blocked)
        {
            return Err(transient());
        }
        let claimed = self.inner.claim(batch).await?;
        let lost = f
            .claim_replies_lost
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lost {
            return Err(Error::Db(sqlx::Error::Io(std::io::Error::other(
                "connection reset after commit",
            ))));
        }
        Ok(claimed)
    }

    async fn insert_run(&self, run: &NewRun) -> Result<bool> {
        if self.faults.misfires_down.load(Ordering::SeqCst) {
            return Err(transient());
        }
        self.inner.insert_run(run).await
    }

    async fn finish_runs(&self, runs: &[FinishRun]) -> Result<u64> {
        if self.faults.finish_down.load(Ordering::SeqCst) {
            return Err(transient());
        }
        // As Postgres refuses a NUL in jsonb: permanently, for that row's batch.
        if runs.iter().any(|r| r.snapshot.to_string().contains("POISON")) {
            return Err(Error::Db(sqlx::Error::Decode(
                "unsupported Unicode escape sequence".into(),
            )));
        }
        self.inner.finish_runs(runs).await
    }

    async fn renew_leases(&self, run_ids: &[Uuid], lease: SignedDuration, within: SignedDuration) -> Result<u64> {
        self.faults.renewed.lock().unwrap().extend(run_ids);
        self.inner.renew_leases(run_ids, lease, within).await
    }

    async fn reap_expired(&self) -> Result<Vec<Abandoned>> {
        self.inner.reap_expired().await
    }

    async fn abandon_worker_runs(
        &self,
        worker_id: &str,
        code: ErrorCode,
        message: &str,
        now: Timestamp,
    ) -> Result<u64> {
        self.inner.abandon_worker_runs(worker_id, code, message, now).await
    }

    async fn record_events(&self, events: &[NewEvent]) -> Result<()> {
        self.inner.record_events(events).await
    }

    async fn warm_up(&self) -> Result<crate::store::WarmUp> {
        self.faults.warm_ups.fetch_add(1, Ordering::SeqCst);
        if self.faults.warm_up_fails.load(Ordering::SeqCst) {
            return Err(Error::Db(sqlx::Error::PoolTimedOut));
        }
        self.inner.warm_up().await
    }

    async fn admit(&self, items: &[AdmitItem], now: Timestamp) -> Result<Vec<(Uuid, crate::guard::Admission)>> {
        self.inner.admit(items, now).await
    }

    async fn settle(&self, items: &[Settle], now: Timestamp) -> Result<()> {
        self.inner.settle(items, now).await
    }

    async fn claim_queued(
        &self,
        worker_id: &str,
        lease: SignedDuration,
        now: Timestamp,
        limit: i64,
        only: Option<Uuid>,
    ) -> Result<Vec<Dequeued>> {
        self.inner.claim_queued(worker_id, lease, now, limit, only).await
    }

    async fn expire_queued(&self, now: Timestamp, only: Option<Uuid>) -> Result<Vec<Expired>> {
        self.inner.expire_queued(now, only).await
    }

    async fn enqueue(&self, q: &Queued, events: &[NewEvent]) -> Result<bool> {
        self.inner.enqueue(q, events).await
    }
}

impl DefinitionSource for Faulty {
    async fn definitions(&self) -> Result<Vec<StoredDefinition>> {
        self.inner.definitions().await
    }

    async fn retention_rules(&self) -> Result<Vec<RetentionRule>> {
        self.inner.retention_rules().await
    }

    async fn definitions_version(&self) -> Result<DefinitionsVersion> {
        self.inner.definitions_version().await
    }

    async fn last_scheduled(&self) -> Result<Vec<(Uuid, Timestamp)>> {
        self.inner.last_scheduled().await
    }

    async fn watch(&self, wake: Arc<Notify>, stop: CancellationToken) -> Result<()> {
        if self.faults.watch_dies.load(Ordering::SeqCst) {
            return Err(Error::Internal("LISTEN refused".into()));
        }
        self.inner.watch(wake, stop).await
    }
}

/// One worker's parts, driven by hand.
struct Rig {
    core: Arc<Core<Faulty>>,
    faults: Arc<Faults>,
    store: Store,
    clock: Clock,
    timers: Timers,
    server: MockServer,
    drained: CancellationToken,
    recorder: JoinHandle<Result<()>>,
    ledger: JoinHandle<Result<()>>,
    _dir: tempfile::TempDir,
}

const T0: &str = "2026-03-01T12:00:00Z";

/// Activity `n` (ids 1, 2, …) on `cron`, posting to `/a{n}` on the rig's server.
fn activity(server: &MockServer, n: u128, cron: &str) -> Definition {
    let mut d = crate::definition::sample(
        Uuid::from_u128(n),
        &format!("a{n}"),
        cron,
        &format!("{}/a{n}", server.uri()),
    );
    d.schedule.misfire_grace = "10s".parse().unwrap();
    d
}

/// With `overlap = "skip"`.
fn skipping(mut d: Definition) -> Definition {
    d.schedule.overlap = Overlap::Skip;
    d
}

async fn rig_with(defs: impl FnOnce(&MockServer) -> Vec<Definition>, slots: usize, lease: Duration) -> Rig {
    let server = MockServer::start().await;
    let defs = defs(&server);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("actcore.db").display());
    let store = Store::open_and_migrate(Some(&url))
        .await
        .expect("open the embedded store");
    let files: Vec<Loaded> = defs
        .into_iter()
        .map(|definition| Loaded {
            file: format!("{}.toml", definition.slug).into(),
            definition,
        })
        .collect();
    let t0 = t(T0);
    store.sync(&files, t0, false).await.expect("sync");
    let clock = Clock::manual(t0);
    let faults = Arc::new(Faults::default());
    let faulty = Faulty {
        inner: store.clone(),
        clock: clock.clone(),
        faults: faults.clone(),
    };
    let config = WorkerConfig {
        worker_id: "w-test".into(),
        lease,
        shutdown_grace: Some(Duration::from_secs(5)),
        reread: Duration::from_secs(30),
    };
    let (core, channels) = Core::new(faulty, config, clock.clone(), slots);
    let drained = CancellationToken::new();
    let recorder = tokio::spawn(core.recorder(&core.hard_stop).run(channels.results, drained.clone()));
    let ledger = tokio::spawn(core.ledger(&core.hard_stop).run(channels.unfired, drained.clone()));
    let mut timers = Timers::default();
    reconcile(&mut timers, store.definitions().await.unwrap(), t0, |_| Some(t0));
    core.set_specs(&timers);
    Rig {
        core,
        faults,
        store,
        clock,
        timers,
        server,
        drained,
        recorder,
        ledger,
        _dir: dir,
    }
}

async fn rig(defs: impl FnOnce(&MockServer) -> Vec<Definition>) -> Rig {
    rig_with(defs, MAX_CONCURRENT_REQUESTS, Duration::from_secs(30)).await
}

/// A safety net, not a synchronisation: a step that hangs fails the test.
async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
}

impl Rig {
    async fn answer(&self, route: &str, body: &str) {
        Mock::given(path(route.to_string()))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body.to_string(), "application/json"))
            .mount(&self.server)
            .await;
    }

    /// Fires what is due at `at` and waits until every claim and run it
    /// started has ended and (unless the database is "down") its row is written.
    async fn fire_at(&mut self, at: &str) {
        let at = t(at);
        self.clock.advance_to(at);
        step(&self.core, &mut self.timers, at, SignedDuration::ZERO);
        self.settle().await;
    }

    /// One poll of the queue at `at` (expire, claim, start), then waits as `fire_at` does.
    async fn poll_at(&mut self, at: &str) -> usize {
        self.clock.advance_to(t(at));
        let n = queue::poll(&self.core).await;
        self.settle().await;
        n
    }

    /// Steps at `at` until nothing due by then is left on the timers.
    async fn catch_up(&mut self, at: &str) {
        while self.timers.earliest().is_some_and(|e| e <= t(at)) {
            self.fire_at(at).await;
        }
    }

    async fn settle(&self) {
        self.core.tasks.close();
        bounded("the claim and run tasks", self.core.tasks.wait()).await;
        self.core.tasks.reopen();
        if !self.faults.finish_down.load(Ordering::SeqCst) {
            bounded("the recorder", self.core.owned.until_empty()).await;
        }
    }

    /// Stops the recorder and the ledger after they wrote what they hold.
    async fn drain_writers(&mut self) {
        self.drained.cancel();
        bounded("the recorder", &mut self.recorder).await.unwrap().unwrap();
        bounded("the ledger", &mut self.ledger).await.unwrap().unwrap();
    }

    async fn runs(&self) -> Vec<RunRow> {
        let mut rows = self.store.runs(&RunFilter::default()).await.unwrap();
        rows.sort_by_key(|r| (r.scheduled_for, r.definition_id));
        rows
    }

    async fn requests(&self, route: &str) -> usize {
        let received = self.server.received_requests().await.unwrap_or_default();
        received.iter().filter(|r| r.url.path() == route).count()
    }
}

fn states(rows: &[RunRow]) -> Vec<(String, Option<String>)> {
    rows.iter().map(|r| (r.state.clone(), r.outcome.clone())).collect()
}

// ------------------------------------------------------------ fault 1

#[tokio::test]
async fn fault1_a_claim_whose_reply_was_lost_is_adopted_and_executed() {
    let mut rig = rig(|s| vec![activity(s, 1, "* * * * * *")]).await;
    rig.answer("/a1", OK).await;
    rig.faults.claim_replies_lost.store(1, Ordering::SeqCst);
    rig.fire_at("2026-03-01T12:00:01Z").await;
    let rows = rig.runs().await;
    assert_eq!(
        rows.len(),
        1,
        "the retry adopts the committed row, it adds none: {rows:?}"
    );
    assert_eq!(states(&rows), [("succeeded".into(), Some("ok".into()))]);
    assert_eq!(rig.requests("/a1").await, 1, "executed once");
    assert_eq!(rig.faults.claim_attempts.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn fault1_an_orphaned_claim_is_never_renewed_and_is_reaped() {
    // A zero lease: the orphan's lease ends as soon as it is written.
    let mut rig = rig_with(
        |s| vec![skipping(activity(s, 1, "* * * * * *"))],
        MAX_CONCURRENT_REQUESTS,
        Duration::ZERO,
    )
    .await;
    rig.answer("/a1", OK).await;
    // Every reply is lost until the retry window ends: the row is committed, never executed.
    rig.faults.claim_replies_lost.store(usize::MAX, Ordering::SeqCst);
    rig.fire_at("2026-03-01T12:00:01Z").await;
    let orphan = rig.runs().await.remove(0);
    assert_eq!(orphan.state, "running");
    assert_eq!(rig.core.owned.len(), 0, "nothing executes it");
    leases::renew_and_reap(&rig.core).await;
    assert!(
        !rig.faults.renewed.lock().unwrap().contains(&orphan.run_id),
        "only owned runs are renewed"
    );
    let row = rig.runs().await.remove(0);
    assert_eq!(
        (row.state.as_str(), row.error_code.as_deref()),
        ("abandoned", Some("worker_lost"))
    );
    // The next instant is not blocked as an overlap.
    rig.faults.claim_replies_lost.store(0, Ordering::SeqCst);
    rig.fire_at("2026-03-01T12:00:02Z").await;
    let rows = rig.runs().await;
    assert_eq!(states(&rows[1..]), [("succeeded".into(), Some("ok".into()))]);
    assert_eq!(rig.requests("/a1").await, 1);
}

// ------------------------------------------------------------ fault 2

#[tokio::test]
async fn fault2_a_nul_in_the_body_is_stored_escaped_and_said_so() {
    let mut rig = rig(|s| vec![activity(s, 1, "* * * * * *")]).await;
    rig.answer(
        "/a1",
        r#"{"exit_code":0,"automation_error":false,"assessment_failures":0,"lock_skipped":false,"note":"a\u0000b"}"#,
    )
    .await;
    rig.fire_at("2026-03-01T12:00:01Z").await;
    let row = rig.runs().await.remove(0);
    assert_eq!(row.state, "succeeded");
    let snap = &row.context_snapshot;
    assert_eq!(snap["sanitized"]["nul_characters_escaped"], 1, "{snap}");
    assert_eq!(snap["a1"]["note"], "a\\u0000b", "{snap}");
}

#[tokio::test]
async fn fault2_a_refused_row_is_isolated_and_the_rest_of_its_batch_lands() {
    let mut rig = rig(|s| (1..=3).map(|n| activity(s, n, "* * * * * *")).collect()).await;
    rig.answer("/a1", OK).await;
    rig.answer(
        "/a2",
        r#"{"exit_code":0,"automation_error":false,"assessment_failures":0,"lock_skipped":false,"x":"POISON"}"#,
    )
    .await;
    rig.answer("/a3", OK).await;
    // Hold the results back so they reach the recorder as one batch.
    rig.faults.finish_down.store(true, Ordering::SeqCst);
    rig.fire_at("2026-03-01T12:00:01Z").await;
    assert_eq!(rig.core.owned.len(), 3, "in flight until their rows are written");
    assert_eq!(
        rig.core.owned.finished_unwritten(|_| true).len(),
        3,
        "finished, waiting in the recorder"
    );
    rig.faults.finish_down.store(false, Ordering::SeqCst);
    rig.settle().await;
    let rows = rig.runs().await;
    assert_eq!(
        states(&rows),
        vec![("succeeded".to_string(), Some("ok".to_string())); 3],
        "every row lands, the refused one too: {rows:?}"
    );
    let refused = rows.iter().find(|r| r.definition_id == Uuid::from_u128(2)).unwrap();
    assert!(
        refused.context_snapshot["snapshot_unstorable"]
            .as_str()
            .is_some_and(|s| s.contains("Unicode")),
        "{}",
        refused.context_snapshot
    );
    assert!(
        rows.iter()
            .filter(|r| r.definition_id != Uuid::from_u128(2))
            .all(|r| r.context_snapshot["http_status"] == 200)
    );
}

// ------------------------------------------------------------ claims

#[tokio::test]
async fn an_instant_is_claimed_two_statements_at_a_time() {
    // One activity more than the first statement takes: two statements.
    let n = fire::FIRST_CLAIM as u128 + 1;
    let mut rig = rig(|s| (1..=n).map(|i| activity(s, i, "* * * * * *")).collect()).await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK, "application/json"))
        .mount(&rig.server)
        .await;
    // Each claim waits for the other: claimed one after the other, the
    // first would wait until its attempt timed out, and be retried.
    *rig.faults.claim_rendezvous.lock().unwrap() = Some(Arc::new(tokio::sync::Barrier::new(2)));
    rig.fire_at("2026-03-01T12:00:01Z").await;
    assert_eq!(
        rig.faults.claim_attempts.lock().unwrap().len(),
        2,
        "two statements, no retry"
    );
    let rows = rig.runs().await;
    assert_eq!(rows.len(), n as usize, "one run per activity");
    assert!(
        rows.iter().all(|r| r.state == "succeeded"),
        "every run claimed, sent and finished: {:?}",
        states(&rows)
    );
}

// ------------------------------------------------------------ fault 6

#[tokio::test]
async fn fault6_a_retrying_claim_holds_up_no_other_group() {
    // A is due at :01, B (every 2 s) at :02: two groups, A's first.
    let mut rig = rig(|s| vec![activity(s, 1, "* * * * * *"), activity(s, 2, "*/2 * * * * *")]).await;
    rig.answer("/a1", OK).await;
    rig.answer("/a2", OK).await;
    *rig.faults.claim_fails_for.lock().unwrap() = Some(Uuid::from_u128(1));
    rig.fire_at("2026-03-01T12:00:02Z").await;
    let attempts = rig.faults.claim_attempts.lock().unwrap().clone();
    let a_attempts = attempts.len() - 1;
    assert!(a_attempts > 3, "A retried: {attempts:?}");
    rig.drain_writers().await;
    let rows = rig.runs().await;
    let b = rows
        .iter()
        .find(|r| r.definition_id == Uuid::from_u128(2))
        .expect("B claimed");
    assert_eq!(b.state, "succeeded", "B fired while A retried: {rows:?}");
    // When B's claim was attempted (on the manual clock, which A's back-off moves on).
    let b_claimed_at = attempts
        .iter()
        .find(|(instant, _)| *instant == t("2026-03-01T12:00:02Z"))
        .map(|(_, at)| *at)
        .unwrap();
    assert!(
        b_claimed_at < t("2026-03-01T12:00:03Z"),
        "B was not held for A's 10 s retry window: claimed at {b_claimed_at}"
    );
    let a: Vec<&RunRow> = rows.iter().filter(|r| r.definition_id == Uuid::from_u128(1)).collect();
    assert_eq!(a.len(), 1, "{rows:?}");
    assert_eq!(
        a[0].context_snapshot["misfire"]["reason"], "claim_failed",
        "A's claim never went through: its instant is recorded as missed"
    );
}

#[tokio::test]
async fn fault6_a_claim_that_returns_past_the_grace_is_not_sent() {
    let mut rig = rig(|s| vec![activity(s, 1, "* * * * * *")]).await;
    rig.answer("/a1", OK).await;
    // The claim statement takes 11 s: past the 10 s grace when it returns.
    *rig.faults.claim_takes.lock().unwrap() = Some(SignedDuration::from_secs(11));
    rig.fire_at("2026-03-01T12:00:01Z").await;
    let rows = rig.runs().await;
    assert_eq!(states(&rows), [("skipped".into(), Some("skipped_misfire".into()))]);
    assert_eq!(rows[0].context_snapshot["not_executed"], "claimed_past_grace");
    assert_eq!(rig.requests("/a1").await, 0, "nothing sent late");
}

#[tokio::test]
async fn fault6_a_misfire_that_cannot_be_written_does_not_delay_on_time_runs() {
    let mut rig = rig(|s| vec![activity(s, 1, "* * * * * *"), activity(s, 2, "* * * * * *")]).await;
    rig.answer("/a1", OK).await;
    rig.answer("/a2", OK).await;
    rig.faults.misfires_down.store(true, Ordering::SeqCst);
    // A's timer is an hour behind (past its grace); B's is on time.
    let late: Vec<StoredDefinition> = rig
        .store
        .definitions()
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.definition.id == Uuid::from_u128(1))
        .collect();
    rig.timers = Timers::default();
    let t0 = t(T0);
    reconcile(&mut rig.timers, late, t0 - SignedDuration::from_hours(1), |_| {
        Some(t0 - SignedDuration::from_hours(1))
    });
    let on_time: Vec<StoredDefinition> = rig.store.definitions().await.unwrap();
    reconcile(&mut rig.timers, on_time, t0, |_| Some(t0));
    rig.fire_at("2026-03-01T12:00:01Z").await;
    let rows = rig.runs().await;
    assert_eq!(
        states(&rows),
        [("succeeded".into(), Some("ok".into()))],
        "B ran while A's misfire waits"
    );
    assert_eq!(rows[0].definition_id, Uuid::from_u128(2));
    rig.faults.misfires_down.store(false, Ordering::SeqCst);
    rig.drain_writers().await;
    let rows = rig.runs().await;
    let misfire = rows
        .iter()
        .find(|r| r.outcome.as_deref() == Some("skipped_misfire"))
        .expect("written once the store takes it");
    // 11:00:01 ..= 11:59:51 (the last instant past the 10 s grace at 12:00:01).
    assert_eq!(
        misfire.context_snapshot["misfire"]["count"], 3591,
        "{}",
        misfire.context_snapshot
    );
    assert_eq!(misfire.context_snapshot["misfire"]["reason"], "past_grace");
}

// ------------------------------------------------------------ fault 7

#[tokio::test]
async fn fault7_after_sigterm_nothing_new_is_claimed_or_sent() {
    let mut rig = rig_with(
        |s| vec![activity(s, 1, "* * * * * *"), activity(s, 2, "* * * * * *")],
        1,
        Duration::from_secs(30),
    )
    .await;
    rig.answer("/a1", OK).await;
    rig.answer("/a2", OK).await;
    rig.core.stopping.cancel();
    rig.fire_at("2026-03-01T12:00:01Z").await;
    // Nothing claimed, nothing written: another replica or the next start fires or records it.
    assert!(rig.runs().await.is_empty());
    assert_eq!(rig.requests("/a1").await + rig.requests("/a2").await, 0);
}

#[tokio::test]
async fn fault7_runs_queued_for_a_request_slot_are_abandoned_when_stopping() {
    let mut rig = rig_with(
        |s| vec![activity(s, 1, "* * * * * *"), activity(s, 2, "* * * * * *")],
        1,
        Duration::from_secs(30),
    )
    .await;
    // Whichever run takes the single slot first is slow; the other waits for it.
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(OK)
                .set_delay(Duration::from_millis(500)),
        )
        .mount(&rig.server)
        .await;
    rig.clock.advance_to(t("2026-03-01T12:00:01Z"));
    step(&rig.core, &mut rig.timers, rig.clock.now(), SignedDuration::ZERO);
    // Wait for the first request to arrive: the other run is then queued.
    bounded("the first request", async {
        while rig.server.received_requests().await.unwrap_or_default().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    rig.core.stopping.cancel();
    rig.settle().await;
    let rows = rig.runs().await;
    let by_state: Vec<&str> = rows.iter().map(|r| r.state.as_str()).collect();
    assert!(by_state.contains(&"succeeded"), "the run in flight finishes: {rows:?}");
    let queued = rows
        .iter()
        .find(|r| r.state == "abandoned")
        .expect("the queued run is abandoned");
    assert_eq!(queued.error_code.as_deref(), Some("shutdown"));
    assert_eq!(
        rig.server.received_requests().await.unwrap().len(),
        1,
        "the queued one was never sent"
    );
}

#[tokio::test]
async fn fault7_a_panicking_run_task_is_recorded() {
    let rig = rig(|s| vec![activity(s, 1, "* * * * * *")]).await;
    // A claimed run whose task panics instead of executing.
    let run_id = Uuid::now_v7();
    let items = [crate::store::ClaimItem {
        run_id,
        definition_id: Uuid::from_u128(1),
        spec_hash: "h".into(),
        skip_if_running: false,
        buffer_until: None,
        snapshot: crate::snapshot::to_stored(&serde_json::json!({})),
    }];
    let batch = ClaimBatch {
        scheduled_for: t("2026-03-01T12:00:01Z"),
        fired_at: t("2026-03-01T12:00:01Z"),
        worker_id: "w-test",
        lease: SignedDuration::from_secs(30),
        items: &items,
        finished_unwritten: &[],
    };
    rig.store.claim(&batch).await.unwrap();
    rig.core.owned.claimed([(run_id, Uuid::from_u128(1))]);
    rig.core
        .tasks
        .spawn(execute::supervised(rig.core.clone(), run_id, async { panic!("boom") }));
    rig.settle().await;
    let row = rig.runs().await.remove(0);
    assert_eq!(
        (row.state.as_str(), row.error_code.as_deref()),
        ("failed", Some("internal"))
    );
    assert!(row.error_message.unwrap().contains("boom"));
}

#[tokio::test]
async fn fault7_a_background_task_that_dies_stops_the_worker_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("actcore.db").display());
    let store = Store::open_and_migrate(Some(&url)).await.unwrap();
    let faults = Arc::new(Faults::default());
    faults.watch_dies.store(true, Ordering::SeqCst);
    let faulty = Faulty {
        inner: store,
        clock: Clock::System,
        faults,
    };
    let config = WorkerConfig {
        worker_id: "w-test".into(),
        lease: Duration::from_secs(30),
        shutdown_grace: Some(Duration::from_secs(1)),
        reread: Duration::from_secs(30),
    };
    let result = bounded(
        "the worker",
        run_with(faulty, config, Clock::System, CancellationToken::new()),
    )
    .await;
    let err = result.expect_err("a dead listener stops the worker");
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("definitions listener"), "{err}");
}

#[tokio::test]
async fn fault7_the_default_grace_covers_the_preflight() {
    let rig = rig(|s| {
        let mut a = activity(s, 1, "* * * * * *");
        a.action.preflight = Some(format!("{}/health", s.uri()));
        vec![a]
    })
    .await;
    // 5 s timeout, preflight at most 5 s.
    assert_eq!(rig.timers.longest_run(), Duration::from_secs(10));
}

// ------------------------------------------------------------ fault 8

#[tokio::test]
async fn fault8_instants_lost_while_the_database_is_away_are_recorded_once_it_is_back() {
    let mut rig = rig(|s| vec![skipping(activity(s, 1, "* * * * * *"))]).await;
    rig.answer("/a1", OK).await;
    rig.faults.claims_down.store(true, Ordering::SeqCst);
    rig.faults.misfires_down.store(true, Ordering::SeqCst);
    for s in ["12:00:01", "12:00:02", "12:00:03"] {
        rig.fire_at(&format!("2026-03-01T{s}Z")).await;
    }
    assert!(rig.runs().await.is_empty(), "nothing could be written");
    // The database is back.
    rig.faults.claims_down.store(false, Ordering::SeqCst);
    rig.faults.misfires_down.store(false, Ordering::SeqCst);
    rig.catch_up("2026-03-01T12:00:20Z").await;
    rig.drain_writers().await;
    let rows = rig.runs().await;
    let misfire = rows
        .iter()
        .find(|r| r.outcome.as_deref() == Some("skipped_misfire"))
        .expect("recorded");
    let m = &misfire.context_snapshot["misfire"];
    assert_eq!(m["reason"], "claim_failed", "{m}");
    // 01..03 lost to the outage and merged; 04..10 were past the grace at
    // 12:00:20 when the loop saw them; 11..20 fired (late, within the grace).
    let counted: u64 = rows
        .iter()
        .filter(|r| r.outcome.as_deref() == Some("skipped_misfire"))
        .map(|r| r.context_snapshot["misfire"]["count"].as_u64().unwrap())
        .sum();
    let ran = rows.iter().filter(|r| r.state == "succeeded").count() as u64;
    assert_eq!(
        counted + ran,
        20,
        "every instant 01..20 is one run or part of a misfire: {rows:?}"
    );
    assert_eq!(m["count"], 3);
    assert_eq!(misfire.scheduled_for, Some(t("2026-03-01T12:00:03Z")));
    assert_eq!(rig.server.received_requests().await.unwrap().len() as u64, ran);
}

#[tokio::test]
async fn fault8_a_result_waiting_in_the_recorder_is_not_an_overlap() {
    let mut rig = rig(|s| vec![skipping(activity(s, 1, "* * * * * *"))]).await;
    rig.answer("/a1", OK).await;
    rig.faults.finish_down.store(true, Ordering::SeqCst);
    rig.fire_at("2026-03-01T12:00:01Z").await;
    rig.fire_at("2026-03-01T12:00:02Z").await;
    rig.faults.finish_down.store(false, Ordering::SeqCst);
    rig.settle().await;
    let rows = rig.runs().await;
    assert_eq!(
        states(&rows),
        vec![("succeeded".to_string(), Some("ok".to_string())); 2],
        "the first run had finished; its row just was not written yet"
    );
}

#[tokio::test]
async fn fault8_a_retrying_claim_is_superseded_by_the_next_instant() {
    let mut rig = rig(|s| vec![activity(s, 1, "* * * * * *")]).await;
    rig.answer("/a1", OK).await;
    rig.faults.claims_fail_next.store(1, Ordering::SeqCst);
    // Both instants are planned before either claim task runs: the failed
    // claim of :01 sees :02 due and leaves the retry instead of firing late
    // next to it.
    for at in ["2026-03-01T12:00:01Z", "2026-03-01T12:00:02Z"] {
        rig.clock.advance_to(t(at));
        step(&rig.core, &mut rig.timers, t(at), SignedDuration::ZERO);
    }
    rig.settle().await;
    rig.drain_writers().await;
    let rows = rig.runs().await;
    assert_eq!(
        states(&rows),
        [
            ("skipped".into(), Some("skipped_misfire".into())),
            ("succeeded".into(), Some("ok".into()))
        ],
        "{rows:?}"
    );
    assert_eq!(rows[0].scheduled_for, Some(t("2026-03-01T12:00:01Z")));
    assert_eq!(rows[0].context_snapshot["misfire"]["reason"], "claim_failed");
    assert_eq!(rig.faults.claim_attempts.lock().unwrap().len(), 2, "no retry of :01");
}

#[tokio::test]
async fn the_pruner_sees_the_firing_busy_until_its_rows_are_written() {
    use crate::retention::Firing;
    let mut rig = rig(|s| vec![activity(s, 1, "* * * * * *")]).await;
    rig.answer("/a1", OK).await;
    assert_eq!(rig.core.quiet_for(), None, "not started: not quiet");
    rig.core.set_next_claim(Some(t("2026-03-01T12:00:05Z")));
    assert_eq!(
        rig.core.quiet_for(),
        Some(Duration::from_secs(5)),
        "quiet until the claim"
    );
    // The run finishes but its row cannot be written: still busy.
    rig.faults.finish_down.store(true, Ordering::SeqCst);
    rig.fire_at("2026-03-01T12:00:01Z").await;
    rig.core.set_next_claim(Some(t("2026-03-01T12:00:05Z")));
    assert_eq!(rig.core.quiet_for(), None, "a result waiting in the recorder");
    rig.faults.finish_down.store(false, Ordering::SeqCst);
    rig.settle().await;
    assert_eq!(
        rig.core.quiet_for(),
        Some(Duration::from_secs(4)),
        "written: quiet again"
    );
    rig.clock.advance_to(t("2026-03-01T12:00:05Z"));
    assert_eq!(rig.core.quiet_for(), None, "the claim is due");
    rig.core.set_next_claim(None);
    assert_eq!(rig.core.quiet_for(), Some(Duration::MAX), "nothing scheduled");
}

// ------------------------------------------------------------ start-up

#[tokio::test]
async fn a_warm_up_that_fails_costs_the_start_nothing() {
    let rig = rig(|s| vec![activity(s, 1, "* * * * * *"), activity(s, 2, "* * * * * *")]).await;
    rig.faults.warm_up_fails.store(true, Ordering::SeqCst);
    let (timers, _) = bounded("the start", start(&rig.core, &rig.core.store))
        .await
        .expect("the worker starts without its warm start");
    assert_eq!(rig.faults.warm_ups.load(Ordering::SeqCst), 1, "the start asks for it");
    assert_eq!(timers.len(), 2, "and loads every activity all the same");
}
