//! The middleware stack, outermost first:
//! request span + access log (skips probe paths) → metrics (route template from `MatchedPath`) →
//! JSON error bodies → panic → 500 → request timeout → 408 → body limit → 413.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self as axum_mw, Next};
use axum::response::Response;
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::metrics::method_label;
use crate::state::AppState;

/// Route label for requests no route matched (bounded, unlike the raw path).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Paths kept out of spans and access logs: probes and scrapes would drown the real traffic.
fn is_quiet_path(path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/metrics")
}

/// Wraps `routes` in the full stack and attaches `state`.
pub fn apply(routes: axum::Router<AppState>, state: AppState) -> Router {
    let timeout = state.request_timeout();
    let body_limit = state.body_limit_bytes();
    // Router::layer wraps what is already there: innermost first.
    routes
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum_mw::from_fn(json_error_bodies))
        .layer(axum_mw::from_fn_with_state(state.clone(), track_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_request(())
                .on_response(on_response)
                .on_failure(()),
        )
        .with_state(state)
}

fn make_span(req: &Request) -> Span {
    let path = req.uri().path();
    if is_quiet_path(path) {
        return Span::none();
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    let method = req.method().as_str();
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    telemetry::set_parent_from_headers(&span, req.headers());
    // Without an exporter there is no local trace, but the caller's trace id still joins logs.
    if let Some(id) =
        telemetry::trace_id(&span).or_else(|| telemetry::trace_id_from_headers(req.headers()))
    {
        span.record("trace_id", id);
    }
    span
}

fn on_response(res: &Response, latency: Duration, span: &Span) {
    if span.is_none() {
        return;
    }
    let status = res.status().as_u16();
    span.record("http.response.status_code", status);
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if res.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
        tracing::warn!(status, latency_ms, "request failed");
    } else {
        tracing::info!(status, latency_ms, "request completed");
    }
}

async fn track_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let mut timer = state.metrics().request(method_label(req.method()), route);
    let res = next.run(req).await;
    timer.set_status(res.status().as_u16());
    res
}

/// Gives every 4xx/5xx a JSON body (405, 408, 413 and extractor rejections come as text or empty).
async fn json_error_bodies(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let detail = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|s| !s.is_empty());
    let mut json = json!({ "error": status.canonical_reason().unwrap_or("error").to_lowercase() });
    if let Some(detail) = detail {
        json["detail"] = detail.into();
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(json.to_string()))
}

fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = msg, "handler panicked");
    let body = json!({ "error": "internal server error", "kind": "panic" }).to_string();
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
