//! Working-set samples for the memory-trend trigger, read from the metrics API.
//!
//! Every `--memory-sample-secs` the sampler lists `PodMetrics` (`metrics.k8s.io/v1beta1`, served
//! by metrics-server) in each namespace that has a HealingPolicy with a `memoryTrend` trigger —
//! one list call per namespace, never one per pod — keeps the readings in [`crate::signals::Signals`], and asks
//! the reconciler to look at every pod it kept a new sample of. The verdict is computed once, by
//! the pure rule ([`crate::healers::memory_trend::rule::leak`]) in the reconciler: the sampler
//! only measures.
//!
//! Without metrics-server the lists fail; the trigger then never fires (fail safe), the failure
//! is counted in `memory_metrics_reads_total{result="error"}` and logged once per outage.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::healers::memory_trend::rule::{Sample, parse_bytes};
use crate::metrics::Metrics;
use crate::signals::Signals;
use crate::watched::Watched;

/// What the sampler reads and where it keeps what it read.
pub struct MemorySampler {
    /// The API client (metrics API lists).
    pub client: Client,
    /// `memory_metrics_reads_total`, `memory_sampled_pods`.
    pub metrics: Arc<Metrics>,
    /// Which namespaces and pods a memory-trend policy governs.
    pub watched: Arc<Watched>,
    /// Where the samples go.
    pub signals: Arc<Signals>,
    /// `--memory-sample-secs`.
    pub period: Duration,
}

/// One `PodMetrics` object: the working set of each container of one pod at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// Pod name.
    pub pod: String,
    /// When metrics-server scraped it.
    pub at: Timestamp,
    /// `(container, bytes)`.
    pub containers: Vec<(String, u64)>,
}

/// The `PodMetrics` resource of the metrics API.
pub fn pod_metrics_resource() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    }
}

/// Parse one `PodMetrics` object; `None` when it lacks a name or a timestamp. Containers whose
/// memory cannot be parsed are left out.
pub fn reading(obj: &DynamicObject) -> Option<Reading> {
    let pod = obj.metadata.name.clone()?;
    let at: Timestamp = obj.data.get("timestamp")?.as_str()?.parse().ok()?;
    let containers = obj
        .data
        .get("containers")
        .and_then(|c| c.as_array())
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    let name = c.get("name")?.as_str()?;
                    let memory = c.get("usage")?.get("memory")?.as_str()?;
                    Some((name.to_owned(), parse_bytes(memory)?))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Reading {
        pod,
        at,
        containers,
    })
}

/// Keep a reading of a cached pod that a memory-trend policy governs. Returns the pod when a
/// sample was kept, so the reconciler looks at it (and its rule decides).
fn observe(
    watched: &Watched,
    signals: &Signals,
    ns: &str,
    reading: &Reading,
) -> Option<ObjectRef<Pod>> {
    let pod = watched
        .pods()?
        .get(&ObjectRef::new(&reading.pod).within(ns))?;
    let gov = watched.governing(&pod).ok()?;
    let rule = gov.policy.memory_trend?;
    let uid = pod.uid()?;
    for (container, bytes) in &reading.containers {
        let sample = Sample {
            at: reading.at,
            bytes: *bytes,
        };
        signals.observe_memory(&uid, container, sample, rule.window);
    }
    (!reading.containers.is_empty()).then(|| ObjectRef::from_obj(&*pod))
}

/// Sample until the task is dropped. `wake` carries the pods with a new sample.
pub async fn run(s: MemorySampler, wake: mpsc::Sender<ObjectRef<Pod>>) {
    let mut tick = tokio::time::interval(s.period.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let namespaces = s.watched.memory_trend_namespaces();
        for ns in &namespaces {
            let api: Api<DynamicObject> =
                Api::namespaced_with(s.client.clone(), ns, &pod_metrics_resource());
            match api.list(&ListParams::default()).await {
                Ok(list) => {
                    s.metrics
                        .memory_metrics_reads_total
                        .with_label_values(&["ok"])
                        .inc();
                    if std::mem::take(&mut failing) {
                        info!(namespace = %ns, "metrics API answers again; memory trend resumed");
                    }
                    for r in list.items.iter().filter_map(reading) {
                        if let Some(pod) = observe(&s.watched, &s.signals, ns, &r) {
                            debug!(pod = %r.pod, namespace = %ns, "memory sample kept");
                            // NB: wait for room rather than drop: the pod that leaks may be any
                            // of them. A closed queue means the reconciler stopped.
                            if wake.send(pod).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Err(e) => {
                    s.metrics
                        .memory_metrics_reads_total
                        .with_label_values(&["error"])
                        .inc();
                    if !std::mem::replace(&mut failing, true) {
                        warn!(namespace = %ns, error = %e, "cannot read pod metrics (is metrics-server running?); memoryTrend triggers cannot fire");
                    }
                }
            }
        }
        // Drop the samples of pods no longer in the cache.
        let live = s.watched.live_uids();
        let sampled = s.signals.retain(|uid| live.contains(uid));
        s.metrics
            .memory_sampled_pods
            .set(i64::try_from(sampled).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(json: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json).expect("a DynamicObject")
    }

    #[test]
    fn a_pod_metrics_object_becomes_a_reading() {
        let o = obj(serde_json::json!({
            "apiVersion": "metrics.k8s.io/v1beta1",
            "kind": "PodMetrics",
            "metadata": {"name": "web-abc", "namespace": "shop"},
            "timestamp": "2026-12-01T10:00:15Z",
            "window": "15.012s",
            "containers": [
                {"name": "app", "usage": {"cpu": "1m", "memory": "117760Ki"}},
                {"name": "sidecar", "usage": {"cpu": "0", "memory": "bogus"}}
            ]
        }));
        let r = reading(&o).expect("parses");
        assert_eq!(r.pod, "web-abc");
        assert_eq!(r.at.to_string(), "2026-12-01T10:00:15Z");
        assert_eq!(r.containers, vec![("app".to_owned(), 117_760 * 1024)]);
    }

    #[test]
    fn a_reading_needs_a_timestamp() {
        let o = obj(serde_json::json!({
            "apiVersion": "metrics.k8s.io/v1beta1",
            "kind": "PodMetrics",
            "metadata": {"name": "web-abc"},
            "containers": []
        }));
        assert_eq!(reading(&o), None);
    }
}
