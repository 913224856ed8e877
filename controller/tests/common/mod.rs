//! Shared helpers of the cluster tests: a client that fails loudly without a cluster, a throw-away
//! namespace per test, an in-process controller, and crashing workloads.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, Namespace, Pod, PodSecurityContext, PodSpec, PodTemplateSpec,
    SeccompProfile, SecurityContext,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use selfheal_controller::circuit_breaker::{self, Breakers};
use selfheal_controller::config::Config;
use selfheal_controller::context::Context;
use selfheal_controller::events::REPORTING_CONTROLLER;
use selfheal_controller::healing_policy::{HealingPolicy, HealingPolicySpec};
use selfheal_controller::leader::Leadership;
use selfheal_controller::metrics::Metrics;
use selfheal_controller::run;
use tokio::sync::oneshot;

mod app;
mod prometheus_server;
mod proxy;
#[allow(unused_imports)] // NB: each test binary uses a different part
pub use app::{Traffic, app_deployment, traffic};
#[allow(unused_imports)]
pub use prometheus_server::{Prometheus, prometheus, prometheus_scraping, query};
#[allow(unused_imports)]
pub use proxy::Proxy;

/// Image with a static busybox, present in the local cluster's containerd.
pub const TOOLBOX: &str = "localhost/selfheal-toolbox:dev";
/// The app image (`hack/image.sh --import app`): its `leak` fault profile grows real memory.
pub const APP_IMAGE: &str = "localhost/selfheal-app:dev";

const NO_CLUSTER: &str = "no cluster: run `make cluster-up` or set KUBECONFIG";

/// Client for the cluster in `KUBECONFIG`; panics with how to start one when there is none.
pub async fn client() -> Client {
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => panic!("{NO_CLUSTER} ({e})"),
    };
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => client,
        Ok(Err(e)) => panic!("{NO_CLUSTER} (API server unreachable: {e})"),
        Err(_) => panic!("{NO_CLUSTER} (API server did not answer within 10 s)"),
    }
}

/// The committed, generated CRD (`deploy/crd/`), parsed.
pub fn committed_crd() -> CustomResourceDefinition {
    committed_crd_file("selfheal.io_healingpolicies.yaml")
}

/// A CRD from `deploy/crd/`.
pub fn committed_crd_file(file: &str) -> CustomResourceDefinition {
    let path = format!("{}/deploy/crd/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

/// Install (server-side apply) the committed HealingPolicy and CircuitBreaker CRDs and wait
/// until they are Established. The controller needs them (it watches both); they are
/// cluster-scoped and stay installed, like the CRDs `kubectl apply -k controller/deploy` installs.
pub async fn ensure_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in [
        "selfheal.io_healingpolicies.yaml",
        "selfheal.io_circuitbreakers.yaml",
    ] {
        let crd = committed_crd_file(file);
        let name = crd.metadata.name.clone().expect("CRD name");
        crds.patch(
            &name,
            &PatchParams::apply("selfheal-controller-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("installing {file}: {e}"));
        wait_for(
            &format!("{name} to be Established"),
            Duration::from_secs(30),
            || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    crds.get_opt(&name)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|c| c.status)
                        .and_then(|s| s.conditions)
                        .is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c.type_ == "Established" && c.status == "True")
                        })
                }
            },
        )
        .await;
    }
}

/// Parse a HealingPolicy spec written as YAML.
pub fn policy_spec(yaml: &str) -> HealingPolicySpec {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("spec parses: {e}\n{yaml}"))
}

/// Create HealingPolicy `name` in `ns`.
pub async fn create_policy(
    client: &Client,
    ns: &str,
    name: &str,
    spec_yaml: &str,
) -> HealingPolicy {
    Api::<HealingPolicy>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &HealingPolicy::new(name, policy_spec(spec_yaml)),
        )
        .await
        .unwrap_or_else(|e| panic!("creating HealingPolicy {name}: {e}"))
}

/// HealingPolicy `name` in `ns` as the API server has it now.
pub async fn get_policy(client: &Client, ns: &str, name: &str) -> HealingPolicy {
    Api::<HealingPolicy>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading HealingPolicy {name}: {e}"))
}

/// Run `body` in a fresh namespace `<prefix>-<random>`, deleted afterwards even if `body` panics.
pub async fn in_namespace<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    in_namespaces(&[prefix], |client, mut names| body(client, names.remove(0))).await;
}

