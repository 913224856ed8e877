//! What the controller remembers between reconciles, kept pure so the policy can be tested.
//!
//! - [`WorkloadHistory`]: when each workload was recycled, for cooldown, the per-window cap and
//!   the give-up limit.
//! - [`RestartTracker`]: restart counts observed per pod over time, for the restart-rate trigger.
//!
//! NB: the history lives in memory. A new leader starts with an empty one, so after a failover a
//! workload can be recycled once more before its cooldown would have ended.

use std::collections::{HashMap, VecDeque};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Identity of a workload: `kind/namespace/name` of the top controlling owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    /// Kind of the owner (`Deployment`, `StatefulSet`, `ReplicaSet`, ...).
    pub kind: String,
    /// Namespace of the owner.
    pub namespace: String,
    /// Name of the owner.
    pub name: String,
}

impl std::fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// Recycles of one workload, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadHistory {
    /// Times of recycles still inside the longest window the policy cares about.
    pub recycles: VecDeque<Timestamp>,
    /// Set once `GivingUp` was reported, so it is reported once per give-up.
    pub gave_up_at: Option<Timestamp>,
}

impl WorkloadHistory {
    /// Most recent recycle.
    pub fn last_recycle(&self) -> Option<Timestamp> {
        self.recycles.back().copied()
    }

    /// Recycles at or after `now - window`.
    pub fn count_since(&self, now: Timestamp, window: SignedDuration) -> u32 {
        let from = now - window;
        u32::try_from(self.recycles.iter().filter(|t| **t >= from).count()).unwrap_or(u32::MAX)
    }

    /// Oldest recycle at or after `now - window`.
    pub fn oldest_since(&self, now: Timestamp, window: SignedDuration) -> Option<Timestamp> {
        let from = now - window;
        self.recycles.iter().copied().find(|t| *t >= from)
    }
}

/// Recycle history of every workload, with reservations so two pods of one workload cannot both
/// pass the cooldown check at the same time.
#[derive(Debug, Default)]
pub struct History {
    workloads: HashMap<WorkloadKey, WorkloadHistory>,
}

impl History {
    /// History of one workload (empty when never recycled).
    pub fn get(&self, key: &WorkloadKey) -> WorkloadHistory {
        self.workloads.get(key).cloned().unwrap_or_default()
    }

    /// Record a recycle (or a reservation for one about to happen).
    pub fn record(&mut self, key: &WorkloadKey, at: Timestamp) {
        let h = self.workloads.entry(key.clone()).or_default();
        h.recycles.push_back(at);
        h.gave_up_at = None;
    }

    /// Take back a reservation made with [`History::record`] when the eviction did not happen.
    pub fn unrecord(&mut self, key: &WorkloadKey, at: Timestamp) {
        if let Some(h) = self.workloads.get_mut(key)
            && let Some(pos) = h.recycles.iter().rposition(|t| *t == at)
        {
            h.recycles.remove(pos);
        }
    }

    /// Mark the workload as given up; returns `false` when it already was (report once).
    pub fn mark_gave_up(&mut self, key: &WorkloadKey, at: Timestamp) -> bool {
        let h = self.workloads.entry(key.clone()).or_default();
        if h.gave_up_at.is_some() {
            return false;
        }
        h.gave_up_at = Some(at);
        true
    }

    /// Forget recycles older than `keep` and workloads with nothing left.
    pub fn prune(&mut self, now: Timestamp, keep: SignedDuration) {
        let from = now - keep;
        self.workloads.retain(|_, h| {
            while h.recycles.front().is_some_and(|t| *t < from) {
                h.recycles.pop_front();
            }
            !h.recycles.is_empty()
        });
    }

    /// Number of workloads remembered.
    pub fn len(&self) -> usize {
        self.workloads.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty()
    }
}

