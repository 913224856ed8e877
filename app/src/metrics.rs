//! Prometheus metrics: one registry owned by the app state, typed fields, bounded labels.

// tokio's clock (real time in production) so paused-time tests see injected latency.
use tokio::time::Instant;

use axum::extract::MatchedPath;
use axum::http::StatusCode;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::config::Track;
use crate::faults::{FaultKind, Snapshot};
use crate::pool::PoolStats;
use crate::{Error, Result};

/// Request latency buckets in seconds (sub-ms hello-world up to the injected-latency range).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every collector of the app, registered in [`Metrics::new`].
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `http_requests_total{method,route,status}`.
    pub http_requests_total: IntCounterVec,
    /// `http_request_duration_seconds{method,route}`.
    pub http_request_duration_seconds: HistogramVec,
    /// `http_requests_in_flight`.
    pub http_requests_in_flight: IntGauge,
    /// `selfheal_app_info{version,track}` = 1.
    pub info: IntGaugeVec,
    /// `selfheal_app_ready`: 1 when `/ready` answers 200.
    pub ready: IntGauge,
    /// `selfheal_app_healthy`: 1 when `/health` answers 200.
    pub healthy: IntGauge,
    /// `selfheal_app_faults_injected_total{kind}`.
    pub faults_injected_total: IntCounterVec,
    /// `selfheal_app_fault_active{kind}`: 1 while a fault of that kind is active.
    pub fault_active: IntGaugeVec,
    /// `selfheal_app_leaked_bytes`: memory held by the `leak` fault.
    pub leaked_bytes: IntGauge,
    /// `selfheal_app_pool_connections_in_use`: pool connections borrowed or held by the fault.
    pub pool_connections_in_use: IntGauge,
    /// `selfheal_app_pool_connections_max`: pool size.
    pub pool_connections_max: IntGauge,
    /// `selfheal_app_pool_exhausted_total`: `GET /` requests refused for want of a connection.
    pub pool_exhausted_total: IntCounter,
    /// `selfheal_app_requests_shed_total`: requests answered 503 because every request slot
    /// (`--max-concurrent-requests`) was busy.
    pub requests_shed_total: IntCounter,
    /// `selfheal_app_header_read_timeouts_total`: connections closed for not sending their first
    /// complete request head in time (`--header-read-timeout-ms`): slow or stalled clients. Idle
    /// kept-alive connections closed by the same timer are not counted.
    pub header_read_timeouts_total: IntCounter,
}

