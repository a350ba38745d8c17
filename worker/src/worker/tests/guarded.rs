//! Guarded self-healing, driven step by step on the rig (embedded store,
//! local remote, manual clock): retries through the durable queue, the
//! cooldown, the churn budget, the circuit breaker, `buffer_one` and
//! expiry. The Postgres side (SKIP LOCKED across processes) is in
//! tests/tests/guard_e2e.rs.

use super::*;
use crate::store::GuardStore;
use crate::store::queue::Queued as QueuedRun;

/// Short policy figures so that a test walks through them quickly.
fn guarded(mut d: Definition, open_after: u32, max_attempts: u32, budget: u32) -> Definition {
    d.guard.cooldown = "20s".parse().unwrap();
    d.guard.open_after = open_after;
    d.guard.open_for = "10m".parse().unwrap();
    d.guard.max_automated_attempts = budget;
    d.guard.window = "1h".parse().unwrap();
    d.retry.initial_interval = "10s".parse().unwrap();
    d.retry.backoff_coefficient = 2.0;
    d.retry.max_attempts = max_attempts;
    d
}

impl Rig {
    /// The next `times` requests to `route` get `status` (ahead of any other answer).
    async fn fail(&self, route: &str, status: u16, times: u64) {
        Mock::given(path(route.to_string()))
            .respond_with(ResponseTemplate::new(status))
            .up_to_n_times(times)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    async fn events(&self) -> Vec<String> {
        let mut kinds = Vec::new();
        for (k, n) in self.store.event_kinds(None).await.unwrap() {
            kinds.extend(std::iter::repeat_n(k, n as usize));
        }
        kinds
    }
}

/// (trigger, attempt, state, outcome) of every row, by fired_at.
async fn chain(rig: &Rig) -> Vec<(String, i32, String, String)> {
    let mut rows = rig.store.runs(&RunFilter::default()).await.unwrap();
    rows.sort_by_key(|r| (r.fired_at, r.attempt));
    rows.into_iter()
        .map(|r| (r.trigger, r.attempt, r.state, r.outcome.unwrap_or_default()))
        .collect()
}

fn row(trigger: &str, attempt: i32, state: &str, outcome: &str) -> (String, i32, String, String) {
    (trigger.into(), attempt, state.into(), outcome.into())
}

#[tokio::test]
async fn a_retryable_error_is_retried_once_after_its_backoff_and_cooldown() {
    let mut rig = rig(|s| vec![guarded(activity(s, 1, "*/5 * * * *"), 10, 3, 100)]).await;
    rig.fail("/a1", 502, 1).await;
    rig.answer("/a1", OK).await;
    rig.fire_at("2026-03-01T12:05:00Z").await;
    assert_eq!(
        chain(&rig).await,
        [
            row("schedule", 1, "failed", "automation_error"),
            row("retry", 2, "queued", "")
        ]
    );
    // Backoff 10 s, cooldown 20 s after the attempt's start: not before 12:05:20.
    assert_eq!(rig.poll_at("2026-03-01T12:05:19Z").await, 0);
    assert_eq!(rig.poll_at("2026-03-01T12:05:20Z").await, 1);
    assert_eq!(rig.poll_at("2026-03-01T12:05:30Z").await, 0, "it runs once");
    let rows = rig.runs().await;
    assert_eq!(
        chain(&rig).await,
        [
            row("schedule", 1, "failed", "automation_error"),
            row("retry", 2, "succeeded", "ok")
        ]
    );
    let first = rows.iter().find(|r| r.attempt == 1).unwrap().run_id;
    let retry = rig
        .store
        .run_by_id(rows.iter().find(|r| r.attempt == 2).unwrap().run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retry.scheduled_for, Some(t("2026-03-01T12:05:00Z")));
    assert_eq!(rig.requests("/a1").await, 2);
    assert!(rig.events().await.contains(&"retry_scheduled".to_string()));
    let detail = rig.store.run_by_id(first).await.unwrap().unwrap();
    assert_eq!(detail.error_code.as_deref(), Some("http_5xx"));
}

#[tokio::test]
async fn assessment_failures_and_a_4xx_are_never_retried() {
    let mut rig = rig(|s| vec![guarded(activity(s, 1, "*/5 * * * *"), 10, 3, 100)]).await;
    rig.answer(
        "/a1",
        r#"{"exit_code":0,"automation_error":false,"assessment_failures":3,"lock_skipped":false}"#,
    )
    .await;
    rig.fire_at("2026-03-01T12:05:00Z").await;
    rig.fail("/a1", 404, 1).await;
    rig.fire_at("2026-03-01T12:10:00Z").await;
    rig.poll_at("2026-03-01T12:14:00Z").await;
    assert_eq!(
        chain(&rig).await,
        [
            row("schedule", 1, "succeeded", "assessment_failures"),
            row("schedule", 1, "failed", "automation_error")
        ]
    );
}

#[tokio::test]
async fn retries_stop_at_max_attempts_and_a_retry_too_close_to_the_next_instant_is_dropped() {
    let mut rig = rig(|s| vec![guarded(activity(s, 1, "* * * * *"), 10, 5, 100)]).await;
    rig.fail("/a1", 502, 10).await;
    rig.fire_at("2026-03-01T12:01:00Z").await;
    // 12:01:20 (cooldown) → fails; the next would start at 12:01:40 (cooldown).
    assert_eq!(rig.poll_at("2026-03-01T12:01:20Z").await, 1);
    assert_eq!(rig.poll_at("2026-03-01T12:01:40Z").await, 1);
    // The third retry would start at 12:02:00: the next instant. Dropped.
    assert_eq!(rig.poll_at("2026-03-01T12:02:30Z").await, 0);
    let c = chain(&rig).await;
    assert_eq!(c.len(), 3, "{c:?}");
    assert!(rig.events().await.contains(&"retry_dropped".to_string()));
}

#[tokio::test]
async fn the_budget_blocks_attempts_with_rows_then_recovers_when_the_window_moves() {
    // */20: three instants an hour; a budget of 4 leaves room for one retry.
    let mut rig = rig(|s| vec![guarded(activity(s, 1, "*/20 * * * *"), 100, 2, 4)]).await;
    rig.fail("/a1", 502, 100).await;
    rig.fire_at("2026-03-01T12:20:00Z").await; // attempt 1 of the window (12:20 to 13:20)
    assert_eq!(rig.poll_at("2026-03-01T12:20:20Z").await, 1); // its retry: 2
    rig.fire_at("2026-03-01T12:40:00Z").await; // 3
    assert_eq!(rig.poll_at("2026-03-01T12:40:20Z").await, 1); // 4: the budget is used up
    rig.fire_at("2026-03-01T13:00:00Z").await; // blocked
    let c = chain(&rig).await;
    assert_eq!(
        c.last().unwrap(),
        &row("schedule", 1, "skipped", "blocked_budget"),
        "{c:?}"
    );
    assert_eq!(rig.requests("/a1").await, 4);
    // The window (from 12:20) has moved at 13:20.
    rig.fire_at("2026-03-01T13:20:00Z").await;
    let c = chain(&rig).await;
    assert!(c.contains(&row("schedule", 1, "failed", "automation_error")));
    assert_eq!(rig.requests("/a1").await, 5);
    let events = rig.events().await;
    assert!(events.contains(&"attempt_blocked".to_string()), "{events:?}");
}

#[tokio::test]
async fn the_circuit_opens_blocks_half_opens_reopens_and_closes_on_a_good_probe() {
    let mut rig = rig(|s| vec![guarded(activity(s, 1, "*/5 * * * *"), 2, 1, 100)]).await;
    rig.fail("/a1", 502, 3).await;
    rig.answer("/a1", OK).await;
    rig.fire_at("2026-03-01T12:05:00Z").await;
    rig.fire_at("2026-03-01T12:10:00Z").await; // second error in a row: opens, half-open at 12:20
    rig.fire_at("2026-03-01T12:15:00Z").await; // blocked
    rig.fire_at("2026-03-01T12:20:00Z").await; // the probe: 502 → reopens until 12:30
    rig.fire_at("2026-03-01T12:25:00Z").await; // blocked
    rig.fire_at("2026-03-01T12:30:00Z").await; // the probe: ok → closed
    rig.fire_at("2026-03-01T12:35:00Z").await; // normal
    let outcomes: Vec<String> = chain(&rig).await.into_iter().map(|r| r.3).collect();
    assert_eq!(
        outcomes,
        [
            "automation_error",
            "automation_error",
            "blocked_circuit_open",
            "automation_error",
            "blocked_circuit_open",
            "ok",
            "ok"
        ]
    );
    assert_eq!(rig.requests("/a1").await, 5);
    let events = rig.events().await;
    for kind in [
        "circuit_opened",
        "circuit_half_open",
        "circuit_closed",
        "attempt_blocked",
    ] {
        assert!(events.contains(&kind.to_string()), "{kind} in {events:?}");
    }
    assert_eq!(events.iter().filter(|k| *k == "circuit_opened").count(), 2);
    let g = rig.store.guards(&[Uuid::from_u128(1)]).await.unwrap();
    assert_eq!((g[0].circuit.as_str(), g[0].consecutive_errors), ("closed", 0));
}

#[tokio::test]
async fn buffer_one_waits_for_the_running_run_and_starts_once_when_it_ends() {
    let mut d = |s: &MockServer| {
        let mut d = activity(s, 1, "*/5 * * * *");
        d.schedule.overlap = Overlap::BufferOne;
        d.schedule.misfire_grace = "2m".parse().unwrap();
        vec![d]
    };
    let mut rig = rig(&mut d).await;
    rig.answer("/a1", OK).await;
    // A run of another replica is in flight.
    let other = claim_as_other(&rig, "2026-03-01T12:00:00Z").await;
    rig.fire_at("2026-03-01T12:05:00Z").await;
    assert_eq!(
        chain(&rig).await,
        [row("schedule", 1, "running", ""), row("schedule", 1, "queued", "")]
    );
    assert_eq!(
        rig.poll_at("2026-03-01T12:05:30Z").await,
        0,
        "waits while the run is in flight"
    );
    finish_other(&rig, other, "2026-03-01T12:06:00Z").await;
    assert_eq!(rig.poll_at("2026-03-01T12:06:01Z").await, 1);
    assert_eq!(rig.poll_at("2026-03-01T12:06:02Z").await, 0);
    assert_eq!(rig.requests("/a1").await, 1);
    assert_eq!(chain(&rig).await[1], row("schedule", 1, "succeeded", "ok"));
}

#[tokio::test]
async fn a_buffered_instant_whose_grace_passed_is_recorded_as_a_misfire_and_never_sent() {
    let mut rig = rig(|s| {
        let mut d = activity(s, 1, "*/5 * * * *");
        d.schedule.overlap = Overlap::BufferOne;
        vec![d]
    })
    .await;
    rig.answer("/a1", OK).await;
    claim_as_other(&rig, "2026-03-01T12:00:00Z").await;
    rig.fire_at("2026-03-01T12:05:00Z").await;
    rig.fire_at("2026-03-01T12:10:00Z").await; // a second one is not buffered: one at most
    assert_eq!(rig.poll_at("2026-03-01T12:05:11Z").await, 0);
    let c = chain(&rig).await;
    assert_eq!(c[1], row("schedule", 1, "skipped", "skipped_misfire"), "{c:?}");
    assert_eq!(c[2], row("schedule", 1, "skipped", "skipped_overlap"), "{c:?}");
    assert_eq!(rig.requests("/a1").await, 0);
}

#[tokio::test]
async fn a_queued_manual_run_nobody_claims_in_time_expires_and_never_fires() {
    let mut rig = rig(|s| vec![activity(s, 1, "*/5 * * * *")]).await;
    rig.answer("/a1", OK).await;
    let q = crate::trigger::manual_run(Uuid::from_u128(1), "alice", t(T0), SignedDuration::from_secs(120));
    rig.store.enqueue(&q, &[]).await.unwrap();
    assert_eq!(rig.poll_at("2026-03-01T12:02:00Z").await, 0);
    let r = rig.store.run_by_id(q.run.run_id).await.unwrap().unwrap();
    assert_eq!(
        (r.state.as_str(), r.error_code.as_deref()),
        ("abandoned", Some("expired"))
    );
    assert_eq!(rig.requests("/a1").await, 0);
    assert!(rig.events().await.contains(&"run_expired".to_string()));
}

#[tokio::test]
async fn a_manual_run_says_so_in_its_request_and_feeds_no_circuit() {
    let mut rig = rig(|s| vec![guarded(activity(s, 1, "*/5 * * * *"), 1, 3, 100)]).await;
    rig.fail("/a1", 502, 1).await;
    let q: QueuedRun = crate::trigger::manual_run(Uuid::from_u128(1), "alice", t(T0), SignedDuration::from_secs(120));
    rig.store.enqueue(&q, &[]).await.unwrap();
    assert_eq!(rig.poll_at("2026-03-01T12:00:01Z").await, 1);
    let received = rig.server.received_requests().await.unwrap();
    let source = received[0]
        .headers
        .get("x-actcore-source")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(source.as_deref(), Some("manual"));
    let g = rig.store.guards(&[Uuid::from_u128(1)]).await.unwrap();
    assert!(g.is_empty() || g[0].circuit == "closed", "{g:?}");
    assert_eq!(
        chain(&rig).await,
        [row("manual", 1, "failed", "automation_error")],
        "no retry of a manual run"
    );
}

/// Inserts a running first attempt of `instant` owned by another replica.
async fn claim_as_other(rig: &Rig, instant: &str) -> Uuid {
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
        scheduled_for: t(instant),
        fired_at: t(instant),
        worker_id: "w-other",
        lease: SignedDuration::from_secs(3600),
        items: &items,
        finished_unwritten: &[],
    };
    let won = rig.store.claim(&batch).await.unwrap();
    assert_eq!(won.len(), 1);
    run_id
}

async fn finish_other(rig: &Rig, run_id: Uuid, at: &str) {
    let f = FinishRun::ok(run_id, crate::snapshot::to_stored(&serde_json::json!({})), t(at));
    assert_eq!(rig.store.finish_runs(&[f]).await.unwrap(), 1);
}
