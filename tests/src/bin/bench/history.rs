//! `actcore-bench history`: does a long history slow actcore down, and does
//! pruning it disturb firing? (issue 13)
//!
//! 1. **Side by side, one run**: four databases with the same N definitions
//!    (the bench's and the flagship), one with an empty `activity_runs`,
//!    one with a dozen runs per activity (what `status` reads of each), one
//!    with an hour of firing every 5 s (each activity's index entries on
//!    pages of their own, as in any database that has run a while), and
//!    one preloaded with `--rows` runs (`insert … select from
//!    generate_series`, in chunks, on packed pages as an upgraded database
//!    holds its history). On each: the claim and the finish statements of
//!    N runs (the library's, as the worker calls them; the finish writes a
//!    snapshot of the flagship's size), the share of those finishes that
//!    were HOT updates, `actcore status`, `actcore runs --slug bench-00000
//!    --limit 5` and the runbook's SQL (CONTRACTS §3), each the median of a
//!    few repetitions, each repetition on the four databases in turn after
//!    a checkpoint; and, from pg_stat_statements, what the claim and the
//!    finish cost Postgres per run on each (buffers touched, blocks read).
//! 2. **Pruning while firing**: N activities fire on the preloaded
//!    database for `--window` seconds, first with the pruner idle, then with
//!    one pass deleting the `--expired` runs (of the preload, older than
//!    any retention) during the window; lateness at the sink, p50/p99, for
//!    both.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use actcore::store::{ClaimBatch, ClaimItem, FinishRun, RunStore, Store};
use anyhow::{Context, Result};
use clap::Args;
use jiff::{SignedDuration, Timestamp};
use sqlx::Connection;
use uuid::Uuid;

use super::{Ctx, FireCfg, FireFigures, actcore, clock_ticks, fire, fresh_pg, generate, ms};

/// Runs per activity in the short-history database: more than the
/// `actcore::status::RECENT` that `actcore status` reads of each.
const RECENT_PER_ACTIVITY: u64 = actcore::status::RECENT as u64 + 2;

/// Runs per activity in the settled database: an hour of firing every 5 s.
const SETTLED_PER_ACTIVITY: u64 = 720;

/// The runbook query (CONTRACTS §3), byte for byte.
const RUNBOOK_SQL: &str = "select run_id, fired_at, scheduled_for,
       context_snapshot->'consistency_sweep_remote_all' as sweep_result
from activity_runs
where definition_id = '7c4e9a12-8f3b-4d5e-9c6a-1b2d3e4f5a6b'
order by fired_at desc limit 5;";

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// Runs preloaded into the big table.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Of those, how many are past every retention (fired > 100 days ago): what the pruner deletes.
    #[arg(long, default_value_t = 1_000_000)]
    expired: u64,
    /// Activities (definitions; they fire in part 2).
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Seconds of firing in each part-2 run.
    #[arg(long, default_value_t = 120)]
    window: u64,
    /// Repetitions of each part-1 measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Skip part 2 (pruning while firing).
    #[arg(long)]
    no_firing: bool,
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    #[arg(long, env = "ACTCORE_TEST_PG_URL", hide_env_values = true)]
    pg_url: String,
}

/// A history to preload: `rows` runs spread over the activities, the
/// first `expired` fired over 100 days ago (past both default
/// retentions), the rest within the last 13 days (kept).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Preload {
    pub rows: u64,
    pub expired: u64,
}

