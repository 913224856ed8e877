//! The triggers of a HealingPolicy: the signals that make a pod unhealthy, each with its CEL
//! rules, defaults, and the pure rule it turns into.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::{DURATION_PATTERN, SpecError, parse_duration};
use crate::healers::memory_trend::rule::LeakRule;
use crate::healers::pool::PoolRule;

/// Signals that make a pod unhealthy. Unset triggers are off.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.restartCount) || (has(self.crashLoopBackOff) && self.crashLoopBackOff) || has(self.imagePullFailure) || (has(self.oomKilled) && self.oomKilled) || has(self.notReadyFor) || has(self.memoryTrend) || has(self.errorRate) || has(self.poolExhaustion)")
        .message("at least one trigger is required"),
    validation = Rule::new("!has(self.notReadyFor) || duration(self.notReadyFor) >= duration('10s')")
        .message("notReadyFor must be at least 10s")
        .field_path(".notReadyFor")
)]
pub struct Triggers {
    /// Total container restarts of the pod over a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<RestartCountTrigger>,
    /// A container is waiting in `CrashLoopBackOff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_loop_back_off: Option<bool>,
    /// A container is waiting in `ImagePullBackOff`/`ErrImagePull` and the pod is at least
    /// `after` old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_failure: Option<ImagePullTrigger>,
    /// A container's last termination was `OOMKilled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<bool>,
    /// The pod's Ready condition has been False for at least this long (Go duration, ≥ 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 32))]
    pub not_ready_for: Option<String>,
    /// The working set climbs steadily towards the memory limit (see [`MemoryTrendTrigger`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_trend: Option<MemoryTrendTrigger>,
    /// A PromQL error-rate query over a threshold (needs `--prometheus-url`; without it the
    /// policy reports `Degraded` with reason `TriggerNotEvaluated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRateTrigger>,
    /// The pod's connection pool stays saturated and its readiness fails or its latency rises
    /// (see [`PoolExhaustionTrigger`]; needs `--prometheus-url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_exhaustion: Option<PoolExhaustionTrigger>,
}

/// `restartCount: {over: N}`: fires when the pod's total restarts exceed `over`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
pub struct RestartCountTrigger {
    /// Fires when total restarts are greater than this.
    #[schemars(extend("format" = "int32"))] // NB: the API server knows no uint32
    pub over: u32,
}

/// `imagePullFailure: {after: 2m}`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
pub struct ImagePullTrigger {
    /// Minimum pod age before an image-pull failure counts (Go duration).
    #[serde(default = "default_image_pull_after")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 32))]
    pub after: String,
}

fn default_image_pull_after() -> String {
    "2m".into()
}

/// `memoryTrend: {}`: a container's working set climbs steadily towards its memory limit.
/// Samples come from the metrics API (metrics-server) every `--memory-sample-secs`; it fires when
/// the window holds at least `minSamples`, more than `risingPercent` of the steps between them
/// rise, and the latest is above `limitPercent` of the limit. Containers without a limit never fire.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.window) >= duration('1m')")
        .message("memoryTrend.window must be at least 1m (metrics-server samples every 15s)")
        .field_path(".window")
)]
pub struct MemoryTrendTrigger {
    /// Samples older than this are forgotten (Go duration, at least 1m).
    #[serde(default = "default_memory_window")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 32))]
    pub window: String,
    /// Samples the window must hold before the trigger can fire.
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 3, max = 240), extend("format" = "int32"))]
    pub min_samples: u32,
    /// More than this percent of the steps must rise (a GC sawtooth does not).
    #[serde(default = "default_rising_percent")]
    #[schemars(range(min = 50, max = 100), extend("format" = "int32"))]
    pub rising_percent: u32,
    /// The latest sample must be above this percent of the container's memory limit.
    #[serde(default = "default_limit_percent")]
    #[schemars(range(min = 1, max = 99), extend("format" = "int32"))]
    pub limit_percent: u32,
}

