//! The end-to-end harness, shared by the tests in `tests/tests/` and the
//! benchmark (`actcore-bench`):
//! - fresh, migrated stores: a new Postgres database per test on the
//!   throwaway server `scripts/test` starts, or a temporary SQLite file;
//! - [`Hub`]: a local stand-in for the State Hub (the one system we fake),
//!   answering the fixtures and recording every arrival;
//! - [`Worker`]: the built `actcore` binary as a child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use jiff::Timestamp;
use sqlx::Connection;

/// The admin URL of the test Postgres server (set by `scripts/test`).
pub fn pg_admin_url() -> String {
    std::env::var("ACTCORE_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("ACTCORE_TEST_PG_URL is not set: run the tests with scripts/test (it starts a throwaway Postgres)")
    })
}

/// A new, migrated database on the test server (as `actcore migrate`
/// leaves it); returns its URL.
pub async fn fresh_pg_url() -> String {
    let url = create_database(&pg_admin_url(), "actcore_t")
        .await
        .expect("create a test database on ACTCORE_TEST_PG_URL");
    actcore::store::Store::open_and_migrate(Some(&url))
        .await
        .expect("migrate the test database");
    url
}

/// Creates `{prefix}_{uuid}` on the server `admin` points at and returns
/// that database's URL (the tests and the benchmark share it).
pub async fn create_database(admin: &str, prefix: &str) -> Result<String, sqlx::Error> {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    // `name` is a fixed prefix and a UUID: no injection possible.
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut conn)
        .await?;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
    Ok(format!("{base}/{name}"))
}

/// A temporary directory holding an embedded store; returns (dir, URL).
pub fn fresh_sqlite_url() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("actcore.db").display());
    (dir, url)
}

/// Which backend a conformance test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A fresh, migrated store; keep the guard alive as long as the store.
pub async fn fresh_store(backend: Backend) -> (actcore::store::Store, Option<tempfile::TempDir>, String) {
    let (dir, url) = match backend {
        Backend::Postgres => (None, fresh_pg_url().await),
        Backend::Sqlite => {
            let (d, u) = fresh_sqlite_url();
            (Some(d), u)
        }
    };
    let store = actcore::store::Store::open_and_migrate(Some(&url))
        .await
        .expect("open store");
    (store, dir, url)
}

