//! The decision, as a pure function of the pod, the policy, what we remember and the time.
//!
//! Order matters and is the contract documented in the README's decision table:
//! 1. silent skips (terminating, out of scope, healthy) — nothing to report;
//! 2. refusals of a pod that *is* unhealthy (opted out, bare pod) — reported as `NotRecycled`;
//! 3. waits (too young, cooldown, window cap) — reported, re-checked at `until`;
//! 4. give-up after `max_retries` recycles of the workload;
//! 5. recycle.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::history::WorkloadHistory;

/// Annotation that opts a pod out: `selfheal.io/ignore: "true"`.
pub const IGNORE_ANNOTATION: &str = "selfheal.io/ignore";

/// Decision thresholds (built from [`crate::config::Config::policy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Recycle when total restarts exceed this.
    pub restart_threshold: u32,
    /// Recycle when this many restarts were seen within `rate_window` (0 = off).
    pub rate_restarts: u32,
    /// Window of the restart-rate trigger.
    pub rate_window: SignedDuration,
    /// ImagePullBackOff/ErrImagePull counts once the pod is at least this old.
    pub image_pull_grace: SignedDuration,
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
}

impl SkipReason {
    /// Whether the skip concerns an unhealthy pod, i.e. deserves a `NotRecycled` Event.
    pub fn is_reported(self) -> bool {
        matches!(self, SkipReason::OptedOut | SkipReason::NoController)
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
}

impl WaitCause {
    /// Human-readable explanation for Events and logs.
    pub fn describe(self) -> &'static str {
        match self {
            WaitCause::MinAge => "pod is younger than the minimum age",
            WaitCause::Cooldown => "workload was recycled recently (cooldown)",
            WaitCause::RateLimited => "workload hit the recycle limit for the window",
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

/// Whether the pod is unhealthy enough to act on, and why. `recent_restarts` comes from
/// [`crate::history::RestartTracker::observe`].
pub fn trigger(pod: &Pod, policy: &Policy, recent_restarts: u32, now: Timestamp) -> Option<Reason> {
    let image_pull = container_statuses(pod)
        .any(|c| matches!(waiting_reason(c), Some("ImagePullBackOff" | "ErrImagePull")));
    if image_pull && age(pod, now).is_some_and(|a| a >= policy.image_pull_grace) {
        return Some(Reason::ImagePullBackOff);
    }
    let over_threshold = total_restarts(pod) > policy.restart_threshold;
    let over_rate = policy.rate_restarts > 0 && recent_restarts >= policy.rate_restarts;
    if !over_threshold && !over_rate {
        return None;
    }
    if container_statuses(pod).any(|c| last_terminated_reason(c) == Some("OOMKilled")) {
        Some(Reason::OomKilled)
    } else if container_statuses(pod).any(|c| waiting_reason(c) == Some("CrashLoopBackOff")) {
        Some(Reason::CrashLoopBackOff)
    } else if over_threshold {
        Some(Reason::RestartThreshold)
    } else {
        Some(Reason::RestartRate)
    }
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

fn opted_out(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(IGNORE_ANNOTATION))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Decide what to do with `pod`. `history` is the recycle history of the pod's workload (empty
/// for a bare pod), `recent_restarts` the restarts seen within the rate window.
pub fn decide(
    pod: &Pod,
    policy: &Policy,
    history: &WorkloadHistory,
    recent_restarts: u32,
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
    let Some(reason) = trigger(pod, policy, recent_restarts, now) else {
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
                decide(&pod, &p, &history, recent, NOW),
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
            decide(&other, &p, &WorkloadHistory::default(), 0, NOW),
            Decision::Skip(SkipReason::OutOfScope)
        );
        let shop = pod()
            .in_namespace("shop")
            .with_restarts(9)
            .owned_by_rs("web")
            .build();
        assert!(matches!(
            decide(&shop, &p, &WorkloadHistory::default(), 0, NOW),
            Decision::Recycle { .. }
        ));
    }

    #[test]
    fn rate_trigger_can_be_switched_off() {
        let mut p = policy();
        p.rate_restarts = 0;
        let pod = pod().with_restarts(1).owned_by_rs("web").build();
        assert_eq!(
            decide(&pod, &p, &WorkloadHistory::default(), 50, NOW),
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
            decide(&pod, &p, &hist(&[0]), 0, NOW),
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
        ]
        .map(Reason::label);
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
