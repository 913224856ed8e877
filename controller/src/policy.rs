//! The decision, as a pure function of the pod, the policy, what we remember and the time.
//!
//! Order matters and is the contract documented in the README's decision table:
//! 1. silent skips (terminating, out of scope, healthy) — nothing to report;
//! 2. refusals of a pod that *is* unhealthy (opted out, bare pod) — reported as `NotRecycled`;
//! 3. waits (too young, cooldown, window cap) — reported, re-checked at `until`;
//! 4. give-up after `max_retries` recycles of the workload;
//! 5. wait while fewer than `min_healthy` sibling pods are Ready;
//! 6. act (the policy's [`Action`]; "recycle" in names and Events for historical reasons).
//!
//! The same function serves the default policy (the controller's flags) and every
//! `HealingPolicy` ([`crate::crd::HealingPolicySpec::to_policy`]).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::exhaustion::{Exhaustion, PoolRule};
use crate::history::WorkloadHistory;
use crate::trend::{Leak, LeakRule};

/// Annotation that opts a pod out: `selfheal.io/ignore: "true"`.
pub const IGNORE_ANNOTATION: &str = "selfheal.io/ignore";

/// How soon a pod waiting for `minHealthyReplicas` is looked at again.
pub const MIN_HEALTHY_RECHECK: SignedDuration = SignedDuration::from_secs(10);

/// What to do to an unhealthy pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Evict the pod (Eviction API) so its owner replaces it.
    Evict,
    /// Restart the rollout of the pod's Deployment.
    RolloutRestart,
    /// Set the pod's Deployment to this many replicas.
    ScaleTo(i32),
    /// Report only (HealingPolicy action `none`).
    Observe,
}

impl Action {
    /// Bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            Action::Evict => "evict",
            Action::RolloutRestart => "rollout_restart",
            Action::ScaleTo(_) => "scale_to",
            Action::Observe => "none",
        }
    }

    /// The name used in the HealingPolicy spec and status.
    pub fn spec_name(self) -> &'static str {
        match self {
            Action::Evict => "evict",
            Action::RolloutRestart => "rolloutRestart",
            Action::ScaleTo(_) => "scaleTo",
            Action::Observe => "none",
        }
    }

    /// Whether the action can be applied to a workload of `kind` (`None` = bare pod).
    /// Evicting needs any controller; restarting and scaling are implemented for Deployments.
    pub fn supports(self, kind: Option<&str>) -> bool {
        match self {
            Action::Evict | Action::Observe => kind.is_some(),
            Action::RolloutRestart | Action::ScaleTo(_) => kind == Some("Deployment"),
        }
    }
}

/// How a `Recycle` decision is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// Change the cluster.
    Act(Action),
    /// Report what the action would do, change nothing (policy or controller dry-run).
    DryRun(Action),
    /// Action `none`: report the unhealthy pod, change nothing.
    Observe,
    /// The action cannot be applied to this owner (restart/scale of a non-Deployment).
    Unsupported(Action),
}

/// Carry out a `Recycle` decision for a pod owned by a `owner_kind` workload: the policy's action,
/// unless it or the whole controller (`global_dry_run`) is in dry-run.
pub fn execution(policy: &Policy, global_dry_run: bool, owner_kind: Option<&str>) -> Execution {
    if !policy.action.supports(owner_kind) {
        return Execution::Unsupported(policy.action);
    }
    match policy.action {
        Action::Observe => Execution::Observe,
        a if policy.dry_run || global_dry_run => Execution::DryRun(a),
        a => Execution::Act(a),
    }
}

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

/// Why a pod is considered unhealthy. Also the `reason` label of `recycles_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Lifetime restarts over the threshold.
    RestartThreshold,
    /// Too many restarts within the rate window.
    RestartRate,
    /// Over the threshold and a container is waiting in `CrashLoopBackOff`.
    CrashLoopBackOff,
    /// Over the threshold and a container last terminated `OOMKilled`.
    OomKilled,
    /// A container has been waiting in `ImagePullBackOff`/`ErrImagePull` past the grace period.
    ImagePullBackOff,
    /// The pod has not been Ready for the policy's `notReadyFor`.
    NotReady,
    /// A container's working set is climbing steadily to its memory limit.
    MemoryLeak,
    /// The policy's Prometheus error-rate query answered over its threshold.
    ErrorRate,
    /// The pod's connection pool stayed saturated and readiness or latency confirmed it.
    PoolExhausted,
}

/// What the controller measured about a pod beyond its own status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Restarts seen within the policy's rate window.
    pub recent_restarts: u32,
    /// A container found leaking by the memory trend ([`crate::trend::assess`]).
    pub leak: Option<Leak>,
    /// The latest answer of the governing policy's errorRate query (`None` = no fresh answer).
    pub error_ratio: Option<f64>,
    /// The pod found out of connections ([`crate::exhaustion::assess`]).
    pub pool: Option<Exhaustion>,
}

impl Observed {
    /// Only a restart count (every trigger but the memory trend).
    pub fn restarts(recent_restarts: u32) -> Self {
        Self {
            recent_restarts,
            ..Self::default()
        }
    }
}

