//! Metrics in the controller's own registry, names prefixed `selfheal_controller_`.

use std::time::Instant;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Prefix of every metric name.
pub const PREFIX: &str = "selfheal_controller";

/// Every collector the controller exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Pods evicted, by namespace and reason (`policy::Reason::label`).
    pub recycles_total: IntCounterVec,
    /// Evictions refused by a PodDisruptionBudget (HTTP 429).
    pub evictions_blocked_total: IntCounter,
    /// Workloads given up on after `max_retries`.
    pub giveups_total: IntCounter,
    /// Unhealthy pods left alone, by reason (opted_out, no_controller, min_age, cooldown, rate_limited).
    pub not_recycled_total: IntCounterVec,
    /// Reconcile failures, by `Error::metric_label`.
    pub reconcile_errors_total: IntCounterVec,
    /// Time spent in one reconcile.
    pub reconcile_duration_seconds: Histogram,
    /// Pods in the controller's cache.
    pub watched_pods: IntGauge,
    /// 1 while this replica holds the Lease.
    pub leader: IntGauge,
    /// Requests sent to the API server, by verb (`watch` counted apart from `get`/`list`).
    pub api_requests_total: IntCounterVec,
    /// Healing actions by action (`evict`, `rollout_restart`, `scale_to`, `none`) and outcome
    /// (`done`, `dry_run`, `observed`, `blocked`, `failed`, `unsupported`).
    pub healing_actions_total: IntCounterVec,
    /// HealingPolicy objects in the controller's cache.
    pub healing_policies: IntGauge,
    /// Reads of the metrics API for the memory trend, by result (`ok`, `error`).
    pub memory_metrics_reads_total: IntCounterVec,
    /// Pods with working-set samples held for the memory trend.
    pub memory_sampled_pods: IntGauge,
    /// Zombie pods force-deleted, by the state of their node (`gone`, `not_ready`, `ready`).
    pub zombies_deleted_total: IntCounterVec,
    /// PromQL trigger queries asked of Prometheus, by query (`error_rate`, `pool_saturation`,
    /// `pool_latency`) and result (`ok`, `error`).
    pub prometheus_queries_total: IntCounterVec,
    /// CircuitBreaker transitions, by state left and entered (`Closed`, `Open`, `HalfOpen`).
    pub circuit_transitions_total: IntCounterVec,
    /// CircuitBreakers by current state.
    pub circuit_breakers: IntGaugeVec,
    /// CircuitBreaker scale calls that failed (the transition is retried next round).
    pub circuit_scale_failures_total: IntCounter,
    /// Explanations published after an action or decision, by result (`ok`,
    /// `owner_lookup_failed`, `log_failed`, `busy`: too many in flight, sent without the log).
    pub evidence_total: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create and register every collector.
    #[allow(clippy::expect_used)] // startup invariant: names are static and unique
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some(PREFIX.into()), None).expect("valid metric prefix");
        let recycles_total = IntCounterVec::new(
            Opts::new(
                "recycles_total",
                "Pods evicted so their owner replaces them",
            ),
            &["namespace", "reason"],
        )
        .expect("valid metric");
        let evictions_blocked_total = IntCounter::new(
            "evictions_blocked_total",
            "Evictions refused by a PodDisruptionBudget (HTTP 429)",
        )
        .expect("valid metric");
        let giveups_total =
            IntCounter::new("giveups_total", "Workloads given up on after max retries")
                .expect("valid metric");
        let not_recycled_total = IntCounterVec::new(
            Opts::new(
                "not_recycled_total",
                "Unhealthy pods deliberately left alone",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let reconcile_errors_total = IntCounterVec::new(
            Opts::new("reconcile_errors_total", "Reconcile failures by error kind"),
            &["error"],
        )
        .expect("valid metric");
        let reconcile_duration_seconds = Histogram::with_opts(
            HistogramOpts::new("reconcile_duration_seconds", "Duration of one reconcile").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            ),
        )
        .expect("valid metric");
        let watched_pods =
            IntGauge::new("watched_pods", "Pods in the controller's cache").expect("valid metric");
        let leader = IntGauge::new("leader", "1 while this replica holds the leader Lease")
            .expect("valid metric");
        let api_requests_total = IntCounterVec::new(
            Opts::new(
                "api_requests_total",
                "Requests sent to the Kubernetes API server",
            ),
            &["verb"],
        )
        .expect("valid metric");
        let healing_actions_total = IntCounterVec::new(
            Opts::new(
                "healing_actions_total",
                "Healing actions taken (or decided in dry-run) by action and outcome",
            ),
            &["action", "outcome"],
        )
        .expect("valid metric");
        let healing_policies = IntGauge::new(
            "healing_policies",
            "HealingPolicy objects in the controller's cache",
        )
        .expect("valid metric");
        let memory_metrics_reads_total = IntCounterVec::new(
            Opts::new(
                "memory_metrics_reads_total",
                "Lists of PodMetrics (metrics.k8s.io) for the memory-trend trigger, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let memory_sampled_pods = IntGauge::new(
            "memory_sampled_pods",
            "Pods with working-set samples held for the memory-trend trigger",
        )
        .expect("valid metric");
        let zombies_deleted_total = IntCounterVec::new(
            Opts::new(
                "zombies_deleted_total",
                "Pods stuck Terminating force-deleted, by the state of their node",
            ),
            &["node_state"],
        )
        .expect("valid metric");
        let prometheus_queries_total = IntCounterVec::new(
            Opts::new(
                "prometheus_queries_total",
                "HealingPolicy trigger queries asked of Prometheus, by query and result",
            ),
            &["query", "result"],
        )
        .expect("valid metric");
        let circuit_transitions_total = IntCounterVec::new(
            Opts::new(
                "circuit_transitions_total",
                "CircuitBreaker transitions, by state left and entered",
            ),
            &["from", "to"],
        )
        .expect("valid metric");
        let circuit_breakers = IntGaugeVec::new(
            Opts::new("circuit_breakers", "CircuitBreakers by current state"),
            &["state"],
        )
        .expect("valid metric");
        let circuit_scale_failures_total = IntCounter::new(
            "circuit_scale_failures_total",
            "CircuitBreaker scale calls that failed",
        )
        .expect("valid metric");
        let evidence_total = IntCounterVec::new(
            Opts::new(
                "evidence_total",
                "Events with evidence published after an action or decision, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        for result in ["ok", "owner_lookup_failed", "log_failed", "busy"] {
            evidence_total.with_label_values(&[result]);
        }
        for (from, to) in [
            ("Closed", "Open"),
            ("Open", "HalfOpen"),
            ("HalfOpen", "Open"),
            ("HalfOpen", "Closed"),
            ("Open", "Closed"),
        ] {
            circuit_transitions_total.with_label_values(&[from, to]);
        }
        for state in ["Closed", "Open", "HalfOpen"] {
            circuit_breakers.with_label_values(&[state]);
        }
        for state in ["gone", "not_ready", "ready"] {
            zombies_deleted_total.with_label_values(&[state]);
        }
        for result in ["ok", "error"] {
            memory_metrics_reads_total.with_label_values(&[result]);
            for query in [
                "error_rate",
                "pool_saturation",
                "pool_latency",
                "circuit_breaker",
            ] {
                prometheus_queries_total.with_label_values(&[query, result]);
            }
        }
        for c in [
            Box::new(recycles_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(evictions_blocked_total.clone()),
            Box::new(giveups_total.clone()),
            Box::new(not_recycled_total.clone()),
            Box::new(reconcile_errors_total.clone()),
            Box::new(reconcile_duration_seconds.clone()),
            Box::new(watched_pods.clone()),
            Box::new(leader.clone()),
            Box::new(api_requests_total.clone()),
            Box::new(healing_actions_total.clone()),
            Box::new(healing_policies.clone()),
            Box::new(memory_metrics_reads_total.clone()),
            Box::new(memory_sampled_pods.clone()),
            Box::new(zombies_deleted_total.clone()),
            Box::new(prometheus_queries_total.clone()),
            Box::new(circuit_transitions_total.clone()),
            Box::new(circuit_breakers.clone()),
            Box::new(circuit_scale_failures_total.clone()),
            Box::new(evidence_total.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            recycles_total,
            evictions_blocked_total,
            giveups_total,
            not_recycled_total,
            reconcile_errors_total,
            reconcile_duration_seconds,
            watched_pods,
            leader,
            api_requests_total,
            healing_actions_total,
            healing_policies,
            memory_metrics_reads_total,
            memory_sampled_pods,
            zombies_deleted_total,
            prometheus_queries_total,
            circuit_transitions_total,
            circuit_breakers,
            circuit_scale_failures_total,
            evidence_total,
        }
    }

    /// Text exposition of the registry.
    pub fn encode(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }

    /// Start timing a reconcile; the duration is observed when the guard drops.
    pub fn time_reconcile(&self) -> ReconcileTimer {
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.reconcile_duration_seconds.clone(),
        }
    }
}

/// Bounded verb label of an API request: the HTTP method, or `watch` for watch requests.
pub fn request_verb(method: &http::Method, query: Option<&str>) -> &'static str {
    if query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1")) {
        return "watch";
    }
    match *method {
        http::Method::GET => "get",
        http::Method::POST => "post",
        http::Method::PUT => "put",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// Observes the reconcile duration on drop.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_requests_are_told_apart_from_gets() {
        assert_eq!(
            request_verb(&http::Method::GET, Some("watch=true&resourceVersion=1")),
            "watch"
        );
        assert_eq!(
            request_verb(&http::Method::GET, Some("labelSelector=a")),
            "get"
        );
        assert_eq!(request_verb(&http::Method::POST, None), "post");
    }

    #[test]
    fn every_metric_is_exported_with_the_prefix() {
        let m = Metrics::new();
        m.recycles_total
            .with_label_values(&["shop", "crash_loop_back_off"])
            .inc();
        m.not_recycled_total.with_label_values(&["opted_out"]).inc();
        m.reconcile_errors_total
            .with_label_values(&["evict_failed"])
            .inc();
        m.healing_actions_total
            .with_label_values(&["rollout_restart", "done"])
            .inc();
        drop(m.time_reconcile());
        let text = m.encode();
        for name in [
            "recycles_total{namespace=\"shop\",reason=\"crash_loop_back_off\"} 1",
            "evictions_blocked_total 0",
            "giveups_total 0",
            "not_recycled_total{reason=\"opted_out\"} 1",
            "reconcile_errors_total{error=\"evict_failed\"} 1",
            "reconcile_duration_seconds_count 1",
            "watched_pods 0",
            "leader 0",
            "healing_actions_total{action=\"rollout_restart\",outcome=\"done\"} 1",
            "healing_policies 0",
            "memory_metrics_reads_total{result=\"error\"} 0",
            "memory_sampled_pods 0",
            "zombies_deleted_total{node_state=\"gone\"} 0",
            "prometheus_queries_total{query=\"pool_saturation\",result=\"error\"} 0",
            "circuit_transitions_total{from=\"HalfOpen\",to=\"Closed\"} 0",
            "circuit_breakers{state=\"Open\"} 0",
            "circuit_scale_failures_total 0",
            "evidence_total{result=\"log_failed\"} 0",
        ] {
            assert!(
                text.contains(&format!("{PREFIX}_{name}")),
                "missing {name} in:\n{text}"
            );
        }
    }
}