impl Metrics {
    /// Creates the registry and registers every collector (plus process metrics on Linux).
    pub fn new(version: &str, track: Track) -> Result<Self> {
        let registry = Registry::new();
        let http_requests_total = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by method, route template and status code.",
            ),
            &["method", "route", "status"],
        )?;
        let http_request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency in seconds, by method and route template.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        let http_requests_in_flight = IntGauge::new(
            "http_requests_in_flight",
            "HTTP requests currently being served.",
        )?;
        let info = IntGaugeVec::new(
            Opts::new(
                "selfheal_app_info",
                "Build and deployment information; always 1.",
            ),
            &["version", "track"],
        )?;
        let ready = IntGauge::new(
            "selfheal_app_ready",
            "Whether /ready answers 200 (1) or 503 (0).",
        )?;
        let healthy = IntGauge::new(
            "selfheal_app_healthy",
            "Whether /health answers 200 (1) or 503 (0).",
        )?;
        let faults_injected_total = IntCounterVec::new(
            Opts::new(
                "selfheal_app_faults_injected_total",
                "Faults injected through POST /crash, by mode.",
            ),
            &["kind"],
        )?;
        let fault_active = IntGaugeVec::new(
            Opts::new(
                "selfheal_app_fault_active",
                "Whether a fault of this kind is active (1) or not (0).",
            ),
            &["kind"],
        )?;
        let leaked_bytes = IntGauge::new(
            "selfheal_app_leaked_bytes",
            "Bytes of resident memory deliberately leaked by the leak fault.",
        )?;
        let pool_connections_in_use = IntGauge::new(
            "selfheal_app_pool_connections_in_use",
            "Connections of the simulated pool borrowed by requests or held by the pool-exhaust fault.",
        )?;
        let pool_connections_max = IntGauge::new(
            "selfheal_app_pool_connections_max",
            "Connections in the simulated pool (APP_POOL_SIZE).",
        )?;
        let pool_exhausted_total = IntCounter::new(
            "selfheal_app_pool_exhausted_total",
            "GET / requests answered 503 because no pool connection became free in time.",
        )?;
        let requests_shed_total = IntCounter::new(
            "selfheal_app_requests_shed_total",
            "Requests answered 503 (with Retry-After) because every request slot was busy \
             (APP_MAX_CONCURRENT_REQUESTS).",
        )?;
        let header_read_timeouts_total = IntCounter::new(
            "selfheal_app_header_read_timeouts_total",
            "Connections closed because no complete request head arrived within \
             APP_HEADER_READ_TIMEOUT_MS (slow or stalled clients; idle kept-alive connections \
             are not counted).",
        )?;

        registry.register(Box::new(http_requests_total.clone()))?;
        registry.register(Box::new(http_request_duration_seconds.clone()))?;
        registry.register(Box::new(http_requests_in_flight.clone()))?;
        registry.register(Box::new(info.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        registry.register(Box::new(healthy.clone()))?;
        registry.register(Box::new(faults_injected_total.clone()))?;
        registry.register(Box::new(fault_active.clone()))?;
        registry.register(Box::new(leaked_bytes.clone()))?;
        registry.register(Box::new(pool_connections_in_use.clone()))?;
        registry.register(Box::new(pool_connections_max.clone()))?;
        registry.register(Box::new(pool_exhausted_total.clone()))?;
        registry.register(Box::new(requests_shed_total.clone()))?;
        registry.register(Box::new(header_read_timeouts_total.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        info.with_label_values(&[version, track.as_str()]).set(1);
        for kind in FaultKind::ALL {
            // Pre-create series so rate() works from the first injection.
            faults_injected_total.with_label_values(&[kind.as_str()]);
            if !matches!(kind, FaultKind::Exit | FaultKind::Reset) {
                fault_active.with_label_values(&[kind.as_str()]).set(0);
            }
        }

        Ok(Self {
            registry,
            http_requests_total,
            http_request_duration_seconds,
            http_requests_in_flight,
            info,
            ready,
            healthy,
            faults_injected_total,
            fault_active,
            leaked_bytes,
            pool_connections_in_use,
            pool_connections_max,
            pool_exhausted_total,
            requests_shed_total,
            header_read_timeouts_total,
        })
    }

    /// Counts one injection.
    pub fn fault_injected(&self, kind: FaultKind) {
        self.faults_injected_total
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// Sets the gauges derived from live state (called on scrape, so the leaked-bytes and pool
    /// gauges are as fresh as the leaker thread's counter and the pool itself).
    pub fn observe_state(&self, ready: bool, healthy: bool, faults: &Snapshot, pool: PoolStats) {
        self.ready.set(i64::from(ready));
        self.healthy.set(i64::from(healthy));
        let active = faults.active_kinds();
        for kind in [
            FaultKind::Unhealthy,
            FaultKind::Unready,
            FaultKind::Cpu,
            FaultKind::Errors,
            FaultKind::Latency,
            FaultKind::Leak,
            FaultKind::PoolExhaust,
        ] {
            self.fault_active
                .with_label_values(&[kind.as_str()])
                .set(i64::from(active.contains(&kind)));
        }
        self.leaked_bytes
            .set(i64::try_from(faults.leaked_bytes).unwrap_or(i64::MAX));
        self.pool_connections_in_use.set(i64::from(pool.in_use));
        self.pool_connections_max.set(i64::from(pool.max));
    }

    /// Starts timing one request; dropping the guard records count, latency and in-flight.
    /// `route` is the matched route template; `None` is labelled `unmatched`.
    pub fn request(&self, method: &'static str, route: Option<MatchedPath>) -> RequestTimer<'_> {
        self.http_requests_in_flight.inc();
        RequestTimer {
            metrics: self,
            method,
            route,
            status: None,
            start: Instant::now(),
        }
    }

    /// Text exposition of the registry.
    pub fn encode(&self) -> Result<String> {
        let mut buf = Vec::with_capacity(8 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(Error::MetricsFailed)?;
        String::from_utf8(buf)
            .map_err(|e| Error::MetricsFailed(prometheus::Error::Msg(e.to_string())))
    }
}

/// Measures one request; `Drop` observes the histogram so every exit path is counted.
#[derive(Debug)]
pub struct RequestTimer<'a> {
    metrics: &'a Metrics,
    method: &'static str,
    route: Option<MatchedPath>,
    status: Option<StatusCode>,
    start: Instant,
}

impl RequestTimer<'_> {
    /// Records the response status (unset = dropped before answering, labelled `0`).
    pub fn set_status(&mut self, status: StatusCode) {
        self.status = Some(status);
    }

    /// Time since the request started.
    pub fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        let m = self.metrics;
        m.http_requests_in_flight.dec();
        let route = self
            .route
            .as_ref()
            .map_or(crate::middleware::UNMATCHED_ROUTE, MatchedPath::as_str);
        let status = self.status.as_ref().map_or("0", StatusCode::as_str);
        m.http_requests_total
            .with_label_values(&[self.method, route, status])
            .inc();
        m.http_request_duration_seconds
            .with_label_values(&[self.method, route])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// Bounded `method` label: the standard methods, everything else is `OTHER`.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::TRACE => "TRACE",
        http::Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_exposes_every_family_with_help() {
        let m = Metrics::new("1.2.3", Track::Canary).unwrap();
        {
            let mut t = m.request("GET", None);
            t.set_status(StatusCode::OK);
        }
        let text = m.encode().unwrap();
        for name in [
            "http_requests_total",
            "http_request_duration_seconds",
            "http_requests_in_flight",
            "selfheal_app_info",
            "selfheal_app_ready",
            "selfheal_app_healthy",
            "selfheal_app_faults_injected_total",
            "selfheal_app_fault_active",
            "selfheal_app_leaked_bytes",
            "selfheal_app_pool_connections_in_use",
            "selfheal_app_pool_connections_max",
            "selfheal_app_pool_exhausted_total",
            "selfheal_app_requests_shed_total",
            "selfheal_app_header_read_timeouts_total",
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "missing HELP for {name}"
            );
        }
        assert!(text.contains(r#"selfheal_app_info{track="canary",version="1.2.3"} 1"#));
        assert!(
            text.contains(r#"http_requests_total{method="GET",route="unmatched",status="200"} 1"#)
        );
        assert!(text.contains("http_requests_in_flight 0"));
        assert!(text.contains("selfheal_app_leaked_bytes 0"));
        assert!(text.contains(r#"selfheal_app_fault_active{kind="leak"} 0"#));
        assert!(text.contains(r#"selfheal_app_fault_active{kind="pool-exhaust"} 0"#));
        assert!(text.contains("selfheal_app_pool_exhausted_total 0"));
        assert!(text.contains("selfheal_app_requests_shed_total 0"));
        assert!(text.contains("selfheal_app_header_read_timeouts_total 0"));
    }

    #[test]
    fn observed_state_sets_leaked_bytes_and_leak_active() {
        let m = Metrics::new("v", Track::Stable).unwrap();
        let snap = Snapshot {
            leak: Some(crate::faults::FaultStatus {
                value: 3,
                remaining_secs: None,
                from_profile: false,
            }),
            leaked_bytes: 3 * 1024 * 1024,
            ..Snapshot::default()
        };
        let pool = PoolStats { in_use: 0, max: 10 };
        m.observe_state(true, true, &snap, pool);
        assert_eq!(m.leaked_bytes.get(), 3 * 1024 * 1024);
        assert_eq!(m.fault_active.with_label_values(&["leak"]).get(), 1);
        m.observe_state(true, true, &Snapshot::default(), pool);
        assert_eq!(m.leaked_bytes.get(), 0);
        assert_eq!(m.fault_active.with_label_values(&["leak"]).get(), 0);
    }

    #[test]
    fn observed_state_sets_pool_gauges_and_pool_exhaust_active() {
        let m = Metrics::new("v", Track::Stable).unwrap();
        let snap = Snapshot {
            pool_exhaust: Some(crate::faults::FaultStatus {
                value: 7,
                remaining_secs: Some(30),
                from_profile: false,
            }),
            ..Snapshot::default()
        };
        m.observe_state(false, true, &snap, PoolStats { in_use: 7, max: 7 });
        assert_eq!(m.pool_connections_in_use.get(), 7);
        assert_eq!(m.pool_connections_max.get(), 7);
        assert_eq!(m.fault_active.with_label_values(&["pool-exhaust"]).get(), 1);
        m.observe_state(
            true,
            true,
            &Snapshot::default(),
            PoolStats { in_use: 0, max: 7 },
        );
        assert_eq!(m.pool_connections_in_use.get(), 0);
        assert_eq!(m.fault_active.with_label_values(&["pool-exhaust"]).get(), 0);
    }

    #[test]
    fn dropped_request_is_counted_with_status_zero() {
        let m = Metrics::new("v", Track::Stable).unwrap();
        drop(m.request("POST", None));
        assert_eq!(
            m.http_requests_total
                .with_label_values(&["POST", "unmatched", "0"])
                .get(),
            1
        );
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let m = http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&m), "OTHER");
        assert_eq!(method_label(&http::Method::GET), "GET");
    }
}
