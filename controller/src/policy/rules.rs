//! The decision thresholds and the action: one [`Policy`] from the controller's flags
//! ([`crate::config::Config::policy`]) or from a HealingPolicy.

use k8s_openapi::jiff::SignedDuration;

use super::action::Action;
use crate::healers::memory_trend::rule::LeakRule;
use crate::healers::pool::PoolRule;

/// Decision thresholds and the action (from [`crate::config::Config::policy`] or a HealingPolicy).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Recycle when total restarts exceed this (`None` = trigger off).
    pub restart_threshold: Option<u32>,
    /// Recycle when this many restarts were seen within `rate_window` (0 = off).
    pub rate_restarts: u32,
    /// Window of the restart-rate trigger.
    pub rate_window: SignedDuration,
    /// ImagePullBackOff/ErrImagePull counts once the pod is at least this old (`None` = off).
    pub image_pull_grace: Option<SignedDuration>,
    /// A container waiting in CrashLoopBackOff triggers on its own (without it, CrashLoopBackOff
    /// only names the reason of a restart trigger).
    pub crash_loop: bool,
    /// A container last terminated OOMKilled triggers on its own.
    pub oom_killed: bool,
    /// Ready condition False for this long triggers (`None` = off).
    pub not_ready_for: Option<SignedDuration>,
    /// A container's memory climbing to its limit triggers (`None` = off; HealingPolicy only).
    pub memory_trend: Option<LeakRule>,
    /// The policy's errorRate query answering above this ratio triggers (`None` = off;
    /// HealingPolicy only).
    pub error_rate: Option<f64>,
    /// The pod's connection pool saturated and its readiness or latency confirming it
    /// (`None` = off; HealingPolicy only).
    pub pool_exhaustion: Option<PoolRule>,
    /// Share of the enabled triggers that must fire together (`None` = any one).
    pub confidence: Option<f64>,
    /// Pods younger than this wait.
    pub min_pod_age: SignedDuration,
    /// Minimum time between two recycles of one workload.
    pub cooldown: SignedDuration,
    /// At most this many recycles of one workload per `recycle_window`.
    pub max_recycles_per_window: u32,
    /// Window of the per-workload cap.
    pub recycle_window: SignedDuration,
    /// Give up after this many recycles of one workload within `giveup_window`.
    pub max_retries: u32,
    /// Window in which recycles count towards `max_retries`.
    pub giveup_window: SignedDuration,
    /// Only these namespaces (empty = all).
    pub namespaces: Vec<String>,
    /// Never these namespaces.
    pub excluded_namespaces: Vec<String>,
    /// What to do once everything allows it.
    pub action: Action,
    /// Decide and report, change nothing.
    pub dry_run: bool,
    /// Act only while at least this many other pods of the same owner are Ready.
    pub min_healthy: u32,
}

/// Whether the namespace is in scope of the policy.
pub fn in_scope(policy: &Policy, namespace: &str) -> bool {
    !policy.excluded_namespaces.iter().any(|n| n == namespace)
        && (policy.namespaces.is_empty() || policy.namespaces.iter().any(|n| n == namespace))
}
