-- actcore schema (CONTRACTS §3). Table and column names are public:
-- operators and dashboards query them with plain SQL.

create table activity_definitions (
    definition_id uuid primary key,
    name          text        not null,
    slug          text        not null,
    spec          jsonb       not null,
    spec_hash     text        not null,
    enabled       boolean     not null default true,
    -- Operator state: sync never writes it.
    paused        boolean     not null default false,
    -- Set when the file disappears: the activity is kept (with its history), disabled.
    retired_at    timestamptz,
    source_file   text,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);
-- A slug is the CLI handle of a live activity; a retired one may hand it on.
create unique index activity_definitions_slug on activity_definitions (slug) where retired_at is null;

create table activity_runs (
    run_id              uuid        primary key,
    definition_id       uuid        not null references activity_definitions (definition_id),
    fired_at            timestamptz not null,
    scheduled_for       timestamptz,
    trigger             text        not null check (trigger in ('schedule', 'manual', 'retry', 'fallback')),
    source              text        not null check (source in ('activity-core', 'manual', 'local-fallback')),
    attempt             integer     not null default 1,
    state               text        not null check (state in ('queued', 'running', 'succeeded', 'failed', 'skipped', 'abandoned')),
    outcome             text        check (outcome in ('ok', 'assessment_failures', 'lock_skipped', 'automation_error',
                                          'skipped_misfire', 'skipped_overlap', 'skipped_paused', 'blocked_circuit_open')),
    automation_error    boolean     not null default false,
    assessment_failures integer     not null default 0,
    error_code          text,
    error_message       text,
    context_snapshot    jsonb       not null default '{}'::jsonb,
    worker_id           text,
    lease_expires_at    timestamptz,
    started_at          timestamptz,
    finished_at         timestamptz,
    spec_hash           text
);
-- The exactly-once fence: one first attempt per scheduled instant, whoever inserts first.
create unique index activity_runs_fence on activity_runs (definition_id, scheduled_for)
    where trigger = 'schedule' and attempt = 1;
create index activity_runs_history on activity_runs (definition_id, fired_at desc);
create index activity_runs_fired on activity_runs (fired_at desc);
-- Runs in flight: overlap checks and the lease reaper.
create index activity_runs_running on activity_runs (definition_id, lease_expires_at) where state = 'running';

create table activity_events (
    event_id      bigint generated always as identity primary key,
    at            timestamptz not null default now(),
    definition_id uuid,
    run_id        uuid,
    kind          text        not null,
    detail        jsonb       not null default '{}'::jsonb
);
create index activity_events_definition on activity_events (definition_id, at desc);
