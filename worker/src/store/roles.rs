//! Least privilege in Postgres: the SQL `actcore db roles --print` emits for
//! a DBA. Migrations run as the schema owner (the sync Job); the workers and
//! the API log in as a role holding only the statements they use: no DDL,
//! and no UPDATE or DELETE on `activity_events`, so the audit log is
//! append-only by grant, not by convention. The one DELETE it holds is on
//! `activity_runs`: the worker prunes finished runs past their retention.

/// The role names the SQL uses.
#[derive(Clone, Debug)]
pub struct RoleNames {
    /// Owns the schema; runs `actcore migrate` / `sync --migrate`.
    pub owner: String,
    /// Runs `actcore worker` and `actcore api`.
    pub runtime: String,
}

/// What the runtime role may do, table by table (the worker loop, the
/// guard, the audit log, the operator commands the API serves).
pub const RUNTIME_GRANTS: &[(&str, &str)] = &[
    ("_sqlx_migrations", "select"),
    ("activity_definitions", "select"),
    // Pause and resume are operator state the API writes; sync (definitions) runs as the owner.
    ("activity_definitions", "update (paused, updated_at)"),
    // DELETE: the worker prunes finished runs past their `[retention]`
    // (crate::retention); never on activity_events, which stays append-only.
    ("activity_runs", "select, insert, update, delete"),
    ("activity_guard", "select, insert, update"),
    // The runs in flight per activity: read by the overlap checks, the queue
    // and the reaper, swept by the worker; added to by activity_runs's
    // triggers, which run as the owner.
    ("activity_inflight", "select, update"),
    ("activity_events", "select, insert"),
];

/// A role name must be a plain identifier: it is spliced into SQL.
pub fn valid_role(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The SQL: idempotent, to run as a superuser (or a role with CREATEROLE)
/// connected to the actcore database, after `actcore migrate`, and again
/// after any migration that adds a table.
pub fn sql(names: &RoleNames) -> String {
    let RoleNames { owner, runtime } = names;
    let mut s = format!(
        "-- actcore database roles (actcore db roles --print). Run as a superuser connected to the
-- actcore database after `actcore migrate`, and again after an upgrade adds a table.
-- Set the passwords yourself: ALTER ROLE {owner} PASSWORD '...'; ALTER ROLE {runtime} PASSWORD '...';
begin;
do $$
begin
    if not exists (select from pg_roles where rolname = '{owner}') then
        create role {owner} login;
    end if;
    if not exists (select from pg_roles where rolname = '{runtime}') then
        create role {runtime} login;
    end if;
end
$$;
-- The owner runs the migrations (the sync Job) and owns what they create.
grant create, usage on schema public to {owner};
-- Nobody else creates objects in the schema.
revoke create on schema public from public;
do $$
declare t record;
begin
    for t in select tablename from pg_tables where schemaname = 'public'
                and tablename in ('_sqlx_migrations', 'activity_definitions', 'activity_runs', 'activity_events', 'activity_guard',
                                  'activity_inflight')
    loop
        execute format('alter table public.%I owner to {owner}', t.tablename);
    end loop;
    -- The in-flight triggers run as their owner (security definer).
    for t in select p.oid::regprocedure::text as f from pg_proc p
             where p.pronamespace = 'public'::regnamespace
               and p.proname in ('activity_inflight_add', 'activity_inflight_moved')
    loop
        execute format('alter function %s owner to {owner}', t.f);
    end loop;
    for t in select sequencename from pg_sequences where schemaname = 'public' loop
        execute format('alter sequence public.%I owner to {owner}', t.sequencename);
    end loop;
end
$$;
-- The runtime role (workers, API): only the statements they use.
grant usage on schema public to {runtime};
revoke all on all tables in schema public from {runtime};
"
    );
    for (table, privileges) in RUNTIME_GRANTS {
        s.push_str(&format!("grant {privileges} on {table} to {runtime};\n"));
    }
    s.push_str(&format!(
        "grant usage on all sequences in schema public to {runtime};
-- The owner's future tables are not the runtime role's until granted here.
commit;
"
    ));
    s
}
