//! The pod reconciler's run: the controller's API client, the pod and HealingPolicy watches (into
//! metadata-trimmed caches), the signal sources that wake pods, the status writer and the
//! recycle history's ConfigMap, until shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt, future, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::context::Context;
use crate::healers::memory_trend::sampler;
use crate::healers::promql;
use crate::healing_policy::resource::HealingPolicy;
use crate::healing_policy::selection;
use crate::history::store as history_store;
use crate::leader::Term;
use crate::metrics::Metrics;
use crate::policy;
use crate::reconcile;

/// Writes each HealingPolicy's status.
pub mod status_writer;
/// Drops what the controller does not read from cached pods.
pub mod trim;

/// How long in-flight reconciles get to finish after shutdown was requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// How long the explanations in flight get to publish their Events after shutdown.
const EXPLAIN_GRACE: Duration = Duration::from_secs(2);

/// A client for the cluster in the environment (in-cluster or `KUBECONFIG`); see [`client_from`].
pub async fn client(metrics: &Metrics) -> Result<Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    client_from(config, metrics)
}

/// The controller's client: counts its requests in `api_requests_total{verb}` (proof that an idle
/// controller does not poll) and has kube's built-in retry layer switched off.
///
/// NB: that layer retries every 429 inside the client, for up to 15 attempts with delays growing
/// to 1000 s. A PodDisruptionBudget refusing an eviction *is* a 429: with the layer on, the
/// eviction call would hang instead of returning, and no `RecycleBlocked` Event would be written.
/// Retries are ours instead: the reconcile requeues with exponential backoff.
pub fn client_from(mut config: kube::Config, metrics: &Metrics) -> Result<Client, kube::Error> {
    config.default_retry = false;
    let counter = metrics.api_requests_total.clone();
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        counter
            .with_label_values(&[crate::metrics::request_verb(
                req.method(),
                req.uri().query(),
            )])
            .inc();
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

fn field_selector(cfg: &Config) -> String {
    let mut parts: Vec<String> = cfg
        .excluded_namespaces()
        .iter()
        .map(|n| format!("metadata.namespace!={n}"))
        .collect();
    let wanted: Vec<_> = cfg.namespaces.iter().filter(|n| !n.is_empty()).collect();
    if let [only] = wanted.as_slice() {
        parts.push(format!("metadata.namespace={only}"));
    }
    parts.join(",")
}

/// Watch pods and reconcile them until `shutdown` resolves. Sets `ready` once the cache is synced.
pub async fn run(
    ctx: Arc<Context>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let mut wc = watcher::Config::default().fields(&field_selector(&ctx.cfg));
    wc = wc.page_size(ctx.cfg.watch_page_size.max(1));
    if let Some(sel) = ctx.cfg.label_selector.as_deref().filter(|s| !s.is_empty()) {
        wc = wc.labels(sel);
    }
    let (reader, writer) = reflector::store();
    ctx.watched.set_pods(reader.clone());
    let policy_changes = policy_watch(&ctx);
    let policy = ctx.policy().clone();
    let pods = watcher(api, wc)
        .default_backoff()
        .try_filter(move |ev| {
            let keep = match ev {
                watcher::Event::Apply(p)
                | watcher::Event::Delete(p)
                | watcher::Event::InitApply(p) => {
                    policy::in_scope(&policy, p.metadata.namespace.as_deref().unwrap_or_default())
                }
                watcher::Event::Init | watcher::Event::InitDone => true,
            };
            future::ready(keep)
        })
        .modify(trim::trim)
        .reflect(writer)
        .applied_objects();

    // Whenever this replica becomes leader (a term after none, or after one that ran out), look
    // at every cached pod once: what changed while it did not lead was left to the leader.
    let became_leader = stream::unfold(
        (ctx.leader.clone(), Term::Follower),
        |(mut l, mut prev)| async move {
            loop {
                l.changed().await.ok()?;
                let (now, term) = (std::time::Instant::now(), l.term());
                let edge = term.current_at(now) && !prev.current_at(now);
                prev = term;
                if edge {
                    return Some(((), (l, prev)));
                }
            }
        },
    )
    .chain(stream::pending());

    // The memory sampler and the PromQL triggers name the pods that now read as unhealthy: a
    // leak or an answer from Prometheus changes no pod object.
    let (leak_tx, mut leak_rx) = tokio::sync::mpsc::channel::<ObjectRef<Pod>>(256);
    let leaks = stream::poll_fn(move |cx| leak_rx.poll_recv(cx));

    let controller = Controller::for_stream(pods, reader.clone())
        .with_config(ControllerConfig::default().concurrency(ctx.cfg.concurrency))
        .reconcile_all_on(became_leader)
        .reconcile_on(leaks)
        // A policy created, changed or deleted may change the decision for any pod.
        .reconcile_all_on(policy_changes)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|res| {
            if let Err(e) = res {
                debug!(error = %e, "reconcile failed");
            }
            future::ready(())
        });

    let readiness = {
        let reader = reader.clone();
        let policies = ctx.watched.policies().cloned();
        async move {
            if reader.wait_until_ready().await.is_err() {
                return;
            }
            info!(pods = reader.len(), "pod cache synced");
            if let Some(p) = policies {
                if p.wait_until_ready().await.is_err() {
                    return;
                }
                info!(policies = p.len(), "healing policy cache synced");
            }
            ready.store(true, Ordering::Relaxed);
        }
    };
    let gauges = {
        let ctx = ctx.clone();
        async move {
            // NB: reads the local cache and the leader flag only; no API calls.
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                ctx.metrics
                    .watched_pods
                    .set(i64::try_from(reader.len()).unwrap_or(i64::MAX));
                ctx.metrics.leader.set(i64::from(ctx.is_leader()));
                if let Some(p) = ctx.watched.policies() {
                    ctx.metrics
                        .healing_policies
                        .set(i64::try_from(p.len()).unwrap_or(i64::MAX));
                }
            }
        }
    };
    // NB: the Controller polls its shutdown trigger only once the cache is synced; with the API
    // server unreachable at start-up it would never stop. Give it a grace period, then leave.
    let deadline = async {
        shutdown.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        warn!(grace = ?SHUTDOWN_GRACE, "controller did not stop in time, leaving anyway");
    };
    let sampler = sampler::MemorySampler {
        client: ctx.client.clone(),
        metrics: ctx.metrics.clone(),
        watched: ctx.watched.clone(),
        signals: ctx.signals.clone(),
        period: Duration::from_secs(ctx.cfg.memory_sample_secs),
    };
    let triggers = promql::PromqlTriggers {
        prom: ctx.prom.clone(),
        metrics: ctx.metrics.clone(),
        watched: ctx.watched.clone(),
        signals: ctx.signals.clone(),
        interval_secs: ctx.cfg.prometheus_interval_secs,
    };
    let history = history_store::HistorySync {
        client: ctx.client.clone(),
        namespace: ctx.cfg.pod_namespace.clone(),
        name: ctx.cfg.history_configmap.clone(),
        leader: ctx.leader.clone(),
        metrics: ctx.metrics.clone(),
        history: ctx.history.clone(),
    };
    tokio::select! {
        () = controller => info!("controller stopped"),
        () = deadline => {}
        () = async { readiness.await; future::pending::<()>().await } => {}
        () = gauges => {}
        () = status_writer::run(ctx.clone()) => {}
        () = sampler::run(sampler, leak_tx.clone()) => {}
        () = promql::run(triggers, leak_tx) => {}
        () = history_store::run(&history) => {}
    }
    // The Events of the last actions are still being explained: give them a moment.
    ctx.explainer.drain(EXPLAIN_GRACE).await;
    history_store::flush(&history).await;
}

