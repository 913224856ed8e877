//! Layers 8–11, the ops healers: a memory leak recycled before the OOM kill, an exhausted
//! connection pool, a circuit breaker around a failing dependency, and a zombie pod on a lost
//! node. Each scenario runs on a Deployment of its own (see [`crate::scenario`]), installs the
//! HealingPolicy or CircuitBreaker it needs, marks fault → detected (the controller's Event) →
//! healed, and removes what it created unless `--keep`.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::runtime::watcher;
use tokio::sync::watch;

use super::{Runner, floor_second, is_status, progress, wait_for};
use crate::extract;
use crate::load::{self, Limit, LoadConfig, Recorder};
use crate::report::{LayerReport, MarkKind, Status};
use crate::scenario::{self, BreakerPlan, LeakPlan, SCENARIO_LABEL, Tweaks};
use crate::verdict;

type LayerResult = std::result::Result<(), String>;

/// Field manager of everything the scenarios apply.
const MANAGER: &str = "selfheal-demo";

/// Scrape interval the scenarios ask for (the PodMonitor's, and `hack/demo.sh`'s Prometheus).
pub const SCRAPE_SECS: u64 = 5;

fn resource(group: &str, kind: &str, plural: &str, version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn healing_policies() -> ApiResource {
    resource(
        "selfheal.io",
        "HealingPolicy",
        "healingpolicies",
        "v1alpha1",
    )
}

fn circuit_breakers() -> ApiResource {
    resource(
        "selfheal.io",
        "CircuitBreaker",
        "circuitbreakers",
        "v1alpha1",
    )
}

fn pod_monitors() -> ApiResource {
    resource("monitoring.coreos.com", "PodMonitor", "podmonitors", "v1")
}

/// What the deployed controller is configured with (literal `env` values of its container).
struct ControllerSettings {
    env: Vec<(String, String)>,
}

impl ControllerSettings {
    fn text(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn number(&self, name: &str, default: f64) -> f64 {
        self.text(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    fn enabled(&self, name: &str) -> bool {
        self.text(name) != Some("false")
    }
}

impl Runner {
    fn dynamic(&self, ar: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.cfg.namespace, ar)
    }

    /// The controller must run; its settings decide the scenario's timings.
    async fn controller_settings(&self, r: &mut LayerReport) -> Result<ControllerSettings, String> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), "selfheal-system");
        let dep = api
            .get_opt("selfheal-controller")
            .await
            .map_err(|e| format!("reading the controller Deployment: {e}"))?;
        let ready = dep
            .as_ref()
            .and_then(|d| d.status.as_ref()?.ready_replicas)
            .unwrap_or(0);
        if ready == 0 {
            r.status = Status::NotAvailable;
            return Err("selfheal-controller is not running in selfheal-system (install it: kubectl apply -k controller/deploy-demo)".into());
        }
        let env = dep
            .and_then(|d| d.spec.template.spec?.containers.into_iter().next()?.env)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect();
        Ok(ControllerSettings { env })
    }

    /// PromQL scenarios need the controller to have a Prometheus.
    fn require_prometheus(
        s: &ControllerSettings,
        r: &mut LayerReport,
    ) -> std::result::Result<f64, String> {
        match s.text("CONTROLLER_PROMETHEUS_URL") {
            Some(url) => {
                r.evidence("prometheus_url", url);
                Ok(s.number("CONTROLLER_PROMETHEUS_INTERVAL_SECS", 30.0))
            }
            None => {
                r.status = Status::NotAvailable;
                Err("the controller has no CONTROLLER_PROMETHEUS_URL: make demo starts a Prometheus for it on the local cluster; on minikube run observability/install.sh first, or set it: kubectl -n selfheal-system set env deployment/selfheal-controller CONTROLLER_PROMETHEUS_URL=http://…:9090".into())
            }
        }
    }

    /// A switch of the controller that must not be off for this scenario.
    fn require_enabled(
        s: &ControllerSettings,
        r: &mut LayerReport,
        var: &str,
    ) -> std::result::Result<(), String> {
        if s.enabled(var) {
            return Ok(());
        }
        r.status = Status::NotAvailable;
        Err(format!("the controller runs with {var}=false"))
    }

    /// Wait for the controller's Event `reason` about `object`, mark it as the detection and
    /// keep its message as the evidence `key`.
    #[allow(clippy::too_many_arguments)]
    async fn detected_by(
        &self,
        r: &mut LayerReport,
        reason: &str,
        object: &str,
        needle: &str,
        since: Timestamp,
        deadline: Instant,
        key: &str,
    ) -> Result<extract::Found, String> {
        let found = self
            .wait_event(reason, Some(object), needle, since, deadline)
            .await?;
        r.mark(
            found.at,
            MarkKind::Detected,
            format!("selfheal-controller: {}", found.message),
            &format!("Event {reason} (selfheal-controller)"),
        );
        r.evidence(key, &found.message);
        progress(format!("    detected: {reason} — {}", found.message));
        Ok(found)
    }

    /// Create the scenario's Deployment (replacing one a kept run left) and wait for it.
    async fn start_scenario(&self, name: &str, tweaks: &Tweaks) -> Result<Deployment, String> {
        let deployments: Api<Deployment> =
            Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let release = self.release_deployment().await?;
        let dep = scenario::deployment(&release, &self.cfg.release, name, tweaks)
            .ok_or("the release Deployment has no pod template")?;
        let obj = scenario::object_name(&self.cfg.release, name);
        self.remove_scenario(name).await;
        wait_for(
            self.pods(),
            watcher::Config::default().labels(&scenario::selector(&self.cfg.release, name)),
            "pods of an earlier run to be gone",
            Instant::now() + Duration::from_secs(90),
            |ps| ps.is_empty().then_some(()),
        )
        .await?;
        progress(format!(
            "    creating Deployment {obj} ({} replica(s), the release's pod template under its own labels)",
            tweaks.replicas
        ));
        deployments
            .create(&PostParams::default(), &dep)
            .await
            .map_err(|e| format!("creating Deployment {obj}: {e}"))?;
        wait_for(
            deployments,
            watcher::Config::default().fields(&format!("metadata.name={obj}")),
            &format!("Deployment {obj} to be Ready"),
            Instant::now() + Duration::from_secs(180),
            |ds| verdict::rolled_out(ds.first()?),
        )
        .await?;
        Ok(dep)
    }

    /// Delete everything a scenario created, by name (absent objects are fine).
    async fn remove_scenario(&self, name: &str) {
        let obj = scenario::object_name(&self.cfg.release, name);
        let bg = DeleteParams::background();
        let deployments: Api<Deployment> =
            Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let results = [
            deployments.delete(&obj, &bg).await.map(|_| ()),
            services.delete(&obj, &bg).await.map(|_| ()),
            self.dynamic(&healing_policies())
                .delete(&obj, &bg)
                .await
                .map(|_| ()),
            self.dynamic(&circuit_breakers())
                .delete(&obj, &bg)
                .await
                .map(|_| ()),
            self.dynamic(&pod_monitors())
                .delete(&obj, &bg)
                .await
                .map(|_| ()),
        ];
        for e in results.into_iter().filter_map(Result::err) {
            if !is_status(&e, 404) {
                tracing::warn!(error = %e, object = %obj, "removing a scenario object");
            }
        }
    }

    /// End a scenario: remove its objects unless `--keep`.
    async fn finish_scenario(&self, name: &str) {
        if self.cfg.keep {
            progress(format!(
                "    --keep: {} and its policy stay",
                scenario::object_name(&self.cfg.release, name)
            ));
        } else {
            self.remove_scenario(name).await;
        }
    }

    /// Server-side apply a `selfheal.io` object (or a PodMonitor) named after the scenario.
    async fn apply(
        &self,
        ar: &ApiResource,
        scenario_name: &str,
        spec: serde_json::Value,
    ) -> Result<(), String> {
        let name = scenario::object_name(&self.cfg.release, scenario_name);
        let obj = serde_json::json!({
            "apiVersion": ar.api_version,
            "kind": ar.kind,
            "metadata": {"name": name, "labels": {SCENARIO_LABEL: scenario_name}},
            "spec": spec,
        });
        self.dynamic(ar)
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .map_err(|e| format!("applying {} {name}: {e}", ar.kind))?;
        progress(format!("    applied {} {name}", ar.kind));
        Ok(())
    }

    /// Where Prometheus Operator runs (minikube + observability/install.sh), ask it to scrape
    /// the scenario's pods; `hack/demo.sh`'s own Prometheus scrapes the namespace's pods anyway.
    async fn scrape_scenario(&self, name: &str) -> Result<(), String> {
        let served = self
            .dynamic(&pod_monitors())
            .list(&ListParams::default().limit(1))
            .await;
        match served {
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(format!("checking for PodMonitors: {e}")),
            Ok(_) => {
                self.apply(
                    &pod_monitors(),
                    name,
                    serde_json::json!({
                        "selector": {"matchLabels": scenario::labels(&self.cfg.release, name)},
                        "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": format!("{SCRAPE_SECS}s")}],
                    }),
                )
                .await
            }
        }
    }

    /// The scenario's pods, live and Ready, by name.
    async fn scenario_pods(&self, name: &str) -> Result<Vec<Pod>, String> {
        let mut pods: Vec<Pod> = self
            .pods()
            .list(&ListParams::default().labels(&scenario::selector(&self.cfg.release, name)))
            .await
            .map_err(|e| format!("listing the scenario's pods: {e}"))?
            .items
            .into_iter()
            .filter(|p| !extract::terminating(p) && extract::pod_ready(p).0)
            .collect();
        pods.sort_by_key(|p| p.name_any());
        Ok(pods)
    }

    /// Detected = the controller's Recycled Event for `pod` naming `reason`; healed = a fresh
    /// pod of the scenario Ready in its place.
    async fn recycled_and_replaced(
        &self,
        r: &mut LayerReport,
        name: &str,
        pod: &str,
        reason: &str,
        since: Timestamp,
        deadline: Instant,
    ) -> LayerResult {
        self.detected_by(
            r,
            "Recycled",
            pod,
            reason,
            since,
            deadline,
            "recycled_event",
        )
        .await?;
        let (healed_at, fresh) = wait_for(
            self.pods(),
            watcher::Config::default().labels(&scenario::selector(&self.cfg.release, name)),
            "a fresh pod Ready in its place",
            deadline,
            |ps| verdict::replacement_ready(ps, pod, since, 1),
        )
        .await?;
        r.mark(
            healed_at,
            MarkKind::Healed,
            format!("{fresh} Ready in place of {pod}"),
            "pod condition Ready",
        );
        r.evidence("replacement_pod", &fresh);
        r.evidence("pod_evicted_and_replaced", true);
        Ok(())
    }

    // -- layer 8 --------------------------------------------------------------------------------

    /// A container leaks 1 MiB/s towards an OOM kill; the memoryTrend policy recycles it first.
    pub(super) async fn layer_leak(&self, r: &mut LayerReport) -> LayerResult {
        let s = self.controller_settings(r).await?;
        Self::require_enabled(&s, r, "CONTROLLER_HEALING_POLICIES")?;
        let resolution = self.metric_resolution().await?;
        let plan = LeakPlan::new(s.number("CONTROLLER_MEMORY_SAMPLE_SECS", 15.0), resolution);
        r.theoretical_min = Some(plan.theory(self.settings.startup_period));
        r.evidence("memory_limit_mib", plan.limit_mib);
        r.evidence("sample_every_secs", plan.sample_every_secs);
        let result = self.leak(r, &plan).await;
        self.finish_scenario("leak").await;
        result
    }

    /// metrics-server's resolution from its Deployment; `NotAvailable` without metrics-server.
    async fn metric_resolution(&self) -> Result<f64, String> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), "kube-system");
        let dep = api
            .get_opt("metrics-server")
            .await
            .map_err(|e| format!("reading kube-system/metrics-server: {e}"))?
            .ok_or("no metrics-server in kube-system (minikube addons enable metrics-server): the memory trend has no samples")?;
        let args = dep
            .spec
            .template
            .spec
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.args)
            .unwrap_or_default();
        Ok(scenario::metric_resolution_secs(&args))
    }

    async fn leak(&self, r: &mut LayerReport, plan: &LeakPlan) -> LayerResult {
        let tweaks = Tweaks {
            replicas: 1,
            memory_limit_mib: Some(plan.limit_mib),
            env: Vec::new(),
        };
        self.start_scenario("leak", &tweaks).await?;
        self.apply(
            &healing_policies(),
            "leak",
            plan.policy_spec(&self.cfg.release),
        )
        .await?;
        let pod = self
            .scenario_pods("leak")
            .await?
            .into_iter()
            .next()
            .ok_or("the leak scenario has no Ready pod")?;
        let name = pod.name_any();
        r.evidence("pod", &name);
        let since = floor_second(Timestamp::now());
        let query = format!(
            "mode=leak&mib_per_sec={}&cap_mib={}",
            scenario::LEAK_MIB_PER_SEC,
            plan.cap_mib
        );
        self.crash(&pod, &query).await?;
        r.mark(
            Timestamp::now(),
            MarkKind::Fault,
            format!(
                "{name}: memory grows {} MiB/s towards its {} MiB limit (cap {} MiB: the OOM kill is real)",
                scenario::LEAK_MIB_PER_SEC,
                plan.limit_mib,
                plan.cap_mib
            ),
            "runner clock (POST /crash answered)",
        );
        progress(format!(
            "    fault injected: {name} leaks; the memoryTrend policy should recycle it before the OOM kill (a sample every {} s)",
            plan.sample_every_secs
        ));
        // The climb alone is (limit × limitPercent - baseline) seconds; three times that is plenty.
        let deadline = Instant::now()
            + Duration::from_secs_f64(
                r.theoretical_min
                    .as_ref()
                    .map_or(300.0, |t| t.heal_secs * 3.0 + 60.0),
            );
        let outcome = self
            .recycled_and_replaced(r, "leak", &name, "memory_leak", since, deadline)
            .await;
        if outcome.is_err() {
            // Say what happened instead: the kernel won the race.
            if let Ok(p) = self.pods().get(&name).await
                && extract::restart_count(&p) > 0
            {
                return Err(format!(
                    "{name} was OOM-killed (restartCount {}) before the controller recycled it",
                    extract::restart_count(&p)
                ));
            }
        }
        outcome?;
        let note = r
            .evidence
            .get("recycled_event")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        r.evidence("recycled_before_oom", note.contains(", 0 restarts)"));
        Ok(())
    }

    // -- layer 9 --------------------------------------------------------------------------------

    /// One pod's connection pool is held; saturation plus failing readiness recycles it. The
    /// other pod, healthy, is left alone.
    pub(super) async fn layer_pool(&self, r: &mut LayerReport) -> LayerResult {
        let s = self.controller_settings(r).await?;
        Self::require_enabled(&s, r, "CONTROLLER_HEALING_POLICIES")?;
        let interval = Self::require_prometheus(&s, r)?;
        let min_age = s.number("CONTROLLER_MIN_POD_AGE_SECS", 60.0);
        let result = self.pool(r, interval, min_age).await;
        self.finish_scenario("pool").await;
        result
    }

    async fn pool(&self, r: &mut LayerReport, interval: f64, min_age: f64) -> LayerResult {
        let tweaks = Tweaks {
            replicas: 2,
            ..Tweaks::default()
        };
        self.start_scenario("pool", &tweaks).await?;
        self.scrape_scenario("pool").await?;
        self.apply(
            &healing_policies(),
            "pool",
            scenario::pool_policy_spec(&self.cfg.release),
        )
        .await?;
        let pods = self.scenario_pods("pool").await?;
        let (pod, spared) = match pods.as_slice() {
            [a, b, ..] => (a.clone(), b.clone()),
            _ => return Err("the pool scenario has fewer than 2 Ready pods".into()),
        };
        let name = pod.name_any();
        let age = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0.0, |c| extract::secs_between(c.0, Timestamp::now()));
        r.theoretical_min = Some(scenario::pool_theory(
            interval,
            min_age,
            age,
            self.settings.startup_period,
        ));
        r.evidence("pod", &name);
        r.evidence("spared_pod", spared.name_any());
        let since = floor_second(Timestamp::now());
        self.crash(&pod, "mode=pool-exhaust").await?;
        r.mark(
            Timestamp::now(),
            MarkKind::Fault,
            format!("{name}: every pool connection held (pool-exhaust); /ready fails"),
            "runner clock (POST /crash answered)",
        );
        progress(format!(
            "    fault injected: {name} holds its whole pool; saturation for {} s plus failing readiness should recycle it",
            scenario::POOL_SATURATED_FOR_SECS
        ));
        let deadline = Instant::now() + Duration::from_secs(240);
        self.recycled_and_replaced(r, "pool", &name, "pool_exhausted", since, deadline)
            .await?;
        let still = self
            .pods()
            .get_opt(&spared.name_any())
            .await
            .map_err(|e| format!("reading {}: {e}", spared.name_any()))?;
        r.evidence(
            "healthy_pod_spared",
            still.is_some_and(|p| p.uid() == spared.uid() && !extract::terminating(&p)),
        );
        Ok(())
    }

    // -- layer 10 -------------------------------------------------------------------------------

    /// A dependency answers errors; the breaker opens (scale to 0), the dependency is fixed
    /// while it is open, the half-open probe succeeds and the replicas come back.
    pub(super) async fn layer_breaker(&self, r: &mut LayerReport) -> LayerResult {
        let s = self.controller_settings(r).await?;
        Self::require_enabled(&s, r, "CONTROLLER_CIRCUIT_BREAKERS")?;
        let interval = Self::require_prometheus(&s, r)?;
        let plan = BreakerPlan::new(SCRAPE_SECS);
        r.theoretical_min = Some(plan.theory(interval, self.settings.startup_period));
        let result = self.breaker(r, &plan).await;
        self.finish_scenario("breaker").await;
        result
    }

    async fn breaker(&self, r: &mut LayerReport, plan: &BreakerPlan) -> LayerResult {
        let name = scenario::object_name(&self.cfg.release, "breaker");
        let tweaks = Tweaks {
            replicas: 2,
            ..Tweaks::default()
        };
        let dep = self.start_scenario("breaker", &tweaks).await?;
        let container = dep
            .spec
            .template
            .spec
            .and_then(|s| s.containers.into_iter().next())
            .map(|c| c.name)
            .ok_or("the scenario's pod template has no container")?;
        self.scrape_scenario("breaker").await?;
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {SCENARIO_LABEL: "breaker"}},
            "spec": {
                // NB: a NodePort, so the callers reach it on 127.0.0.1 (`load_target_for`).
                "type": "NodePort",
                "selector": scenario::labels(&self.cfg.release, "breaker"),
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            }
        }))
        .map_err(|e| format!("Service object: {e}"))?;
        services
            .create(&PostParams::default(), &svc)
            .await
            .map_err(|e| format!("creating Service {name}: {e}"))?;
        let target = self
            .load_target_for(&name)
            .await
            .map_err(|e| e.to_string())?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let callers = tokio::spawn(load::run(
            target,
            LoadConfig {
                concurrency: 2,
                rate: Some(10.0),
                limit: Limit::UntilStopped,
                timeout: Duration::from_secs(2),
                fresh_connections: true,
            },
            Recorder::default(),
            stop_rx,
        ));
        progress(format!("    callers: GET {name} at 10/s (its own Service)"));
        self.apply(
            &circuit_breakers(),
            "breaker",
            plan.breaker_spec(&self.cfg.namespace, &self.cfg.release),
        )
        .await?;
        let result = self.breaker_cycle(r, &name, &container).await;
        let _ = stop_tx.send(true);
        if let Ok(run) = callers.await {
            r.evidence("caller_requests", run.samples.len());
        }
        result
    }

    async fn breaker_cycle(&self, r: &mut LayerReport, name: &str, container: &str) -> LayerResult {
        let deadline = Instant::now() + Duration::from_secs(420);
        let deployments: Api<Deployment> =
            Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let since = floor_second(Timestamp::now());
        // Every pod, and every pod the breaker brings back, fails until the template is fixed.
        let at = self
            .set_app_env(
                name,
                container,
                &[
                    ("APP_FAULT_PROFILE", "errors"),
                    ("APP_FAULT_ERROR_PERCENT", "100"),
                ],
            )
            .await?;
        r.mark(
            at,
            MarkKind::Fault,
            format!("{name}: a bad rollout, every answer a 500 (faultProfile errors)"),
            "runner clock (Deployment patched)",
        );
        progress(format!(
            "    fault injected: {name} answers 500; the breaker should open and scale it to 0"
        ));
        let opened = self
            .detected_by(
                r,
                "CircuitOpened",
                name,
                "",
                since,
                deadline,
                "opened_event",
            )
            .await?;
        // The dependency is fixed while the breaker keeps callers off it.
        let at = self
            .set_app_env(name, container, &[("APP_FAULT_PROFILE", "none")])
            .await?;
        r.mark(
            at,
            MarkKind::Info,
            format!("{name} fixed (faultProfile none) while the circuit is open"),
            "runner clock (Deployment patched)",
        );
        progress("    the dependency is fixed; the half-open probe should now succeed");
        let half = self
            .wait_event("CircuitHalfOpened", Some(name), "", opened.at, deadline)
            .await?;
        r.mark(
            half.at,
            MarkKind::Info,
            format!("selfheal-controller: {}", half.message),
            "Event CircuitHalfOpened (selfheal-controller)",
        );
        progress(format!("    half-open: {}", half.message));
        let closed = self
            .wait_event("CircuitClosed", Some(name), "", half.at, deadline)
            .await?;
        r.evidence("closed_event", &closed.message);
        progress(format!("    closed: {}", closed.message));
        let (ready_at, ready) = wait_for(
            deployments,
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            "the remembered replicas to be Ready",
            deadline,
            |ds| {
                let d = ds.first()?;
                let want = d.spec.replicas?;
                let ready = d.status.as_ref()?.ready_replicas.unwrap_or(0);
                (want >= 2 && ready >= want).then(|| (Timestamp::now(), ready))
            },
        )
        .await?;
        r.mark(
            ready_at.max(closed.at),
            MarkKind::Healed,
            format!(
                "circuit closed, {ready} replicas Ready again: {}",
                closed.message
            ),
            "Event CircuitClosed + Deployment readyReplicas",
        );
        r.evidence("replicas_restored", ready);
        Ok(())
    }

    /// Set environment variables of the app container in Deployment `name`'s template (a
    /// rollout); when the API accepted it.
    async fn set_app_env(
        &self,
        name: &str,
        container: &str,
        env: &[(&str, &str)],
    ) -> Result<Timestamp, String> {
        let env: Vec<_> = env
            .iter()
            .map(|(k, v)| serde_json::json!({"name": k, "value": v}))
            .collect();
        let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{
            "name": container,
            "env": env,
        }]}}}});
        Api::<Deployment>::namespaced(self.client.clone(), &self.cfg.namespace)
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map_err(|e| format!("patching the environment of {name}: {e}"))?;
        Ok(Timestamp::now())
    }

    /// The release's Deployment, read afresh (layers before may have changed it).
    async fn release_deployment(&self) -> Result<Deployment, String> {
        Api::<Deployment>::namespaced(self.client.clone(), &self.cfg.namespace)
            .get(&self.deployment)
            .await
            .map_err(|e| format!("reading the release Deployment: {e}"))
    }

    // -- layer 11 -------------------------------------------------------------------------------

    /// A pod on a node that is gone stays Terminating forever (no kubelet confirms the stop);
    /// the reaper force-deletes it after `--zombie-after-secs`.
    pub(super) async fn layer_zombie(&self, r: &mut LayerReport) -> LayerResult {
        let s = self.controller_settings(r).await?;
        let after = s.number("CONTROLLER_ZOMBIE_AFTER_SECS", 300.0);
        if after <= 0.0 {
            r.status = Status::NotAvailable;
            return Err(
                "the controller runs with CONTROLLER_ZOMBIE_AFTER_SECS=0 (reaper off)".into(),
            );
        }
        let node = format!("{}-lost-node", self.cfg.namespace);
        let result = self.zombie(r, &node, after).await;
        if self.cfg.keep {
            progress(format!("    --keep: Node {node} stays"));
        } else {
            let nodes: Api<Node> = Api::all(self.client.clone());
            if let Err(e) = nodes.delete(&node, &DeleteParams::default()).await
                && !is_status(&e, 404)
            {
                tracing::warn!(error = %e, node, "deleting the lost node");
            }
        }
        result
    }

    async fn zombie(&self, r: &mut LayerReport, node: &str, after: f64) -> LayerResult {
        let nodes: Api<Node> = Api::all(self.client.clone());
        // A Node object no kubelet answers for: exactly what a machine that died leaves.
        // Unschedulable, so nothing else lands there while it exists.
        let lost: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": node, "labels": {SCENARIO_LABEL: "zombie"}},
            "spec": {"unschedulable": true},
        }))
        .map_err(|e| format!("Node object: {e}"))?;
        match nodes.create(&PostParams::default(), &lost).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(format!("creating Node {node}: {e}")),
        }
        progress(format!(
            "    Node {node} created: no kubelet, never Ready (a machine that died)"
        ));
        let release = self.release_deployment().await?;
        let mut spec = release
            .spec
            .template
            .spec
            .ok_or("the release Deployment has no pod template")?;
        spec.node_name = Some(node.to_owned());
        let grace = spec.termination_grace_period_seconds.unwrap_or(30) as f64;
        r.theoretical_min = Some(scenario::zombie_theory(grace, after));
        let name = scenario::object_name(&self.cfg.release, "zombie");
        let pod = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.clone()),
                labels: Some(scenario::labels(&self.cfg.release, "zombie")),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        };
        let pods = self.pods();
        if let Err(e) = pods.create(&PostParams::default(), &pod).await
            && !is_status(&e, 409)
        {
            return Err(format!("creating pod {name} on {node}: {e}"));
        }
        r.evidence("pod", &name);
        r.evidence("node", node);
        pods.delete(&name, &DeleteParams::default())
            .await
            .map_err(|e| format!("deleting pod {name}: {e}"))?;
        let since = floor_second(Timestamp::now());
        r.mark(
            Timestamp::now(),
            MarkKind::Fault,
            format!("{name} deleted on {node}: Terminating, and no kubelet will ever confirm it"),
            "runner clock (DELETE answered)",
        );
        progress(format!(
            "    fault injected: {name} is Terminating on a lost node; the reaper force-deletes it {after} s after its {grace} s grace period"
        ));
        let deadline = Instant::now() + Duration::from_secs_f64(grace + after + 120.0);
        let found = self
            .detected_by(
                r,
                "ForceDeleted",
                &name,
                "",
                since,
                deadline,
                "force_deleted_event",
            )
            .await?;
        let gone_at = wait_for(
            pods,
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            "the zombie pod to be gone",
            deadline,
            |ps| ps.is_empty().then(Timestamp::now),
        )
        .await?;
        r.mark(
            gone_at.max(found.at),
            MarkKind::Healed,
            format!("{name} gone from the API: its owner (or you) can replace it"),
            "pod watch (object deleted)",
        );
        r.evidence("zombie_gone", true);
        Ok(())
    }
}
