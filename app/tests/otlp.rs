//! Trace export over the real OTLP/HTTP wire: an in-test receiver on loopback decodes the
//! protobuf `ExportTraceServiceRequest` the binary sends (no collector build needed).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::post;
use common::App;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

async fn receive(
    State(received): State<Received>,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    match ExportTraceServiceRequest::decode(body) {
        Ok(req) => {
            received.lock().unwrap().push(req);
            // An empty ExportTraceServiceResponse encodes to zero bytes.
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                Vec::new(),
            )
        }
        Err(_) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain")],
            b"bad protobuf".to_vec(),
        ),
    }
}

async fn start_receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), received)
}

fn str_value(v: Option<&AnyValue>) -> Option<String> {
    match v?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| str_value(kv.value.as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// (resource attributes, span) for every received span.
fn spans(received: &Received) -> Vec<(Vec<KeyValue>, Span)> {
    let mut out = Vec::new();
    for req in received.lock().unwrap().iter() {
        for rs in &req.resource_spans {
            let res = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.clone())
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    out.push((res.clone(), span.clone()));
                }
            }
        }
    }
    out
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_an_otlp_receiver_with_route_status_and_service() {
    let (endpoint, received) = start_receiver().await;
    let mut app = App::start_with_env(
        &[
            "--shutdown-delay-secs",
            "0",
            "--track",
            "canary",
            "--enable-chaos",
        ],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    );
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    let r = selfheal_app::probe::request(
        "GET",
        &app.url("/"),
        &[("traceparent", traceparent.as_str())],
        "",
        common::DEADLINE,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(app.get("/health").await.status, 200);
    assert_eq!(app.get("/does-not-exist").await.status, 404);
    assert_eq!(app.post("/crash?mode=errors&percent=100").await.status, 200);
    assert_eq!(app.get("/").await.status, 500);

    // Shutdown flushes the batch: no waiting for the export interval.
    app.sigterm();
    assert_eq!(app.wait_exit().code(), Some(0));

    let spans = spans(&received);
    assert!(!spans.is_empty(), "no spans received");
    let (resource, root) = spans
        .iter()
        .find(|(_, s)| hex(&s.trace_id) == TRACE_ID)
        .unwrap_or_else(|| panic!("no span continues the caller's trace: {spans:#?}"));
    assert_eq!(
        attr(resource, "service.name").as_deref(),
        Some("selfheal-app")
    );
    assert_eq!(
        attr(resource, "service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        attr(resource, "deployment.track").as_deref(),
        Some("canary")
    );
    assert_eq!(root.name, "GET /");
    assert_eq!(
        hex(&root.parent_span_id),
        PARENT_SPAN_ID,
        "W3C traceparent honoured"
    );
    assert_eq!(attr(&root.attributes, "http.route").as_deref(), Some("/"));
    assert_eq!(
        attr(&root.attributes, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(root.kind, 2, "SPAN_KIND_SERVER");

    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    assert!(names.contains(&"GET unmatched"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.contains("/health")),
        "probe spans are skipped: {names:?}"
    );
    let failed = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| {
            s.name == "GET /"
                && attr(&s.attributes, "http.response.status_code").as_deref() == Some("500")
        })
        .unwrap_or_else(|| panic!("no span for the injected 500: {names:?}"));
    assert_eq!(
        failed.status.as_ref().map(|s| s.code),
        Some(2),
        "STATUS_CODE_ERROR"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_service_name_overrides_the_default() {
    let (endpoint, received) = start_receiver().await;
    let mut app = App::start_with_env(
        &["--shutdown-delay-secs", "0"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "shop-frontend"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=workshop",
            ),
        ],
    );
    assert_eq!(app.get("/").await.status, 200);
    app.sigterm();
    assert_eq!(app.wait_exit().code(), Some(0));
    let spans = spans(&received);
    let (resource, _) = spans.first().expect("a span");
    assert_eq!(
        attr(resource, "service.name").as_deref(),
        Some("shop-frontend")
    );
    assert_eq!(
        attr(resource, "deployment.environment").as_deref(),
        Some("workshop")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_collector_neither_blocks_nor_breaks_requests() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut app = App::start_with_env(
        &["--shutdown-delay-secs", "0"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "10"),
        ],
    );
    for _ in 0..50 {
        assert_eq!(app.get("/").await.status, 200);
    }
    assert!(app.running());
    let asked = Instant::now();
    app.sigterm();
    assert_eq!(app.wait_exit().code(), Some(0));
    // Flushing to a dead collector is bounded (3 s in main.rs), far below the test deadline.
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        asked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_means_no_exporter_and_no_export_noise() {
    let mut app = App::start(&["--shutdown-delay-secs", "0"]);
    assert_eq!(app.get("/").await.status, 200);
    app.sigterm();
    assert_eq!(app.wait_exit().code(), Some(0));
    let logs = app.drain_logs().join("\n");
    assert!(
        !logs.contains("opentelemetry"),
        "no exporter, no export logs: {logs}"
    );
    assert!(!logs.contains("\"level\":\"ERROR\""), "{logs}");
}
