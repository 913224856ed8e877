//! What the signal sources observed, kept for the reconciler: working-set samples (the memory
//! sampler), the latest errorRate answer per HealingPolicy and the pool saturation and latency
//! answers per pod (the PromQL triggers). Sources write, the reconciler reads; the pure rules
//! ([`crate::healers::memory_trend::rule`], [`crate::healers::pool`]) decide, once, when the
//! reconciler reads ([`Signals::leak`], [`Signals::pool_exhaustion`]).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::healers::memory_trend::rule::{self as trend, Leak, LeakRule, MemorySamples, Sample};
use crate::healers::pool::{self as exhaustion, Exhaustion, PoolRule, PoolTracker};
use crate::policy;

/// The observations, shared by the sources and the reconciler.
#[derive(Default)]
pub struct Signals {
    state: Mutex<Observations>,
}

#[derive(Default)]
struct Observations {
    /// Working-set samples per pod UID and container.
    memory: MemorySamples,
    /// Latest errorRate answer per HealingPolicy (`namespace/name`) and when it came.
    error_rates: HashMap<String, (f64, Timestamp)>,
    /// Pool saturation and latency answers per pod UID.
    pools: PoolTracker,
}

impl Signals {
    fn state(&self) -> MutexGuard<'_, Observations> {
        // NB: nothing panics while holding the lock; recover the data rather than wedge.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keep one working-set sample of `container` of pod `uid`, for `window`.
    pub fn observe_memory(
        &self,
        uid: &str,
        container: &str,
        sample: Sample,
        window: SignedDuration,
    ) {
        self.state().memory.observe(uid, container, sample, window);
    }

    /// Whether `pod`'s samples read as a leak under `rule`.
    pub fn leak(&self, pod: &Pod, rule: &LeakRule, now: Timestamp) -> Option<Leak> {
        trend::leak(&self.state().memory, pod, rule, now)
    }

    /// Keep the answer of policy `key`'s errorRate query (`None`: no answer, forget the last).
    pub fn observe_error_rate(&self, key: &str, ratio: Option<f64>, now: Timestamp) {
        let mut st = self.state();
        match ratio {
            Some(r) => st.error_rates.insert(key.to_owned(), (r, now)),
            None => st.error_rates.remove(key),
        };
    }

    /// Policy `key`'s errorRate answer, if it is at most `max_age` old.
    pub fn error_ratio(&self, key: &str, now: Timestamp, max_age: SignedDuration) -> Option<f64> {
        self.state()
            .error_rates
            .get(key)
            .filter(|(_, at)| now.duration_since(*at) <= max_age)
            .map(|(r, _)| *r)
    }

    /// Keep one round of pool answers for pod `uid` (`None`: no answer for it).
    pub fn observe_pool(
        &self,
        uid: &str,
        saturation: Option<f64>,
        latency: Option<f64>,
        rule: &PoolRule,
        now: Timestamp,
    ) {
        let mut st = self.state();
        st.pools.observe_saturation(uid, saturation, rule, now);
        st.pools.observe_latency(uid, latency, now);
    }

    /// Whether `pod` reads as out of connections under `rule` (answers at most `max_age` old).
    pub fn pool_exhaustion(
        &self,
        pod: &Pod,
        rule: &PoolRule,
        now: Timestamp,
        max_age: SignedDuration,
    ) -> Option<Exhaustion> {
        let signals = self.state().pools.get(&pod.uid()?).copied()?;
        exhaustion::assess(&signals, rule, policy::is_ready(pod), now, max_age)
    }

    /// Drop what is kept for pods `live` does not hold; returns how many pods have samples.
    pub fn retain(&self, live: impl Fn(&str) -> bool) -> usize {
        let mut st = self.state();
        st.memory.retain(&live);
        st.pools.retain(&live);
        st.memory.pods()
    }
}
