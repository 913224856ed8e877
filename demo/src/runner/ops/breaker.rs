//! Layer 10, circuit breaker: a bad rollout makes a dependency answer 500; the CircuitBreaker
//! opens (scale to 0), the dependency is fixed while it is open, the half-open probe succeeds and
//! the replicas come back.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use tokio::sync::watch;

use super::{LayerResult, SCRAPE_SECS, circuit_breakers};
use crate::load::{self, Limit, LoadConfig, Recorder};
use crate::report::{LayerReport, MarkKind};
use crate::runner::wait::{floor_second, wait_for};
use crate::runner::{Runner, progress};
use crate::scenario::{self, BreakerPlan, SCENARIO_LABEL, Tweaks};

impl Runner {
    /// A dependency answers errors; the breaker opens (scale to 0), the dependency is fixed
    /// while it is open, the half-open probe succeeds and the replicas come back.
    pub(in crate::runner) async fn layer_breaker(&self, r: &mut LayerReport) -> LayerResult {
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
            |ds| restored_replicas(ds.first()?).map(|ready| (Timestamp::now(), ready)),
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
}

/// The breaker gave the replicas back: the Deployment wants at least 2 (not the open circuit's 0
/// or the half-open probe's 1) and that many are Ready; how many are.
fn restored_replicas(d: &Deployment) -> Option<i32> {
    let want = d.spec.replicas?;
    let ready = d.status.as_ref()?.ready_replicas.unwrap_or(0);
    (want >= 2 && ready >= want).then_some(ready)
}

#[cfg(test)]
mod tests {
    use super::restored_replicas;
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    fn deployment(replicas: i32, ready: Option<i32>) -> Deployment {
        serde_json::from_value(json!({
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": {"readyReplicas": ready},
        }))
        .expect("deployment literal")
    }

    #[test]
    fn restored_once_the_remembered_replicas_are_ready() {
        assert_eq!(restored_replicas(&deployment(2, Some(2))), Some(2));
        assert_eq!(restored_replicas(&deployment(3, Some(4))), Some(4));
    }

    #[test]
    fn not_restored_while_open_half_open_or_not_ready() {
        // Open: scaled to 0; half-open: one probe replica.
        assert_eq!(restored_replicas(&deployment(0, None)), None);
        assert_eq!(restored_replicas(&deployment(1, Some(1))), None);
        assert_eq!(restored_replicas(&deployment(2, Some(1))), None);
        assert_eq!(restored_replicas(&deployment(2, None)), None);
        assert_eq!(restored_replicas(&Deployment::default()), None);
    }
}
