//! Kubernetes I/O of the demo: set up (namespace, release), run load in the background, and for
//! each layer inject the fault, then *watch* (reflector-backed watches, never a sleep loop) until
//! the API shows it detected and healed, or the layer's deadline passes. Every decision about what
//! the objects mean is a pure function in [`crate::extract`]; the report types are in
//! [`crate::report`].
//!
//! This file is the hub: [`RunConfig`](crate::runner::RunConfig), the
//! [`Runner`](crate::runner::Runner), setup, the run loop and teardown. The rest sits beside it,
//! one file per concern:
//! - `wait.rs`: the reflector-backed wait and the waits built on it (rollout, one pod, an Event);
//! - `steps.rs`: the steps layers share (helm install, Ready pods, `POST /crash`, the background
//!   load, layer scripts, the controller's env);
//! - `layers/`: layers 1–7, one file each;
//! - `ops.rs` and `ops/`: layers 8–11, the ops healers, with their scenario helpers.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::extract;
use crate::load::Recorder;
use crate::report::{LayerReport, RunReport, Status};
use crate::stats;
use crate::theory::Settings;
use crate::{Error, Result};

use self::steps::run_script;

mod layers;
mod ops;
mod steps;
mod wait;

/// What the runner needs to know.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Namespace of the demo (created when missing).
    pub namespace: String,
    /// Helm release of the app (installed when missing).
    pub release: String,
    /// Layers to run, in order.
    pub layers: Vec<u8>,
    /// Leave faults and what the runner installed in place.
    pub keep: bool,
    /// Repository root: the chart, the values and the layer scripts are found from here.
    pub repo_root: PathBuf,
    /// Values file for installs and the bad release (relative to the repo root or absolute).
    pub values: PathBuf,
    /// App image repository.
    pub image_repository: String,
    /// App image tag.
    pub image_tag: String,
    /// Plain URL for the load instead of the automatic choice.
    pub load_url: Option<String>,
    /// Requests per second of the background load.
    pub load_rate: f64,
    /// How long layer 2's pod stays unready.
    pub unready_secs: u64,
    /// Helm's timeout for layer 4's bad release.
    pub helm_timeout_secs: u64,
}

/// The client the runner uses: the current kube context, without kube's retry layer, which
/// would swallow the PodDisruptionBudget's 429 answers layer 6 must see.
pub async fn client() -> Result<Client> {
    let mut config = kube::Config::infer().await.map_err(|e| Error::Setup(format!(
        "no usable kube context ({e}): set KUBECONFIG (local cluster: ~/.cache/selfheal/cluster/kubeconfig) or run minikube start"
    )))?;
    config.default_retry = false;
    Client::try_from(config).map_err(|e| kube_err("building the client", e))
}

