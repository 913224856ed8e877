//! What the controller remembers between reconciles, kept pure so the policy can be tested.
//!
//! - [`WorkloadHistory`]: when each workload was recycled, for cooldown, the per-window cap and
//!   the give-up limit.
//! - [`RestartTracker`]: restart counts observed per pod over time, for the restart-rate trigger.
//!
//! The workload history also lives in a ConfigMap ([`Stored`], written by
//! [`crate::history::store`]): a restarted or newly elected controller merges it before it acts, so
//! a failover does not reset a cooldown or a give-up. The restart counts stay in memory: a new
//! leader under-counts a rate for one window, which delays an action, never repeats one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// The recycle history in a ConfigMap, so a restart or failover keeps cooldowns and give-ups.
pub mod store;

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

impl WorkloadKey {
    /// Parse `kind/namespace/name` (none of the three can contain a `/`).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, '/');
        let (kind, namespace, name) = (parts.next()?, parts.next()?, parts.next()?);
        if [kind, namespace, name].iter().any(|p| p.is_empty()) || name.contains('/') {
            return None;
        }
        Some(Self {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}

/// The workload history as kept in the ConfigMap: `kind/namespace/name` → its recycles and
/// give-up, as RFC 3339 times.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// Every workload with a recycle still remembered.
    pub workloads: BTreeMap<String, StoredWorkload>,
}

/// One workload in [`Stored`].
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StoredWorkload {
    /// Recycle times, oldest first.
    #[serde(default)]
    pub recycles: Vec<String>,
    /// When the give-up was reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gave_up_at: Option<String>,
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

/// The recycle history shared by the reconciler and [`crate::history::store`], and whether this
/// leader term has read the stored one yet (nothing acts before, or a cooldown could be forgotten).
#[derive(Default)]
pub struct SharedHistory {
    history: Mutex<History>,
    ready: AtomicBool,
}

impl SharedHistory {
    /// The history, locked.
    pub fn lock(&self) -> MutexGuard<'_, History> {
        // NB: nothing panics while holding the lock; recover the data rather than wedge.
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this term's stored history has been read.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Say whether this term's stored history has been read.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Take in a stored recycle history (start of a leader term).
    pub fn merge(&self, stored: &Stored) {
        let mut h = self.lock();
        h.merge(stored);
        // The union may hold more than what was stored: save it too.
        h.record_changed();
    }

    /// The history to save, when something was recorded since the last call.
    pub fn if_changed(&self) -> Option<Stored> {
        let mut h = self.lock();
        h.take_changed().then(|| h.snapshot())
    }

    /// A save failed: offer the history again next time.
    pub fn changed_again(&self) {
        self.lock().record_changed();
    }
}

/// Recycle history of every workload, with reservations so two pods of one workload cannot both
/// pass the cooldown check at the same time.
#[derive(Debug, Default)]
pub struct History {
    workloads: HashMap<WorkloadKey, WorkloadHistory>,
    /// Something was recorded since the last [`History::take_changed`].
    changed: bool,
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
        self.changed = true;
    }

    /// Take back a reservation made with [`History::record`] when the eviction did not happen.
    pub fn unrecord(&mut self, key: &WorkloadKey, at: Timestamp) {
        if let Some(h) = self.workloads.get_mut(key)
            && let Some(pos) = h.recycles.iter().rposition(|t| *t == at)
        {
            h.recycles.remove(pos);
            self.changed = true;
        }
    }

    /// Mark the workload as given up; returns `false` when it already was (report once).
    pub fn mark_gave_up(&mut self, key: &WorkloadKey, at: Timestamp) -> bool {
        let h = self.workloads.entry(key.clone()).or_default();
        if h.gave_up_at.is_some() {
            return false;
        }
        h.gave_up_at = Some(at);
        self.changed = true;
        true
    }

    /// Forget recycles older than `keep` and workloads with nothing left.
    pub fn prune(&mut self, now: Timestamp, keep: SignedDuration) {
        let from = now - keep;
        let mut pruned = false;
        self.workloads.retain(|_, h| {
            while h.recycles.front().is_some_and(|t| *t < from) {
                h.recycles.pop_front();
                pruned = true;
            }
            !h.recycles.is_empty()
        });
        // Saved too, or every new leader would merge the expired entries back in.
        self.changed |= pruned;
    }

    /// Mark the history as changed (a save of it failed and must be tried again).
    pub fn record_changed(&mut self) {
        self.changed = true;
    }

    /// Whether something was recorded since the last call (then: save a [`History::snapshot`]).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Everything remembered, in the stored form.
    pub fn snapshot(&self) -> Stored {
        let workloads = self
            .workloads
            .iter()
            .map(|(k, h)| {
                let stored = StoredWorkload {
                    recycles: h.recycles.iter().map(Timestamp::to_string).collect(),
                    gave_up_at: h.gave_up_at.map(|t| t.to_string()),
                };
                (k.to_string(), stored)
            })
            .collect();
        Stored { workloads }
    }

    /// Take in what another controller remembered: the union of the recycles; a give-up stands
    /// unless a recycle came after it. Entries that do not parse are skipped.
    pub fn merge(&mut self, stored: &Stored) {
        for (k, w) in &stored.workloads {
            let Some(key) = WorkloadKey::parse(k) else {
                continue;
            };
            let h = self.workloads.entry(key).or_default();
            let mut all: Vec<Timestamp> = h.recycles.iter().copied().collect();
            all.extend(
                w.recycles
                    .iter()
                    .filter_map(|t| Timestamp::from_str(t).ok()),
            );
            all.sort_unstable();
            all.dedup();
            h.recycles = all.into();
            let stored_give_up = w
                .gave_up_at
                .as_deref()
                .and_then(|t| Timestamp::from_str(t).ok());
            h.gave_up_at = h
                .gave_up_at
                .max(stored_give_up)
                .filter(|g| h.recycles.back().is_none_or(|last| g >= last));
        }
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
    fn a_snapshot_merged_into_an_empty_history_gives_the_same_decisions() {
        let mut h = History::default();
        assert!(!h.take_changed());
        h.record(&key(), t(0));
        h.record(&key(), t(100));
        assert!(h.mark_gave_up(&key(), t(150)));
        assert!(h.take_changed());
        assert!(!h.take_changed(), "taken");
        let stored = h.snapshot();
        let json = serde_json::to_string(&stored).expect("json");
        let back: Stored = serde_json::from_str(&json).expect("parses");
        let mut fresh = History::default();
        fresh.merge(&back);
        assert_eq!(fresh.get(&key()), h.get(&key()));
        assert!(
            !fresh.mark_gave_up(&key(), t(200)),
            "the give-up was remembered"
        );
    }

    #[test]
    fn merging_keeps_both_sides_and_drops_a_give_up_older_than_a_recycle() {
        let mut mine = History::default();
        mine.record(&key(), t(0));
        mine.record(&key(), t(300));
        let mut theirs = History::default();
        theirs.record(&key(), t(100));
        theirs.record(&key(), t(0));
        theirs.mark_gave_up(&key(), t(200));
        let mut stored = theirs.snapshot();
        stored
            .workloads
            .insert("not a key".into(), StoredWorkload::default());
        mine.merge(&stored);
        let h = mine.get(&key());
        assert_eq!(h.recycles, [t(0), t(100), t(300)]);
        assert_eq!(h.gave_up_at, None, "a recycle came after that give-up");
        assert_eq!(mine.len(), 1, "the bad key is skipped");
    }

    #[test]
    fn workload_keys_round_trip_and_bad_ones_are_refused() {
        assert_eq!(WorkloadKey::parse(&key().to_string()), Some(key()));
        for bad in ["", "Deployment/ns", "Deployment//web", "Deployment/ns/a/b"] {
            assert_eq!(WorkloadKey::parse(bad), None, "{bad}");
        }
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
