//! `GET /metrics`: Prometheus text format of the app's own registry.

use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::Result;
use crate::state::{AppState, Readiness};

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Refreshes the state gauges, then encodes the registry.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let now = Instant::now();
    let m = state.metrics();
    m.observe_state(
        state.readiness(now) == Readiness::Ready,
        state.healthy(),
        &state.faults().snapshot(now),
        state.pool().stats(),
    );
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], m.encode()?))
}