/// Restart counts observed per pod (by UID), for the restart-rate trigger.
#[derive(Debug, Default)]
pub struct RestartTracker {
    pods: HashMap<String, VecDeque<(Timestamp, u32)>>,
}

impl RestartTracker {
    /// Record the pod's current total restarts and return how many happened within `window`.
    ///
    /// Restarts before the first observation are not attributed to the window (unknown time), so
    /// right after start-up the rate is under-counted, never over-counted.
    pub fn observe(
        &mut self,
        pod_uid: &str,
        now: Timestamp,
        restarts: u32,
        window: SignedDuration,
    ) -> u32 {
        let samples = self.pods.entry(pod_uid.to_owned()).or_default();
        if samples.back().is_none_or(|(_, c)| *c != restarts) {
            samples.push_back((now, restarts));
        }
        let from = now - window;
        // Keep one sample at or before the window start as the baseline.
        while samples.len() > 1 && samples.get(1).is_some_and(|(t, _)| *t <= from) {
            samples.pop_front();
        }
        let baseline = samples.front().map_or(restarts, |(_, c)| *c);
        restarts.saturating_sub(baseline)
    }

    /// Forget pods not observed to change within `keep` (deleted pods, mostly).
    pub fn prune(&mut self, now: Timestamp, keep: SignedDuration) {
        let from = now - keep;
        self.pods
            .retain(|_, s| s.back().is_some_and(|(t, _)| *t >= from));
    }

    /// Number of pods tracked.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether no pod is tracked.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid")
    }
    fn d(secs: i64) -> SignedDuration {
        SignedDuration::from_secs(secs)
    }
    fn key() -> WorkloadKey {
        WorkloadKey {
            kind: "Deployment".into(),
            namespace: "ns".into(),
            name: "web".into(),
        }
    }

    #[test]
    fn recycles_are_counted_inside_the_window_only() {
        let mut h = History::default();
        h.record(&key(), t(0));
        h.record(&key(), t(100));
        h.record(&key(), t(200));
        let w = h.get(&key());
        assert_eq!(w.count_since(t(250), d(100)), 1);
        assert_eq!(w.count_since(t(250), d(1000)), 3);
        assert_eq!(w.oldest_since(t(250), d(200)), Some(t(100)));
        assert_eq!(w.last_recycle(), Some(t(200)));
    }

    #[test]
    fn a_failed_eviction_takes_its_reservation_back() {
        let mut h = History::default();
        h.record(&key(), t(0));
        h.record(&key(), t(5));
        h.unrecord(&key(), t(5));
        assert_eq!(h.get(&key()).recycles, [t(0)]);
    }

    #[test]
    fn giving_up_is_reported_once_until_the_next_recycle() {
        let mut h = History::default();
        assert!(h.mark_gave_up(&key(), t(0)));
        assert!(!h.mark_gave_up(&key(), t(1)));
        h.record(&key(), t(2));
        assert!(h.mark_gave_up(&key(), t(3)));
    }

    #[test]
    fn prune_drops_old_recycles_and_empty_workloads() {
        let mut h = History::default();
        h.record(&key(), t(0));
        h.prune(t(100), d(50));
        assert!(h.is_empty());
    }

    #[test]
    fn restart_rate_counts_only_restarts_seen_inside_the_window() {
        let mut r = RestartTracker::default();
        // 40 lifetime restarts before we started watching: not a rate.
        assert_eq!(r.observe("p", t(0), 40, d(300)), 0);
        assert_eq!(r.observe("p", t(10), 41, d(300)), 1);
        assert_eq!(r.observe("p", t(20), 43, d(300)), 3);
        // 400 s later the early restarts have left the window.
        assert_eq!(r.observe("p", t(420), 44, d(300)), 1);
    }

    #[test]
    fn restart_tracker_forgets_quiet_pods() {
        let mut r = RestartTracker::default();
        r.observe("p", t(0), 1, d(300));
        r.prune(t(1000), d(600));
        assert!(r.is_empty());
    }
}