impl Reason {
    /// Bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::RestartThreshold => "restart_threshold",
            Reason::RestartRate => "restart_rate",
            Reason::CrashLoopBackOff => "crash_loop_back_off",
            Reason::OomKilled => "oom_killed",
            Reason::ImagePullBackOff => "image_pull_back_off",
            Reason::NotReady => "not_ready",
            Reason::MemoryLeak => "memory_leak",
            Reason::ErrorRate => "error_rate",
            Reason::PoolExhausted => "pool_exhausted",
        }
    }
}

/// Why a pod is left alone for good (until it changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Below every trigger.
    Healthy,
    /// Already being deleted.
    Terminating,
    /// Namespace excluded or not in the watched list.
    OutOfScope,
    /// Unhealthy, but annotated `selfheal.io/ignore: "true"`.
    OptedOut,
    /// Unhealthy, but no controller owner would replace it: evicting a bare pod loses it.
    NoController,
    /// Over the lifetime restart threshold, but the restarts are history: Ready now, nothing
    /// waiting, no restart within the rate window.
    RestartsInThePast,
}

impl SkipReason {
    /// Whether the skip concerns an unhealthy pod, i.e. deserves a `NotRecycled` Event.
    pub fn is_reported(self) -> bool {
        matches!(
            self,
            SkipReason::OptedOut | SkipReason::NoController | SkipReason::RestartsInThePast
        )
    }

    /// Human-readable explanation for Events and logs.
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::Healthy => "pod is below every trigger",
            SkipReason::Terminating => "pod is already terminating",
            SkipReason::OutOfScope => "namespace is excluded",
            SkipReason::OptedOut => "pod is opted out with selfheal.io/ignore=true",
            SkipReason::NoController => {
                "pod has no controller owner; evicting a bare pod would lose it"
            }
            SkipReason::RestartsInThePast => {
                "restart count is over the threshold, but the pod is Ready and has not restarted within the rate window"
            }
        }
    }
}

/// Why an unhealthy pod has to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitCause {
    /// Pod younger than the minimum age.
    MinAge,
    /// Workload recycled less than `cooldown` ago.
    Cooldown,
    /// Workload already recycled `max_recycles_per_window` times in the window.
    RateLimited,
    /// Fewer than `min_healthy` other pods of the workload are Ready.
    MinHealthy,
}

impl WaitCause {
    /// Human-readable explanation for Events and logs.
    pub fn describe(self) -> &'static str {
        match self {
            WaitCause::MinAge => "pod is younger than the minimum age",
            WaitCause::Cooldown => "workload was recycled recently (cooldown)",
            WaitCause::RateLimited => "workload hit the recycle limit for the window",
            WaitCause::MinHealthy => {
                "too few other pods of the workload are Ready (minHealthyReplicas)"
            }
        }
    }
}

/// What to do with a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Evict it so its owner creates a fresh one.
    Recycle {
        /// What is wrong with it.
        reason: Reason,
    },
    /// Leave it alone.
    Skip(SkipReason),
    /// Unhealthy, but not yet: look again at `until`.
    Wait {
        /// What is wrong with it.
        reason: Reason,
        /// Why it has to wait.
        cause: WaitCause,
        /// When to look again.
        until: Timestamp,
    },
    /// The workload was recycled `max_retries` times and is still unhealthy: stop and tell someone.
    GiveUp {
        /// What is wrong with it.
        reason: Reason,
        /// Recycles of the workload within the give-up window.
        recycles: u32,
    },
}

/// Total restarts across init and app containers.
pub fn total_restarts(pod: &Pod) -> u32 {
    container_statuses(pod)
        .map(|c| u32::try_from(c.restart_count).unwrap_or(0))
        .sum()
}

fn container_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    let app = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let init = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default();
    init.iter().chain(app.iter())
}

fn waiting_reason(c: &ContainerStatus) -> Option<&str> {
    c.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
}

fn last_terminated_reason(c: &ContainerStatus) -> Option<&str> {
    c.last_state
        .as_ref()?
        .terminated
        .as_ref()?
        .reason
        .as_deref()
}

