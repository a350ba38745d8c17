-- actcore schema (CONTRACTS §3) for the embedded single-node store.
-- uuids are stored as lower-case hyphenated text and times as fixed-width
-- RFC 3339 UTC text (YYYY-MM-DDTHH:MM:SS.ffffffZ), so the runbook's SQL
-- (string literal ids, `order by fired_at`, `->` on JSON) works verbatim.

create table activity_definitions (
    definition_id text    primary key,
    name          text    not null,
    slug          text    not null,
    spec          text    not null check (json_valid(spec)),
    spec_hash     text    not null,
    enabled       integer not null default 1,
    paused        integer not null default 0,
    retired_at    text,
    source_file   text,
    created_at    text    not null,
    updated_at    text    not null
);
create unique index activity_definitions_slug on activity_definitions (slug) where retired_at is null;

create table activity_runs (
    run_id              text    primary key,
    definition_id       text    not null references activity_definitions (definition_id),
    fired_at            text    not null,
    scheduled_for       text,
    trigger             text    not null check (trigger in ('schedule', 'manual', 'retry', 'fallback')),
    source              text    not null check (source in ('activity-core', 'manual', 'local-fallback')),
    attempt             integer not null default 1,
    state               text    not null check (state in ('queued', 'running', 'succeeded', 'failed', 'skipped', 'abandoned')),
    outcome             text    check (outcome in ('ok', 'assessment_failures', 'lock_skipped', 'automation_error',
                                       'skipped_misfire', 'skipped_overlap', 'skipped_paused', 'blocked_circuit_open')),
    automation_error    integer not null default 0,
    assessment_failures integer not null default 0,
    error_code          text,
    error_message       text,
    context_snapshot    text    not null default '{}' check (json_valid(context_snapshot)),
    worker_id           text,
    lease_expires_at    text,
    started_at          text,
    finished_at         text,
    spec_hash           text
);
create unique index activity_runs_fence on activity_runs (definition_id, scheduled_for)
    where trigger = 'schedule' and attempt = 1;
create index activity_runs_history on activity_runs (definition_id, fired_at desc);
create index activity_runs_fired on activity_runs (fired_at desc);
create index activity_runs_running on activity_runs (definition_id, lease_expires_at) where state = 'running';

create table activity_events (
    event_id      integer primary key autoincrement,
    at            text not null,
    definition_id text,
    run_id        text,
    kind          text not null,
    detail        text not null default '{}' check (json_valid(detail))
);
create index activity_events_definition on activity_events (definition_id, at desc);
