//! `GET /health`: liveness. Never checks dependencies, so a liveness probe cannot cascade.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

/// 200 `{"status":"ok"}`, or 503 once the `unhealthy` fault is set.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.healthy() {
        (StatusCode::OK, Json(json!({ "status": "ok" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unhealthy", "reason": "fault injected: unhealthy" })),
        )
    }
}