/// Inserts the history in chunks of a million rows, then analyses.
pub(crate) async fn preload(url: &str, p: &Preload) -> Result<()> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    // The history is written as a database upgraded with it has it: on
    // packed pages (the table's `fillfactor` applies to new pages only, and
    // a row that went through a claim and a finish fills its page to about
    // two-thirds, not a quarter). The table's own setting is restored after.
    let options: Option<Vec<String>> =
        sqlx::query_scalar("select reloptions from pg_class where oid = 'activity_runs'::regclass")
            .fetch_one(&mut conn)
            .await?;
    let fillfactor = options
        .unwrap_or_default()
        .iter()
        .find_map(|o| o.strip_prefix("fillfactor=").and_then(|v| v.parse::<u8>().ok()));
    sqlx::query("alter table activity_runs set (fillfactor = 100)")
        .execute(&mut conn)
        .await?;
    let t0 = Instant::now();
    let chunk = 1_000_000u64;
    let mut lo = 1u64;
    while lo <= p.rows {
        let hi = (lo + chunk - 1).min(p.rows);
        // Outcomes: 1 in 20 automation_error, 1 in 50 skipped_misfire,
        // 1 in 33 assessment_failures, the rest ok; a small realistic snapshot.
        // Run ids as the worker writes them: UUIDv7, their first 48 bits the
        // fire time in milliseconds (unique by `g`), so that the primary key
        // holds a history in time order, as a real one does, and a new run's
        // id lands on its rightmost leaf.
        sqlx::query(
            "insert into activity_runs (run_id, definition_id, fired_at, scheduled_for, trigger, source, attempt,
                 state, outcome, automation_error, assessment_failures, context_snapshot, worker_id,
                 started_at, finished_at, spec_hash)
             select (lpad(to_hex((extract(epoch from s.t) * 1000)::bigint), 12, '0') || '7'
                     || lpad(to_hex(g % 4096), 3, '0') || '8' || lpad(to_hex(g), 15, '0'))::uuid,
                    d.ids[1 + (g % cardinality(d.ids))], s.t, s.t, 'schedule', 'activity-core', 1,
                 case when g % 20 = 0 then 'failed' when g % 50 = 1 then 'skipped' else 'succeeded' end,
                 case when g % 20 = 0 then 'automation_error' when g % 50 = 1 then 'skipped_misfire'
                      when g % 33 = 2 then 'assessment_failures' else 'ok' end,
                 g % 20 = 0, case when g % 33 = 2 and g % 20 <> 0 and g % 50 <> 1 then 3 else 0 end,
                 jsonb_build_object('trigger', 'schedule', 'lateness_ms', 0.3, 'http_status', 200,
                     'duration_ms', 42, 'spec_hash', 'bench',
                     'consistency_sweep_remote_all', jsonb_build_object('exit_code', 0,
                         'automation_error', false, 'assessment_failures', 0, 'lock_skipped', false)),
                 'bench-preload', s.t, s.t + interval '40 milliseconds', 'bench'
             from (select array_agg(definition_id order by definition_id) as ids from activity_definitions) d,
                  lateral (select g, case when g <= $3
                                  then now() - interval '100 days' - g * interval '1 second'
                                  else now() - interval '1 minute'
                                       - interval '13 days' * (($4 - g)::float8 / greatest($4 - $3, 1))
                                  end as t
                           from generate_series($1::bigint, $2::bigint) g) s",
        )
        .bind(lo as i64)
        .bind(hi as i64)
        .bind(p.expired as i64)
        .bind(p.rows as i64)
        .execute(&mut conn)
        .await
        .context("preload activity_runs")?;
        eprintln!(
            "   preloaded {hi} of {} runs ({:.0} s)",
            p.rows,
            t0.elapsed().as_secs_f64()
        );
        lo = hi + 1;
    }
    // A number, not text: nothing to inject.
    let restore = match fillfactor {
        Some(f) => format!("alter table activity_runs set (fillfactor = {f})"),
        None => "alter table activity_runs reset (fillfactor)".to_string(),
    };
    sqlx::query(sqlx::AssertSqlSafe(restore)).execute(&mut conn).await?;
    sqlx::query("analyze activity_runs").execute(&mut conn).await?;
    let size: String = sqlx::query_scalar("select pg_size_pretty(pg_total_relation_size('activity_runs'))")
        .fetch_one(&mut conn)
        .await?;
    eprintln!(
        "   preload done in {:.0} s; activity_runs with its indexes: {size}",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Part 1, side by side: each repetition runs on every database in turn
/// (empty, short, long history), so that a checkpoint, autovacuum or a
/// busy minute of the machine lands on all of them alike rather than on
/// whichever was measured at that time. Median milliseconds of each
/// measurement, one column per database, then the statements' buffer
/// figures where the server has pg_stat_statements.
async fn measure(admin: &str, urls: &[&str], n: usize, reps: usize) -> Result<Vec<(String, Vec<f64>)>> {
    let mut admin_conn = sqlx::PgConnection::connect(admin).await?;
    // The preload's dirty pages written now, not during the first database's turn.
    sqlx::query("checkpoint").execute(&mut admin_conn).await?;
    let statements = super::pg_statements_available(&mut admin_conn).await
        && sqlx::query("select pg_stat_statements_reset()")
            .execute(&mut admin_conn)
            .await
            .is_ok();
    let (mut stores, mut conns) = (Vec::new(), Vec::new());
    for url in urls {
        stores.push(Store::open(Some(url)).await?);
        conns.push(sqlx::PgConnection::connect(url).await?);
    }
    let ids: Vec<Uuid> = (0..n).map(super::def_id).collect();
    let finished = actcore::snapshot::to_stored(&actcore_tests::flagship_finish_snapshot());
    let mut timed: Vec<[Vec<Duration>; 5]> = urls.iter().map(|_| Default::default()).collect();
    // Instants far ahead of the preload and of each other.
    let base = Timestamp::now() + SignedDuration::from_hours(24);
    for k in 0..reps {
        let at = base + SignedDuration::from_secs(5 * k as i64);
        for (store, t) in stores.iter().zip(&mut timed) {
            let (claim, finish) = instant(store, &ids, at, &finished).await?;
            t[0].push(claim);
            t[1].push(finish);
        }
    }
    for _ in 0..reps {
        for ((url, conn), t) in urls.iter().zip(&mut conns).zip(&mut timed) {
            t[2].push(actcore(&["status"], url, &[]).await?.0);
            t[3].push(
                actcore(&["runs", "--slug", "bench-00000", "--limit", "5"], url, &[])
                    .await?
                    .0,
            );
            let began = Instant::now();
            sqlx::raw_sql(RUNBOOK_SQL).fetch_all(&mut *conn).await?;
            t[4].push(began.elapsed());
        }
    }
    for store in stores {
        store_close(store).await;
    }
    let names = [
        format!("claim of {n} runs (one instant)"),
        format!("finish of {n} runs"),
        "`actcore status` (process)".into(),
        "`actcore runs --slug bench-00000 --limit 5` (process)".into(),
        "runbook SQL (CONTRACTS §3)".into(),
    ];
    let mut out: Vec<(String, Vec<f64>)> = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let cols = timed
                .iter()
                .map(|t| median(t[i].clone()).as_secs_f64() * 1000.0)
                .collect();
            (name, cols)
        })
        .collect();
    let mut hot = Vec::new();
    for conn in &mut conns {
        hot.push(hot_share(conn, (n * reps) as i64).await?);
    }
    out.push(("finishes that were HOT updates (%)".into(), hot));
    if statements {
        out.extend(buffers(&mut admin_conn, urls).await?);
    }
    Ok(out)
}

