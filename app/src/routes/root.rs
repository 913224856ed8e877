//! `GET /`: who answered. The endpoint load tests and canary analysis hit, and the only one that
//! borrows a connection from the simulated pool.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::state::{AppState, SERVICE_NAME, VERSION};
use crate::{Error, Result};

/// Body of `GET /`.
#[derive(Debug, Serialize)]
pub struct Info<'a> {
    /// Always `selfheal-app`.
    pub service: &'static str,
    /// Crate version.
    pub version: &'static str,
    /// Pod or host name.
    pub pod: &'a str,
    /// Pod namespace, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<&'a str>,
    /// `stable` or `canary`.
    pub track: &'static str,
    /// Configured message.
    pub message: &'a str,
}

/// Answers with [`Info`], after the injected latency; fails when the `errors` fault says so.
/// Borrows one pool connection for the whole request: 503 when none frees up in time.
pub async fn root(State(state): State<AppState>) -> Result<Response> {
    // Kept across the injected latency, as a slow query keeps its connection: latency times
    // request rate above the pool size exhausts the pool.
    let _conn = match state.pool().acquire().await {
        Ok(conn) => conn,
        Err(err) => {
            state.metrics().pool_exhausted_total.inc();
            return Err(err);
        }
    };
    let fault = state.faults().on_request(Instant::now());
    if let Some(delay) = fault.delay {
        tokio::time::sleep(delay).await;
    }
    if fault.fail {
        return Err(Error::InjectedError);
    }
    let info = Info {
        service: SERVICE_NAME,
        version: VERSION,
        pod: state.pod(),
        namespace: state.namespace(),
        track: state.track().as_str(),
        message: state.message(),
    };
    // Serialised here, while `info` still borrows the state.
    Ok(Json(info).into_response())
}