/// When the pod's Ready condition last turned False, if it is False now.
pub fn not_ready_since(pod: &Pod) -> Option<Timestamp> {
    let ready = pod
        .status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (ready.status == "False").then(|| {
        ready
            .last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
    })
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn image_pull_failing(pod: &Pod) -> bool {
    container_statuses(pod)
        .any(|c| matches!(waiting_reason(c), Some("ImagePullBackOff" | "ErrImagePull")))
}

/// Whether the pod is unhealthy enough to act on, and why. `recent_restarts` comes from
/// [`crate::history::RestartTracker::observe`].
///
/// Each enabled trigger is one signal. Without `confidence` one firing signal is enough; with it,
/// the firing share of the enabled signals must reach it. The reason is the first firing signal
/// in the order image pull, OOM kill, crash loop, not ready, memory leak, error rate, pool
/// exhaustion, restart count,
/// restart rate — except
/// that a restart trigger names OOMKilled/CrashLoopBackOff when the pod shows them, as the
/// default policy always did.
pub fn trigger(pod: &Pod, policy: &Policy, observed: &Observed, now: Timestamp) -> Option<Reason> {
    let recent_restarts = observed.recent_restarts;
    let restart_enabled = policy.restart_threshold.is_some() || policy.rate_restarts > 0;
    let over_threshold = lifetime_over_threshold(pod, policy)
        && restarts_are_current(pod, policy, recent_restarts, now);
    let over_rate = policy.rate_restarts > 0 && recent_restarts >= policy.rate_restarts;
    let oom = container_statuses(pod).any(|c| last_terminated_reason(c) == Some("OOMKilled"));
    let crash_loop = container_statuses(pod).any(|c| waiting_reason(c) == Some("CrashLoopBackOff"));
    let restart_reason = (over_threshold || over_rate).then_some(if oom {
        Reason::OomKilled
    } else if crash_loop {
        Reason::CrashLoopBackOff
    } else if over_threshold {
        Reason::RestartThreshold
    } else {
        Reason::RestartRate
    });
    // (enabled, firing reason) per signal, in reason order.
    let signals = [
        (
            policy.image_pull_grace.is_some(),
            policy
                .image_pull_grace
                .filter(|g| image_pull_failing(pod) && age(pod, now).is_some_and(|a| a >= *g))
                .map(|_| Reason::ImagePullBackOff),
        ),
        (
            policy.oom_killed,
            (policy.oom_killed && oom).then_some(Reason::OomKilled),
        ),
        (
            policy.crash_loop,
            (policy.crash_loop && crash_loop).then_some(Reason::CrashLoopBackOff),
        ),
        (
            policy.not_ready_for.is_some(),
            policy
                .not_ready_for
                .zip(not_ready_since(pod))
                .filter(|(d, since)| *since + *d <= now)
                .map(|_| Reason::NotReady),
        ),
        (
            policy.memory_trend.is_some(),
            (policy.memory_trend.is_some() && observed.leak.is_some())
                .then_some(Reason::MemoryLeak),
        ),
        (
            policy.error_rate.is_some(),
            policy
                .error_rate
                .zip(observed.error_ratio)
                .filter(|(threshold, ratio)| ratio > threshold)
                .map(|_| Reason::ErrorRate),
        ),
        (
            policy.pool_exhaustion.is_some(),
            (policy.pool_exhaustion.is_some() && observed.pool.is_some())
                .then_some(Reason::PoolExhausted),
        ),
        (restart_enabled, restart_reason),
    ];
    let enabled = signals.iter().filter(|(e, _)| *e).count();
    let firing: Vec<Reason> = signals.iter().filter_map(|(_, r)| *r).collect();
    let first = *firing.first()?;
    match policy.confidence {
        None => Some(first),
        Some(c) => {
            #[allow(clippy::cast_precision_loss)] // a handful of signals
            let share = firing.len() as f64 / enabled.max(1) as f64;
            (share + f64::EPSILON >= c).then_some(first)
        }
    }
}

/// Total restarts over the lifetime threshold, whether or not they are current.
pub fn lifetime_over_threshold(pod: &Pod, policy: &Policy) -> bool {
    policy
        .restart_threshold
        .is_some_and(|t| total_restarts(pod) > t)
}

/// Whether restarts still describe the pod: it is not Ready, a container is waiting (crash-loop
/// back-off, image pull, ...), or a container restarted within the rate window. A pod that
/// restarted 4 times last week and has been Ready since is not a crash loop; recycling it would
/// be the controller's own disruption.
pub fn restarts_are_current(
    pod: &Pod,
    policy: &Policy,
    recent_restarts: u32,
    now: Timestamp,
) -> bool {
    let recently_finished = |c: &ContainerStatus| {
        c.last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.as_ref())
            .is_some_and(|f| f.0 + policy.rate_window >= now)
    };
    recent_restarts > 0
        || !is_ready(pod)
        || container_statuses(pod).any(|c| waiting_reason(c).is_some() || recently_finished(c))
}

/// When a trigger that is pending on time alone (not Ready for `notReadyFor`, image pull within
/// its grace period) would fire, so the controller looks again then: a pod that stays unready
/// sends no further changes.
pub fn next_check(pod: &Pod, policy: &Policy, now: Timestamp) -> Option<Timestamp> {
    let not_ready = policy
        .not_ready_for
        .zip(not_ready_since(pod))
        .map(|(d, since)| since + d);
    let image_pull = policy
        .image_pull_grace
        .filter(|_| image_pull_failing(pod))
        .zip(pod.metadata.creation_timestamp.as_ref())
        .map(|(g, created)| created.0 + g);
    [not_ready, image_pull]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .min()
}

fn age(pod: &Pod, now: Timestamp) -> Option<SignedDuration> {
    let created = pod.metadata.creation_timestamp.as_ref()?.0;
    Some(now.duration_since(created))
}

