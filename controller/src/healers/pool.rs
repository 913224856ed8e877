//! Connection-pool exhaustion: a pod alive but out of connections.
//!
//! One signal is not enough. A pool at 100 % is what a busy, healthy pod looks like at its peak;
//! restarting it throws away the work in flight and moves the load to its siblings. The trigger
//! fires only when the pool has been saturated for a while **and** the pod shows the damage:
//! - its readiness fails (the app's `/ready` fails while every connection is held), or
//! - with a latency query configured, its latency is over the threshold.
//!
//! Pure: the saturation and latency answers come from Prometheus through [`crate::healers::promql`];
//! readiness is the pod's own Ready condition; time is passed in.

use std::collections::HashMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Thresholds of the pool-exhaustion trigger (`spec.triggers.poolExhaustion`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolRule {
    /// Saturation (in use / max, 0 to 1) at or above which the pool counts as saturated.
    pub saturation: f64,
    /// The pool must stay saturated this long.
    pub saturated_for: SignedDuration,
    /// Latency (seconds) over which the latency signal fires (`None` = no latency signal).
    pub latency_seconds: Option<f64>,
}

/// What Prometheus said about one pod.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PoolSignals {
    /// Latest saturation answer and when it came.
    pub saturation: Option<(f64, Timestamp)>,
    /// Since when every answer has been saturated (`None` = the latest was not).
    pub saturated_since: Option<Timestamp>,
    /// Latest latency answer (seconds) and when it came.
    pub latency: Option<(f64, Timestamp)>,
}

/// The verdict, with what the Event tells a human.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exhaustion {
    /// Latest saturation (0 to 1).
    pub saturation: f64,
    /// How long the pool has been saturated.
    pub saturated_for: SignedDuration,
    /// The pod's readiness fails.
    pub readiness_failing: bool,
    /// Latency over the threshold (seconds), when that is a confirming signal.
    pub latency: Option<f64>,
}

impl Exhaustion {
    /// One line for Events: `pool 100 % in use for 42s and readiness failing`.
    pub fn describe(&self) -> String {
        let mut confirming = Vec::new();
        if self.readiness_failing {
            confirming.push("readiness failing".to_owned());
        }
        if let Some(l) = self.latency {
            confirming.push(format!("latency {:.0} ms", l * 1000.0));
        }
        format!(
            "pool {:.0} % in use for {}s and {}",
            self.saturation * 100.0,
            self.saturated_for.as_secs(),
            confirming.join(" and ")
        )
    }
}

/// Per-pod signals, keyed by pod UID (a new pod with the same name starts afresh).
#[derive(Debug, Default)]
pub struct PoolTracker {
    pods: HashMap<String, PoolSignals>,
}

impl PoolTracker {
    /// Keep one saturation answer (`None`: the query returned nothing for the pod, which breaks
    /// the saturated streak — no answer never counts as saturated).
    pub fn observe_saturation(
        &mut self,
        uid: &str,
        value: Option<f64>,
        rule: &PoolRule,
        now: Timestamp,
    ) {
        let s = self.pods.entry(uid.to_owned()).or_default();
        match value.filter(|v| v.is_finite()) {
            Some(v) => {
                s.saturation = Some((v, now));
                if v + f64::EPSILON >= rule.saturation {
                    s.saturated_since.get_or_insert(now);
                } else {
                    s.saturated_since = None;
                }
            }
            None => {
                s.saturation = None;
                s.saturated_since = None;
            }
        }
    }

    /// Keep one latency answer (`None`: no answer for the pod).
    pub fn observe_latency(&mut self, uid: &str, value: Option<f64>, now: Timestamp) {
        let s = self.pods.entry(uid.to_owned()).or_default();
        s.latency = value.filter(|v| v.is_finite()).map(|v| (v, now));
    }

    /// The signals of one pod.
    pub fn get(&self, uid: &str) -> Option<&PoolSignals> {
        self.pods.get(uid)
    }

    /// Keep only the pods `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.pods.retain(|uid, _| keep(uid));
    }
}

