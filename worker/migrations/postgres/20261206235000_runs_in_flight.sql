-- Runs in flight get a small table of their own, so that a run's finish
-- touches no column any index of activity_runs names and can be a HOT update
-- (the new version on the row's own page, no index entry written): the
-- finish then costs the same on a table of 10 million runs as on an empty
-- one (docs/design.md, "Runs in flight").
--
-- activity_runs keeps every column it had, written exactly as before:
-- operators' SQL on state, worker_id and lease_expires_at is unchanged.
-- activity_runs_inflight mirrors the queued and running rows, kept by the
-- triggers below whoever writes activity_runs (this version, an older
-- replica during a rollout, the fallback import, an operator's SQL), so it
-- is never a second source of truth to reconcile.

create table activity_runs_inflight (
    run_id           uuid        primary key,
    definition_id    uuid        not null,
    state            text        not null check (state in ('queued', 'running')),
    trigger          text        not null,
    worker_id        text,
    lease_expires_at timestamptz,
    not_before       timestamptz,
    expires_at       timestamptz
);
-- Overlap checks (is a run of this activity running, is an instant of it queued).
create index activity_runs_inflight_definition on activity_runs_inflight (definition_id, state);
-- The durable queue, claimed in not_before order with skip locked.
create index activity_runs_inflight_queue on activity_runs_inflight (not_before) where state = 'queued';
-- A churning table of a few thousand rows: vacuum it early and often.
alter table activity_runs_inflight set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
                                        autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000);

-- One statement-level trigger per event: a batch of 10,000 runs (one
-- instant's claim or finish) costs one set-based statement here, not 10,000
-- calls. Security definer: it runs as the schema owner, so a role that may
-- write activity_runs needs no grant on this table to keep it.
create function activity_runs_inflight_sync() returns trigger
language plpgsql security definer set search_path from current as $$
begin
    if tg_op = 'INSERT' then
        insert into activity_runs_inflight (run_id, definition_id, state, trigger, worker_id, lease_expires_at,
                                            not_before, expires_at)
        select run_id, definition_id, state, trigger, worker_id, lease_expires_at, not_before, expires_at
        from new_runs where state in ('queued', 'running')
        on conflict (run_id) do update set definition_id = excluded.definition_id, state = excluded.state,
            trigger = excluded.trigger, worker_id = excluded.worker_id, lease_expires_at = excluded.lease_expires_at,
            not_before = excluded.not_before, expires_at = excluded.expires_at;
    elsif tg_op = 'UPDATE' then
        delete from activity_runs_inflight i using new_runs n
        where i.run_id = n.run_id and n.state not in ('queued', 'running');
        insert into activity_runs_inflight (run_id, definition_id, state, trigger, worker_id, lease_expires_at,
                                            not_before, expires_at)
        select run_id, definition_id, state, trigger, worker_id, lease_expires_at, not_before, expires_at
        from new_runs where state in ('queued', 'running')
        on conflict (run_id) do update set definition_id = excluded.definition_id, state = excluded.state,
            trigger = excluded.trigger, worker_id = excluded.worker_id, lease_expires_at = excluded.lease_expires_at,
            not_before = excluded.not_before, expires_at = excluded.expires_at;
    elsif tg_op = 'DELETE' then
        delete from activity_runs_inflight i using old_runs o
        where i.run_id = o.run_id and o.state in ('queued', 'running');
    else -- TRUNCATE
        delete from activity_runs_inflight;
    end if;
    return null;
end
$$;

create trigger activity_runs_inflight_insert after insert on activity_runs
    referencing new table as new_runs for each statement execute function activity_runs_inflight_sync();
create trigger activity_runs_inflight_update after update on activity_runs
    referencing new table as new_runs for each statement execute function activity_runs_inflight_sync();
create trigger activity_runs_inflight_delete after delete on activity_runs
    referencing old table as old_runs for each statement execute function activity_runs_inflight_sync();
create trigger activity_runs_inflight_truncate after truncate on activity_runs
    for each statement execute function activity_runs_inflight_sync();

-- What is in flight now (the triggers hold writers off until this commits,
-- so nothing is missed between the copy and them).
insert into activity_runs_inflight (run_id, definition_id, state, trigger, worker_id, lease_expires_at,
                                    not_before, expires_at)
select run_id, definition_id, state, trigger, worker_id, lease_expires_at, not_before, expires_at
from activity_runs where state in ('queued', 'running');

-- Whoever may read activity_runs may read what of it is in flight (the
-- runtime role of `actcore db roles`; `actcore db roles --print` grants it
-- too, for a database migrated before the roles exist).
do $$
declare r record;
begin
    for r in select distinct grantee::regrole::text as name
             from pg_class c, aclexplode(c.relacl) a
             where c.oid = 'activity_runs'::regclass and a.privilege_type = 'SELECT' and a.grantee <> 0
               and a.grantee <> c.relowner
    loop
        execute format('grant select on activity_runs_inflight to %s', r.name);
    end loop;
end
$$;

-- Nothing of activity_runs's own indexes names a column a finish changes any
-- more: the two partial indexes on state are replaced by the table above.
drop index activity_runs_running;
drop index activity_runs_queue;

-- Room on each page for its rows' finished versions: a HOT update needs the
-- new version on the same page, and a run's row grows at its finish by the
-- request, the response and the body (the flagship's: ~430 bytes claimed,
-- ~1,100 finished). Inserts fill a page to a quarter, four or five claimed
-- rows, which leaves room for their finished versions (up to ~1.4 KB each)
-- in the same page; the page ends up about two-thirds full of finished rows.
-- New pages only; existing ones keep theirs.
alter table activity_runs set (fillfactor = 25);
