//! The middleware stack, outermost first:
//!
//! 1. `TraceLayer`: one server span per request (probe paths excluded), W3C parent from headers;
//! 2. [`ObserveLayer`]: metrics (route template from `MatchedPath`), load shedding above
//!    `--max-concurrent-requests` → 503 + `Retry-After`, request timeout → 408, panic → 500,
//!    JSON bodies for every 4xx/5xx, one access-log line per request, the `Content-Length` body
//!    limit → 413, and `Connection: close` once draining;
//! 3. `DefaultBodyLimit`: the same limit for streamed bodies read by extractors.
//!
//! `ObserveLayer` is one hand-written service rather than several `from_fn`/tower-http layers:
//! each `Router::layer` call boxes every route again, and this is the hot path.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::json;
use tower::{Layer, Service, ServiceBuilder};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::Error;
use crate::metrics::method_label;
use crate::state::AppState;

/// Route label for requests no route matched (bounded, unlike the raw path).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Paths kept out of spans and access logs: probes and scrapes would drown the real traffic.
fn is_quiet_path(path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/metrics")
}

/// Paths outside the concurrency limit. `/health` and `/ready` are the kubelet's probes: shed,
/// a pod saturated by load would be restarted (liveness) or pulled from the Service
/// (readiness), pushing its load onto the other pods until they saturate too, the cascade the
/// limit is there to stop. `/metrics` keeps the saturation visible to Prometheus, `/crash` keeps
/// the demo's controls working (`mode=reset` clears the latency fault that saturated the pod).
/// None of them waits on the pool, so exempting them cannot saturate the pod by itself.
fn is_exempt_from_limit(path: &str) -> bool {
    is_quiet_path(path) || path == "/crash"
}

/// Wraps `routes` in the full stack and attaches `state`.
pub fn apply(routes: axum::Router<AppState>, state: AppState) -> Router {
    let body_limit = state.body_limit_bytes();
    routes
        .layer(
            ServiceBuilder::new()
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(make_span)
                        .on_request(())
                        .on_response(on_response)
                        .on_failure(()),
                )
                .layer(ObserveLayer {
                    state: state.clone(),
                })
                .layer(DefaultBodyLimit::max(body_limit)),
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
    );
    if !span.is_disabled() {
        telemetry::set_parent_from_headers(&span, req.headers());
    }
    span
}

fn on_response(res: &Response, _latency: Duration, span: &Span) {
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", res.status().as_u16());
    if res.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// Layer of [`Observe`].
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    state: AppState,
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            state: self.state.clone(),
        }
    }
}

/// Metrics, timeout, panic catching, JSON error bodies, body limit and access log in one service.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The ready service goes into the future; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move { Ok(observe(state, inner, req).await) })
    }
}

async fn observe<S>(state: AppState, mut inner: S, req: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let method = method_label(req.method());
    let route = req.extensions().get::<MatchedPath>().cloned();
    let quiet = is_quiet_path(req.uri().path());
    // Only what the access log needs, and only when it will be written.
    let log = (!quiet && tracing::enabled!(tracing::Level::INFO)).then(|| AccessLog {
        path: route.is_none().then(|| req.uri().path().to_owned()),
        trace_id: telemetry::trace_id(&Span::current()).or_else(|| {
            req.headers()
                .contains_key("traceparent")
                .then(|| telemetry::trace_id_from_headers(req.headers()))
                .flatten()
        }),
    });
    let mut timer = state.metrics().request(method, route.clone());

    // Held until the answer is ready; `None` for exempt paths.
    let slot = if is_exempt_from_limit(req.uri().path()) {
        Ok(None)
    } else {
        state.try_request_slot().map(Some).ok_or(())
    };
    let too_large = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > state.body_limit_bytes() as u64);
    let res = match slot {
        Err(()) => {
            state.metrics().requests_shed_total.inc();
            Error::Overloaded {
                limit: state.max_concurrent_requests(),
            }
            .into_response()
        }
        Ok(_) if too_large => error_response(StatusCode::PAYLOAD_TOO_LARGE, None),
        Ok(_slot) => {
            let call = AssertUnwindSafe(inner.call(req)).catch_unwind();
            match tokio::time::timeout(state.request_timeout(), call).await {
                Ok(Ok(Ok(res))) => json_error_body(res).await,
                Ok(Ok(Err(never))) => match never {},
                Ok(Err(panic)) => panic_response(&*panic),
                Err(_elapsed) => error_response(StatusCode::REQUEST_TIMEOUT, None),
            }
        }
    };

    let mut res = res;
    if state.draining() {
        // A kept-alive client would go on sending to a pod that is leaving the endpoints, and
        // fail once it stops: ask it to reconnect, which lands on a pod still in the Service.
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = res.status();
    timer.set_status(status);
    if let Some(log) = log {
        let route = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
        let latency_ms = timer.elapsed().as_secs_f64() * 1000.0;
        let status = status.as_u16();
        if status >= 500 {
            tracing::warn!(
                method,
                route,
                path = log.path,
                status,
                latency_ms,
                trace_id = log.trace_id,
                "request failed"
            );
        } else {
            tracing::info!(
                method,
                route,
                path = log.path,
                status,
                latency_ms,
                trace_id = log.trace_id,
                "request completed"
            );
        }
    }
    res
}

struct AccessLog {
    /// Raw path, only for unmatched routes (the template says it all otherwise).
    path: Option<String>,
    trace_id: Option<String>,
}

fn error_response(status: StatusCode, detail: Option<String>) -> Response {
    let mut json = json!({ "error": status.canonical_reason().unwrap_or("error").to_lowercase() });
    if let Some(detail) = detail {
        json["detail"] = detail.into();
    }
    let mut res = Response::new(Body::from(json.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Gives every 4xx/5xx a JSON body (405 and extractor rejections come as text or empty).
async fn json_error_body(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let detail = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|s| !s.is_empty());
    let mut json = error_response(status, detail);
    // Keep what the inner answer said besides its body (e.g. `Allow` on a 405).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}

fn panic_response(err: &(dyn std::any::Any + Send)) -> Response {
    let msg = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = msg, "handler panicked");
    let mut res = error_response(StatusCode::INTERNAL_SERVER_ERROR, None);
    *res.body_mut() =
        Body::from(json!({ "error": "internal server error", "kind": "panic" }).to_string());
    res
}