/// Whether the namespace is in scope of the policy.
pub fn in_scope(policy: &Policy, namespace: &str) -> bool {
    !policy.excluded_namespaces.iter().any(|n| n == namespace)
        && (policy.namespaces.is_empty() || policy.namespaces.iter().any(|n| n == namespace))
}

/// Whether the pod has an owner reference with `controller: true`.
pub fn has_controller(pod: &Pod) -> bool {
    pod.metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o.controller == Some(true))
}

/// Whether the pod carries `selfheal.io/ignore: "true"`.
pub fn opted_out(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(IGNORE_ANNOTATION))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Decide what to do with `pod`. `history` is the recycle history of the pod's workload (empty
/// for a bare pod), `observed` the restarts seen within the rate window and the memory trend.
/// `healthy_siblings` counts the other Ready pods of the same owner.
pub fn decide(
    pod: &Pod,
    policy: &Policy,
    history: &WorkloadHistory,
    observed: &Observed,
    healthy_siblings: u32,
    now: Timestamp,
) -> Decision {
    if pod.metadata.deletion_timestamp.is_some() {
        return Decision::Skip(SkipReason::Terminating);
    }
    if !in_scope(
        policy,
        pod.metadata.namespace.as_deref().unwrap_or_default(),
    ) {
        return Decision::Skip(SkipReason::OutOfScope);
    }
    let Some(reason) = trigger(pod, policy, observed, now) else {
        // NB: said once (a NotRecycled Event), so "why was it left alone?" has an answer.
        if lifetime_over_threshold(pod, policy) {
            return Decision::Skip(SkipReason::RestartsInThePast);
        }
        return Decision::Skip(SkipReason::Healthy);
    };
    if opted_out(pod) {
        return Decision::Skip(SkipReason::OptedOut);
    }
    if !has_controller(pod) {
        return Decision::Skip(SkipReason::NoController);
    }
    if let Some(created) = pod.metadata.creation_timestamp.as_ref().map(|t| t.0) {
        let ripe = created + policy.min_pod_age;
        if ripe > now {
            return Decision::Wait {
                reason,
                cause: WaitCause::MinAge,
                until: ripe,
            };
        }
    }
    let recycles = history.count_since(now, policy.giveup_window);
    if recycles >= policy.max_retries {
        return Decision::GiveUp { reason, recycles };
    }
    if let Some(last) = history.last_recycle() {
        let until = last + policy.cooldown;
        if until > now {
            return Decision::Wait {
                reason,
                cause: WaitCause::Cooldown,
                until,
            };
        }
    }
    if history.count_since(now, policy.recycle_window) >= policy.max_recycles_per_window {
        let oldest = history
            .oldest_since(now, policy.recycle_window)
            .unwrap_or(now);
        let until = oldest + policy.recycle_window;
        return Decision::Wait {
            reason,
            cause: WaitCause::RateLimited,
            until,
        };
    }
    if healthy_siblings < policy.min_healthy {
        // NB: sibling readiness changes do not wake this pod up; look again shortly.
        return Decision::Wait {
            reason,
            cause: WaitCause::MinHealthy,
            until: now + MIN_HEALTHY_RECHECK,
        };
    }
    Decision::Recycle { reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{NOW, at, pod, policy, secs};

    fn hist(recycles_ago_secs: &[i64]) -> WorkloadHistory {
        let mut h = WorkloadHistory::default();
        let mut ts: Vec<_> = recycles_ago_secs.iter().map(|s| at(-s)).collect();
        ts.sort();
        h.recycles.extend(ts);
        h
    }

    #[test]
    fn decision_table() {
        let p = policy(); // threshold 3, rate 3/300s, min age 60s, cooldown 300s, 2 per 3600s, 3 retries
        let none = WorkloadHistory::default();
        #[rustfmt::skip]
        let cases: Vec<(&str, Pod, WorkloadHistory, u32, Decision)> = vec![
            ("healthy pod is skipped",
                pod().with_restarts(0).owned_by_rs("web").build(), none.clone(), 0, Decision::Skip(SkipReason::Healthy)),
            ("restarts equal to the threshold are not over it",
                pod().with_restarts(3).owned_by_rs("web").build(), none.clone(), 0, Decision::Skip(SkipReason::Healthy)),
            ("one restart over the threshold is recycled",
                pod().with_restarts(4).owned_by_rs("web").build(), none.clone(), 0, Decision::Recycle { reason: Reason::RestartThreshold }),
            ("restarts over the threshold a week ago, Ready since: left alone, and said so",
                pod().with_restarts(4).last_finished(7 * 86_400).ready(true, 7 * 86_400).owned_by_rs("web").build(), none.clone(), 0, Decision::Skip(SkipReason::RestartsInThePast)),
            ("over the threshold and Ready, but restarted within the rate window: recycled",
                pod().with_restarts(4).last_finished(100).ready(true, 90).owned_by_rs("web").build(), none.clone(), 0, Decision::Recycle { reason: Reason::RestartThreshold }),
            ("over the threshold, restarts long ago, but not Ready now: recycled",
                pod().with_restarts(4).last_finished(7 * 86_400).ready(false, 60).owned_by_rs("web").build(), none.clone(), 0, Decision::Recycle { reason: Reason::RestartThreshold }),
            ("over the threshold, restarts long ago, Ready, but a container waits: recycled",
                pod().with_restarts(4).last_finished(7 * 86_400).ready(true, 60).waiting("CrashLoopBackOff").owned_by_rs("web").build(), none.clone(), 0, Decision::Recycle { reason: Reason::CrashLoopBackOff }),
            ("restarts are summed across containers",
                pod().with_restarts(2).with_container_restarts("sidecar", 2).owned_by_rs("web").build(), none.clone(), 0, Decision::Recycle { reason: Reason::RestartThreshold }),
            ("crash loop over the threshold has its own reason",
                pod().with_restarts(5).waiting("CrashLoopBackOff").owned_by_rs("web").build(), none.clone(), 0, Decision::Recycle { reason: Reason::CrashLoopBackOff }),
            ("crash loop under the threshold is left to the kubelet",
                pod().with_restarts(1).waiting("CrashLoopBackOff").owned_by_rs("web").build(), none.clone(), 0, Decision::Skip(SkipReason::Healthy)),
            ("oom kill over the threshold has its own reason",
                pod().with_restarts(5).last_terminated("OOMKilled", 137).waiting("CrashLoopBackOff").owned_by_rs("web").build(), none.clone(), 0, Decision::Recycle { reason: Reason::OomKilled }),
            ("restart rate triggers below the lifetime threshold",
                pod().with_restarts(3).owned_by_rs("web").build(), none.clone(), 3, Decision::Recycle { reason: Reason::RestartRate }),
            ("restart rate one below its limit does not trigger",
                pod().with_restarts(2).owned_by_rs("web").build(), none.clone(), 2, Decision::Skip(SkipReason::Healthy)),
            ("image pull back-off past the grace period is recycled",
                pod().waiting("ImagePullBackOff").aged(600).owned_by_rs("web").build(), none.clone(), 0, Decision::Recycle { reason: Reason::ImagePullBackOff }),
            ("err image pull past the grace period is recycled",
                pod().waiting("ErrImagePull").aged(600).owned_by_rs("web").build(), none.clone(), 0, Decision::Recycle { reason: Reason::ImagePullBackOff }),
            ("image pull back-off within the grace period is skipped",
                pod().waiting("ImagePullBackOff").aged(100).owned_by_rs("web").build(), none.clone(), 0, Decision::Skip(SkipReason::Healthy)),
            ("terminating pod is skipped",
                pod().with_restarts(9).terminating().owned_by_rs("web").build(), none.clone(), 0, Decision::Skip(SkipReason::Terminating)),
            ("excluded namespace is skipped",
                pod().in_namespace("kube-system").with_restarts(9).owned_by_rs("web").build(), none.clone(), 0, Decision::Skip(SkipReason::OutOfScope)),
            ("opted-out pod is skipped and reported",
                pod().with_restarts(9).annotated(IGNORE_ANNOTATION, "true").owned_by_rs("web").build(), none.clone(), 0, Decision::Skip(SkipReason::OptedOut)),
            ("opt-out value is case-insensitive",
                pod().with_restarts(9).annotated(IGNORE_ANNOTATION, "True").owned_by_rs("web").build(), none.clone(), 0, Decision::Skip(SkipReason::OptedOut)),
            ("ignore annotation set to false does not opt out",
                pod().with_restarts(9).annotated(IGNORE_ANNOTATION, "false").owned_by_rs("web").build(), none.clone(), 0, Decision::Recycle { reason: Reason::RestartThreshold }),
            ("bare pod is never recycled",
                pod().with_restarts(9).build(), none.clone(), 0, Decision::Skip(SkipReason::NoController)),
            ("owner without controller flag counts as bare",
                pod().with_restarts(9).owned_by_non_controller("cm").build(), none.clone(), 0, Decision::Skip(SkipReason::NoController)),
            ("young pod waits until the minimum age",
                pod().with_restarts(9).aged(10).owned_by_rs("web").build(), none.clone(), 0, Decision::Wait { reason: Reason::RestartThreshold, cause: WaitCause::MinAge, until: at(50) }),
            ("pod exactly at the minimum age is recycled",
                pod().with_restarts(9).aged(60).owned_by_rs("web").build(), none.clone(), 0, Decision::Recycle { reason: Reason::RestartThreshold }),
            ("workload in cooldown waits",
                pod().with_restarts(9).owned_by_rs("web").build(), hist(&[100]), 0, Decision::Wait { reason: Reason::RestartThreshold, cause: WaitCause::Cooldown, until: at(200) }),
            ("cooldown just over is recycled",
                pod().with_restarts(9).owned_by_rs("web").build(), hist(&[300]), 0, Decision::Recycle { reason: Reason::RestartThreshold }),
            ("workload at the window cap waits for the oldest recycle to leave the window",
                pod().with_restarts(9).owned_by_rs("web").build(), hist(&[3000, 1000]), 0, Decision::Wait { reason: Reason::RestartThreshold, cause: WaitCause::RateLimited, until: at(600) }),
            ("workload at max retries gives up",
                pod().with_restarts(9).owned_by_rs("web").build(), hist(&[20_000, 10_000, 1000]), 0, Decision::GiveUp { reason: Reason::RestartThreshold, recycles: 3 }),
            ("recycles outside the give-up window do not count",
                pod().with_restarts(9).owned_by_rs("web").build(), hist(&[200_000, 100_000, 1000]), 0, Decision::Recycle { reason: Reason::RestartThreshold }),
            ("give-up wins over cooldown",
                pod().with_restarts(9).owned_by_rs("web").build(), hist(&[20_000, 10_000, 10]), 0, Decision::GiveUp { reason: Reason::RestartThreshold, recycles: 3 }),
        ];
        for (name, pod, history, recent, want) in cases {
            assert_eq!(
                decide(&pod, &p, &history, &Observed::restarts(recent), 0, NOW),
                want,
                "case: {name}"
            );
        }
    }

    #[test]
    fn pod_outside_the_watched_namespace_list_is_out_of_scope() {
        let mut p = policy();
        p.namespaces = vec!["shop".into()];
        let other = pod()
            .in_namespace("other")
            .with_restarts(9)
            .owned_by_rs("web")
            .build();
        assert_eq!(
            decide(
                &other,
                &p,
                &WorkloadHistory::default(),
                &Observed::restarts(0),
                0,
                NOW
            ),
            Decision::Skip(SkipReason::OutOfScope)
        );
        let shop = pod()
            .in_namespace("shop")
            .with_restarts(9)
            .owned_by_rs("web")
            .build();
        assert!(matches!(
            decide(
                &shop,
                &p,
                &WorkloadHistory::default(),
                &Observed::restarts(0),
                0,
                NOW
            ),
            Decision::Recycle { .. }
        ));
    }

    #[test]
    fn rate_trigger_can_be_switched_off() {
        let mut p = policy();
        p.rate_restarts = 0;
        let pod = pod().with_restarts(1).owned_by_rs("web").build();
        assert_eq!(
            decide(
                &pod,
                &p,
                &WorkloadHistory::default(),
                &Observed::restarts(50),
                0,
                NOW
            ),
            Decision::Skip(SkipReason::Healthy)
        );
    }

    #[test]
    fn zero_min_age_and_cooldown_recycle_immediately() {
        let mut p = policy();
        p.min_pod_age = secs(0);
        p.cooldown = secs(0);
        let pod = pod().with_restarts(9).aged(0).owned_by_rs("web").build();
        assert_eq!(
            decide(&pod, &p, &hist(&[0]), &Observed::restarts(0), 0, NOW),
            Decision::Recycle {
                reason: Reason::RestartThreshold
            }
        );
    }

    #[test]
    fn reason_labels_are_distinct() {
        let labels = [
            Reason::RestartThreshold,
            Reason::RestartRate,
            Reason::CrashLoopBackOff,
            Reason::OomKilled,
            Reason::ImagePullBackOff,
            Reason::NotReady,
        ]
        .map(Reason::label);
        let mut sorted = labels.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), labels.len());
    }

    /// A HealingPolicy-style policy: every trigger off, action evict.
    fn hp_policy() -> Policy {
        let mut p = policy();
        p.restart_threshold = None;
        p.rate_restarts = 0;
        p.image_pull_grace = None;
        p
    }

    fn fires(p: &Policy, pod: &Pod) -> Option<Reason> {
        trigger(pod, p, &Observed::default(), NOW)
    }

    #[test]
    fn a_policy_with_every_trigger_off_never_fires() {
        let p = hp_policy();
        let sick = pod()
            .with_restarts(50)
            .waiting("CrashLoopBackOff")
            .last_terminated("OOMKilled", 137)
            .ready(false, 3600)
            .build();
        assert_eq!(fires(&p, &sick), None);
    }

    #[test]
    fn restart_count_trigger_fires_over_its_count_only() {
        let mut p = hp_policy();
        p.restart_threshold = Some(4);
        assert_eq!(fires(&p, &pod().with_restarts(4).build()), None);
        assert_eq!(
            fires(&p, &pod().with_restarts(5).build()),
            Some(Reason::RestartThreshold)
        );
    }

    #[test]
    fn crash_loop_trigger_fires_on_its_own_when_enabled() {
        let mut p = hp_policy();
        let looping = pod().with_restarts(1).waiting("CrashLoopBackOff").build();
        assert_eq!(fires(&p, &looping), None);
        p.crash_loop = true;
        assert_eq!(fires(&p, &looping), Some(Reason::CrashLoopBackOff));
        assert_eq!(fires(&p, &pod().with_restarts(1).build()), None);
    }

    #[test]
    fn oom_killed_trigger_fires_on_its_own_when_enabled() {
        let mut p = hp_policy();
        let oom = pod()
            .with_restarts(1)
            .last_terminated("OOMKilled", 137)
            .build();
        assert_eq!(fires(&p, &oom), None);
        p.oom_killed = true;
        assert_eq!(fires(&p, &oom), Some(Reason::OomKilled));
        let errored = pod().with_restarts(1).last_terminated("Error", 1).build();
        assert_eq!(fires(&p, &errored), None);
    }

    fn leaking() -> Observed {
        Observed {
            recent_restarts: 0,
            leak: Some(Leak {
                container: "app".into(),
                usage_bytes: 115 << 20,
                limit_bytes: 128 << 20,
                rising_share: 1.0,
                samples: 14,
                bytes_per_sec: 524_288.0,
                time_to_limit: Some(secs(26)),
            }),
            error_ratio: None,
            pool: None,
        }
    }

    #[test]
    fn pool_exhaustion_trigger_fires_on_a_confirmed_exhaustion_only_when_enabled() {
        let exhausted = Observed {
            pool: Some(Exhaustion {
                saturation: 1.0,
                saturated_for: secs(40),
                readiness_failing: true,
                latency: None,
            }),
            ..Observed::default()
        };
        let p = hp_policy();
        let healthy = pod().build();
        assert_eq!(trigger(&healthy, &p, &exhausted, NOW), None, "trigger off");
        let mut p = hp_policy();
        p.pool_exhaustion = Some(PoolRule {
            saturation: 1.0,
            saturated_for: secs(30),
            latency_seconds: None,
        });
        assert_eq!(
            trigger(&healthy, &p, &exhausted, NOW),
            Some(Reason::PoolExhausted)
        );
        assert_eq!(trigger(&healthy, &p, &Observed::default(), NOW), None);
    }

    #[test]
    fn memory_trend_trigger_fires_on_a_leak_only_when_enabled() {
        let mut p = hp_policy();
        let healthy = pod().build();
        assert_eq!(trigger(&healthy, &p, &leaking(), NOW), None, "trigger off");
        p.memory_trend = Some(LeakRule::default());
        assert_eq!(
            trigger(&healthy, &p, &leaking(), NOW),
            Some(Reason::MemoryLeak)
        );
        assert_eq!(fires(&p, &healthy), None, "no leak measured");
        // Before the OOM kill it is the only signal; with two enabled and a confidence of 1,
        // the leak alone is not enough.
        p.oom_killed = true;
        p.confidence = Some(1.0);
        assert_eq!(trigger(&healthy, &p, &leaking(), NOW), None);
        assert!(matches!(
            decide(
                &pod().owned_by_rs("web").build(),
                &hp_policy_with_leak(),
                &WorkloadHistory::default(),
                &leaking(),
                0,
                NOW
            ),
            Decision::Recycle {
                reason: Reason::MemoryLeak
            }
        ));
    }

    #[test]
    fn error_rate_trigger_fires_above_its_threshold_only() {
        let mut p = hp_policy();
        let with = |ratio| Observed {
            error_ratio: ratio,
            ..Observed::default()
        };
        let healthy = pod().build();
        assert_eq!(
            trigger(&healthy, &p, &with(Some(0.5)), NOW),
            None,
            "trigger off"
        );
        p.error_rate = Some(0.1);
        assert_eq!(
            trigger(&healthy, &p, &with(Some(0.5)), NOW),
            Some(Reason::ErrorRate)
        );
        assert_eq!(
            trigger(&healthy, &p, &with(Some(0.1)), NOW),
            None,
            "not above"
        );
        assert_eq!(
            trigger(&healthy, &p, &with(None), NOW),
            None,
            "no answer: fail safe"
        );
    }

    fn hp_policy_with_leak() -> Policy {
        let mut p = hp_policy();
        p.memory_trend = Some(LeakRule::default());
        p
    }

    #[test]
    fn image_pull_trigger_waits_for_its_grace_and_can_be_off() {
        let mut p = hp_policy();
        let pulling = |age| pod().waiting("ErrImagePull").aged(age).build();
        assert_eq!(fires(&p, &pulling(600)), None);
        p.image_pull_grace = Some(secs(120));
        assert_eq!(fires(&p, &pulling(119)), None);
        assert_eq!(fires(&p, &pulling(120)), Some(Reason::ImagePullBackOff));
        assert_eq!(next_check(&pulling(100), &p, NOW), Some(at(20)));
    }

    #[test]
    fn not_ready_trigger_fires_after_its_duration_and_says_when_to_look_again() {
        let mut p = hp_policy();
        p.not_ready_for = Some(secs(60));
        let unready = |s| pod().ready(false, s).build();
        assert_eq!(fires(&p, &unready(59)), None);
        assert_eq!(next_check(&unready(59), &p, NOW), Some(at(1)));
        assert_eq!(fires(&p, &unready(60)), Some(Reason::NotReady));
        let ready = pod().ready(true, 3600).build();
        assert_eq!(fires(&p, &ready), None);
        assert_eq!(next_check(&ready, &p, NOW), None);
        // No Ready condition at all (not scheduled yet): not a not-ready signal.
        assert_eq!(fires(&p, &pod().build()), None);
    }

    #[test]
    fn the_first_firing_trigger_names_the_reason() {
        let mut p = hp_policy();
        p.crash_loop = true;
        p.oom_killed = true;
        p.not_ready_for = Some(secs(10));
        let all = pod()
            .with_restarts(2)
            .waiting("CrashLoopBackOff")
            .last_terminated("OOMKilled", 137)
            .ready(false, 100)
            .build();
        assert_eq!(fires(&p, &all), Some(Reason::OomKilled));
        p.oom_killed = false;
        assert_eq!(fires(&p, &all), Some(Reason::CrashLoopBackOff));
    }

    #[test]
    fn confidence_needs_that_share_of_the_enabled_triggers() {
        let mut p = hp_policy();
        p.crash_loop = true;
        p.oom_killed = true;
        p.not_ready_for = Some(secs(10));
        p.confidence = Some(0.6);
        let one = pod().with_restarts(1).waiting("CrashLoopBackOff").build();
        let two = pod()
            .with_restarts(1)
            .waiting("CrashLoopBackOff")
            .ready(false, 100)
            .build();
        let three = pod()
            .with_restarts(1)
            .waiting("CrashLoopBackOff")
            .last_terminated("OOMKilled", 137)
            .ready(false, 100)
            .build();
        assert_eq!(fires(&p, &one), None, "1/3 < 0.6");
        assert_eq!(
            fires(&p, &two),
            Some(Reason::CrashLoopBackOff),
            "2/3 >= 0.6"
        );
        assert_eq!(fires(&p, &three), Some(Reason::OomKilled));
        p.confidence = Some(1.0);
        assert_eq!(fires(&p, &two), None, "2/3 < 1");
        assert_eq!(
            fires(&p, &three),
            Some(Reason::OomKilled),
            "3/3 counts as 1.0"
        );
    }

    #[test]
    fn too_few_healthy_siblings_wait_and_enough_act() {
        let mut p = policy();
        p.min_healthy = 2;
        let sick = pod().with_restarts(9).owned_by_rs("web").build();
        let none = WorkloadHistory::default();
        assert_eq!(
            decide(&sick, &p, &none, &Observed::restarts(0), 1, NOW),
            Decision::Wait {
                reason: Reason::RestartThreshold,
                cause: WaitCause::MinHealthy,
                until: NOW + MIN_HEALTHY_RECHECK
            }
        );
        assert!(matches!(
            decide(&sick, &p, &none, &Observed::restarts(0), 2, NOW),
            Decision::Recycle { .. }
        ));
        // Give-up and cooldown are decided before the sibling check.
        assert!(matches!(
            decide(
                &sick,
                &p,
                &hist(&[20_000, 10_000, 1000]),
                &Observed::restarts(0),
                0,
                NOW
            ),
            Decision::GiveUp { .. }
        ));
    }

    #[test]
    fn each_action_is_carried_out_dry_run_observed_or_refused() {
        let mut p = policy();
        let dep = Some("Deployment");
        let sts = Some("StatefulSet");
        for (action, kind, dry, want) in [
            (Action::Evict, dep, false, Execution::Act(Action::Evict)),
            (Action::Evict, sts, false, Execution::Act(Action::Evict)),
            (Action::Evict, dep, true, Execution::DryRun(Action::Evict)),
            (
                Action::RolloutRestart,
                dep,
                false,
                Execution::Act(Action::RolloutRestart),
            ),
            (
                Action::RolloutRestart,
                sts,
                false,
                Execution::Unsupported(Action::RolloutRestart),
            ),
            (
                Action::RolloutRestart,
                dep,
                true,
                Execution::DryRun(Action::RolloutRestart),
            ),
            (
                Action::ScaleTo(0),
                dep,
                false,
                Execution::Act(Action::ScaleTo(0)),
            ),
            (
                Action::ScaleTo(0),
                sts,
                false,
                Execution::Unsupported(Action::ScaleTo(0)),
            ),
            (
                Action::ScaleTo(2),
                dep,
                true,
                Execution::DryRun(Action::ScaleTo(2)),
            ),
            (Action::Observe, dep, false, Execution::Observe),
            (Action::Observe, dep, true, Execution::Observe),
            (
                Action::Evict,
                None,
                false,
                Execution::Unsupported(Action::Evict),
            ),
        ] {
            p.action = action;
            p.dry_run = dry;
            assert_eq!(
                execution(&p, false, kind),
                want,
                "{action:?} on {kind:?}, dry-run {dry}"
            );
        }
        p.action = Action::Evict;
        p.dry_run = false;
        assert_eq!(
            execution(&p, true, dep),
            Execution::DryRun(Action::Evict),
            "controller-wide dry-run wins"
        );
    }

    #[test]
    fn action_labels_are_distinct() {
        let labels = [
            Action::Evict,
            Action::RolloutRestart,
            Action::ScaleTo(1),
            Action::Observe,
        ]
        .map(Action::label);
        let mut sorted = labels.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), labels.len());
    }

    #[test]
    fn only_refusals_of_unhealthy_pods_are_reported() {
        assert!(SkipReason::OptedOut.is_reported());
        assert!(SkipReason::NoController.is_reported());
        assert!(!SkipReason::Healthy.is_reported());
        assert!(!SkipReason::Terminating.is_reported());
    }
}
