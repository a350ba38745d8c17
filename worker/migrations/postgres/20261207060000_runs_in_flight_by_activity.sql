-- The runs in flight of each activity, in a row of its own, so that a run's
-- finish changes no column an index of activity_runs names and can be a HOT
-- update (the new version on the row's own page, no index entry written):
-- the finish then costs the same on 10 million runs as on none
-- (docs/design.md, "Runs in flight").
--
-- activity_runs keeps every column, written as before: operators' SQL on
-- state, worker_id and lease_expires_at is unchanged. activity_inflight is an
-- index of it kept by Postgres, not a second source of truth:
--
-- - one row per activity, created by the first run that needs it, never
--   deleted: its size is the number of activities, whatever the history and
--   whatever is in flight, so the planner's estimates of it hold;
-- - `running` and `queued` list a superset of the activity's runs in those
--   states. The triggers below add every run that enters one, whoever writes
--   it (this version, an older replica during a rollout, an operator's SQL);
--   readers check each listed run's own row; ids whose row has visibly left
--   the state are dropped by the next claim of the activity and by the
--   worker's sweep (worker/src/store/postgres/inflight.rs).
create table activity_inflight (
    definition_id uuid   primary key,
    running       uuid[] not null default '{}',
    queued        uuid[] not null default '{}'
-- An instant's claim rewrites every row of a page in one statement: pages
-- filled to 40% leave room for each row's next version beside it, so the
-- claim's and the finish's updates are HOT too (3% at the default 100%).
) with (fillfactor = 40);
-- The queue's scan: the few activities with a queued run. `running` is named
-- by no index, so the claim's appends and the sweep's removals are HOT too.
create index activity_inflight_queued on activity_inflight (definition_id) where queued <> '{}';

-- A claim inserts an instant's runs in one statement: one set-based upsert
-- per statement (a transition table), not one call per run. Security
-- definer: it runs as the schema owner, so whoever may insert runs needs no
-- grant on activity_inflight to keep it. The rows are taken in activity
-- order, the claim's own lock order.
create function activity_inflight_add() returns trigger
language plpgsql security definer set search_path from current as $$
begin
    insert into activity_inflight as f (definition_id, running, queued)
    select definition_id,
           coalesce(array_agg(run_id) filter (where state = 'running'), '{}'),
           coalesce(array_agg(run_id) filter (where state = 'queued'), '{}')
    from new_runs where state in ('running', 'queued')
    group by definition_id
    order by definition_id
    on conflict (definition_id) do update set
        -- Drop what has visibly left the state on the way (the previous
        -- instant's finished run, usually); keep an id whose row this
        -- statement cannot see: it may be committing now. One primary-key
        -- probe per listed run (a scalar subquery: never a join the planner
        -- could turn into a scan of activity_runs).
        running = case when excluded.running = '{}' then f.running else
                  array(select x from unnest(f.running) x
                        where (select r.state <> 'running' from activity_runs r where r.run_id = x) is not true)
                  || excluded.running end,
        queued = case when excluded.queued = '{}' then f.queued else f.queued || excluded.queued end;
    return null;
end
$$;

-- A run that moves into running or queued (the queue starting a run, an
-- operator's SQL): rare, one row at a time.
create function activity_inflight_moved() returns trigger
language plpgsql security definer set search_path from current as $$
begin
    insert into activity_inflight as f (definition_id, running, queued)
    values (new.definition_id,
            case when new.state = 'running' then array[new.run_id] else '{}' end,
            case when new.state = 'queued' then array[new.run_id] else '{}' end)
    on conflict (definition_id) do update set
        running = case when excluded.running = '{}' then f.running else f.running || excluded.running end,
        queued = case when excluded.queued = '{}' then f.queued else f.queued || excluded.queued end;
    return null;
end
$$;

create trigger activity_inflight_insert after insert on activity_runs
    referencing new table as new_runs for each statement execute function activity_inflight_add();
-- The WHEN is checked per row without a call: a finish (into a final state)
-- or a lease renewal never calls the function.
create trigger activity_inflight_update after update of state on activity_runs
    for each row when (new.state in ('running', 'queued') and old.state is distinct from new.state)
    execute function activity_inflight_moved();

-- What is in flight now. The triggers exist from here on and the migration's
-- transaction holds writers of activity_runs off until it commits (the
-- index drops below take an exclusive lock), so nothing is missed.
lock table activity_runs in share row exclusive mode;
insert into activity_inflight (definition_id, running, queued)
select definition_id,
       coalesce(array_agg(run_id) filter (where state = 'running'), '{}'),
       coalesce(array_agg(run_id) filter (where state = 'queued'), '{}')
from activity_runs where state in ('running', 'queued')
group by definition_id;

-- Whoever may read activity_runs may read what of it is in flight, and the
-- runtime role sweeps it (`actcore db roles --print` grants the same, for a
-- database migrated before the roles exist).
do $$
declare r record;
begin
    for r in select a.grantee::regrole::text as name, bool_or(a.privilege_type = 'UPDATE') as updates
             from pg_class c, aclexplode(c.relacl) a
             where c.oid = 'activity_runs'::regclass and a.privilege_type in ('SELECT', 'UPDATE')
               and a.grantee <> 0 and a.grantee <> c.relowner
             group by a.grantee
    loop
        execute format('grant select%s on activity_inflight to %s', case when r.updates then ', update' else '' end, r.name);
    end loop;
end
$$;

-- No index of activity_runs names a column a finish writes any more: the two
-- partial indexes on state are replaced by the table above.
drop index activity_runs_running;
drop index activity_runs_queue;

-- Room on each page for its rows' finished versions: a HOT update needs the
-- new version on the same page, and a run's row grows at its finish by the
-- request, the response and the body (the flagship's: ~430 bytes claimed,
-- ~1,100 finished). Inserts fill a page to a quarter, four or five claimed
-- rows, which leaves room for their finished versions in the same page; the
-- page ends up about two-thirds full. New pages only; existing ones keep
-- theirs.
alter table activity_runs set (fillfactor = 25);
