//! HTTP handlers, one file per endpoint.

pub mod crash;
pub mod health;
pub mod metrics;
pub mod ready;
pub mod root;

use axum::Json;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::json;

/// Fallback for unknown routes: 404 with a JSON body.
pub async fn not_found(uri: Uri) -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": "not found",
            "path": uri.path(),
            "routes": ["/", "/health", "/ready", "/metrics", "/crash"],
        })),
    )
}
