//! Health and metrics server, on its own port so probes never queue behind anything else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    /// The controller's metrics.
    pub metrics: Arc<Metrics>,
    /// True once the pod cache has finished its initial list (followers are ready too).
    pub ready: Arc<AtomicBool>,
    /// False once one of the controller's loops has stopped (the process is about to exit).
    pub alive: Arc<AtomicBool>,
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.encode(),
    )
}

/// Every loop of the process runs; no dependency checks (a slow API server must not get us
/// restarted).
async fn healthz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.alive.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "a controller loop stopped")
    }
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "cache not synced")
    }
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics and health");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn state(ready: bool) -> HttpState {
        HttpState {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(ready)),
            alive: Arc::new(AtomicBool::new(true)),
        }
    }

    async fn get(state: HttpState, path: &str) -> (StatusCode, String) {
        let res = router(state)
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = res.status();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn healthz_is_ok_until_a_loop_stops_whatever_the_cache() {
        assert_eq!(
            get(state(false), "/healthz").await,
            (StatusCode::OK, "ok".into())
        );
        let s = state(true);
        s.alive.store(false, Ordering::Relaxed);
        assert_eq!(get(s, "/healthz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn readyz_follows_cache_sync() {
        assert_eq!(
            get(state(false), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(state(true), "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_exposes_the_registry() {
        let s = state(true);
        s.metrics.giveups_total.inc();
        s.metrics.leader.set(1);
        let (status, body) = get(s, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("selfheal_controller_giveups_total 1"),
            "{body}"
        );
        assert!(body.contains("selfheal_controller_leader 1"), "{body}");
    }

    #[tokio::test]
    async fn unknown_path_is_not_found() {
        assert_eq!(get(state(true), "/nope").await.0, StatusCode::NOT_FOUND);
    }
}
