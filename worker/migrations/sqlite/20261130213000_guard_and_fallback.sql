-- Guarded self-healing and the fallback fence (see the Postgres twin for the
-- why of each column). SQLite cannot alter a check constraint, so the runs
-- table is rebuilt with the new outcome and columns.

create table activity_runs_next (
    run_id              text    primary key,
    definition_id       text    not null references activity_definitions (definition_id),
    fired_at            text    not null,
    scheduled_for       text,
    trigger             text    not null check (trigger in ('schedule', 'manual', 'retry', 'fallback')),
    source              text    not null check (source in ('activity-core', 'manual', 'local-fallback')),
    attempt             integer not null default 1,
    state               text    not null check (state in ('queued', 'running', 'succeeded', 'failed', 'skipped', 'abandoned')),
    outcome             text    check (outcome in ('ok', 'assessment_failures', 'lock_skipped', 'automation_error',
                                       'skipped_misfire', 'skipped_overlap', 'skipped_paused', 'blocked_circuit_open',
                                       'blocked_budget')),
    automation_error    integer not null default 0,
    assessment_failures integer not null default 0,
    error_code          text,
    error_message       text,
    context_snapshot    text    not null default '{}' check (json_valid(context_snapshot)),
    worker_id           text,
    lease_expires_at    text,
    started_at          text,
    finished_at         text,
    spec_hash           text,
    retry_of            text,
    not_before          text,
    expires_at          text,
    actor               text,
    duplicate_of        text
);
insert into activity_runs_next (run_id, definition_id, fired_at, scheduled_for, trigger, source, attempt, state, outcome,
    automation_error, assessment_failures, error_code, error_message, context_snapshot, worker_id, lease_expires_at,
    started_at, finished_at, spec_hash)
select run_id, definition_id, fired_at, scheduled_for, trigger, source, attempt, state, outcome,
    automation_error, assessment_failures, error_code, error_message, context_snapshot, worker_id, lease_expires_at,
    started_at, finished_at, spec_hash
from activity_runs;
drop table activity_runs;
alter table activity_runs_next rename to activity_runs;

create unique index activity_runs_fence on activity_runs (definition_id, scheduled_for)
    where trigger in ('schedule', 'fallback') and attempt = 1;
create index activity_runs_history on activity_runs (definition_id, fired_at desc);
create index activity_runs_fired on activity_runs (fired_at desc);
create index activity_runs_running on activity_runs (definition_id, lease_expires_at) where state = 'running';
create index activity_runs_queue on activity_runs (not_before) where state = 'queued';

create table activity_guard (
    definition_id      text    primary key references activity_definitions (definition_id),
    consecutive_errors integer not null default 0,
    circuit            text    not null default 'closed' check (circuit in ('closed', 'open', 'half_open')),
    circuit_since      text,
    half_open_at       text,
    circuit_actor      text,
    circuit_reason     text,
    probe_run_id       text,
    window_started_at  text,
    window_attempts    integer not null default 0,
    last_attempt_at    text,
    updated_at         text    not null
);
