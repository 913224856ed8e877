//! What the watches hold — the pod cache and the HealingPolicy cache — and which policy governs
//! a pod: the first HealingPolicy (by name) selecting it, else the default policy (the flags).
//! Read by the reconciler, the status writer and the signal sources; no API calls.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::healers::pool::PoolRule;
use crate::healing_policy::SpecError;
use crate::healing_policy::resource::HealingPolicy;
use crate::healing_policy::selection;
use crate::healing_policy::triggers::PoolExhaustionTrigger;
use crate::owner::controller_ref;
use crate::policy::{self, Policy};

/// The caches the watches fill, and the default policy.
pub struct Watched {
    default: Policy,
    /// The pod cache (set once the pod watch starts).
    pods: OnceLock<Store<Pod>>,
    /// The HealingPolicy cache (set when `--healing-policies`).
    policies: OnceLock<Store<HealingPolicy>>,
}

/// The policy deciding for one pod.
pub struct Governed<'a> {
    /// The HealingPolicy, or `None` for the default policy (the flags).
    pub source: Option<Arc<HealingPolicy>>,
    /// Its rules.
    pub policy: Cow<'a, Policy>,
}

impl Governed<'_> {
    /// `default policy` or `HealingPolicy ns/name`.
    pub fn describe(&self) -> String {
        self.source.as_ref().map_or_else(
            || "default policy".to_owned(),
            |hp| format!("HealingPolicy {}", selection::key(hp)),
        )
    }

    /// The HealingPolicy's `namespace/name`, or `None` for the default policy.
    pub fn key(&self) -> Option<String> {
        self.source.as_deref().map(selection::key)
    }
}

impl Watched {
    /// Empty caches; `default` governs pods no HealingPolicy selects.
    pub fn new(default: Policy) -> Self {
        Self {
            default,
            pods: OnceLock::new(),
            policies: OnceLock::new(),
        }
    }

    /// The default policy (the flags).
    pub fn default_policy(&self) -> &Policy {
        &self.default
    }

    /// Keep the pod cache (once).
    pub fn set_pods(&self, store: Store<Pod>) {
        let _ = self.pods.set(store);
    }

    /// Keep the HealingPolicy cache (once).
    pub fn set_policies(&self, store: Store<HealingPolicy>) {
        let _ = self.policies.set(store);
    }

    /// The pod cache, once the watch started.
    pub fn pods(&self) -> Option<&Store<Pod>> {
        self.pods.get()
    }

    /// The HealingPolicy cache, when HealingPolicies are watched.
    pub fn policies(&self) -> Option<&Store<HealingPolicy>> {
        self.policies.get()
    }

    /// Whether `ns` is in the controller's scope (`--namespaces`, `--exclude-namespaces`).
    pub fn in_scope(&self, ns: &str) -> bool {
        policy::in_scope(&self.default, ns)
    }

    /// The policy deciding for `pod`. `Err` names a selecting policy whose spec cannot be used
    /// (nothing acts then).
    pub fn governing(&self, pod: &Pod) -> Result<Governed<'_>, (Arc<HealingPolicy>, SpecError)> {
        let default = Governed {
            source: None,
            policy: Cow::Borrowed(&self.default),
        };
        let Some(store) = self.policies.get() else {
            return Ok(default);
        };
        let all = store.state();
        let Some(hp) = selection::governing(&all, pod) else {
            return Ok(default);
        };
        match hp.spec.to_policy(&self.default) {
            Ok(p) => Ok(Governed {
                source: Some(hp.clone()),
                policy: Cow::Owned(p),
            }),
            Err(e) => Err((hp.clone(), e)),
        }
    }

    /// The cached HealingPolicies whose namespace is in scope.
    fn policies_in_scope(&self) -> Vec<Arc<HealingPolicy>> {
        let Some(store) = self.policies.get() else {
            return Vec::new();
        };
        store
            .state()
            .into_iter()
            .filter(|hp| hp.namespace().is_some_and(|ns| self.in_scope(&ns)))
            .collect()
    }

    /// Namespaces (in scope) with a HealingPolicy that has a `memoryTrend` trigger, sorted.
    pub fn memory_trend_namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .policies_in_scope()
            .iter()
            .filter(|hp| hp.spec.triggers.memory_trend.is_some())
            .filter_map(|hp| hp.namespace())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// HealingPolicies with an errorRate trigger (in scope): key, query, threshold.
    pub fn error_rate_policies(&self) -> Vec<(String, String, f64)> {
        self.policies_in_scope()
            .iter()
            .filter_map(|hp| {
                let e = hp.spec.triggers.error_rate.as_ref()?;
                Some((selection::key(hp), e.query.clone(), e.threshold))
            })
            .collect()
    }

    /// HealingPolicies with a usable poolExhaustion trigger (in scope): key, trigger, its rule.
    pub fn pool_policies(&self) -> Vec<(String, PoolExhaustionTrigger, PoolRule)> {
        self.policies_in_scope()
            .iter()
            .filter_map(|hp| {
                let t = hp.spec.triggers.pool_exhaustion.clone()?;
                // NB: an unusable spec is reported in the policy's status; nothing to ask then.
                let rule = t.rule().ok()?;
                Some((selection::key(hp), t, rule))
            })
            .collect()
    }

    /// The cached pods the HealingPolicy `key` governs now.
    pub fn governed_by(&self, key: &str) -> Vec<Arc<Pod>> {
        let Some(pods) = self.pods.get() else {
            return Vec::new();
        };
        pods.state()
            .into_iter()
            .filter(|p| {
                self.governing(p)
                    .ok()
                    .and_then(|g| g.source)
                    .is_some_and(|hp| selection::key(&hp) == key)
            })
            .collect()
    }

    /// UIDs of the cached pods.
    pub fn live_uids(&self) -> std::collections::HashSet<String> {
        self.pods
            .get()
            .map(|s| s.state().iter().filter_map(|p| p.uid()).collect())
            .unwrap_or_default()
    }

    /// Ready pods with the same controller owner as `pod`, other than `pod` (from the cache).
    pub fn healthy_siblings(&self, pod: &Pod) -> u32 {
        let (Some(owner), Some(store)) = (controller_ref(&pod.metadata), self.pods.get()) else {
            return 0;
        };
        let n = store
            .state()
            .iter()
            .filter(|p| {
                p.namespace() == pod.namespace()
                    && p.uid() != pod.uid()
                    && p.metadata.deletion_timestamp.is_none()
                    && controller_ref(&p.metadata).is_some_and(|o| o.uid == owner.uid)
                    && policy::is_ready(p)
            })
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}
