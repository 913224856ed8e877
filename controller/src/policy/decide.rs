//! The decision, as a pure function of the pod, the policy, what we remember and the time.
//!
//! Order matters and is the contract documented in the README's decision table:
//! 1. silent skips (terminating, out of scope, healthy) — nothing to report;
//! 2. refusals of a pod that *is* unhealthy (opted out, bare pod) — reported as `NotRecycled`;
//! 3. waits (too young, cooldown, window cap) — reported, re-checked at `until`;
//! 4. give-up after `max_retries` recycles of the workload;
//! 5. wait while fewer than `min_healthy` sibling pods are Ready;
//! 6. act (the policy's [`Action`]; "recycle" in names and Events for historical reasons).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::action::Action;
use super::pod::{has_controller, opted_out};
use super::rules::{Policy, in_scope};
use super::trigger::{Observed, Reason, lifetime_over_threshold, trigger};
use crate::history::WorkloadHistory;

/// How soon a pod waiting for `minHealthyReplicas` is looked at again.
pub const MIN_HEALTHY_RECHECK: SignedDuration = SignedDuration::from_secs(10);

/// How an `Act` decision is carried out.
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

/// Carry out an `Act` decision for a pod owned by a `owner_kind` workload: the policy's action,
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
    /// Bounded label of `not_recycled_total{reason}`.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::Healthy => "healthy",
            SkipReason::Terminating => "terminating",
            SkipReason::OutOfScope => "out_of_scope",
            SkipReason::OptedOut => "opted_out",
            SkipReason::NoController => "no_controller",
            SkipReason::RestartsInThePast => "restarts_in_the_past",
        }
    }

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
    /// Bounded label of `not_recycled_total{reason}`.
    pub fn label(self) -> &'static str {
        match self {
            WaitCause::MinAge => "min_age",
            WaitCause::Cooldown => "cooldown",
            WaitCause::RateLimited => "rate_limited",
            WaitCause::MinHealthy => "min_healthy",
        }
    }

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
    /// Take the policy's `action` (evict, rollout restart, scale, or only report it: `none`).
    Act {
        /// Which action.
        action: Action,
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
    Decision::Act {
        action: policy.action,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{NOW, at, pod, policy, secs};
    use crate::policy::pod::IGNORE_ANNOTATION;

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
                pod().with_restarts(4).owned_by_rs("web").build(), none.clone(), 0, Decision::Act { action: Action::Evict, reason: Reason::RestartThreshold }),
            ("restarts over the threshold a week ago, Ready since: left alone, and said so",
                pod().with_restarts(4).last_finished(7 * 86_400).ready(true, 7 * 86_400).owned_by_rs("web").build(), none.clone(), 0, Decision::Skip(SkipReason::RestartsInThePast)),
            ("over the threshold and Ready, but restarted within the rate window: recycled",
                pod().with_restarts(4).last_finished(100).ready(true, 90).owned_by_rs("web").build(), none.clone(), 0, Decision::Act { action: Action::Evict, reason: Reason::RestartThreshold }),
            ("over the threshold, restarts long ago, but not Ready now: recycled",
                pod().with_restarts(4).last_finished(7 * 86_400).ready(false, 60).owned_by_rs("web").build(), none.clone(), 0, Decision::Act { action: Action::Evict, reason: Reason::RestartThreshold }),
            ("over the threshold, restarts long ago, Ready, but a container waits: recycled",
                pod().with_restarts(4).last_finished(7 * 86_400).ready(true, 60).waiting("CrashLoopBackOff").owned_by_rs("web").build(), none.clone(), 0, Decision::Act { action: Action::Evict, reason: Reason::CrashLoopBackOff }),
            ("restarts are summed across containers",
                pod().with_restarts(2).with_container_restarts("sidecar", 2).owned_by_rs("web").build(), none.clone(), 0, Decision::Act { action: Action::Evict, reason: Reason::RestartThreshold }),
            ("crash loop over the threshold has its own reason",
                pod().with_restarts(5).waiting("CrashLoopBackOff").owned_by_rs("web").build(), none.clone(), 0, Decision::Act { action: Action::Evict, reason: Reason::CrashLoopBackOff }),
            ("crash loop under the threshold is left to the kubelet",
                pod().with_restarts(1).waiting("CrashLoopBackOff").owned_by_rs("web").build(), none.clone(), 0, Decision::Skip(SkipReason::Healthy)),
            ("oom kill over the threshold has its own reason",
                pod().with_restarts(5).last_terminated("OOMKilled", 137).waiting("CrashLoopBackOff").owned_by_rs("web").build(), none.clone(), 0, Decision::Act { action: Action::Evict, reason: Reason::OomKilled }),
            ("restart rate triggers below the lifetime threshold",
                pod().with_restarts(3).owned_by_rs("web").build(), none.clone(), 3, Decision::Act { action: Action::Evict, reason: Reason::RestartRate }),
            ("restart rate one below its limit does not trigger",
                pod().with_restarts(2).owned_by_rs("web").build(), none.clone(), 2, Decision::Skip(SkipReason::Healthy)),
            ("image pull back-off past the grace period is recycled",
                pod().waiting("ImagePullBackOff").aged(600).owned_by_rs("web").build(), none.clone(), 0, Decision::Act { action: Action::Evict, reason: Reason::ImagePullBackOff }),
            ("err image pull past the grace period is recycled",
                pod().waiting("ErrImagePull").aged(600).owned_by_rs("web").build(), none.clone(), 0, Decision::Act { action: Action::Evict, reason: Reason::ImagePullBackOff }),
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
                pod().with_restarts(9).annotated(IGNORE_ANNOTATION, "false").owned_by_rs("web").build(), none.clone(), 0, Decision::Act { action: Action::Evict, reason: Reason::RestartThreshold }),
            ("bare pod is never recycled",
                pod().with_restarts(9).build(), none.clone(), 0, Decision::Skip(SkipReason::NoController)),
            ("owner without controller flag counts as bare",
                pod().with_restarts(9).owned_by_non_controller("cm").build(), none.clone(), 0, Decision::Skip(SkipReason::NoController)),
            ("young pod waits until the minimum age",
                pod().with_restarts(9).aged(10).owned_by_rs("web").build(), none.clone(), 0, Decision::Wait { reason: Reason::RestartThreshold, cause: WaitCause::MinAge, until: at(50) }),
            ("pod exactly at the minimum age is recycled",
                pod().with_restarts(9).aged(60).owned_by_rs("web").build(), none.clone(), 0, Decision::Act { action: Action::Evict, reason: Reason::RestartThreshold }),
            ("workload in cooldown waits",
                pod().with_restarts(9).owned_by_rs("web").build(), hist(&[100]), 0, Decision::Wait { reason: Reason::RestartThreshold, cause: WaitCause::Cooldown, until: at(200) }),
            ("cooldown just over is recycled",
                pod().with_restarts(9).owned_by_rs("web").build(), hist(&[300]), 0, Decision::Act { action: Action::Evict, reason: Reason::RestartThreshold }),
            ("workload at the window cap waits for the oldest recycle to leave the window",
                pod().with_restarts(9).owned_by_rs("web").build(), hist(&[3000, 1000]), 0, Decision::Wait { reason: Reason::RestartThreshold, cause: WaitCause::RateLimited, until: at(600) }),
            ("workload at max retries gives up",
                pod().with_restarts(9).owned_by_rs("web").build(), hist(&[20_000, 10_000, 1000]), 0, Decision::GiveUp { reason: Reason::RestartThreshold, recycles: 3 }),
            ("recycles outside the give-up window do not count",
                pod().with_restarts(9).owned_by_rs("web").build(), hist(&[200_000, 100_000, 1000]), 0, Decision::Act { action: Action::Evict, reason: Reason::RestartThreshold }),
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
            Decision::Act { .. }
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
            Decision::Act {
                action: Action::Evict,
                reason: Reason::RestartThreshold
            }
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
            Decision::Act { .. }
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
    fn only_refusals_of_unhealthy_pods_are_reported() {
        assert!(SkipReason::OptedOut.is_reported());
        assert!(SkipReason::NoController.is_reported());
        assert!(!SkipReason::Healthy.is_reported());
        assert!(!SkipReason::Terminating.is_reported());
    }

    #[test]
    fn a_measured_leak_alone_recycles_an_owned_pod_under_a_memory_trend_policy() {
        let mut p = policy();
        (p.restart_threshold, p.rate_restarts, p.image_pull_grace) = (None, 0, None);
        p.memory_trend = Some(crate::healers::memory_trend::rule::LeakRule::default());
        let leaking = Observed {
            leak: Some(crate::fixtures::leak()),
            ..Observed::default()
        };
        assert!(matches!(
            decide(
                &pod().owned_by_rs("web").build(),
                &p,
                &WorkloadHistory::default(),
                &leaking,
                0,
                NOW
            ),
            Decision::Act {
                reason: Reason::MemoryLeak,
                ..
            }
        ));
    }

    #[test]
    fn not_recycled_labels_are_distinct() {
        let mut labels: Vec<&str> = [
            SkipReason::Healthy,
            SkipReason::Terminating,
            SkipReason::OutOfScope,
            SkipReason::OptedOut,
            SkipReason::NoController,
            SkipReason::RestartsInThePast,
        ]
        .map(SkipReason::label)
        .into_iter()
        .chain(
            [
                WaitCause::MinAge,
                WaitCause::Cooldown,
                WaitCause::RateLimited,
                WaitCause::MinHealthy,
            ]
            .map(WaitCause::label),
        )
        .collect();
        let n = labels.len();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), n);
    }
}
