//! Kubernetes I/O of the demo: set up (namespace, release), run load in the background, and for
//! each layer inject the fault, then *watch* (reflector-backed watches, never a sleep loop) until
//! the API shows it detected and healed, or the layer's deadline passes. Every decision about what
//! the objects mean is a pure function in [`crate::extract`]; the report types are in
//! [`crate::report`].

use std::fmt::Debug;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::extract::{self, EndpointState};
use crate::load::{self, Limit, LoadConfig, Recorder, Target};
use crate::report::{LayerReport, MarkKind, ReplicaPoint, RunReport, Status};
use crate::stats;
use crate::theory::Settings;
use crate::verdict::{self, CrashStep};
use crate::{Error, Result};

mod ops;

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

/// Watch objects (a reflector-backed watch: a full list, then every change) and return the first
/// value `check` yields over the current set, re-evaluated on every change. Prints progress every
/// 10 s; gives up at `deadline`.
async fn wait_for<K, T>(
    api: Api<K>,
    wc: watcher::Config,
    what: &str,
    deadline: Instant,
    mut check: impl FnMut(&[Arc<K>]) -> Option<T>,
) -> std::result::Result<T, String>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, wc)).default_backoff();
    futures::pin_mut!(stream);
    let started = Instant::now();
    let mut synced = false;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(watcher::Event::InitDone)) => synced = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => { tracing::warn!(error = %e, what, "watch error, retrying"); continue; }
                None => return Err(format!("the watch for {what} ended")),
            },
            _ = tick.tick() => {
                progress(format!("    … waiting for {what} ({} s)", started.elapsed().as_secs()));
                continue;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                return Err(format!("{what}: not seen within the deadline ({} s of waiting)", started.elapsed().as_secs()));
            }
        }
        if synced && let Some(found) = check(&reader.state()) {
            return Ok(found);
        }
    }
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
        runner.selector = dep
            .spec
            .selector
            .match_labels
            .as_ref()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        runner.settings = Settings::from_deployment(&dep);
        runner
            .wait_rolled_out(Instant::now() + Duration::from_secs(180))
            .await
            .map_err(Error::Setup)?;
        Ok(runner)
    }

    async fn helm_install(&self) -> Result<()> {
        let chart = self.cfg.repo_root.join("helm-chart");
        let values = self.path(&self.cfg.values);
        progress(format!(
            ">>> installing release {} into {} (helm upgrade --install {} -f {}, image {}:{})",
            self.cfg.release,
            self.cfg.namespace,
            chart.display(),
            values.display(),
            self.cfg.image_repository,
            self.cfg.image_tag
        ));
        let status = tokio::process::Command::new("helm")
            .args(["upgrade", "--install", &self.cfg.release])
            .arg(&chart)
            .args(["--namespace", &self.cfg.namespace, "-f"])
            .arg(&values)
            .args([
                "--set",
                &format!("image.repository={}", self.cfg.image_repository),
                "--set",
                &format!("image.tag={}", self.cfg.image_tag),
                "--wait",
                "--timeout",
                "3m",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| {
                Error::Setup(format!(
                    "running helm: {e} (is helm on PATH? source hack/lib.sh)"
                ))
            })?;
        if !status.success() {
            return Err(Error::Setup(format!(
                "helm upgrade --install failed: {status}"
            )));
        }
        Ok(())
    }

    /// All replicas updated, ready and available.
    async fn wait_rolled_out(&self, deadline: Instant) -> std::result::Result<i32, String> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        wait_for(
            api,
            watcher::Config::default().fields(&format!("metadata.name={}", self.deployment)),
            "the Deployment to be rolled out",
            deadline,
            |ds| verdict::rolled_out(ds.first()?),
        )
        .await
    }

    /// Ready, non-terminating pods of the Deployment, by name.
    async fn ready_pods(&self) -> Result<Vec<Pod>> {
        let list = self
            .pods()
            .list(&ListParams::default().labels(&self.selector))
            .await
            .map_err(|e| kube_err("listing pods", e))?;
        let mut pods: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| !extract::terminating(p) && extract::pod_ready(p).0)
            .collect();
        pods.sort_by_key(|p| p.name_any());
        Ok(pods)
    }

    /// `POST /crash?QUERY` to one pod through the API server's pod proxy (no host networking
    /// needed). Retries briefly while the container is not listening yet.
    async fn crash(&self, pod: &Pod, query: &str) -> std::result::Result<(), String> {
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}:{}/proxy/crash?{query}",
            self.cfg.namespace,
            pod.name_any(),
            extract::http_port(pod)
        );
        let mut last = String::new();
        for _ in 0..10 {
            let req = http::Request::post(&path)
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            match self.client.request_text(req).await {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            // NB: a bounded retry of one HTTP call (the container may be a moment from listening), not a wait for the cluster.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err(format!("POST /crash?{query} to {}: {last}", pod.name_any()))
    }

    /// Start the background load and the ready-replicas recorder.
    async fn start_background(
        &mut self,
        stop: watch::Receiver<bool>,
        replicas: Arc<Mutex<Vec<ReplicaPoint>>>,
    ) -> Result<(
        String,
        tokio::task::JoinHandle<load::LoadRun>,
        tokio::task::JoinHandle<()>,
    )> {
        let target = self.load_target().await?;
        let described = target.describe();
        progress(format!(
            ">>> background load: GET {described} at {}/s",
            self.cfg.load_rate
        ));
        let config = LoadConfig {
            concurrency: 4,
            rate: Some(self.cfg.load_rate),
            limit: Limit::UntilStopped,
            timeout: Duration::from_secs(2),
            // Like independent users: new pods (HPA, canary) get their share at once.
            fresh_connections: true,
        };
        self.load_started = Timestamp::now();
        let load = tokio::spawn(load::run(
            target,
            config,
            self.recorder.clone(),
            stop.clone(),
        ));
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let name = self.deployment.clone();
        let mut stop_watch = stop;
        let rec = tokio::spawn(async move {
            let stream = watcher(
                api,
                watcher::Config::default().fields(&format!("metadata.name={name}")),
            )
            .default_backoff()
            .applied_objects();
            futures::pin_mut!(stream);
            let mut last = None;
            loop {
                tokio::select! {
                    _ = stop_watch.changed() => return,
                    d = stream.next() => match d {
                        Some(Ok(d)) => {
                            let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
                            if last != Some(ready) {
                                last = Some(ready);
                                if let Ok(mut r) = replicas.lock() {
                                    r.push(ReplicaPoint { at: Timestamp::now(), ready });
                                }
                            }
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "deployment watch error"),
                        None => return,
                    }
                }
            }
        });
        Ok((described, load, rec))
    }

    /// `--load-url`, else the Service's NodePort on 127.0.0.1 when this machine serves it (the
    /// local cluster's host is the node; `values-demo.yaml` makes the Service a NodePort), else the API server's service proxy (minikube and
    /// remote clusters). Never a ClusterIP or a pod IP: load stays on loopback or goes through
    /// the API server.
    async fn load_target(&self) -> Result<Target> {
        if let Some(url) = &self.cfg.load_url {
            return Target::url(url);
        }
        self.load_target_for(&self.service).await
    }

    /// The NodePort of `service` on 127.0.0.1 when it answers, else the API server's service
    /// proxy.
    async fn load_target_for(&self, service: &str) -> Result<Target> {
        let svc: Api<Service> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let s = svc
            .get(service)
            .await
            .map_err(|e| kube_err("reading the Service", e))?;
        let spec = s.spec.unwrap_or_default();
        let first = spec.ports.as_ref().and_then(|p| p.first());
        let port = first.map_or(80, |p| p.port);
        if let Some(node_port) = first.and_then(|p| p.node_port) {
            let addr = format!("127.0.0.1:{node_port}");
            // A Service installed a moment ago may not be in kube-proxy's rules yet: a few
            // tries before deciding this machine does not serve NodePorts on loopback.
            let mut reachable = false;
            for _ in 0..5 {
                let attempt = Instant::now();
                reachable = tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::net::TcpStream::connect(&addr),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                if reachable {
                    break;
                }
                // NB: bounded connectivity probe (5 s at most), not a wait on cluster state.
                tokio::time::sleep_until((attempt + Duration::from_secs(1)).into()).await;
            }
            if reachable {
                return Target::url(&format!("http://{addr}/"));
            }
            progress(format!(
                "    NodePort {addr} does not answer here (minikube?): load goes through the API server's service proxy"
            ));
        }
        Target::service_proxy(
            self.client.clone(),
            &format!("{}/{service}:{port}", self.cfg.namespace),
        )
    }

    /// Run every asked-for layer, then tear down. The report says what happened.
    pub async fn run(mut self) -> Result<RunReport> {
        let started_at = Timestamp::now();
        let nodes: Api<Node> = Api::all(self.client.clone());
        let schedulable = nodes
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|n| {
                        !n.spec
                            .as_ref()
                            .and_then(|s| s.unschedulable)
                            .unwrap_or(false)
                    })
                    .count()
            })
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
            let from = (report.started_at.as_millisecond() - self.load_started.as_millisecond())
                .max(0) as u64;
            let to = (report.finished_at.as_millisecond() - self.load_started.as_millisecond())
                .max(0) as u64;
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

    /// Wait for one pod (by name) to satisfy `check`.
    async fn wait_pod<T>(
        &self,
        name: &str,
        what: &str,
        deadline: Instant,
        mut check: impl FnMut(Option<&Pod>) -> Option<T>,
    ) -> std::result::Result<T, String> {
        wait_for(
            self.pods(),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            what,
            deadline,
            |ps| check(ps.first().map(AsRef::as_ref)),
        )
        .await
    }

    /// Wait for an Event matching `reason`/`needle` about `object` at or after `since`.
    async fn wait_event(
        &self,
        reason: &str,
        object: Option<&str>,
        needle: &str,
        since: Timestamp,
        deadline: Instant,
    ) -> std::result::Result<extract::Found, String> {
        let mut wc = watcher::Config::default().fields(&format!("reason={reason}"));
        if let Some(o) = object {
            wc = watcher::Config::default()
                .fields(&format!("reason={reason},involvedObject.name={o}"));
        }
        wait_for(
            self.events(),
            wc,
            &format!("Event {reason}"),
            deadline,
            |evs| extract::find_event(evs, reason, object, needle, since),
        )
        .await
    }

    // ---------------------------------------------------------------------------------------
    // Layers. Each fills its report with marks and evidence; Err(reason) fails it.
    // ---------------------------------------------------------------------------------------

    async fn layer_liveness(&self, r: &mut LayerReport) -> std::result::Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(180);
        r.theoretical_min = Some(self.settings.liveness());
        let pod = self
            .ready_pods()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
            .ok_or("no Ready pod")?;
        let name = pod.name_any();
        let before = extract::restart_count(&pod);
        r.evidence("pod", &name);
        r.evidence("restarts_before", before);
        let since = floor_second(Timestamp::now());
        self.crash(&pod, "mode=unhealthy").await?;
        r.mark(
            Timestamp::now(),
            MarkKind::Fault,
            format!("{name}: /health answers 503"),
            "runner clock (POST /crash answered)",
        );
        progress(format!(
            "    fault injected: {name} /health → 503; the kubelet's liveness probe should restart it"
        ));
        let killing = self
            .wait_event("Killing", Some(&name), "liveness", since, deadline)
            .await?;
        r.mark(
            killing.at,
            MarkKind::Detected,
            format!("kubelet: {}", killing.message),
            "Event Killing (kubelet)",
        );
        r.evidence("killing_event", &killing.message);
        progress(format!("    detected: {}", killing.message));
        let (ready_at, after) = self
            .wait_pod(
                &name,
                "the restarted container to be Ready",
                deadline,
                |p| verdict::restarted_and_ready(p, before, Timestamp::now()),
            )
            .await?;
        r.mark(
            ready_at,
            MarkKind::Healed,
            format!("{name} Ready again after restart (restartCount {after})"),
            "pod condition Ready",
        );
        r.evidence("restarts_after", after);
        r.evidence("restart_count_grew", after > before);
        Ok(())
    }

    async fn layer_readiness(&self, r: &mut LayerReport) -> std::result::Result<(), String> {
        let secs = self.cfg.unready_secs;
        let deadline = Instant::now() + Duration::from_secs(secs + 120);
        r.theoretical_min = Some(self.settings.readiness(secs as f64));
        let pods = self.ready_pods().await.map_err(|e| e.to_string())?;
        let pod = pods.get(1).or(pods.first()).ok_or("no Ready pod")?.clone();
        let name = pod.name_any();
        let before = extract::restart_count(&pod);
        r.evidence("pod", &name);
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let wc = watcher::Config::default()
            .labels(&format!("kubernetes.io/service-name={}", self.service));
        self.crash(&pod, &format!("mode=unready&seconds={secs}"))
            .await?;
        r.mark(
            Timestamp::now(),
            MarkKind::Fault,
            format!("{name}: /ready answers 503 for {secs} s"),
            "runner clock (POST /crash answered)",
        );
        progress(format!(
            "    fault injected: {name} unready for {secs} s; the Service should drop it"
        ));
        let mut min_ready = usize::MAX;
        let (removed_at, state) = wait_for(
            slices.clone(),
            wc.clone(),
            "the endpoint to leave the Service",
            deadline,
            |ss| {
                min_ready = min_ready.min(extract::ready_endpoints(ss));
                let (state, at) = extract::endpoint_state(ss, &name);
                (state != EndpointState::Ready).then(|| (at.unwrap_or_else(Timestamp::now), state))
            },
        )
        .await?;
        r.mark(
            removed_at,
            MarkKind::Detected,
            format!("EndpointSlice: {name} {state:?}, no traffic"),
            "EndpointSlice last-change-trigger-time",
        );
        r.evidence("endpoint_removed", true);
        progress(format!(
            "    detected: {name} out of the Service's ready endpoints"
        ));
        let restored_at = wait_for(slices, wc, "the endpoint to come back", deadline, |ss| {
            min_ready = min_ready.min(extract::ready_endpoints(ss));
            let (state, at) = extract::endpoint_state(ss, &name);
            (state == EndpointState::Ready).then(|| at.unwrap_or_else(Timestamp::now))
        })
        .await?;
        r.mark(
            restored_at,
            MarkKind::Healed,
            format!("EndpointSlice: {name} ready again"),
            "EndpointSlice last-change-trigger-time",
        );
        r.evidence("endpoint_restored", true);
        r.evidence("min_ready_endpoints", min_ready);
        let after = self
            .pods()
            .get(&name)
            .await
            .map(|p| extract::restart_count(&p))
            .unwrap_or(-1);
        r.evidence("restarts_before", before);
        r.evidence("restarts_after", after);
        Ok(())
    }

    async fn layer_recycle(&self, r: &mut LayerReport) -> std::result::Result<(), String> {
        let controllers: Api<Deployment> = Api::namespaced(self.client.clone(), "selfheal-system");
        let ready = match controllers.get_opt("selfheal-controller").await {
            Ok(Some(d)) => d.status.and_then(|s| s.ready_replicas).unwrap_or(0),
            Ok(None) => 0,
            Err(e) => return Err(format!("reading the controller Deployment: {e}")),
        };
        if ready == 0 {
            r.status = Status::NotAvailable;
            return Err("selfheal-controller is not running in selfheal-system (install it: kubectl apply -k controller/deploy)".into());
        }
        let env = controller_env(&controllers).await;
        let threshold = env("CONTROLLER_RESTART_THRESHOLD").unwrap_or(3.0) as u32;
        let rate = env("CONTROLLER_RATE_RESTARTS").unwrap_or(3.0) as u32;
        let min_age = env("CONTROLLER_MIN_POD_AGE_SECS").unwrap_or(60.0);
        let needed = if rate > 0 {
            rate.min(threshold + 1)
        } else {
            threshold + 1
        };
        let deadline = Instant::now() + Duration::from_secs(420);
        let pods = self.ready_pods().await.map_err(|e| e.to_string())?;
        // The pod with the fewest restarts: layer 1 may have restarted one.
        let pod = pods
            .iter()
            .min_by_key(|p| extract::restart_count(p))
            .ok_or("no Ready pod")?
            .clone();
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let age = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0.0, |c| extract::secs_between(c.0, Timestamp::now()));
        r.theoretical_min = Some(self.settings.recycle(needed, min_age, age));
        r.evidence("pod", &name);
        let since = floor_second(Timestamp::now());
        let mut crashes = 0u32;
        let mut restarts = extract::restart_count(&pod);
        let evicted_seen_at = loop {
            // The container may already be gone between two crashes: then it was recycled.
            if let Err(e) = self.crash(&pod, "mode=exit").await {
                progress(format!(
                    "    crash not delivered ({e}); checking whether the pod is gone"
                ));
            } else {
                crashes += 1;
                if crashes == 1 {
                    r.mark(
                        Timestamp::now(),
                        MarkKind::Fault,
                        format!("{name}: container exits (code 3), again after every restart"),
                        "runner clock (POST /crash answered)",
                    );
                }
                progress(format!(
                    "    crash {crashes} of {name} (restartCount {restarts}; the controller acts after {needed} restarts once the pod is {min_age} s old)"
                ));
            }
            let last = restarts;
            let step = self
                .wait_pod(
                    &name,
                    "the container to restart, or the pod to be recycled",
                    deadline,
                    |p| verdict::crash_step(p, &uid, last),
                )
                .await?;
            match step {
                CrashStep::Restarted(n) => restarts = n,
                CrashStep::Gone => break Timestamp::now(),
            }
            if crashes >= 12 {
                return Err(format!(
                    "{name} crashed {crashes} times and was not recycled"
                ));
            }
        };
        r.evidence("crashes", crashes);
        r.evidence("restarts_at_eviction", restarts);
        r.evidence("evicted_pod", &name);
        let recycled = self
            .wait_event(
                "Recycled",
                Some(&name),
                "",
                since,
                Instant::now() + Duration::from_secs(60),
            )
            .await;
        match recycled {
            Ok(f) => {
                r.mark(
                    f.at,
                    MarkKind::Detected,
                    format!("selfheal-controller: {}", f.message),
                    "Event Recycled (selfheal-controller)",
                );
                r.evidence("recycled_event", &f.message);
                progress(format!("    detected: Recycled — {}", f.message));
            }
            Err(e) => {
                return Err(format!(
                    "{name} left, but no Recycled Event from selfheal-controller: {e} (pod gone at {evicted_seen_at})"
                ));
            }
        }
        let deployments: Api<Deployment> =
            Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let want = deployments
            .get(&self.deployment)
            .await
            .ok()
            .and_then(|d| d.spec.replicas)
            .unwrap_or(1);
        let (healed_at, fresh) = wait_for(
            self.pods(),
            watcher::Config::default().labels(&self.selector),
            "a fresh pod Ready in its place",
            deadline,
            |ps| verdict::replacement_ready(ps, &name, since, want),
        )
        .await?;
        r.mark(
            healed_at,
            MarkKind::Healed,
            format!("{fresh} Ready, {want} of {want} replicas"),
            "pod condition Ready",
        );
        r.evidence("replacement_pod", &fresh);
        r.evidence("pod_evicted_and_replaced", true);
        Ok(())
    }

    async fn layer_helm(&self, r: &mut LayerReport) -> std::result::Result<(), String> {
        let script = self.cfg.repo_root.join("self-healing/auto-rollback.sh");
        if !script.exists() {
            r.status = Status::NotAvailable;
            return Err(format!("{} is not in this tree", script.display()));
        }
        let timeout = self.cfg.helm_timeout_secs;
        r.theoretical_min = Some(self.settings.helm(timeout as f64));
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let lp = ListParams::default().labels(&format!("owner=helm,name={}", self.cfg.release));
        let before = secrets
            .list(&lp)
            .await
            .map_err(|e| format!("listing Helm Secrets: {e}"))?;
        let revs = extract::helm_revisions(&before.items, &self.cfg.release);
        let good = extract::deployed_revision(&revs)
            .ok_or("the release has no deployed revision")?
            .version;
        r.evidence("good_revision", good);
        let values = self.path(&self.cfg.values);
        progress(format!(
            "    deploying a bad release (faultProfile=unready) with self-healing/auto-rollback.sh, helm timeout {timeout} s"
        ));
        let started = Timestamp::now();
        let timeout_arg = format!("{timeout}s");
        let values_arg = values.to_string_lossy().into_owned();
        let (code, summary) = run_script(
            &script,
            &[
                "--namespace",
                &self.cfg.namespace,
                "--release",
                &self.cfg.release,
                "--values",
                &values_arg,
            ],
            &[
                "--image-repository",
                &self.cfg.image_repository,
                "--image-tag",
                &self.cfg.image_tag,
                "--set",
                "app.faultProfile=unready",
                "--timeout",
                &timeout_arg,
                "--smoke-requests",
                "5",
                "--output",
                "json",
            ],
        )
        .await?;
        r.evidence("auto_rollback_exit_code", code);
        r.evidence(
            "auto_rollback_result",
            summary.get("result").cloned().unwrap_or_default(),
        );
        let after = secrets
            .list(&lp)
            .await
            .map_err(|e| format!("listing Helm Secrets: {e}"))?;
        let revs = extract::helm_revisions(&after.items, &self.cfg.release);
        r.evidence("revisions", &revs);
        let bad = revs
            .iter()
            .find(|v| v.version == good + 1)
            .ok_or("no bad revision was recorded")?;
        r.mark(
            bad.created.unwrap_or(started),
            MarkKind::Fault,
            format!("revision {} (faultProfile=unready) deployed", bad.version),
            "Helm release Secret creationTimestamp",
        );
        if bad.status != "failed" && bad.status != "superseded" {
            return Err(format!(
                "bad revision {} is {}, not failed",
                bad.version, bad.status
            ));
        }
        let serving =
            extract::deployed_revision(&revs).ok_or("no deployed revision after the rollback")?;
        r.evidence("serving_revision", serving.version);
        r.evidence(
            "rolled_back_to_good",
            code == 3 && serving.version > bad.version,
        );
        if code != 3 || serving.version <= bad.version {
            return Err(format!(
                "auto-rollback.sh exited {code} (expected 3: rolled back and healthy); deployed revision {}",
                serving.version
            ));
        }
        // NB: Helm copies the previous revision's modifiedAt label into a failed one, so the
        // failure is timed by the rollback revision's creation: the moment verification gave up.
        r.mark(
            serving.created.unwrap_or_else(Timestamp::now),
            MarkKind::Detected,
            format!(
                "revision {} {} (verification failed): rollback revision {} created",
                bad.version, bad.status, serving.version
            ),
            "Helm release Secret creationTimestamp (rollback revision)",
        );
        r.mark(
            serving.modified.unwrap_or_else(Timestamp::now),
            MarkKind::Healed,
            format!(
                "revision {} (rollback to {good}) deployed and verified",
                serving.version
            ),
            "Helm release Secret modifiedAt label",
        );
        Ok(())
    }

    async fn layer_hpa(&self, r: &mut LayerReport) -> std::result::Result<(), String> {
        let hpas: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let Some(hpa) = hpas
            .get_opt(&self.deployment)
            .await
            .map_err(|e| format!("reading the HPA: {e}"))?
        else {
            r.status = Status::NotAvailable;
            return Err(
                "the release has no HorizontalPodAutoscaler (autoscaling.enabled=false)".into(),
            );
        };
        let min = extract::hpa_min(&hpa);
        let deadline = Instant::now() + Duration::from_secs(300);
        r.theoretical_min = Some(self.settings.hpa());
        let pods = self.ready_pods().await.map_err(|e| e.to_string())?;
        let start_ready = pods.len() as i32;
        r.evidence("min_replicas", min);
        r.evidence("ready_before", start_ready);
        for (i, p) in pods.iter().enumerate() {
            self.crash(p, "mode=cpu&seconds=240&threads=1").await?;
            if i == 0 {
                r.mark(
                    Timestamp::now(),
                    MarkKind::Fault,
                    format!(
                        "CPU burn on {} pods (1 thread each, request 50m)",
                        pods.len()
                    ),
                    "runner clock (POST /crash answered)",
                );
            }
        }
        progress("    fault injected: every pod burns a CPU; the HPA should add replicas");
        let (desired, scaled_at) = wait_for(
            hpas,
            watcher::Config::default().fields(&format!("metadata.name={}", self.deployment)),
            "the HPA to want more replicas",
            deadline,
            |hs| verdict::scaled_out(hs.first()?, start_ready.max(min), Timestamp::now()),
        )
        .await?;
        r.mark(
            scaled_at,
            MarkKind::Detected,
            format!("HPA scaled to {desired} replicas (min {min})"),
            "HPA status.lastScaleTime",
        );
        progress(format!("    detected: HPA wants {desired} replicas"));
        let (healed_at, ready) = wait_for(
            self.pods(),
            watcher::Config::default().labels(&self.selector),
            "the new replicas to be Ready",
            deadline,
            |ps| verdict::ready_at_least(ps, desired, Timestamp::now()),
        )
        .await?;
        r.mark(
            healed_at,
            MarkKind::Healed,
            format!("{ready} replicas Ready (was {start_ready})"),
            "pod condition Ready (newest)",
        );
        r.evidence("ready_after", ready);
        r.evidence("replicas_above_min", ready as i32 > min);
        // Stop burning so later layers start calm; the HPA scales back in by itself.
        for p in &self.ready_pods().await.unwrap_or_default() {
            let _ = self.crash(p, "mode=reset").await;
        }
        Ok(())
    }

    async fn layer_drain(
        &self,
        r: &mut LayerReport,
        schedulable: usize,
    ) -> std::result::Result<(), String> {
        let pdbs: Api<PodDisruptionBudget> =
            Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let Some(pdb) = pdbs
            .get_opt(&self.deployment)
            .await
            .map_err(|e| format!("reading the PDB: {e}"))?
        else {
            r.status = Status::NotAvailable;
            return Err("the release has no PodDisruptionBudget (podDisruptionBudget.enabled=false or 1 replica)".into());
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut pods = self.ready_pods().await.map_err(|e| e.to_string())?;
        let want = pods.len();
        let mut cordoned = None;
        if schedulable > 1 {
            // A real drain of the node of the first pod: cordon it, evict our pods there.
            let node = pods
                .first()
                .and_then(|p| p.spec.as_ref()?.node_name.clone())
                .ok_or("pod without a node")?;
            let nodes: Api<Node> = Api::all(self.client.clone());
            nodes
                .patch(
                    &node,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": {"unschedulable": true}})),
                )
                .await
                .map_err(|e| format!("cordoning {node}: {e}"))?;
            progress(format!(
                "    cordoned {node} ({schedulable} schedulable nodes): draining the demo's pods from it"
            ));
            pods.retain(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
            });
            cordoned = Some(node);
        } else {
            progress(
                "    single schedulable node: no cordon; every pod is evicted through the Eviction API, as kubectl drain does",
            );
        }
        let (allowed, healthy, desired) = extract::pdb_status(&pdb);
        r.theoretical_min = Some(
            self.settings
                .drain(pods.len() as u32, allowed.max(1) as u32),
        );
        r.evidence(
            "pods_before",
            pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        );
        r.evidence("pdb_before", serde_json::json!({"disruptionsAllowed": allowed, "currentHealthy": healthy, "desiredHealthy": desired}));
        let result = self.evict_all(r, &pods, &pdbs, deadline).await;
        if let Some(node) = cordoned {
            let nodes: Api<Node> = Api::all(self.client.clone());
            let _ = nodes
                .patch(
                    &node,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": {"unschedulable": false}})),
                )
                .await;
            progress(format!("    uncordoned {node}"));
        }
        result?;
        let originals: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        let (healed_at, ready) = wait_for(
            self.pods(),
            watcher::Config::default().labels(&self.selector),
            "every evicted pod replaced and Ready",
            deadline,
            |ps| verdict::drained_and_replaced(ps, &originals, want, Timestamp::now()),
        )
        .await?;
        r.mark(
            healed_at,
            MarkKind::Healed,
            format!("all {} pods replaced, {ready} Ready", originals.len()),
            "pod condition Ready (newest)",
        );
        r.evidence("ready_after", ready);
        Ok(())
    }

    /// Evict each pod like `kubectl drain`: a 429 from the PDB means wait until the budget allows
    /// one more (watched on the PDB's status), then try again.
    async fn evict_all(
        &self,
        r: &mut LayerReport,
        pods: &[Pod],
        pdbs: &Api<PodDisruptionBudget>,
        deadline: Instant,
    ) -> std::result::Result<(), String> {
        let mut evicted = 0u32;
        let mut refused = 0u32;
        for p in pods {
            let name = p.name_any();
            loop {
                match self.pods().evict(&name, &EvictParams::default()).await {
                    Ok(_) => {
                        evicted += 1;
                        let kind = if evicted == 1 {
                            MarkKind::Fault
                        } else {
                            MarkKind::Info
                        };
                        r.mark(
                            Timestamp::now(),
                            kind,
                            format!("evicted {name}"),
                            "Eviction API answer (201)",
                        );
                        progress(format!("    evicted {name}"));
                        break;
                    }
                    Err(e) if is_status(&e, 429) => {
                        refused += 1;
                        let pdb = pdbs.get(&self.deployment).await.ok();
                        let (allowed, healthy, desired) =
                            pdb.as_ref().map_or((0, 0, 0), extract::pdb_status);
                        if refused == 1 {
                            r.mark(Timestamp::now(), MarkKind::Detected, format!("PDB refused evicting {name} (429): currentHealthy {healthy}, desiredHealthy {desired}, disruptionsAllowed {allowed}"), "Eviction API answer (429)");
                        }
                        progress(format!(
                            "    PDB refused evicting {name} (429, {healthy} healthy, {desired} required); waiting for the budget"
                        ));
                        wait_for(
                            pdbs.clone(),
                            watcher::Config::default()
                                .fields(&format!("metadata.name={}", self.deployment)),
                            "the PDB to allow another disruption",
                            deadline,
                            |ps| (extract::pdb_status(ps.first()?).0 > 0).then_some(()),
                        )
                        .await?;
                    }
                    Err(e) if is_status(&e, 404) => break,
                    Err(e) => return Err(format!("evicting {name}: {e}")),
                }
            }
        }
        r.evidence("evictions", evicted);
        r.evidence("evictions_refused", refused);
        if refused == 0 {
            r.evidence(
                "note",
                "the PDB never had to refuse: more pods than minAvailable + evictions in flight",
            );
        }
        Ok(())
    }

    async fn layer_canary(&self, r: &mut LayerReport) -> std::result::Result<(), String> {
        let deploy = self.cfg.repo_root.join("canary/deploy.sh");
        let promote = self.cfg.repo_root.join("canary/promote.sh");
        let rollback = self.cfg.repo_root.join("canary/rollback.sh");
        if !deploy.exists() || !promote.exists() || !rollback.exists() {
            r.status = Status::NotAvailable;
            return Err(
                "canary/deploy.sh, promote.sh and rollback.sh are not in this tree yet".into(),
            );
        }
        let deadline = Instant::now() + Duration::from_secs(420);
        let canary_selector = format!(
            "app.kubernetes.io/instance={},track=canary",
            self.cfg.release
        );
        let common = [
            "--namespace",
            self.cfg.namespace.as_str(),
            "--release",
            self.cfg.release.as_str(),
            "--strategy",
            "replicas",
        ];
        progress(
            "    canary/deploy.sh --strategy replicas --weight 25 --fault-profile errors (half of its answers are 500)",
        );
        let (code, out) = run_script(
            &deploy,
            &common,
            &[
                "--image-tag",
                &self.cfg.image_tag,
                "--image-repository",
                &self.cfg.image_repository,
                "--weight",
                "25",
                "--fault-profile",
                "errors",
            ],
        )
        .await?;
        r.evidence("deploy_exit_code", code);
        if code != 0 {
            return Err(format!("canary/deploy.sh exited {code}: {out}"));
        }
        let canaries = self
            .pods()
            .list(&ListParams::default().labels(&canary_selector))
            .await
            .map_err(|e| format!("listing canary pods: {e}"))?;
        let started = canaries
            .items
            .iter()
            .filter_map(|p| extract::pod_ready(p).1)
            .max()
            .unwrap_or_else(Timestamp::now);
        r.mark(
            started,
            MarkKind::Fault,
            format!(
                "{} canary pod(s) with 50 % errors Ready behind the Service (effective weight {})",
                canaries.items.len(),
                out.get("effective_weight").cloned().unwrap_or_default()
            ),
            "pod condition Ready (canary)",
        );
        let since = floor_second(started);
        r.theoretical_min = Some(self.settings.canary(20.0));
        progress(
            "    canary/promote.sh --steps 25,50,100 --window 20: the analysis should roll it back",
        );
        let (code, out) = run_script(
            &promote,
            &common,
            &["--steps", "25,50,100", "--window", "20"],
        )
        .await?;
        r.evidence("promote_exit_code", code);
        r.evidence(
            "promote_result",
            out.get("result").cloned().unwrap_or_default(),
        );
        r.evidence(
            "promote_reason",
            out.get("reason").cloned().unwrap_or_default(),
        );
        if code != 3 {
            // Leave no canary behind, whatever the analysis said.
            let _ = run_script(&rollback, &common, &["--reason", "demo layer 7 cleanup"]).await;
            return Err(format!(
                "canary/promote.sh exited {code} (expected 3: rolled back by the analysis), result {}",
                out.get("result").cloned().unwrap_or_default()
            ));
        }
        let found = self
            .wait_event(
                "CanaryRolledBack",
                Some(&self.deployment),
                "",
                since,
                deadline,
            )
            .await?;
        r.mark(
            found.at,
            MarkKind::Detected,
            format!("canary analysis: {}", found.message),
            "Event CanaryRolledBack",
        );
        let gone_at = wait_for(
            self.pods(),
            watcher::Config::default().labels(&canary_selector),
            "the canary pods to be gone",
            deadline,
            |ps| ps.is_empty().then(Timestamp::now),
        )
        .await?;
        let deployments: Api<Deployment> =
            Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let canary_deployments = deployments
            .list(&ListParams::default().labels(&canary_selector))
            .await
            .map(|l| l.items.len())
            .unwrap_or(usize::MAX);
        r.evidence("canary_removed", canary_deployments == 0);
        if canary_deployments != 0 {
            return Err("the canary Deployment is still there".into());
        }
        r.mark(
            gone_at,
            MarkKind::Healed,
            "canary removed: only stable pods serve",
            "pod watch (runner clock)",
        );
        Ok(())
    }
}

