//! `GET /`: who answered. The endpoint load tests and canary analysis hit.

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
pub async fn root(State(state): State<AppState>) -> Result<Response> {
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