/// Like [`in_namespace`], with one fresh namespace per prefix.
pub async fn in_namespaces<F, Fut>(prefixes: &[&str], body: F)
where
    F: FnOnce(Client, Vec<String>) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = client().await;
    ensure_crd(&client).await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let suffix = format!("{:x}", nanos ^ std::process::id());
    let names: Vec<String> = prefixes.iter().map(|p| format!("{p}-{suffix}")).collect();
    let nss: Api<Namespace> = Api::all(client.clone());
    for name in &names {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    "selfheal.io/test".to_owned(),
                    "controller".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        nss.create(&PostParams::default(), &ns)
            .await
            .expect("creating test namespace");
        wait_for("default ServiceAccount", Duration::from_secs(30), || {
            let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
                Api::namespaced(client.clone(), name);
            async move { sa.get_opt("default").await.ok().flatten().is_some() }
        })
        .await;
    }
    let result = std::panic::AssertUnwindSafe(body(client.clone(), names.clone()))
        .catch_unwind()
        .await;
    for name in &names {
        if let Err(e) = nss.delete(name, &DeleteParams::default()).await {
            eprintln!("deleting namespace {name} failed: {e}");
        }
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Our Events with `reason` in `ns` reported by `instance` (the controller's `POD_NAME`).
pub async fn our_events_from(
    client: &Client,
    ns: &str,
    reason: &str,
    instance: &str,
) -> Vec<Event> {
    our_events(client, ns, reason)
        .await
        .into_iter()
        .filter(|e| e.reporting_instance.as_deref() == Some(instance))
        .collect()
}

/// Config for an in-process controller scoped to `ns`: no leader election, no minimum age, no
/// cooldown, threshold 1 (recycle at the 2nd restart), fast backoff, history in memory only;
/// `extra` flags override.
pub fn config(ns: &str, extra: &[&str]) -> Config {
    let mut args: Vec<String> = [
        "selfheal-controller",
        "--leader-election=false",
        "--min-pod-age-secs=0",
        "--cooldown-secs=0",
        "--restart-threshold=1",
        "--rate-restarts=0",
        "--backoff-base-ms=500",
        "--backoff-max-ms=4000",
        "--pod-name=selfheal-controller-test",
        "--pod-namespace=selfheal-controller-test",
        "--exclude-namespaces=kube-system",
        // Memory only: the test controller's namespace does not exist. The restart tests name
        // a ConfigMap in their own namespace.
        "--history-configmap=",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.push(format!("--namespaces={ns}"));
    // Later flags win: drop a default the caller overrides (clap rejects repeated flags).
    for e in extra {
        let flag = e.split('=').next().unwrap_or(e);
        args.retain(|a| a.split('=').next() != Some(flag));
        args.push((*e).to_owned());
    }
    Config::try_parse_from(args).expect("test config parses")
}

/// An in-process controller; stops when dropped.
pub struct Running {
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Start the reconciler in-process (the same library code and client setup the binary uses).
pub async fn start(cfg: Config) -> Running {
    let config = kube::Config::infer().await.expect("kubeconfig");
    start_with(config, cfg)
}

/// Like [`start`], with a client configuration of our own (e.g. through a proxy).
pub fn start_with(config: kube::Config, cfg: Config) -> Running {
    // Controller logs in the test output (shown for failing tests); RUST_LOG=debug for more.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,selfheal_controller=debug")
            }),
        )
        .with_test_writer()
        .try_init();
    let metrics = Arc::new(Metrics::new());
    let client = run::client_from(config, &metrics).expect("controller client");
    // As in main.rs: the CircuitBreakers run beside the pod reconciler, with their own inputs.
    let breakers = Arc::new(Breakers::new(
        client.clone(),
        cfg.clone(),
        metrics.clone(),
        Leadership::always(),
    ));
    let ctx = Arc::new(Context::new(
        client,
        cfg,
        metrics.clone(),
        Leadership::always(),
    ));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let stop = async move {
        let _ = stop_rx.await;
    }
    .shared();
    tokio::spawn(circuit_breaker::run(breakers, stop.clone()));
    tokio::spawn(run::run(ctx, Arc::new(AtomicBool::new(false)), stop));
    Running {
        metrics,
        stop: Some(stop_tx),
    }
}

/// Poll `check` every 500 ms until it holds; panic with `desc` after `timeout`.
pub async fn wait_for<F, Fut>(desc: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {desc}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn security_context() -> (PodSecurityContext, SecurityContext) {
    (
        PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        },
        SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        },
    )
}

/// Pod spec of a container that prints a marker and exits 3 after a second, forever.
pub fn crashing_spec(marker: &str) -> PodSpec {
    let (pod_sc, sc) = security_context();
    PodSpec {
        containers: vec![Container {
            name: "crasher".into(),
            image: Some(TOOLBOX.into()),
            image_pull_policy: Some("Never".into()),
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                format!("echo {marker}; sleep 1; exit 3"),
            ]),
            security_context: Some(sc),
            ..Container::default()
        }],
        security_context: Some(pod_sc),
        termination_grace_period_seconds: Some(1),
        automount_service_account_token: Some(false),
        ..PodSpec::default()
    }
}

/// A Deployment of `replicas` crashing pods labelled `app=<name>`, with pod annotations.
pub fn crashing_deployment(name: &str, replicas: i32, annotations: &[(&str, &str)]) -> Deployment {
    let labels = BTreeMap::from([("app".to_owned(), name.to_owned())]);
    let annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(crashing_spec(&format!("boom-from-{name}"))),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// Create a Deployment in `ns`.
pub async fn create_deployment(client: &Client, ns: &str, d: &Deployment) {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), d)
        .await
        .expect("creating deployment");
}

/// Pods of `app=<app>` in `ns` that are not terminating.
pub async fn live_pods(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("listing pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Total restarts of a pod.
pub fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// Our Events in `ns` with `reason`.
pub async fn our_events(client: &Client, ns: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some(REPORTING_CONTROLLER))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// Kind of the object an Event is about.
pub fn regarding_kind(e: &Event) -> &str {
    e.regarding
        .as_ref()
        .and_then(|r| r.kind.as_deref())
        .unwrap_or_default()
}

/// Counter value for `recycles_total{namespace=ns}` summed over reasons.
pub fn recycles(m: &Metrics, ns: &str) -> u64 {
    [
        "restart_threshold",
        "restart_rate",
        "crash_loop_back_off",
        "oom_killed",
        "image_pull_back_off",
        "not_ready",
        "memory_leak",
    ]
    .iter()
    .map(|r| m.recycles_total.with_label_values(&[ns, r]).get())
    .sum()
}

/// Counter value of `healing_actions_total{action, outcome}`.
pub fn healing_actions(m: &Metrics, action: &str, outcome: &str) -> u64 {
    m.healing_actions_total
        .with_label_values(&[action, outcome])
        .get()
}
