//! The durable queue and the guard's transactions, one contract on both
//! backends: concurrent claimers partition the queue (SKIP LOCKED on
//! Postgres), nothing is claimed before `not_before` or after
//! `expires_at`, expiry is recorded and audited, and admission and
//! settlement leave the same `activity_guard` row on each store.

use std::path::PathBuf;
use std::sync::Arc;

use actcore::definition::{Loaded, sample};
use actcore::guard::{Admission, Ended, Policy};
use actcore::run::{ErrorCode, Outcome, Trigger};
use actcore::store::{AdmitItem, GuardStore, HistoryStore, RunStore, Settle, Store};
use actcore_tests::{Backend, fresh_store};
use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const T0: &str = "2030-01-01T00:00:00Z";

async fn store_with_one(backend: Backend) -> (Store, Option<tempfile::TempDir>, Arc<Policy>) {
    let (store, guard, _) = fresh_store(backend).await;
    let mut d = sample(Uuid::new_v4(), "act", "*/15 * * * *", "http://127.0.0.1:9/x");
    d.guard.open_after = 2;
    d.guard.max_automated_attempts = 4;
    let files = [Loaded {
        file: PathBuf::from("definitions/act.toml"),
        definition: d.clone(),
    }];
    store.sync(&files, t(T0), false).await.expect("sync");
    let policy = Arc::new(Policy::of(&d, &d.parsed_schedule().unwrap(), t(T0)));
    (store, guard, policy)
}

async fn queue_manual(store: &Store, policy: &Policy, n: usize, at: Timestamp) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let q = actcore::trigger::manual_run(policy.definition_id, "alice", at, SignedDuration::from_mins(2));
        assert!(store.enqueue(&q, &[]).await.unwrap());
        ids.push(q.run.run_id);
    }
    ids
}

async fn concurrent_claimers_partition_the_queue(backend: Backend) {
    let (store, _g, policy) = store_with_one(backend).await;
    let queued = queue_manual(&store, &policy, 60, t(T0)).await;
    let now = t(T0) + SignedDuration::from_secs(1);
    let claim = |w: &'static str| {
        let s = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s
                    .claim_queued(w, SignedDuration::from_secs(30), now, 7, None)
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|d| d.run_id));
            }
        })
    };
    let (a, b) = (claim("wa"), claim("wb"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let mut all: Vec<Uuid> = a.iter().chain(&b).copied().collect();
    all.sort();
    let mut expected = queued.clone();
    expected.sort();
    assert_eq!(
        all,
        expected,
        "every queued run claimed exactly once (a: {}, b: {})",
        a.len(),
        b.len()
    );
}

async fn not_before_and_expires_at_bound_the_claim(backend: Backend) {
    let (store, _g, policy) = store_with_one(backend).await;
    let ids = queue_manual(&store, &policy, 1, t(T0)).await;
    let early = t(T0) - SignedDuration::from_secs(1);
    assert!(
        store
            .claim_queued("w", SignedDuration::from_secs(30), early, 10, None)
            .await
            .unwrap()
            .is_empty()
    );
    let late = t(T0) + SignedDuration::from_mins(3);
    assert!(
        store
            .claim_queued("w", SignedDuration::from_secs(30), late, 10, None)
            .await
            .unwrap()
            .is_empty()
    );
    let expired = store.expire_queued(late, None).await.unwrap();
    assert_eq!(expired.iter().map(|e| e.run_id).collect::<Vec<_>>(), ids);
    let row = store.run_by_id(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.error_code.as_deref()),
        ("abandoned", Some("expired"))
    );
    let kinds = store.event_kinds(Some(policy.definition_id)).await.unwrap();
    assert!(kinds.contains(&("run_expired".to_string(), 1)), "{kinds:?}");
    assert!(store.expire_queued(late, None).await.unwrap().is_empty(), "once");
}

async fn admission_and_settlement_keep_one_guard_row(backend: Backend) {
    let (store, _g, policy) = store_with_one(backend).await;
    let now = t(T0);
    // Budget 4, raised to 5 (the schedule's 4 instants an hour, plus one): the sixth is blocked.
    assert_eq!(policy.guard.max_automated_attempts, 5);
    let mut decided = Vec::new();
    for _ in 0..6 {
        let ids = queue_manual(&store, &policy, 1, now).await;
        store
            .claim_queued("w", SignedDuration::from_secs(30), now, 1, Some(ids[0]))
            .await
            .unwrap();
        let items = [AdmitItem {
            run_id: ids[0],
            policy: policy.clone(),
        }];
        decided.push(store.admit(&items, now).await.unwrap()[0].1);
    }
    assert_eq!(decided[..5], [Admission::Run; 5]);
    assert_eq!(decided[5], Admission::Blocked(Outcome::BlockedBudget));
    let g = &store.guards(&[policy.definition_id]).await.unwrap()[0];
    assert_eq!((g.window_attempts, g.last_attempt_at), (5, Some(now)));
    // Two automation errors open the circuit (open_after = 2) and are audited.
    for i in 0..2 {
        let settle = Settle {
            policy: policy.clone(),
            ended: Ended {
                run_id: Uuid::new_v4(),
                trigger: Trigger::Schedule,
                attempt: 3,
                root: Uuid::new_v4(),
                scheduled_for: Some(now),
                outcome: Outcome::AutomationError,
                error_code: Some(ErrorCode::Http5xx),
                finished_at: now + SignedDuration::from_secs(i),
                next_instant: Some(now + SignedDuration::from_mins(15)),
            },
        };
        store.settle(&[settle], now).await.unwrap();
    }
    let g = &store.guards(&[policy.definition_id]).await.unwrap()[0];
    assert_eq!((g.circuit.as_str(), g.consecutive_errors), ("open", 2));
    assert!(g.half_open_at.is_some());
    let kinds = store.event_kinds(Some(policy.definition_id)).await.unwrap();
    assert!(kinds.contains(&("circuit_opened".to_string(), 1)), "{kinds:?}");
    assert!(kinds.contains(&("attempt_blocked".to_string(), 1)), "{kinds:?}");
}

actcore_tests::both_backends!(
    concurrent_claimers_partition_the_queue,
    not_before_and_expires_at_bound_the_claim,
    admission_and_settlement_keep_one_guard_row,
);