/// Run a layer script with `common` and `extra` arguments; its stderr goes to ours (progress),
/// its stdout is one JSON line.
async fn run_script(
    script: &std::path::Path,
    common: &[&str],
    extra: &[&str],
) -> std::result::Result<(i32, serde_json::Value), String> {
    let output = tokio::process::Command::new(script)
        .args(common)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        // NB: tokio's output() would pipe stderr too; the scripts' progress belongs on ours.
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| format!("running {}: {e}", script.display()))?
        .wait_with_output()
        .await
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // One JSON document (possibly pretty-printed), else the last line that is one.
    let json = serde_json::from_str(&stdout)
        .ok()
        .or_else(|| {
            stdout
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str(l).ok())
        })
        .unwrap_or(serde_json::Value::Null);
    Ok((output.status.code().unwrap_or(-1), json))
}

/// The controller Deployment's env values, as numbers.
async fn controller_env(api: &Api<Deployment>) -> impl Fn(&str) -> Option<f64> + use<> {
    let env: Vec<(String, String)> = api
        .get("selfheal-controller")
        .await
        .ok()
        .and_then(|d| d.spec.template.spec?.containers.into_iter().next()?.env)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    move |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse().ok())
    }
}

/// API timestamps have one-second resolution: compare against the start of the second.
fn floor_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}