/// Whether the pod is exhausted: saturated for `saturated_for` (by answers no older than
/// `max_age`) and readiness failing or latency over its threshold.
pub fn assess(
    signals: &PoolSignals,
    rule: &PoolRule,
    ready: bool,
    now: Timestamp,
    max_age: SignedDuration,
) -> Option<Exhaustion> {
    let fresh = |at: Timestamp| now.duration_since(at) <= max_age;
    let (saturation, _) = signals.saturation.filter(|(_, at)| fresh(*at))?;
    let since = signals.saturated_since?;
    let saturated_for = now.duration_since(since);
    if saturated_for < rule.saturated_for {
        return None;
    }
    let latency = rule.latency_seconds.and_then(|threshold| {
        signals
            .latency
            .filter(|(l, lat_at)| fresh(*lat_at) && *l > threshold)
            .map(|(l, _)| l)
    });
    (!ready || latency.is_some()).then_some(Exhaustion {
        saturation,
        saturated_for,
        readiness_failing: !ready,
        latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: PoolRule = PoolRule {
        saturation: 1.0,
        saturated_for: SignedDuration::from_secs(30),
        latency_seconds: Some(0.5),
    };
    const AGE: SignedDuration = SignedDuration::from_secs(90);

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("valid")
    }

    /// Saturation answers every 10 s from 0 to `until`, each `value`.
    fn series(values: &[f64]) -> PoolTracker {
        let mut tr = PoolTracker::default();
        for (i, v) in values.iter().enumerate() {
            let at = t(10 * i64::try_from(i).expect("small"));
            tr.observe_saturation("u", Some(*v), &RULE, at);
        }
        tr
    }

    #[test]
    fn a_saturated_pool_alone_is_a_busy_pod_not_a_broken_one() {
        let tr = series(&[1.0, 1.0, 1.0, 1.0, 1.0]);
        let s = tr.get("u").expect("tracked");
        assert_eq!(
            assess(s, &RULE, true, t(40), AGE),
            None,
            "ready, no latency"
        );
        let mut tr = tr;
        tr.observe_latency("u", Some(0.2), t(40));
        let s = tr.get("u").expect("tracked");
        assert_eq!(
            assess(s, &RULE, true, t(40), AGE),
            None,
            "latency under 0.5 s"
        );
    }

    #[test]
    fn saturated_long_enough_and_unready_or_slow_fires() {
        let mut tr = series(&[1.0, 1.0, 1.0, 1.0]);
        let s = *tr.get("u").expect("tracked");
        let e = assess(&s, &RULE, false, t(30), AGE).expect("fires");
        assert_eq!(e.saturated_for, SignedDuration::from_secs(30));
        assert!(e.readiness_failing);
        assert_eq!(
            e.describe(),
            "pool 100 % in use for 30s and readiness failing"
        );
        tr.observe_latency("u", Some(2.5), t(30));
        let s = tr.get("u").expect("tracked");
        let e = assess(s, &RULE, true, t(30), AGE).expect("fires on latency");
        assert!(!e.readiness_failing);
        assert_eq!(
            e.describe(),
            "pool 100 % in use for 30s and latency 2500 ms"
        );
    }

    #[test]
    fn not_saturated_for_long_enough_waits() {
        let tr = series(&[1.0, 1.0, 1.0]);
        let s = tr.get("u").expect("tracked");
        assert_eq!(assess(s, &RULE, false, t(20), AGE), None, "20 s of 30");
    }

    #[test]
    fn one_answer_below_saturation_restarts_the_streak() {
        let tr = series(&[1.0, 1.0, 1.0, 0.9, 1.0, 1.0]);
        let s = tr.get("u").expect("tracked");
        assert_eq!(s.saturated_since, Some(t(40)));
        assert_eq!(assess(s, &RULE, false, t(50), AGE), None);
    }

    #[test]
    fn no_answer_breaks_the_streak_and_stale_answers_never_fire() {
        let mut tr = series(&[1.0, 1.0, 1.0, 1.0]);
        tr.observe_saturation("u", None, &RULE, t(40));
        let s = tr.get("u").expect("tracked");
        assert_eq!(assess(s, &RULE, false, t(40), AGE), None, "no answer");
        let tr = series(&[1.0, 1.0, 1.0, 1.0]);
        let s = tr.get("u").expect("tracked");
        assert_eq!(
            assess(s, &RULE, false, t(200), AGE),
            None,
            "last answer 170 s old"
        );
        let mut tr = series(&[1.0, 1.0, 1.0, 1.0]);
        tr.observe_saturation("u", Some(f64::NAN), &RULE, t(40));
        assert_eq!(
            tr.get("u").and_then(|s| s.saturated_since),
            None,
            "NaN is no answer"
        );
    }

    #[test]
    fn without_a_latency_rule_only_readiness_confirms() {
        let rule = PoolRule {
            latency_seconds: None,
            ..RULE
        };
        let mut tr = PoolTracker::default();
        for i in 0..4 {
            tr.observe_saturation("u", Some(1.0), &rule, t(10 * i));
        }
        tr.observe_latency("u", Some(9.0), t(30));
        let s = tr.get("u").expect("tracked");
        assert_eq!(assess(s, &rule, true, t(30), AGE), None);
        assert!(assess(s, &rule, false, t(30), AGE).is_some());
    }

    #[test]
    fn a_lower_saturation_threshold_counts_a_nearly_full_pool() {
        let rule = PoolRule {
            saturation: 0.9,
            ..RULE
        };
        let mut tr = PoolTracker::default();
        for i in 0..4 {
            tr.observe_saturation("u", Some(0.9), &rule, t(10 * i));
        }
        assert!(assess(tr.get("u").expect("tracked"), &rule, false, t(30), AGE).is_some());
    }

    #[test]
    fn retain_forgets_gone_pods() {
        let mut tr = series(&[1.0]);
        tr.observe_saturation("v", Some(1.0), &RULE, t(0));
        tr.retain(|uid| uid == "v");
        assert!(tr.get("u").is_none());
        assert!(tr.get("v").is_some());
    }
}
