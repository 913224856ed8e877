//! The errorRate trigger's I/O: ask Prometheus each HealingPolicy's query and hand the answer
//! to the context; wake the policy's pods while it is over the threshold.
//!
//! Every `--error-rate-interval-secs`, one instant query per policy with an `errorRate` trigger,
//! on a blocking thread (the query client is the canary analyzer's, shared so the repository
//! has one). The answer is the largest value of the returned vector; an empty vector or an
//! unreachable Prometheus is *no answer*, which never fires (fail safe) and is counted in
//! `error_rate_queries_total{result="error"}`. Without `--prometheus-url` nothing runs and
//! such policies report `Degraded`/`TriggerNotEvaluated`.

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

/// The answer of an instant vector: its largest finite value (`None` for an empty vector).
pub fn answer(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
}

/// Ask until the task is dropped; `wake` carries the pods of policies over their threshold.
pub async fn run(ctx: Arc<Context>, wake: mpsc::Sender<ObjectRef<Pod>>) {
    let Some(url) = ctx.config().prometheus_url.clone() else {
        return futures::future::pending().await;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(
        ctx.config().error_rate_interval_secs.max(1),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (key, query, threshold) in ctx.error_rate_policies() {
            let (u, q) = (url.clone(), query.clone());
            let result = tokio::task::spawn_blocking(move || {
                selfheal_canary::prometheus::instant_vector(&u, &q, QUERY_TIMEOUT)
            })
            .await;
            let ratio = match result {
                Ok(Ok(series)) => {
                    ctx.metrics
                        .error_rate_queries_total
                        .with_label_values(&["ok"])
                        .inc();
                    answer(series.into_iter().map(|(_, v)| v))
                }
                Ok(Err(e)) => {
                    ctx.metrics
                        .error_rate_queries_total
                        .with_label_values(&["error"])
                        .inc();
                    warn!(policy = %key, error = %e, "errorRate query failed; the trigger does not fire");
                    None
                }
                Err(e) => {
                    warn!(policy = %key, error = %e, "errorRate query task failed");
                    None
                }
            };
            debug!(policy = %key, ?ratio, threshold, "errorRate answer");
            for pod in ctx.observe_error_rate(&key, ratio, threshold, Timestamp::now()) {
                // NB: a full queue means reconciles are pending already; the next round resends.
                let _ = wake.try_send(pod);
            }
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
}
