//! `GET /ready`: readiness. 503 during warm-up, drain, injected unreadiness and while the
//! `pool-exhaust` fault holds the whole connection pool.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::{AppState, Readiness};

/// 200 `{"status":"ready"}`, else 503 with the reason.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.readiness(Instant::now()) {
        Readiness::Ready => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        other => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unready", "reason": other.reason() })),
        ),
    }
}