/// One instant's claim and finish of a run per activity, timed as the
/// worker sees them (the commit included).
async fn instant(
    store: &Store,
    ids: &[Uuid],
    at: Timestamp,
    finished: &actcore::snapshot::Stored,
) -> Result<(Duration, Duration)> {
    let items: Vec<ClaimItem> = ids
        .iter()
        .map(|id| ClaimItem {
            run_id: Uuid::now_v7(),
            definition_id: *id,
            spec_hash: "bench".into(),
            skip_if_running: false,
            buffer_until: None,
            snapshot: actcore::snapshot::claimed("bench", &at.to_string(), 0),
        })
        .collect();
    let began = Instant::now();
    let won = store
        .claim(&ClaimBatch {
            scheduled_for: at,
            fired_at: at,
            worker_id: "history-bench",
            lease: SignedDuration::from_secs(30),
            items: &items,
            finished_unwritten: &[],
        })
        .await?;
    let claim = began.elapsed();
    let done: Vec<FinishRun> = won
        .iter()
        .map(|c| FinishRun::ok(c.run_id, finished.clone(), at + SignedDuration::from_millis(40)))
        .collect();
    let began = Instant::now();
    store.finish_runs(&done).await?;
    Ok((claim, began.elapsed()))
}

/// What the claim, the finish and `status`'s two reads of runs cost
/// Postgres on each database, per row, from pg_stat_statements: buffers
/// touched (index levels and pages: what grows with the history) and, of
/// those, blocks read from outside `shared_buffers`.
async fn buffers(admin: &mut sqlx::PgConnection, urls: &[&str]) -> Result<Vec<(String, Vec<f64>)>> {
    use super::{CLAIM, FINISH, STATUS_RECENT, STATUS_SUCCESS};
    let kinds = [CLAIM, FINISH, STATUS_RECENT, STATUS_SUCCESS];
    // Per kind, one column per database: (calls, rows, ms, hit, read).
    let mut sums = vec![vec![(0i64, 0i64, 0f64, 0i64, 0i64); urls.len()]; kinds.len()];
    for (col, url) in urls.iter().enumerate() {
        let rows: Vec<(String, i64, i64, f64, i64, i64)> = sqlx::query_as(
            "select s.query, s.calls, s.rows, s.total_exec_time, s.shared_blks_hit, s.shared_blks_read
             from pg_stat_statements s join pg_database d on d.oid = s.dbid where d.datname = $1",
        )
        .bind(super::db_name(url))
        .fetch_all(&mut *admin)
        .await?;
        for (query, calls, n, ms, hit, read) in rows {
            let name = super::statement_name(&query);
            if let Some(k) = kinds.iter().position(|kind| *kind == name) {
                let sum = &mut sums[k][col];
                *sum = (sum.0 + calls, sum.1 + n, sum.2 + ms, sum.3 + hit, sum.4 + read);
            }
        }
    }
    let mut out = Vec::new();
    for (kind, cols) in kinds.iter().zip(sums) {
        let per_row = |v: i64, rows: i64| if rows == 0 { 0.0 } else { v as f64 / rows as f64 };
        out.push((
            format!("{kind}: Postgres execution, mean (ms; the commit not included)"),
            cols.iter()
                .map(|c| if c.0 == 0 { 0.0 } else { c.2 / c.0 as f64 })
                .collect(),
        ));
        out.push((
            format!("{kind}: buffers touched per row"),
            cols.iter().map(|c| per_row(c.3 + c.4, c.1)).collect(),
        ));
        out.push((
            format!("{kind}: of which read from outside shared_buffers, per row"),
            cols.iter().map(|c| per_row(c.4, c.1)).collect(),
        ));
    }
    Ok(out)
}

