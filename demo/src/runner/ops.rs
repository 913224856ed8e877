//! Layers 8–11, the ops healers: a memory leak recycled before the OOM kill, an exhausted
//! connection pool, a circuit breaker around a failing dependency, and a zombie pod on a lost
//! node. Each scenario runs on a Deployment of its own (see [`crate::scenario`]), installs the
//! HealingPolicy or CircuitBreaker it needs, marks fault → detected (the controller's Event) →
//! healed, and removes what it created unless `--keep`.
//!
//! This file holds what the four share (the controller's settings, creating, scraping and
//! removing a scenario, the detected → replaced marks); `ops/` holds one file per scenario.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::runtime::watcher;

use super::steps::container_env;
use super::wait::wait_for;
use super::{Runner, is_status, progress};
use crate::extract;
use crate::report::{LayerReport, MarkKind, Status};
use crate::scenario::{self, SCENARIO_LABEL, Tweaks};
use crate::verdict;

mod breaker;
mod leak;
mod pool;
mod zombie;

type LayerResult = std::result::Result<(), String>;

/// Field manager of everything the scenarios apply.
const MANAGER: &str = "selfheal-demo";

/// Scrape interval the scenarios ask for (the PodMonitor's, and `hack/demo.sh`'s Prometheus).
const SCRAPE_SECS: u64 = 5;

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
        let env = dep.map(container_env).unwrap_or_default();
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

    /// The release's Deployment, read afresh (layers before may have changed it).
    async fn release_deployment(&self) -> Result<Deployment, String> {
        Api::<Deployment>::namespaced(self.client.clone(), &self.cfg.namespace)
            .get(&self.deployment)
            .await
            .map_err(|e| format!("reading the release Deployment: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::ControllerSettings;

    fn settings(env: &[(&str, &str)]) -> ControllerSettings {
        ControllerSettings {
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn text_is_the_first_non_empty_value_by_name() {
        let s = settings(&[
            ("CONTROLLER_PROMETHEUS_URL", "http://prometheus:9090"),
            ("CONTROLLER_EMPTY", ""),
            ("CONTROLLER_TWICE", "first"),
            ("CONTROLLER_TWICE", "second"),
        ]);
        assert_eq!(
            s.text("CONTROLLER_PROMETHEUS_URL"),
            Some("http://prometheus:9090")
        );
        assert_eq!(s.text("CONTROLLER_EMPTY"), None);
        assert_eq!(s.text("CONTROLLER_MISSING"), None);
        assert_eq!(s.text("CONTROLLER_TWICE"), Some("first"));
    }

    #[test]
    fn number_parses_or_falls_back_to_the_default() {
        let s = settings(&[
            ("CONTROLLER_ZOMBIE_AFTER_SECS", "30"),
            ("CONTROLLER_MEMORY_SAMPLE_SECS", "2.5"),
            ("CONTROLLER_MIN_POD_AGE_SECS", "soon"),
            ("CONTROLLER_PROMETHEUS_INTERVAL_SECS", ""),
        ]);
        assert_eq!(s.number("CONTROLLER_ZOMBIE_AFTER_SECS", 300.0), 30.0);
        assert_eq!(s.number("CONTROLLER_MEMORY_SAMPLE_SECS", 15.0), 2.5);
        assert_eq!(s.number("CONTROLLER_MIN_POD_AGE_SECS", 60.0), 60.0);
        assert_eq!(s.number("CONTROLLER_PROMETHEUS_INTERVAL_SECS", 30.0), 30.0);
        assert_eq!(s.number("CONTROLLER_MISSING", 7.0), 7.0);
    }

    #[test]
    fn enabled_unless_literally_false() {
        let s = settings(&[
            ("CONTROLLER_HEALING_POLICIES", "false"),
            ("CONTROLLER_CIRCUIT_BREAKERS", "true"),
            ("CONTROLLER_OFF_UPPERCASE", "FALSE"),
            ("CONTROLLER_EMPTY", ""),
        ]);
        assert!(!s.enabled("CONTROLLER_HEALING_POLICIES"));
        assert!(s.enabled("CONTROLLER_CIRCUIT_BREAKERS"));
        // Anything but the exact word `false` counts as on.
        assert!(s.enabled("CONTROLLER_OFF_UPPERCASE"));
        assert!(s.enabled("CONTROLLER_EMPTY"));
        assert!(s.enabled("CONTROLLER_MISSING"));
    }
}
