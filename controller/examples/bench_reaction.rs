//! Reaction-latency benchmark: status change → eviction, with thousands of other pods in the cache.
//!
//! Run with (the local cluster up, see `bench/controller-reaction.sh`):
//! `KUBECONFIG=~/.cache/selfheal/cluster/kubeconfig cargo run --release -p selfheal-controller --example bench_reaction`
//!
//! Creates a namespace with `BENCH_BACKGROUND_PODS` (10 000) Pending pods that match no node and
//! `BENCH_TARGET_PODS` (100) Pending target pods, each controlled by its own ConfigMap (so each is
//! its own workload). Runs the reconciler in-process (minimum age and cooldown 0), then for each
//! target writes a restart count over the threshold through the `status` subresource and times
//! until the watch sees the pod evicted. Baseline in the same run: the status-write round trip.
//! Prints `name value unit` lines. `BENCH_KEEP=1` keeps the namespace and prints its name last.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use selfheal_controller::config::Config;
use selfheal_controller::context::Context;
use selfheal_controller::leader::Leadership;
use selfheal_controller::metrics::Metrics;
use selfheal_controller::run;
use tokio::sync::mpsc;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pending_pod(name: &str, labels: &[(&str, &str)], owner: Option<OwnerReference>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("localhost/selfheal-toolbox:dev".into()),
                image_pull_policy: Some("Never".into()),
                ..Container::default()
            }],
            // NB: matches no node, so the pod stays Pending and costs the node nothing.
            node_selector: Some(BTreeMap::from([(
                "selfheal.io/bench".to_owned(),
                "nowhere".to_owned(),
            )])),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let background = env_num("BENCH_BACKGROUND_PODS", 10_000);
    let targets = env_num("BENCH_TARGET_PODS", 100);
    let keep = std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1");
    let client = Client::try_default()
        .await
        .context("no cluster: run `make cluster-up` or set KUBECONFIG")?;
    let ns = format!("sh-bench-{:x}", std::process::id());
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        },
    )
    .await
    .context("creating namespace")?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);

    let started = Instant::now();
    stream::iter(0..background)
        .map(|i| {
            let pods = pods.clone();
            async move {
                pods.create(
                    &PostParams::default(),
                    &pending_pod(&format!("bg-{i}"), &[("bench", "background")], None),
                )
                .await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .context("creating background pods")?;
    eprintln!(
        "created {background} background pods in {:?}",
        started.elapsed()
    );
    for i in 0..targets {
        let cm = cms
            .create(
                &PostParams::default(),
                &ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(format!("owner-{i}")),
                        ..ObjectMeta::default()
                    },
                    ..ConfigMap::default()
                },
            )
            .await?;
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: cm.name_any(),
            uid: cm.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        pods.create(
            &PostParams::default(),
            &pending_pod(&format!("target-{i}"), &[("bench", "target")], Some(owner)),
        )
        .await?;
    }

    // The controller, in-process, exactly as the binary runs it.
    let cfg = Config::try_parse_from([
        "selfheal-controller".to_owned(),
        "--leader-election=false".into(),
        "--min-pod-age-secs=0".into(),
        "--cooldown-secs=0".into(),
        "--rate-restarts=0".into(),
        "--max-retries=1000".into(),
        "--max-recycles-per-window=1000".into(),
        "--concurrency=8".into(),
        format!("--namespaces={ns}"),
        "--pod-namespace=selfheal-bench".into(),
        // The pod healer alone: with policies on, readiness waits for the HealingPolicy CRD,
        // which a bare cluster does not have (the bench then never started).
        "--healing-policies=false".into(),
    ])?;
    let rss_before = rss_kib();
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    // NB: the controller's own client (no built-in 429 retry, request counter), as in main.rs.
    let ctl_client = run::client(&metrics).await?;
    let ctx = Arc::new(Context::new(
        ctl_client,
        cfg,
        metrics.clone(),
        Leadership::always(),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let synced_at = Instant::now();
    let controller = tokio::spawn(run::run(ctx, ready.clone(), async move {
        let _ = stop_rx.await;
    }));
    while !ready.load(Ordering::Relaxed) {
        anyhow::ensure!(
            synced_at.elapsed() < Duration::from_secs(300),
            "the controller's caches did not sync in 5 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sync = synced_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let watched = metrics.watched_pods.get();

    // Eviction observer: the first time the watch sees a target pod deleted or terminating.
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Instant)>();
    let observer = {
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut seen = HashMap::new();
            let mut w = watcher(pods, watcher::Config::default().labels("bench=target")).boxed();
            while let Ok(Some(ev)) = w.try_next().await {
                let gone = match ev {
                    watcher::Event::Delete(p) => Some(p),
                    watcher::Event::Apply(p) if p.metadata.deletion_timestamp.is_some() => Some(p),
                    _ => None,
                };
                if let Some(p) = gone
                    && seen.insert(p.name_any(), ()).is_none()
                {
                    let _ = tx.send((p.name_any(), Instant::now()));
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut reaction = Vec::with_capacity(targets);
    let mut rtt = Vec::with_capacity(targets);
    let mut missed = 0;
    for i in 0..targets {
        let name = format!("target-{i}");
        let patch = serde_json::json!({"status": {"containerStatuses": [{
            "name": "c", "image": "localhost/selfheal-toolbox:dev", "imageID": "", "ready": false,
            "restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
        }]}});
        let t0 = Instant::now();
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        rtt.push(t0.elapsed());
        let deadline = t0 + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Some((n, at))) if n == name => {
                    reaction.push(at - t0);
                    break;
                }
                Ok(Some(_)) => {}
                _ => {
                    missed += 1;
                    break;
                }
            }
        }
    }
    reaction.sort();
    rtt.sort();
    let p50 = percentile(&reaction, 50.0);
    println!("controller_cache_pods {watched} pods");
    println!("controller_initial_sync {} ms", ms(sync));
    println!("controller_reaction_p50 {} ms", ms(p50));
    println!(
        "controller_reaction_p99 {} ms",
        ms(percentile(&reaction, 99.0))
    );
    println!(
        "controller_reaction_max {} ms",
        ms(reaction.last().copied().unwrap_or_default())
    );
    println!("controller_reaction_samples {} pods", reaction.len());
    println!("controller_reaction_missed {missed} pods");
    println!(
        "baseline_status_write_p50 {} ms",
        ms(percentile(&rtt, 50.0))
    );
    let base = percentile(&rtt, 50.0).as_secs_f64();
    if base > 0.0 {
        println!(
            "controller_reaction_p50_over_baseline {:.1} x",
            p50.as_secs_f64() / base
        );
    }
    println!(
        "bench_process_rss_delta_with_cache {} MiB",
        (rss_kib().saturating_sub(rss_before)) / 1024
    );

    let _ = stop_tx.send(());
    let _ = controller.await;
    observer.abort();
    if keep {
        println!("namespace {ns}");
    } else {
        nss.delete(&ns, &DeleteParams::default()).await?;
    }
    Ok(())
}
