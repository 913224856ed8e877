//! Tracing and OpenTelemetry setup shared by `selfheal-app` and `selfheal-controller`.
//!
//! One call, [`init`], installs the global `tracing` subscriber:
//!
//! - an [`EnvFilter`] read from `RUST_LOG` (default [`DEFAULT_FILTER`]);
//! - a `fmt` layer, JSON ([`LogFormat::Json`], for clusters) or human-readable ([`LogFormat::Text`]);
//! - a `tracing-opentelemetry` layer exporting spans over OTLP/HTTP (protobuf) **only** when an
//!   endpoint is configured, either [`TelemetryConfig::otlp_endpoint`] or the standard
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables.
//!   No endpoint → no exporter, no background thread, no error spam.
//!
//! The W3C `traceparent` propagator is installed globally; [`extract_context`] turns incoming
//! HTTP headers into a parent [`Context`]. Keep the returned [`TelemetryGuard`] alive for the
//! process lifetime and call [`TelemetryGuard::shutdown`] on exit so the last spans are flushed.
//!
//! ```no_run
//! let guard = telemetry::init(&telemetry::TelemetryConfig::new(
//!     "selfheal-app",
//!     env!("CARGO_PKG_VERSION"),
//! ))?;
//! tracing::info!("started");
//! guard.shutdown()?;
//! # Ok::<(), telemetry::Error>(())
//! ```
//!
//! Other standard variables honoured by the OpenTelemetry SDK: `OTEL_SERVICE_NAME` (overrides the
//! caller's service name), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` /
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_BSP_*`; `OTEL_SDK_DISABLED=true` turns the exporter off.

use std::env;

pub use opentelemetry::Context;
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Filter used when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info";

const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const ENV_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const ENV_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const ENV_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";

/// Everything that can go wrong while setting telemetry up or tearing it down.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `RUST_LOG` (or the default filter) is not a valid filter directive.
    #[error("invalid log filter: {0}")]
    InvalidFilter(#[source] tracing_subscriber::filter::ParseError),
    /// The OTLP span exporter could not be built (bad endpoint URL, ...).
    #[error("building the OTLP span exporter failed: {0}")]
    ExporterBuildFailed(#[source] opentelemetry_otlp::ExporterBuildError),
    /// A global `tracing` subscriber was already installed.
    #[error("installing the tracing subscriber failed: {0}")]
    SubscriberInitFailed(#[source] tracing_subscriber::util::TryInitError),
    /// Flushing or shutting down the tracer provider failed.
    #[error("shutting down the tracer provider failed: {0}")]
    ShutdownFailed(#[source] opentelemetry_sdk::error::OTelSdkError),
}

impl Error {
    /// Short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidFilter(_) => "invalid_filter",
            Error::ExporterBuildFailed(_) => "exporter_build_failed",
            Error::SubscriberInitFailed(_) => "subscriber_init_failed",
            Error::ShutdownFailed(_) => "shutdown_failed",
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Log output format of the `fmt` layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, for terminals.
    #[default]
    Text,
    /// One JSON object per line, for log collectors in the cluster.
    Json,
}

/// Input to [`init`]. Build with [`TelemetryConfig::new`] and adjust the public fields.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name` resource attribute; `OTEL_SERVICE_NAME` overrides it.
    pub service_name: String,
    /// `service.version` resource attribute, normally `env!("CARGO_PKG_VERSION")`.
    pub service_version: String,
    /// Log format of the `fmt` layer.
    pub log_format: LogFormat,
    /// OTLP/HTTP base endpoint (e.g. `http://jaeger-collector:4318`); `/v1/traces` is appended.
    /// `None` falls back to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// when none is set, spans are not exported.
    pub otlp_endpoint: Option<String>,
    /// Extra resource attributes (e.g. `k8s.pod.name`); `OTEL_RESOURCE_ATTRIBUTES` wins on conflicts.
    pub resource_attributes: Vec<(String, String)>,
    /// Whether log lines carry the fields of their enclosing spans (default `true`).
    /// `false` keeps spans out of the `fmt` layer entirely (they still go to OTLP): cheaper on
    /// hot paths that log their own fields, such as one access-log line per request.
    pub log_span_fields: bool,
}

