//! The PromQL triggers' I/O: ask Prometheus each HealingPolicy's queries, keep the answers in
//! [`crate::signals::Signals`]; wake the pods the answers are about. Whether a trigger fires is
//! decided once, in the reconciler ([`crate::policy::trigger()`] for errorRate,
//! [`crate::healers::pool::assess`] for poolExhaustion), never here.
//!
//! Every `--prometheus-interval-secs`, per policy: the `errorRate` query, and the
//! `poolExhaustion` saturation (and latency) queries, through the async `selfheal-promql` client
//! (shared with the canary analyzer), each counted in `prometheus_queries_total{query, result}`. An unreachable Prometheus or an empty vector is
//! *no answer*, which never fires (fail safe). Without `--prometheus-url` nothing runs and such
//! policies report `Degraded`/`TriggerNotEvaluated`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::healers::pool::PoolRule;
use crate::metrics::Metrics;
use crate::signals::Signals;
use crate::watched::Watched;

/// What the PromQL triggers ask and where they keep the answers.
pub struct PromqlTriggers {
    /// The client for `--prometheus-url` (`None`: nothing is asked).
    pub prom: Option<selfheal_promql::Client>,
    /// `prometheus_queries_total`.
    pub metrics: Arc<Metrics>,
    /// Which HealingPolicies have PromQL triggers, and the pods they govern.
    pub watched: Arc<Watched>,
    /// Where the answers go.
    pub signals: Arc<Signals>,
    /// `--prometheus-interval-secs`.
    pub interval_secs: u64,
}

/// How old a PromQL answer may be and still count: three query intervals.
pub fn answer_max_age(interval_secs: u64) -> SignedDuration {
    SignedDuration::from_secs(i64::try_from(interval_secs.saturating_mul(3)).unwrap_or(i64::MAX))
}

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

pub use selfheal_promql::Series;

/// The answer of an error-rate vector: its largest finite value (`None` for an empty vector).
pub fn answer(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
}

/// Per-pod values of a vector: `(namespace, pod)` → the largest finite value of its series.
/// Series without both labels are ignored.
pub fn per_pod(series: &[Series]) -> BTreeMap<(String, String), f64> {
    let mut out: PerPod = BTreeMap::new();
    for (labels, v) in series {
        let (Some(ns), Some(pod)) = (labels.get("namespace"), labels.get("pod")) else {
            continue;
        };
        if !v.is_finite() {
            continue;
        }
        out.entry((ns.clone(), pod.clone()))
            .and_modify(|m| *m = m.max(*v))
            .or_insert(*v);
    }
    out
}

/// Ask one query; `None` when it failed (logged and counted).
pub(crate) async fn ask(
    prom: &selfheal_promql::Client,
    metrics: &Metrics,
    which: &str,
    policy: &str,
    query: &str,
) -> Option<Vec<Series>> {
    let result = prom.instant_vector(query).await;
    let count = |result: &str| {
        metrics
            .prometheus_queries_total
            .with_label_values(&[which, result])
            .inc();
    };
    match result {
        Ok(series) => {
            count("ok");
            Some(series)
        }
        Err(e) => {
            count("error");
            warn!(policy, query = which, error = %e, "PromQL trigger query failed; it does not fire");
            None
        }
    }
}

/// The client for `--prometheus-url` (`None` without one, or when it cannot be built: logged,
/// and nothing fires).
pub(crate) fn client(url: Option<&str>) -> Option<selfheal_promql::Client> {
    let url = url?;
    selfheal_promql::Client::new(url, QUERY_TIMEOUT)
        .inspect_err(|e| warn!(error = %e, "cannot build the Prometheus client; PromQL triggers and breakers cannot fire"))
        .ok()
}

/// Keep the answer of a policy's errorRate query (`None`: no answer, forget the last one).
/// Returns the cached pods the policy governs when there is an answer, for the reconciler to
/// judge.
fn observe_error_rate(
    watched: &Watched,
    signals: &Signals,
    key: &str,
    ratio: Option<f64>,
    now: Timestamp,
) -> Vec<ObjectRef<Pod>> {
    signals.observe_error_rate(key, ratio, now);
    if ratio.is_none() {
        return Vec::new();
    }
    watched
        .governed_by(key)
        .iter()
        .map(|p| ObjectRef::from_obj(&**p))
        .collect()
}