fn kube_err(context: &str, source: kube::Error) -> Error {
    Error::Kube {
        context: context.to_owned(),
        source,
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn progress(text: impl AsRef<str>) {
    eprintln!(
        "{} {}",
        Timestamp::now().strftime("%H:%M:%S"),
        text.as_ref()
    );
}

/// The demo runner with its cluster handles.
pub struct Runner {
    client: Client,
    cfg: RunConfig,
    deployment: String,
    selector: String,
    service: String,
    settings: Settings,
    recorder: Recorder,
    load_started: Timestamp,
    created_namespace: bool,
    installed_release: bool,
}

impl Runner {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.cfg.namespace)
    }

    fn events(&self) -> Api<Event> {
        Api::namespaced(self.client.clone(), &self.cfg.namespace)
    }

    fn path(&self, p: &std::path::Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.cfg.repo_root.join(p)
        }
    }

    /// Connect, make sure the namespace and the release exist and are ready, resolve names.
    pub async fn setup(client: Client, cfg: RunConfig) -> Result<Self> {
        let ns_api: Api<Namespace> = Api::all(client.clone());
        let created_namespace = match ns_api.get_opt(&cfg.namespace).await {
            Ok(Some(_)) => false,
            Ok(None) => {
                progress(format!(
                    ">>> creating namespace {} (restricted Pod Security)",
                    cfg.namespace
                ));
                let ns: Namespace = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": cfg.namespace, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}
                }))
                .map_err(|e| Error::Setup(format!("namespace object: {e}")))?;
                ns_api
                    .create(&PostParams::default(), &ns)
                    .await
                    .map_err(|e| kube_err("creating the namespace", e))?;
                true
            }
            Err(e) => return Err(kube_err("reading the namespace", e)),
        };
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
        let helm = secrets
            .list(&ListParams::default().labels(&format!("owner=helm,name={}", cfg.release)))
            .await
            .map_err(|e| kube_err("listing Helm release Secrets", e))?;
        let revs = extract::helm_revisions(&helm.items, &cfg.release);
        let mut runner = Runner {
            client: client.clone(),
            cfg,
            deployment: String::new(),
            selector: String::new(),
            service: String::new(),
            settings: Settings::from_deployment(&Deployment::default()),
            recorder: Recorder::default(),
            load_started: Timestamp::now(),
            created_namespace,
            installed_release: false,
        };
        if extract::deployed_revision(&revs).is_none() {
            runner.helm_install().await?;
            runner.installed_release = true;
        }
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &runner.cfg.namespace);
        let list = deployments
            .list(&ListParams::default().labels(&format!(
                "app.kubernetes.io/instance={}",
                runner.cfg.release
            )))
            .await
            .map_err(|e| kube_err("listing the release's Deployments", e))?;
        let dep = list.items.into_iter().next().ok_or_else(|| {
            Error::Setup(format!(
                "release {} has no Deployment in {}",
                runner.cfg.release, runner.cfg.namespace
            ))
        })?;
        runner.deployment = dep.name_any();
        runner.service = runner.deployment.clone();
        runner.selector = label_selector(&dep);
        runner.settings = Settings::from_deployment(&dep);
        runner
            .wait_rolled_out(Instant::now() + Duration::from_secs(180))
            .await
            .map_err(Error::Setup)?;
        Ok(runner)
    }

    /// Run every asked-for layer, then tear down. The report says what happened.
    pub async fn run(mut self) -> Result<RunReport> {
        let started_at = Timestamp::now();
        let nodes: Api<Node> = Api::all(self.client.clone());
        let schedulable = nodes
            .list(&ListParams::default())
            .await
            .map(|l| schedulable_nodes(&l.items))
            .unwrap_or(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let replicas = Arc::new(Mutex::new(Vec::new()));
        let (load_target, load_task, rec_task) =
            self.start_background(stop_rx, replicas.clone()).await?;
        let mut layers = Vec::new();
        let mut interrupted = false;
        for &n in &self.cfg.layers.clone() {
            if interrupted {
                break;
            }
            let mut report = LayerReport::new(n, Timestamp::now());
            progress(format!(">>> layer {n} — {}: {}", report.name, report.fault));
            // Ctrl-C ends the layer as failed and still tears down (faults, canary, install).
            let result = tokio::select! {
                r = self.layer(n, &mut report, schedulable) => r,
                _ = tokio::signal::ctrl_c() => {
                    interrupted = true;
                    Err("interrupted (Ctrl-C); remaining layers skipped".to_owned())
                }
            };
            if let Err(reason) = result {
                report.reason = Some(reason);
            }
            report.finish(Timestamp::now());
            let from = millis_after(self.load_started, report.started_at);
            let to = millis_after(self.load_started, report.finished_at);
            let window = stats::window(&self.recorder.snapshot(), from, to);
            report.load = Some(stats::summarize(&window, (to - from) as f64 / 1000.0));
            match report.status {
                Status::Healed => progress(format!(
                    "✔ layer {n} healed: detected after {:.1} s, healed after {:.1} s, {} of {} requests failed",
                    report.time_to_detect_secs.unwrap_or_default(),
                    report.time_to_heal_secs.unwrap_or_default(),
                    report.load.as_ref().map_or(0, |l| l.failed),
                    report.load.as_ref().map_or(0, |l| l.total),
                )),
                Status::NotAvailable => progress(format!(
                    "    layer {n} not available yet: {}",
                    report.reason.as_deref().unwrap_or("")
                )),
                Status::Failed => progress(format!(
                    "!!! layer {n} FAILED: {}",
                    report.reason.as_deref().unwrap_or("")
                )),
            }
            layers.push(report);
        }
        let _ = stop_tx.send(true);
        let run = load_task
            .await
            .map_err(|e| Error::Setup(format!("load task: {e}")))?;
        let _ = rec_task.await;
        let finished_at = Timestamp::now();
        let load_series = stats::per_second(&run.samples, run.duration.as_secs_f64());
        self.teardown().await;
        let replicas = replicas.lock().map(|r| r.clone()).unwrap_or_default();
        Ok(RunReport {
            ok: RunReport::compute_ok(&layers),
            namespace: self.cfg.namespace.clone(),
            release: self.cfg.release.clone(),
            load_target,
            schedulable_nodes: schedulable,
            started_at,
            finished_at,
            layers,
            replicas,
            load_started_at: run.started,
            load_series,
        })
    }

    async fn layer(
        &self,
        n: u8,
        report: &mut LayerReport,
        schedulable: usize,
    ) -> std::result::Result<(), String> {
        match n {
            1 => self.layer_liveness(report).await,
            2 => self.layer_readiness(report).await,
            3 => self.layer_recycle(report).await,
            4 => self.layer_helm(report).await,
            5 => self.layer_hpa(report).await,
            6 => self.layer_drain(report, schedulable).await,
            7 => self.layer_canary(report).await,
            8 => self.layer_leak(report).await,
            9 => self.layer_pool(report).await,
            10 => self.layer_breaker(report).await,
            11 => self.layer_zombie(report).await,
            _ => Err(format!("there is no layer {n}")),
        }
    }

    async fn teardown(&self) {
        if self.cfg.keep {
            progress(format!(
                ">>> --keep: faults and the release stay in namespace {} for inspection",
                self.cfg.namespace
            ));
            return;
        }
        let canary_selector = format!(
            "app.kubernetes.io/instance={},track=canary",
            self.cfg.release
        );
        let rollback = self.cfg.repo_root.join("canary/rollback.sh");
        let canaries = self
            .pods()
            .list(&ListParams::default().labels(&canary_selector))
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        if canaries > 0 && rollback.exists() {
            progress(">>> teardown: a canary is still running: canary/rollback.sh");
            let common = [
                "--namespace",
                self.cfg.namespace.as_str(),
                "--release",
                self.cfg.release.as_str(),
                "--strategy",
                "replicas",
            ];
            if let Err(e) = run_script(&rollback, &common, &["--reason", "demo teardown"]).await {
                tracing::warn!(error = %e, "canary rollback failed");
            }
        }
        progress(">>> teardown: clearing faults on every pod");
        if let Ok(pods) = self.ready_pods().await {
            for p in &pods {
                if let Err(e) = self.crash(p, "mode=reset").await {
                    tracing::warn!(error = %e, "reset failed");
                }
            }
        }
        if self.installed_release {
            progress(format!(
                ">>> teardown: helm uninstall {} (the runner installed it)",
                self.cfg.release
            ));
            let _ = tokio::process::Command::new("helm")
                .args([
                    "uninstall",
                    &self.cfg.release,
                    "--namespace",
                    &self.cfg.namespace,
                    "--wait",
                    "--timeout",
                    "2m",
                ])
                .stdout(std::process::Stdio::null())
                .status()
                .await;
        }
        if self.created_namespace {
            progress(format!(
                ">>> teardown: deleting namespace {} (the runner created it)",
                self.cfg.namespace
            ));
            let api: Api<Namespace> = Api::all(self.client.clone());
            let _ = api.delete(&self.cfg.namespace, &Default::default()).await;
        }
    }
}

