//! `selfheal-app`: the instrumented demo service every recovery layer acts on.
//!
//! [`router`] builds the whole HTTP surface (routes + middleware) from an [`AppState`], so tests
//! drive it with `tower::ServiceExt::oneshot` without a socket; [`serve`] runs it with graceful
//! shutdown; `main.rs` only wires config, telemetry and these two together.

/// Command line and environment configuration.
pub mod config;
/// The crate's error type and its HTTP mapping.
pub mod error;
/// Injected faults: the CPU burner, the memory leaker, the pool hold.
pub mod faults;
/// Prometheus registry and request timing.
pub mod metrics;
/// Request span, metrics and error-body middleware.
pub mod middleware;
/// The simulated connection pool `GET /` borrows from.
pub mod pool;
/// The `probe URL` subcommand's minimal HTTP client.
pub mod probe;
/// HTTP handlers.
pub mod routes;
/// Graceful shutdown and the serve loop.
pub mod shutdown;
/// Shared application state.
pub mod state;

use axum::Router;
use axum::routing::get;

pub use crate::error::Error;
pub use crate::shutdown::{ShutdownTiming, Stopped, serve};
pub use crate::state::AppState;

/// Result alias with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The app's routes, without middleware.
fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(routes::root::root))
        .route("/health", get(routes::health::health))
        .route("/ready", get(routes::ready::ready))
        .route("/metrics", get(routes::metrics::metrics))
        .route(
            "/crash",
            get(routes::crash::status).post(routes::crash::inject),
        )
        .fallback(routes::not_found)
}

/// The complete HTTP service: routes plus tracing, metrics, panic catching, timeout and body limit.
pub fn router(state: AppState) -> Router {
    middleware::apply(routes(), state)
}
