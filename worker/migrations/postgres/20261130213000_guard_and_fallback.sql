-- Guarded self-healing (retries, churn budget, circuit breaker, manual runs)
-- and the fallback fence. Additive: a previous version's replicas keep
-- working against it (worker/migrations/README.md).

-- A new outcome: an automated attempt past the churn budget.
alter table activity_runs drop constraint activity_runs_outcome_check;
alter table activity_runs add constraint activity_runs_outcome_check check (outcome in (
    'ok', 'assessment_failures', 'lock_skipped', 'automation_error',
    'skipped_misfire', 'skipped_overlap', 'skipped_paused', 'blocked_circuit_open', 'blocked_budget'));

-- The first run of a retry chain (retries and fallback attempts after a failed cluster run).
alter table activity_runs add column retry_of uuid;
-- A queued run (retry, manual, buffered instant) starts no earlier than not_before
-- and no later than expires_at; past it, it is recorded as not run.
alter table activity_runs add column not_before timestamptz;
alter table activity_runs add column expires_at timestamptz;
-- Who asked for it: the operator of a manual trigger or a forced run.
alter table activity_runs add column actor text;
-- A fallback run imported for an instant the cluster also ran: the cluster's run.
alter table activity_runs add column duplicate_of uuid;

-- The fence covers the fallback too: the cluster and a workstation's timer can
-- never both run an instant's first attempt.
drop index activity_runs_fence;
create unique index activity_runs_fence on activity_runs (definition_id, scheduled_for)
    where trigger in ('schedule', 'fallback') and attempt = 1;
-- The durable queue of retries, manual and buffered runs, claimed with skip locked.
create index activity_runs_queue on activity_runs (not_before) where state = 'queued';

-- Self-healing state per activity, shared by every replica.
create table activity_guard (
    definition_id      uuid        primary key references activity_definitions (definition_id),
    -- Automation errors of automated attempts (schedule, retry) since the last success.
    consecutive_errors integer     not null default 0,
    circuit            text        not null default 'closed' check (circuit in ('closed', 'open', 'half_open')),
    circuit_since      timestamptz,
    -- When an open circuit lets one probe through; null while an operator holds it open.
    half_open_at       timestamptz,
    circuit_actor      text,
    circuit_reason     text,
    -- The half-open probe in flight.
    probe_run_id       uuid,
    -- The churn budget: automated attempts since window_started_at.
    window_started_at  timestamptz,
    window_attempts    integer     not null default 0,
    -- The start of the last automated attempt: a retry waits a cooldown after it.
    last_attempt_at    timestamptz,
    updated_at         timestamptz not null default now()
);
