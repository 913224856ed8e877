//! The crate's error type; handlers return `Result<_, Error>` and [`IntoResponse`] maps it.

use std::net::SocketAddr;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `Retry-After` of a shed request, in seconds: slots free up as fast as requests finish, so
/// "soon"; the smallest value a client can express.
pub const SHED_RETRY_AFTER_SECS: &str = "1";

/// Everything that can fail in the app, named by what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("binding {addr} failed")]
    BindFailed {
        /// Address from `--listen`.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server stopped with an I/O error.
    #[error("serving HTTP failed")]
    ServeFailed(#[source] std::io::Error),
    /// Registering or encoding metrics failed.
    #[error("metrics failed: {0}")]
    MetricsFailed(#[from] prometheus::Error),
    /// `POST /crash` while fault injection is off.
    #[error("fault injection is disabled")]
    ChaosDisabled,
    /// `POST /crash` without the configured bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// A query parameter or body field is invalid.
    #[error("invalid parameter `{field}`: {reason}")]
    InvalidParam {
        /// The offending parameter.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The `errors` fault picked this request.
    #[error("injected error (fault mode `errors`)")]
    InjectedError,
    /// `GET /` found no free connection in the pool within the wait.
    #[error(
        "connection pool exhausted: none of the {size} connections became free within {waited_ms} ms"
    )]
    PoolExhausted {
        /// Pool size.
        size: u32,
        /// How long the request waited, in milliseconds.
        waited_ms: u64,
    },
    /// Every request slot is busy (`--max-concurrent-requests`): the request is shed.
    #[error("overloaded: all {limit} request slots are busy; retry shortly")]
    Overloaded {
        /// The configured limit.
        limit: u32,
    },
    /// The probe URL is not a plain `http://` URL.
    #[error("invalid probe URL `{url}`: {reason}")]
    InvalidProbeUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The probe could not get an answer.
    #[error("probing {url} failed: {reason}")]
    ProbeFailed {
        /// The URL probed.
        url: String,
        /// Connect error, timeout or malformed answer.
        reason: String,
    },
}

impl Error {
    /// Bounded label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::BindFailed { .. } => "bind_failed",
            Error::ServeFailed(_) => "serve_failed",
            Error::MetricsFailed(_) => "metrics_failed",
            Error::ChaosDisabled => "chaos_disabled",
            Error::Unauthorized => "unauthorized",
            Error::InvalidParam { .. } => "invalid_param",
            Error::InjectedError => "injected_error",
            Error::PoolExhausted { .. } => "pool_exhausted",
            Error::Overloaded { .. } => "overloaded",
            Error::InvalidProbeUrl { .. } => "invalid_probe_url",
            Error::ProbeFailed { .. } => "probe_failed",
        }
    }

    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::ChaosDisabled => StatusCode::FORBIDDEN,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::InvalidParam { .. } | Error::InvalidProbeUrl { .. } => StatusCode::BAD_REQUEST,
            Error::PoolExhausted { .. } | Error::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::BindFailed { .. }
            | Error::ServeFailed(_)
            | Error::MetricsFailed(_)
            | Error::InjectedError
            | Error::ProbeFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let kind = self.metric_label();
        // Logged once, here. Injected errors are the point of the demo: debug, not error spam.
        match &self {
            Error::InjectedError => tracing::debug!(kind, "answering with injected error"),
            // Load shedding, not a bug: one per refused request, so warn, not error.
            e @ Error::PoolExhausted { .. } => tracing::warn!(kind, error = %e, "request refused"),
            // Shed under overload: a warning each would add log volume exactly when the pod is
            // busiest; the access-log line and `selfheal_app_requests_shed_total` say it.
            e @ Error::Overloaded { .. } => tracing::debug!(kind, error = %e, "request shed"),
            e if status.is_server_error() => tracing::error!(kind, error = %e, "request failed"),
            e => tracing::info!(kind, error = %e, "request rejected"),
        }
        let mut body = json!({ "error": self.to_string(), "kind": kind });
        match &self {
            Error::ChaosDisabled => {
                body["hint"] = "start the app with --enable-chaos or CHAOS_ENABLED=true \
                                (helm: --set chaos.enabled=true)"
                    .into();
            }
            Error::InvalidParam { field, .. } => body["field"] = field.as_str().into(),
            _ => {}
        }
        let mut res = (status, Json(body)).into_response();
        match self {
            Error::Unauthorized => {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Error::Overloaded { .. } => {
                res.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(SHED_RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        res
    }
}