fn default_memory_window() -> String {
    "5m".into()
}
fn default_min_samples() -> u32 {
    12
}
fn default_rising_percent() -> u32 {
    80
}
fn default_limit_percent() -> u32 {
    85
}

impl MemoryTrendTrigger {
    /// The pure rule of [`crate::healers::memory_trend::rule`].
    pub fn rule(&self) -> Result<LeakRule, SpecError> {
        Ok(LeakRule {
            window: parse_duration("spec.triggers.memoryTrend.window", &self.window)?,
            min_samples: usize::try_from(self.min_samples).unwrap_or(usize::MAX),
            rising_share: f64::from(self.rising_percent.min(100)) / 100.0,
            limit_share: f64::from(self.limit_percent.min(100)) / 100.0,
        })
    }
}

/// `errorRate: {query, threshold}`: a PromQL query for the selected pods' workload, asked every
/// `--error-rate-interval-secs` of the Prometheus at `--prometheus-url`; fires while the answer
/// (the largest value of the vector) is above `threshold`. No answer (empty vector, Prometheus
/// down) never fires.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
pub struct ErrorRateTrigger {
    /// PromQL returning the error ratio of the selected pods' workload.
    #[schemars(length(min = 1, max = 1024))]
    pub query: String,
    /// Fires above this ratio (0 to 1).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: f64,
}

/// `poolExhaustion: {}`: the pod's connection pool stays saturated **and** the pod shows it —
/// its readiness fails, or (with `latencyQuery`) its latency is over `latencySeconds`. A full
/// pool alone is a busy pod, not a broken one, and never fires. Both queries are asked every
/// `--prometheus-interval-secs` and must answer one series per pod with `namespace` and `pod`
/// labels (what a ServiceMonitor or PodMonitor scrape carries). No answer for a pod breaks its
/// saturated streak.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.saturatedFor) >= duration('10s')")
        .message("poolExhaustion.saturatedFor must be at least 10s")
        .field_path(".saturatedFor"),
    validation = Rule::new("has(self.latencyQuery) == has(self.latencySeconds)")
        .message("poolExhaustion.latencyQuery and latencySeconds go together")
        .field_path(".latencyQuery")
)]
pub struct PoolExhaustionTrigger {
    /// PromQL answering each pod's pool saturation (in use / max, 0 to 1).
    #[serde(default = "default_saturation_query")]
    #[schemars(length(min = 1, max = 1024))]
    pub saturation_query: String,
    /// Saturation at or above this percent counts as saturated.
    #[serde(default = "default_saturation_percent")]
    #[schemars(range(min = 1, max = 100), extend("format" = "int32"))]
    pub saturation_percent: u32,
    /// The pool must stay saturated this long (Go duration, at least 10s).
    #[serde(default = "default_saturated_for")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 32))]
    pub saturated_for: String,
    /// PromQL answering each pod's latency in seconds (e.g. a p95 by pod): rising latency then
    /// confirms a saturated pool as well as failing readiness does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub latency_query: Option<String>,
    /// `latencyQuery` confirms above this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub latency_seconds: Option<f64>,
}

/// The app's own pool gauges, one series per pod.
pub const DEFAULT_SATURATION_QUERY: &str = "max by (namespace, pod) (selfheal_app_pool_connections_in_use / selfheal_app_pool_connections_max)";

fn default_saturation_query() -> String {
    DEFAULT_SATURATION_QUERY.into()
}
fn default_saturation_percent() -> u32 {
    100
}
fn default_saturated_for() -> String {
    "30s".into()
}

impl PoolExhaustionTrigger {
    /// The pure rule of [`crate::healers::pool`].
    pub fn rule(&self) -> Result<PoolRule, SpecError> {
        Ok(PoolRule {
            saturation: f64::from(self.saturation_percent.clamp(1, 100)) / 100.0,
            saturated_for: parse_duration(
                "spec.triggers.poolExhaustion.saturatedFor",
                &self.saturated_for,
            )?,
            latency_seconds: self.latency_query.as_ref().and(self.latency_seconds),
        })
    }
}