/// The built `actcore` binary (next to this test executable's directory).
pub fn actcore_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ACTCORE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("actcore");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build --bins`, as scripts/test does)",
        bin.display()
    );
    bin
}

/// The State Hub fixtures (`tests/fixtures/state-hub/`, in the repository).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/state-hub")
}

/// One request the hub received.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub at: Timestamp,
    pub path: String,
    pub scheduled_for: Option<Timestamp>,
    pub idempotency_key: Option<String>,
    pub source: Option<String>,
    pub body: Bytes,
}

#[derive(Clone, Default)]
struct HubState {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

/// A local State Hub stand-in on 127.0.0.1 (port 0).
///
/// Routes: `/fixture/{file}` answers that fixture (`bridge-502.html` with
/// 502, the rest 200); `/slow/{ms}` answers ok after a delay; `/big` answers
/// 2 MiB; `/health` answers 200; `/sink/{anything}` answers ok-clean;
/// `/flaky/{n}/{name}` answers the first `n` requests to that path with the
/// bridge's 502, then ok-clean; `/progress/` lists one State Hub progress
/// event per request received so far (newest first, `detail.source` from
/// the request's source header), as the canary check reads them;
/// `/nul/json` answers ok with a `\u0000` escape in a string and
/// `/nul/raw` a text body holding a raw NUL byte (what Postgres cannot store).
pub struct Hub {
    pub addr: SocketAddr,
    state: HubState,
    _task: tokio::task::JoinHandle<()>,
}

impl Hub {
    pub async fn start() -> Hub {
        let state = HubState::default();
        let app = Router::new()
            .route("/fixture/{file}", any(fixture))
            .route("/slow/{ms}", any(slow))
            .route("/big", any(big))
            .route("/health", get(|| async { "ok" }))
            .route("/sink/{*rest}", any(sink))
            .route("/nul/{*rest}", any(nul))
            .route("/flaky/{n}/{*rest}", any(flaky))
            .route("/progress/", get(progress))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind hub");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("hub server");
        });
        Hub {
            addr,
            state,
            _task: task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state.arrivals.lock().unwrap().clone()
    }
}

fn record(state: &HubState, path: String, headers: &HeaderMap, body: Bytes) {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    state.arrivals.lock().unwrap().push(Arrival {
        at: Timestamp::now(),
        path,
        scheduled_for: h("x-actcore-scheduled-for").and_then(|s| s.parse().ok()),
        idempotency_key: h("idempotency-key"),
        source: h("x-actcore-source"),
        body,
    });
}

async fn fixture(
    State(s): State<HubState>,
    UrlPath(file): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    record(&s, format!("/fixture/{file}"), &headers, body);
    let status = if file.ends_with("502.html") {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    };
    match std::fs::read(fixtures_dir().join(&file)) {
        Ok(bytes) => (status, bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, format!("no fixture {file}")).into_response(),
    }
}

async fn slow(
    State(s): State<HubState>,
    UrlPath(ms): UrlPath<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    record(&s, format!("/slow/{ms}"), &headers, body);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    (StatusCode::OK, OK_BODY)
}

async fn big(State(s): State<HubState>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    record(&s, "/big".into(), &headers, body);
    (StatusCode::OK, vec![b' '; 2 << 20])
}

async fn sink(State(s): State<HubState>, UrlPath(rest): UrlPath<String>, headers: HeaderMap, body: Bytes) -> Response {
    // A State Hub under the sink prefix also lists its progress events.
    if rest.starts_with("progress") {
        return progress(State(s)).await.into_response();
    }
    record(&s, format!("/sink/{rest}"), &headers, body);
    (StatusCode::OK, OK_BODY).into_response()
}

async fn nul(
    State(s): State<HubState>,
    UrlPath(rest): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    record(&s, format!("/nul/{rest}"), &headers, body);
    let answer: &[u8] = if rest == "raw" {
        b"plain text with a raw \0 NUL byte"
    } else {
        br#"{"exit_code":0,"automation_error":false,"assessment_failures":0,"lock_skipped":false,"note":"a\u0000b"}"#
    };
    (StatusCode::OK, answer.to_vec())
}

async fn flaky(
    State(s): State<HubState>,
    UrlPath((n, rest)): UrlPath<(usize, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let path = format!("/flaky/{n}/{rest}");
    let before = s.arrivals.lock().unwrap().iter().filter(|a| a.path == path).count();
    record(&s, path, &headers, body);
    if before < n {
        let page = std::fs::read(fixtures_dir().join("bridge-502.html")).unwrap_or_default();
        (StatusCode::BAD_GATEWAY, page).into_response()
    } else {
        (StatusCode::OK, OK_BODY).into_response()
    }
}

async fn progress(State(s): State<HubState>) -> impl IntoResponse {
    let arrivals = s.arrivals.lock().unwrap().clone();
    let events: Vec<serde_json::Value> = arrivals
        .iter()
        .filter(|a| a.source.is_some())
        .rev()
        .enumerate()
        .map(|(i, a)| {
            serde_json::json!({
                "id": i,
                "event_type": "consistency_sweep_remote_all",
                "created_at": a.at.to_string(),
                "detail": {"source": a.source, "exit_code": 0},
            })
        })
        .collect();
    axum::Json(events)
}

const OK_BODY: &str = r#"{"exit_code":0,"automation_error":false,"assessment_failures":0,"lock_skipped":false}"#;

/// The id of the e2e tests' activity `n`.
pub fn activity_id(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x7c4e_0000_0000_4000_8000_0000_0000_0000 | n)
}

/// `actcore sync --definitions DIR` against `url`; panics with its output on failure.
pub fn sync_dir(dir: &Path, url: &str) {
    let (code, out, err) = run_cli(
        &["sync", "--definitions", dir.to_str().unwrap()],
        &[("DATABASE_URL", url)],
    );
    assert_eq!(code, 0, "sync failed: {out}{err}");
}

/// Writes a definition file into `dir`.
pub fn write_definition(dir: &Path, slug: &str, id: uuid::Uuid, cron: &str, url: &str, extra: &str) {
    let text = format!(
        "id = \"{id}\"\nslug = \"{slug}\"\n{extra_top}\n[schedule]\ncron = \"{cron}\"\n{extra_sched}\n[action]\nurl = \"{url}\"\ntimeout = \"5s\"\n",
        extra_top = "",
        extra_sched = extra,
    );
    std::fs::write(dir.join(format!("{slug}.toml")), text).expect("write definition");
}

/// A running `actcore` child process.
pub struct Worker {
    pub child: tokio::process::Child,
    pub log: PathBuf,
}

impl Worker {
    /// Starts `actcore worker` (or any subcommand) with the given store and
    /// environment; logs go to a file for post-mortems.
    pub fn spawn(args: &[&str], database_url: &str, env: &[(&str, &str)], log_dir: &Path, name: &str) -> Worker {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = tokio::process::Command::new(actcore_bin());
        cmd.args(args)
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "info,sqlx=warn")
            .env("ACTCORE_WORKER_ID", name)
            // Every worker serves the admin API: on any free port, so replicas do not collide.
            .env("ACTCORE_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn actcore");
        Worker { child, log }
    }

    /// Sends a signal (SIGTERM = 15, SIGKILL = 9).
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id().expect("running") as i32;
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {pid}");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Polls `check` until it returns Some or `timeout` passes: synchronisation
/// on an observable condition, not a sleep standing in for one.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `actcore` to completion and returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(actcore_bin());
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .env("ACTCORE_LISTEN", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run actcore");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A Postgres cluster of a test's own (the others share one server), to
/// stop and start under a running worker. As root it runs as `postgres`,
/// since Postgres refuses root. Stopped and removed on drop.
pub struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
}

impl PgCluster {
    /// initdb and start on a free port (`PG_BIN` from `scripts/test`, or Debian's layout).
    pub fn start() -> PgCluster {
        let bin = std::env::var("PG_BIN").map(PathBuf::from).unwrap_or_else(|_| {
            let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
                .unwrap_or_default();
            found.sort();
            found
                .pop()
                .expect("PostgreSQL server binaries (PG_BIN or /usr/lib/postgresql/*/bin)")
        });
        let dir = std::env::temp_dir().join(format!("actcore-pg-own-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = PgCluster { bin, dir, port };
        if is_root() {
            let ok = std::process::Command::new("chown")
                .args(["postgres", cluster.dir.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(ok.success(), "chown the cluster directory to postgres");
        }
        let data = cluster.data();
        cluster.pg(&[
            "initdb",
            "-D",
            &data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
        ]);
        cluster.ctl_start();
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg(&self, args: &[&str]) {
        let tool = self.bin.join(args[0]);
        let mut cmd = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&tool);
            c
        } else {
            std::process::Command::new(&tool)
        };
        let out = cmd.args(&args[1..]).output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{} failed: {}{}",
            args[0],
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts (or restarts) the server and waits until it accepts connections.
    pub fn ctl_start(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.pg(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-l",
            &log,
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            &opts,
        ]);
    }

    /// A fast shutdown: connections are closed, the server is gone.
    pub fn ctl_stop(&self) {
        self.pg(&["pg_ctl", "-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data();
        let tool = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&tool);
            c
        } else {
            std::process::Command::new(&tool)
        };
        let _ = cmd.args(["-D", &data, "-m", "immediate", "-w", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs each listed `async fn name(backend: Backend)` of a test file as two
/// tests, `postgres::name` and `sqlite::name`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await;
                }
            )+
        }
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await;
                }
            )+
        }
    };
}

/// What a flagship run's finish adds to its claim's snapshot, in the shape
/// `actcore::snapshot::finished` writes it: the request, the response facts
/// and the State Hub's answer under the snapshot key. Its size decides
/// whether the finished row still fits on its page (the history bench and
/// the HOT-finish tests).
pub fn flagship_finish_snapshot() -> serde_json::Value {
    let body: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/state-hub/ok-clean.json")).expect("fixture is JSON");
    serde_json::json!({
        "request": {
            "method": "POST",
            "url": "http://state-hub-bridge.state-hub.svc:8080/consistency/sweep/remote-all",
            "body_bytes": 44,
            "body_sha256": "9f2c4b1e0d7a6f5c3b2a190817263544536271809f8e7d6c5b4a392817060504",
            "body": {"max_seconds": 300, "source": "activity-core"}
        },
        "http_status": 200,
        "duration_ms": 42,
        "truncated": false,
        "lateness_ms": 3,
        "consistency_sweep_remote_all": body,
    })
}