impl TelemetryConfig {
    /// Config with text logs, no explicit endpoint and no extra attributes.
    pub fn new(service_name: impl Into<String>, service_version: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            service_version: service_version.into(),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            resource_attributes: Vec::new(),
            log_span_fields: true,
        }
    }
}

/// Keeps the tracer provider alive; [`TelemetryGuard::shutdown`] (or drop) flushes pending spans.
#[derive(Debug)]
#[must_use = "dropping the guard shuts the span exporter down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported over OTLP.
    pub fn otlp_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes pending spans and stops the exporter. A no-op without an exporter.
    pub fn shutdown(mut self) -> Result<()> {
        match self.provider.take() {
            Some(provider) => provider.shutdown().map_err(Error::ShutdownFailed),
            None => Ok(()),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Best effort: the subscriber may already be gone, so print instead of logging.
            if let Err(err) = provider.shutdown() {
                eprintln!("telemetry: flushing spans on drop failed: {err}");
            }
        }
    }
}

/// Installs the global subscriber (filter + fmt + optional OTLP layer) and the W3C propagator.
///
/// Fails if a global subscriber is already set, `RUST_LOG` is invalid or the endpoint is not a URL.
/// An unreachable collector is *not* an error: export happens on a background thread and failures
/// are logged there, never on the request path.
pub fn init(cfg: &TelemetryConfig) -> Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let filter = match env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(directives),
        _ => EnvFilter::try_new(DEFAULT_FILTER),
    }
    .map_err(Error::InvalidFilter)?;

    let fmt_layer = fmt_layer(cfg.log_format);
    let fmt_layer = if cfg.log_span_fields {
        fmt_layer
    } else {
        fmt_layer
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                !meta.is_span()
            }))
            .boxed()
    };

    let provider = match traces_endpoint(cfg) {
        Some(endpoint) => Some(build_provider(cfg, endpoint)?),
        None => None,
    };
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(cfg.service_name.clone()))
            .with_error_records_to_exceptions(true)
    });

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(Error::SubscriberInitFailed)?;

    Ok(TelemetryGuard { provider })
}

/// The `fmt` layer for `format`, boxed so both formats have one type.
fn fmt_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
    }
}