/// Keep one round of the answers for pool policy `key`, whose trigger reads as `rule`
/// (`None`: the query failed, which counts as no answer for every pod). Returns the governed
/// pods an answer was about, for the reconciler to judge.
fn observe_pool(
    t: &PromqlTriggers,
    key: &str,
    rule: &PoolRule,
    (saturation, latency): (Option<&PerPod>, Option<&PerPod>),
    now: Timestamp,
) -> Vec<ObjectRef<Pod>> {
    let mut wake = Vec::new();
    for pod in t.watched.governed_by(key) {
        let Some(uid) = pod.uid() else {
            continue;
        };
        let id = (pod.namespace().unwrap_or_default(), pod.name_any());
        let saturation = saturation.and_then(|m| m.get(&id).copied());
        let latency = latency.and_then(|m| m.get(&id).copied());
        t.signals.observe_pool(&uid, saturation, latency, rule, now);
        if saturation.is_some() || latency.is_some() {
            wake.push(ObjectRef::from_obj(&*pod));
        }
    }
    wake
}

/// Per-pod values: `(namespace, pod)` → value.
type PerPod = BTreeMap<(String, String), f64>;

/// Ask until the task is dropped; `wake` carries the pods the answers are about.
pub async fn run(t: PromqlTriggers, wake: mpsc::Sender<ObjectRef<Pod>>) {
    let Some(prom) = t.prom.as_ref() else {
        return futures::future::pending().await;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(t.interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let send = async |pods: Vec<ObjectRef<Pod>>| {
        for pod in pods {
            // NB: wait for room rather than drop: the pod that fires may be any of them.
            if wake.send(pod).await.is_err() {
                return;
            }
        }
    };
    loop {
        tick.tick().await;
        for (key, query, threshold) in t.watched.error_rate_policies() {
            let ratio = ask(prom, &t.metrics, "error_rate", &key, &query)
                .await
                .and_then(|s| answer(s.into_iter().map(|(_, v)| v)));
            debug!(policy = %key, ?ratio, threshold, "errorRate answer");
            send(observe_error_rate(
                &t.watched,
                &t.signals,
                &key,
                ratio,
                Timestamp::now(),
            ))
            .await;
        }
        for (key, trigger, rule) in t.watched.pool_policies() {
            let saturation = ask(
                prom,
                &t.metrics,
                "pool_saturation",
                &key,
                &trigger.saturation_query,
            )
            .await
            .map(|s| per_pod(&s));
            let latency = match &trigger.latency_query {
                Some(q) => ask(prom, &t.metrics, "pool_latency", &key, q)
                    .await
                    .map(|s| per_pod(&s)),
                None => None,
            };
            debug!(policy = %key, ?saturation, ?latency, "poolExhaustion answers");
            send(observe_pool(
                &t,
                &key,
                &rule,
                (saturation.as_ref(), latency.as_ref()),
                Timestamp::now(),
            ))
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_the_largest_finite_value_and_nothing_for_an_empty_vector() {
        assert_eq!(answer([0.01, 0.2, 0.05]), Some(0.2));
        assert_eq!(answer([f64::NAN, 0.3]), Some(0.3));
        assert_eq!(answer([]), None);
        assert_eq!(answer([f64::NAN]), None);
    }

    fn series(labels: &[(&str, &str)], v: f64) -> Series {
        (
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            v,
        )
    }

    #[test]
    fn per_pod_keys_by_namespace_and_pod_and_keeps_the_largest() {
        let got = per_pod(&[
            series(
                &[("namespace", "a"), ("pod", "web-1"), ("container", "x")],
                0.5,
            ),
            series(
                &[("namespace", "a"), ("pod", "web-1"), ("container", "y")],
                1.0,
            ),
            series(&[("namespace", "b"), ("pod", "web-1")], 0.2),
            series(&[("pod", "no-namespace")], 1.0),
            series(&[("namespace", "a"), ("pod", "nan")], f64::NAN),
        ]);
        let want: BTreeMap<(String, String), f64> = [
            (("a".to_owned(), "web-1".to_owned()), 1.0),
            (("b".to_owned(), "web-1".to_owned()), 0.2),
        ]
        .into();
        assert_eq!(got, want);
    }
}