/// The Deployment's `matchLabels` as a label selector (`k=v,k=v`; empty without any).
fn label_selector(dep: &Deployment) -> String {
    dep.spec
        .selector
        .match_labels
        .as_ref()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Nodes that take new pods (not cordoned).
fn schedulable_nodes(nodes: &[Node]) -> usize {
    nodes
        .iter()
        .filter(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .count()
}

/// Milliseconds from `start` to `t` on the load's timeline; a moment before the load started is 0.
fn millis_after(start: Timestamp, t: Timestamp) -> u64 {
    (t.as_millisecond() - start.as_millisecond()).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp literal")
    }

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).expect("node literal")
    }

    #[test]
    fn label_selector_joins_match_labels_in_key_order() {
        let dep: Deployment = serde_json::from_value(json!({
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": "app", "app.kubernetes.io/instance": "web"}},
                "template": {}
            }
        }))
        .expect("deployment literal");
        assert_eq!(
            label_selector(&dep),
            "app.kubernetes.io/instance=web,app.kubernetes.io/name=app"
        );
    }

    #[test]
    fn label_selector_is_empty_without_match_labels() {
        assert_eq!(label_selector(&Deployment::default()), "");
    }

    #[test]
    fn schedulable_nodes_skips_cordoned_ones() {
        let nodes = [
            node(json!({"metadata": {"name": "a"}})),
            node(json!({"metadata": {"name": "b"}, "spec": {"unschedulable": true}})),
            node(json!({"metadata": {"name": "c"}, "spec": {"unschedulable": false}})),
            node(json!({"metadata": {"name": "d"}, "spec": {}})),
        ];
        assert_eq!(schedulable_nodes(&nodes), 3);
        assert_eq!(schedulable_nodes(&[]), 0);
    }

    #[test]
    fn millis_after_measures_from_the_load_start_and_clamps_earlier_moments() {
        let start = ts("2024-05-01T10:00:00Z");
        assert_eq!(millis_after(start, ts("2024-05-01T10:00:01.250Z")), 1250);
        assert_eq!(millis_after(start, start), 0);
        assert_eq!(millis_after(start, ts("2024-05-01T09:59:59Z")), 0);
    }
}