/// Builds the OpenTelemetry [`Resource`]: caller attributes, then `OTEL_RESOURCE_ATTRIBUTES`,
/// then `OTEL_SERVICE_NAME` (later wins).
pub fn resource(cfg: &TelemetryConfig) -> Resource {
    let mut builder = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes([
            KeyValue::new("service.name", cfg.service_name.clone()),
            KeyValue::new("service.version", cfg.service_version.clone()),
        ])
        .with_attributes(
            cfg.resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Some(name) = non_empty_env(ENV_SERVICE_NAME) {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// The full traces URL to export to, or `None` when export is off.
fn traces_endpoint(cfg: &TelemetryConfig) -> Option<Endpoint> {
    if non_empty_env(ENV_SDK_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    if let Some(base) = cfg
        .otlp_endpoint
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        return Some(Endpoint::Explicit(format!(
            "{}/v1/traces",
            base.trim().trim_end_matches('/')
        )));
    }
    if non_empty_env(ENV_TRACES_ENDPOINT).is_some() || non_empty_env(ENV_ENDPOINT).is_some() {
        return Some(Endpoint::FromEnv);
    }
    None
}

enum Endpoint {
    Explicit(String),
    /// Let the exporter resolve the standard variables (it appends `/v1/traces` to the base one).
    FromEnv,
}

fn build_provider(cfg: &TelemetryConfig, endpoint: Endpoint) -> Result<SdkTracerProvider> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if let Endpoint::Explicit(url) = endpoint {
        builder = builder.with_endpoint(url);
    }
    let exporter = builder.build().map_err(Error::ExporterBuildFailed)?;
    // The sampler comes from OTEL_TRACES_SAMPLER(_ARG) through the SDK's default config;
    // the batch processor exports on its own thread, so requests never wait for the collector.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(cfg))
        .build())
}

fn non_empty_env(key: &str) -> Option<String> {
    env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// Extracts the W3C trace context (`traceparent`/`tracestate`) from HTTP headers.
///
/// Returns an empty context when the headers carry none or are malformed.
pub fn extract_context(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Sets the remote parent from `headers` on `span` (no-op without an OTLP layer or a valid header).
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx = extract_context(headers);
    if cx.span().span_context().is_valid() {
        // An error only means the span is disabled or already started; nothing to do then.
        let _ = span.set_parent(cx);
    }
}

/// Writes the current span's trace context into outgoing HTTP headers (`traceparent`).
pub fn inject_context(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

/// The trace id of `span` as 32 hex digits, or `None` when the span is not traced.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The trace id a caller sent in `traceparent`, as 32 hex digits (works without an OTLP layer,
/// so logs can carry the caller's trace id even when this process exports nothing).
pub fn trace_id_from_headers(headers: &http::HeaderMap) -> Option<String> {
    let cx = extract_context(headers);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_header_becomes_remote_parent_context() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static(PARENT));
        let cx = extract_context(&headers);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid());
        assert!(sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn trace_id_is_read_from_traceparent_without_an_otlp_layer() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let mut headers = http::HeaderMap::new();
        assert_eq!(trace_id_from_headers(&headers), None);
        headers.insert("traceparent", http::HeaderValue::from_static(PARENT));
        assert_eq!(
            trace_id_from_headers(&headers).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn missing_or_malformed_traceparent_gives_empty_context() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let mut headers = http::HeaderMap::new();
        assert!(!extract_context(&headers).span().span_context().is_valid());
        headers.insert("traceparent", http::HeaderValue::from_static("garbage"));
        assert!(!extract_context(&headers).span().span_context().is_valid());
    }

    #[test]
    fn explicit_endpoint_gets_traces_path_appended() {
        let mut cfg = TelemetryConfig::new("svc", "1.0.0");
        cfg.otlp_endpoint = Some("http://collector:4318/".into());
        match traces_endpoint(&cfg) {
            Some(Endpoint::Explicit(url)) => assert_eq!(url, "http://collector:4318/v1/traces"),
            _ => panic!("expected an explicit endpoint"),
        }
    }

    #[test]
    fn blank_explicit_endpoint_is_ignored() {
        let mut cfg = TelemetryConfig::new("svc", "1.0.0");
        cfg.otlp_endpoint = Some("  ".into());
        // Only meaningful when the environment of the test run sets no endpoint either.
        if non_empty_env(ENV_ENDPOINT).is_none() && non_empty_env(ENV_TRACES_ENDPOINT).is_none() {
            assert!(traces_endpoint(&cfg).is_none());
        }
    }

    #[test]
    fn resource_carries_service_name_version_and_extra_attributes() {
        let mut cfg = TelemetryConfig::new("svc", "1.2.3");
        cfg.resource_attributes
            .push(("k8s.pod.name".into(), "pod-1".into()));
        let res = resource(&cfg);
        let get = |k: &'static str| {
            res.get(&opentelemetry::Key::from_static_str(k))
                .map(|v| v.to_string())
        };
        if non_empty_env(ENV_SERVICE_NAME).is_none() {
            assert_eq!(get("service.name").as_deref(), Some("svc"));
        }
        assert_eq!(get("service.version").as_deref(), Some("1.2.3"));
        assert_eq!(get("k8s.pod.name").as_deref(), Some("pod-1"));
        assert_eq!(get("telemetry.sdk.language").as_deref(), Some("rust"));
    }
}
