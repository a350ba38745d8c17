//! The admin API every worker serves (and `actcore api` serves alone):
//! probes, Prometheus metrics, the status data and the page, and the
//! audited overrides. docs/operations.md documents the endpoints.
//!
//! - [`handlers`]: the JSON endpoints; [`page`]: the status page;
//!   [`openapi`]: `/v1/openapi.json`.
//! - [`auth`]: bearer tokens for the mutating endpoints.
//! - [`metrics`]: names, recording and the scrape.
//! - [`heartbeat`]: the loop's liveness for `/healthz`.
//!
//! Limits keep a misbehaving client from starving the scheduler: small
//! request bodies, a timeout per request, and a bound on requests in
//! flight (past it: 503 at once, not a queue).

pub mod auth;
pub mod error;
mod handlers;
pub mod heartbeat;
pub mod metrics;
mod openapi;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use self::auth::Tokens;
use self::error::ApiError;
pub use self::heartbeat::Heartbeat;
use crate::error::{Error, Result};
use crate::store::{DefinitionSource, DefinitionsVersion, Store, StoredDefinition};

/// Largest request body accepted (the overrides take a reason, not documents).
pub const MAX_BODY: usize = 16 * 1024;
/// Longest a request may take before it is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most requests in flight; past it, 503 at once.
pub const MAX_IN_FLIGHT: usize = 32;

/// What `/healthz` checks.
#[derive(Clone, Debug)]
pub enum Liveness {
    /// A worker: its loop's heartbeat.
    Loop(&'static Heartbeat),
    /// `actcore api`: the server answers and the database pool does.
    Server,
}

/// What the API serves from; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// The definitions as last read, with the fingerprint they were read at:
    /// re-read only when `definitions_version` changes (10,000 specs take
    /// far longer to decode than the fingerprint query).
    definitions: tokio::sync::Mutex<Option<(DefinitionsVersion, Arc<Vec<StoredDefinition>>)>>,
    tokens: Tokens,
    liveness: Liveness,
    /// Start-up checks (the deployment contract) passed.
    checks_passed: AtomicBool,
    metrics: PrometheusHandle,
    in_flight: Semaphore,
}

impl ApiState {
    pub fn new(store: Store, tokens: Tokens, liveness: Liveness) -> ApiState {
        ApiState {
            inner: Arc::new(Inner {
                store,
                definitions: tokio::sync::Mutex::new(None),
                tokens,
                liveness,
                checks_passed: AtomicBool::new(true),
                metrics: metrics::install(),
                in_flight: Semaphore::new(MAX_IN_FLIGHT),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Every activity (retired ones included), from the cache while the
    /// store's definitions fingerprint is unchanged.
    pub async fn definitions(&self) -> Result<Arc<Vec<StoredDefinition>>> {
        let version = self.inner.store.definitions_version().await?;
        let mut cached = self.inner.definitions.lock().await;
        if let Some((v, defs)) = cached.as_ref()
            && *v == version
        {
            return Ok(defs.clone());
        }
        let defs = Arc::new(self.inner.store.definitions().await?);
        *cached = Some((version, defs.clone()));
        Ok(defs)
    }

    /// Marks the start-up checks failed or passed (`/readyz`).
    pub fn set_checks_passed(&self, passed: bool) {
        self.inner.checks_passed.store(passed, Ordering::Relaxed);
    }
}

/// Every route.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/status", get(handlers::status))
        .route("/v1/activities", get(handlers::activities))
        .route("/v1/runs", get(handlers::runs))
        .route("/v1/runs/{run_id}", get(handlers::run))
        .route("/v1/activities/{slug}/trigger", post(handlers::trigger))
        .route("/v1/activities/{slug}/pause", post(handlers::pause))
        .route("/v1/activities/{slug}/resume", post(handlers::resume))
        .route("/v1/activities/{slug}/circuit/open", post(handlers::circuit_open))
        .route("/v1/activities/{slug}/circuit/reset", post(handlers::circuit_reset))
        .fallback(|| async { ApiError::not_found("no such endpoint; see /v1/openapi.json") })
        .layer(middleware::from_fn_with_state(state.clone(), limits))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The bound on requests in flight and the per-request timeout.
async fn limits(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let Ok(_permit) = state.inner.in_flight.try_acquire() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("more than {MAX_IN_FLIGHT} requests in flight; retry shortly"),
        )
        .into_response();
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} s", REQUEST_TIMEOUT.as_secs()),
        )
        .into_response(),
    }
}

/// Binds `listen`, or explains which flag to change.
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener> {
    let addr: SocketAddr = listen.parse().map_err(|e| {
        Error::Config(format!(
            "--listen / ACTCORE_LISTEN `{listen}` is not HOST:PORT ({e}); e.g. 0.0.0.0:8080, or 127.0.0.1:0 for any free port"
        ))
    })?;
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::Config(format!(
            "cannot listen on {addr} for the admin API: {e}; pick another --listen / ACTCORE_LISTEN (127.0.0.1:0 for any free port)"
        ))
    })
}

/// Serves the API on `listener` until `stop`.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState, stop: CancellationToken) -> Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "admin API listening on http://{addr}");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await?;
    Ok(())
}