/// Start the HealingPolicy watch (into `ctx.policies`) and return a stream that yields when a
/// policy is created, its spec changes (generation) or it is deleted — not on status writes —
/// and once when the first list is done.
fn policy_watch(ctx: &Arc<Context>) -> futures::stream::BoxStream<'static, ()> {
    if !ctx.cfg.healing_policies {
        ctx.policies_synced.store(true, Ordering::Relaxed);
        return stream::pending().boxed();
    }
    let (reader, writer) = reflector::store::<HealingPolicy>();
    ctx.watched.set_policies(reader);
    let api: Api<HealingPolicy> = Api::all(ctx.client.clone());
    let wc = watcher::Config::default().fields(&field_selector(&ctx.cfg));
    let ctx = ctx.clone();
    let mut generations: HashMap<String, Option<i64>> = HashMap::new();
    watcher(api, wc)
        .default_backoff()
        .reflect(writer)
        .filter_map(move |ev| {
            let changed = match ev {
                Ok(watcher::Event::Apply(hp)) => {
                    let g = hp.metadata.generation;
                    generations.insert(selection::key(&hp), g) != Some(g)
                }
                Ok(watcher::Event::InitApply(hp)) => {
                    generations.insert(selection::key(&hp), hp.metadata.generation);
                    false
                }
                Ok(watcher::Event::Delete(hp)) => {
                    let key = selection::key(&hp);
                    generations.remove(&key);
                    ctx.state().records.remove(&key);
                    info!(policy = %key, "healing policy deleted");
                    true
                }
                Ok(watcher::Event::InitDone) => {
                    ctx.policies_synced.store(true, Ordering::Relaxed);
                    true
                }
                Ok(watcher::Event::Init) => false,
                Err(e) => {
                    warn!(error = %e, "watching HealingPolicies failed (is the CRD installed? --healing-policies=false runs without)");
                    false
                }
            };
            future::ready(changed.then_some(()))
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selector_excludes_system_namespaces_and_pins_a_single_namespace() {
        use clap::Parser;
        let cfg = Config::try_parse_from([
            "c",
            "--namespaces=shop",
            "--pod-namespace=ops",
            "--exclude-namespaces=kube-system",
        ])
        .expect("parse");
        assert_eq!(
            field_selector(&cfg),
            "metadata.namespace!=kube-system,metadata.namespace!=kube-public,\
             metadata.namespace!=kube-node-lease,metadata.namespace!=ops,metadata.namespace=shop"
        );
    }
}
