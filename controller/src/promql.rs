//! The PromQL triggers' I/O: ask Prometheus each HealingPolicy's queries and hand the answers
//! to the context; wake the pods whose trigger now fires.
//!
//! Every `--prometheus-interval-secs`, per policy: the `errorRate` query, and the
//! `poolExhaustion` saturation (and latency) queries. Each runs on a blocking thread (the query
//! client is the canary analyzer's, shared so the repository has one) and is counted in
//! `prometheus_queries_total{query, result}`. An unreachable Prometheus or an empty vector is
//! *no answer*, which never fires (fail safe). Without `--prometheus-url` nothing runs and such
//! policies report `Degraded`/`TriggerNotEvaluated`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::reconcile::Context;

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// One series of an instant vector: its labels and value.
pub type Series = (BTreeMap<String, String>, f64);

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
    let mut out: BTreeMap<(String, String), f64> = BTreeMap::new();
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
    ctx: &Context,
    url: &str,
    which: &str,
    policy: &str,
    query: &str,
) -> Option<Vec<Series>> {
    let (u, q) = (url.to_owned(), query.to_owned());
    let result = tokio::task::spawn_blocking(move || {
        selfheal_canary::prometheus::instant_vector(&u, &q, QUERY_TIMEOUT)
    })
    .await;
    let count = |result: &str| {
        ctx.metrics
            .prometheus_queries_total
            .with_label_values(&[which, result])
            .inc();
    };
    match result {
        Ok(Ok(series)) => {
            count("ok");
            Some(series)
        }
        Ok(Err(e)) => {
            count("error");
            warn!(policy, query = which, error = %e, "PromQL trigger query failed; it does not fire");
            None
        }
        Err(e) => {
            count("error");
            warn!(policy, query = which, error = %e, "PromQL trigger query task failed");
            None
        }
    }
}

/// Ask until the task is dropped; `wake` carries the pods whose trigger fires.
pub async fn run(ctx: Arc<Context>, wake: mpsc::Sender<ObjectRef<Pod>>) {
    let Some(url) = ctx.config().prometheus_url.clone() else {
        return futures::future::pending().await;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(
        ctx.config().prometheus_interval_secs.max(1),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let send = |pods: Vec<ObjectRef<Pod>>| {
        for pod in pods {
            // NB: a full queue means reconciles are pending already; the next round resends.
            let _ = wake.try_send(pod);
        }
    };
    loop {
        tick.tick().await;
        for (key, query, threshold) in ctx.error_rate_policies() {
            let ratio = ask(&ctx, &url, "error_rate", &key, &query)
                .await
                .and_then(|s| answer(s.into_iter().map(|(_, v)| v)));
            debug!(policy = %key, ?ratio, threshold, "errorRate answer");
            send(ctx.observe_error_rate(&key, ratio, threshold, Timestamp::now()));
        }
        for (key, trigger, rule) in ctx.pool_policies() {
            let saturation = ask(
                &ctx,
                &url,
                "pool_saturation",
                &key,
                &trigger.saturation_query,
            )
            .await
            .map(|s| per_pod(&s));
            let latency = match &trigger.latency_query {
                Some(q) => ask(&ctx, &url, "pool_latency", &key, q)
                    .await
                    .map(|s| per_pod(&s)),
                None => None,
            };
            debug!(policy = %key, ?saturation, ?latency, "poolExhaustion answers");
            send(ctx.observe_pool(
                &key,
                &rule,
                saturation.as_ref(),
                latency.as_ref(),
                Timestamp::now(),
            ));
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