/// The share of `activity_runs`'s updates that were HOT (no index entry
/// written), once the measured finishes (`expected` updates) show in the
/// statistics: a closed backend reports its counts as it exits.
async fn hot_share(conn: &mut sqlx::PgConnection, expected: i64) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (upd, hot): (i64, i64) =
            sqlx::query_as("select n_tup_upd, n_tup_hot_upd from pg_stat_user_tables where relname = 'activity_runs'")
                .fetch_one(&mut *conn)
                .await?;
        if upd >= expected || Instant::now() > deadline {
            return Ok(if upd == 0 { 0.0 } else { 100.0 * hot as f64 / upd as f64 });
        }
        // Statistics arrive asynchronously; this polls a counter, it does not stand in for one.
        tokio::time::sleep(Duration::from_millis(100)).await;
        sqlx::query("select pg_stat_clear_snapshot()")
            .execute(&mut *conn)
            .await?;
    }
}

async fn store_close(store: Store) {
    super::close(&store).await;
}

/// A database with the bench's N definitions and the flagship.
async fn with_definitions(admin: &str, n: usize) -> Result<String> {
    let url = fresh_pg(admin).await?;
    Store::open_and_migrate(Some(&url)).await?;
    let dir = tempfile::tempdir()?;
    generate(dir.path(), n, "http://127.0.0.1:9")?;
    let flagship =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../definitions/state-hub-consistency-sweep.toml");
    std::fs::copy(flagship, dir.path().join("state-hub-consistency-sweep.toml"))?;
    let d = dir.path().to_str().context("utf-8 path")?;
    actcore(&["sync", "--definitions", d], &url, &[]).await?;
    Ok(url)
}

