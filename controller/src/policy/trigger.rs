//! Whether a pod is unhealthy, and why: the triggers of a policy over the pod's status and what
//! the signal sources observed. Pure.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;

use super::pod::{
    age, container_statuses, image_pull_failing, is_ready, last_terminated_reason, not_ready_since,
    total_restarts, waiting_reason,
};
use super::rules::Policy;
use crate::healers::memory_trend::rule::Leak;
use crate::healers::pool::Exhaustion;

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
    /// A container found leaking by the memory trend
    /// ([`crate::healers::memory_trend::rule::assess`]).
    pub leak: Option<Leak>,
    /// The latest answer of the governing policy's errorRate query (`None` = no fresh answer).
    pub error_ratio: Option<f64>,
    /// The pod found out of connections ([`crate::healers::pool::assess`]).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{NOW, at, pod, policy, secs};
    use crate::healers::memory_trend::rule::LeakRule;
    use crate::healers::pool::PoolRule;

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
            leak: Some(crate::fixtures::leak()),
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
        // (That the leak alone recycles an owned pod: `policy::decide`'s tests.)
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
}
