//! The demo's State Hub stand-in: answers the sweep endpoint in rotation
//! with each kind of result (clean, assessment failures, lock skipped,
//! C-00, a 502), and `/bridge-down/...` always with a 502, so the demo shows
//! every outcome and an opening circuit without a real State Hub.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{any, get};

use crate::error::Result;

const CLEAN: &str = r#"{"source":"activity-core","lock_skipped":false,"repos_processed":[],"skipped_clean":42,"skipped_missing":0,"skipped_budget":0,"exit_code":0,"automation_error":false,"assessment_failures":0,"duration_seconds":12.4}"#;
const ASSESSMENT: &str = r#"{"source":"activity-core","lock_skipped":false,"repos_processed":[{"repo":"state-hub","action":"reconciled","checks_failed":["C-07","C-12"]},{"repo":"activity-core","action":"reconciled","checks_failed":["C-21"]}],"skipped_clean":39,"skipped_missing":1,"skipped_budget":0,"exit_code":0,"automation_error":false,"assessment_failures":2,"duration_seconds":88.0}"#;
const LOCKED: &str = r#"{"source":"activity-core","lock_skipped":true,"repos_processed":[],"skipped_clean":0,"skipped_missing":0,"skipped_budget":0,"exit_code":0,"automation_error":false,"assessment_failures":0}"#;
const C00: &str = r#"{"source":"activity-core","lock_skipped":false,"repos_processed":[],"skipped_clean":0,"skipped_missing":0,"skipped_budget":0,"exit_code":1,"automation_error":true,"assessment_failures":0,"error":{"check":"C-00","message":"state hub API unreachable from sweep runner"}}"#;
const BAD_GATEWAY: &str =
    "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>";

/// The answers in rotation: (status, body).
pub const ROTATION: [(u16, &str); 5] = [
    (200, CLEAN),
    (200, ASSESSMENT),
    (200, LOCKED),
    (200, C00),
    (502, BAD_GATEWAY),
];

/// The stand-in, serving on 127.0.0.1 (a free port).
pub struct DemoHub {
    pub addr: SocketAddr,
}

pub async fn start() -> Result<DemoHub> {
    let turn = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/consistency/sweep/remote-all", any(rotate))
        .route(
            "/bridge-down/{*rest}",
            any(|| async { (StatusCode::BAD_GATEWAY, BAD_GATEWAY) }),
        )
        .with_state(turn);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the demo State Hub stand-in stopped");
        }
    });
    Ok(DemoHub { addr })
}

async fn rotate(State(turn): State<Arc<AtomicUsize>>) -> impl IntoResponse {
    let (status, body) = ROTATION[turn.fetch_add(1, Ordering::Relaxed) % ROTATION.len()];
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        [(
            "content-type",
            if status == 200 { "application/json" } else { "text/html" },
        )],
        body,
    )
}