pub(crate) async fn run(a: HistoryArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out)?;
    let out = std::fs::canonicalize(&a.out)?;
    let p = Preload {
        rows: a.rows,
        expired: a.expired.min(a.rows),
    };
    eprintln!(
        "== history, part 1: {} definitions; an empty activity_runs beside one with {} runs",
        a.n, p.rows
    );
    let empty = with_definitions(&a.pg_url, a.n).await?;
    // `status` shows each activity's latest runs: on an empty table it
    // reads none. This column gives every activity a few more than it
    // shows, so "flat" compares the same work on a short and a long history.
    let recent = with_definitions(&a.pg_url, a.n).await?;
    let few = Preload {
        rows: RECENT_PER_ACTIVITY * (a.n as u64 + 1),
        expired: 0,
    };
    preload(&recent, &few).await?;
    // An hour of firing every 5 s: by then each activity's entries in the
    // per-activity indexes fill pages of their own (a leaf holds ~150), as
    // in any database that has run for a while. What grows after that is
    // what "history that grows" is about.
    let hour = with_definitions(&a.pg_url, a.n).await?;
    let settled = Preload {
        rows: SETTLED_PER_ACTIVITY * (a.n as u64 + 1),
        expired: 0,
    };
    preload(&hour, &settled).await?;
    let big = with_definitions(&a.pg_url, a.n).await?;
    preload(&big, &p).await?;
    let columns = [
        "empty activity_runs".to_string(),
        format!("{} runs ({RECENT_PER_ACTIVITY} per activity)", few.rows),
        format!(
            "{} runs ({SETTLED_PER_ACTIVITY} per activity: an hour of */5 s)",
            settled.rows
        ),
        format!("{} runs", p.rows),
    ];
    let measured = measure(&a.pg_url, &[&empty, &recent, &hour, &big], a.n, a.reps).await?;
    let mut md = format!(
        "History: {} definitions; medians of {} repetitions (ms), each repetition on the {} databases in turn.\n\n| measurement | {} |\n|---|{}\n",
        a.n,
        a.reps,
        columns.len(),
        columns.join(" | "),
        "---:|".repeat(columns.len())
    );
    for (what, v) in &measured {
        let cells: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
        md.push_str(&format!("| {what} | {} |\n", cells.join(" | ")));
        let said: Vec<String> = columns.iter().zip(&cells).map(|(c, x)| format!("{c} {x}")).collect();
        eprintln!("   {what}: {}", said.join(", "));
    }

    if !a.no_firing {
        eprintln!(
            "== history, part 2: {} activities firing on the {}-row table, without and with pruning {} runs",
            a.n, p.rows, p.expired
        );
        let ctx = Ctx {
            pg_admin: a.pg_url.clone(),
            pg_statements: false,
            dump: false,
            out: out.clone(),
            ticks: clock_ticks(),
        };
        // The same database twice: the pruner idle, then one pass of all the
        // expired runs starting at the window (the harness's start-up margin).
        let idle = FireCfg {
            db: Some(big.clone()),
            env: vec![("ACTCORE_RETENTION_FIRST".into(), "1h".into())],
            ..FireCfg::single(format!("history-{}-idle", a.n), false, a.n, a.window)
        };
        let start_ms = 2000 + a.n as u64 / 5 + 5000 + 3000;
        let pruning = FireCfg {
            db: Some(big.clone()),
            env: vec![
                ("ACTCORE_RETENTION_FIRST".into(), format!("{start_ms}ms")),
                ("ACTCORE_RETENTION_EVERY".into(), "1h".into()),
                ("ACTCORE_RETENTION_MAX_ROWS".into(), p.expired.max(1).to_string()),
            ],
            ..FireCfg::single(format!("history-{}-pruning", a.n), false, a.n, a.window)
        };
        let without = fire(&ctx, &idle).await?;
        let t0 = Timestamp::now();
        let with = fire(&ctx, &pruning).await?;
        let mut conn = sqlx::PgConnection::connect(&big).await?;
        let since = t0.to_string();
        let pass: Option<serde_json::Value> = sqlx::query_scalar(
            "select detail from activity_events where kind = 'runs_pruned' and at >= $1::text::timestamptz order by at limit 1",
        )
        .bind(&since)
        .fetch_optional(&mut conn)
        .await?;
        let left: i64 =
            sqlx::query_scalar("select count(*) from activity_runs where fired_at < now() - interval '90 days'")
                .fetch_one(&mut conn)
                .await?;
        let row = |f: &FireFigures| {
            format!(
                "| {} | {} of {} | {} / {} / {} | {} |\n",
                f.label,
                f.received,
                f.expected,
                ms(f.lateness.p50_us),
                ms(f.lateness.p99_us),
                ms(f.lateness.max_us),
                f.missed
            )
        };
        md.push_str(&format!(
            "\n{} activities on */5 s firing on the {}-row table for {} s each:\n\n| run | received | lateness p50 / p99 / max (ms) | missed |\n|---|---:|---|---:|\n",
            a.n, p.rows, a.window
        ));
        md.push_str(&row(&without));
        md.push_str(&row(&with));
        let change = (with.lateness.p99_us as f64 / without.lateness.p99_us.max(1) as f64 - 1.0) * 100.0;
        md.push_str(&format!(
            "\np99 with pruning vs without: {change:+.0}%. Pruning pass: {}; expired runs left after the run: {left}.\n",
            match &pass {
                Some(d) => format!("deleted {} (succeeded class {}, failed class {}) in {} statements{}",
                    d["deleted"]["succeeded"].as_u64().unwrap_or(0) + d["deleted"]["failed"].as_u64().unwrap_or(0),
                    d["deleted"]["succeeded"], d["deleted"]["failed"], d["statements"],
                    if d["bounded"].as_bool() == Some(true) { ", stopped at its bound" } else { "" }),
                None => "no runs_pruned event (see the worker log)".into(),
            }
        ));
    }
    println!("{md}");
    std::fs::write(out.join("history.md"), &md)?;
    eprintln!("results: {}/history.md", out.display());
    Ok(())
}
