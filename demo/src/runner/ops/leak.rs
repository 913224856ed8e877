//! Layer 8, memory-leak recycle: one container leaks towards a real OOM kill; the memoryTrend
//! HealingPolicy has the controller recycle it first.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;

use super::{LayerResult, healing_policies};
use crate::extract;
use crate::report::{LayerReport, MarkKind, Theory};
use crate::runner::wait::floor_second;
use crate::runner::{Runner, progress};
use crate::scenario::{self, LeakPlan, Tweaks};

impl Runner {
    /// A container leaks 1 MiB/s towards an OOM kill; the memoryTrend policy recycles it first.
    pub(in crate::runner) async fn layer_leak(&self, r: &mut LayerReport) -> LayerResult {
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
            + Duration::from_secs_f64(leak_deadline_secs(r.theoretical_min.as_ref()));
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
        r.evidence("recycled_before_oom", recycled_before_oom(&note));
        Ok(())
    }
}

/// How long the leak may take: three times the lower bound plus a minute, 300 s without one.
fn leak_deadline_secs(theory: Option<&Theory>) -> f64 {
    theory.map_or(300.0, |t| t.heal_secs * 3.0 + 60.0)
}

/// The controller's `Recycled` message counts the container's restarts: none means the
/// controller won the race against the OOM kill.
fn recycled_before_oom(message: &str) -> bool {
    message.contains(", 0 restarts)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leak_deadline_is_three_times_the_lower_bound_plus_a_minute() {
        let theory = Theory {
            heal_secs: 80.0,
            basis: "climb to 75 % of the limit".to_owned(),
        };
        assert_eq!(leak_deadline_secs(Some(&theory)), 300.0);
        let theory = Theory {
            heal_secs: 10.5,
            basis: String::new(),
        };
        assert_eq!(leak_deadline_secs(Some(&theory)), 91.5);
        assert_eq!(leak_deadline_secs(None), 300.0);
    }

    #[test]
    fn recycled_before_oom_reads_the_restart_count_of_the_event() {
        let event = |restarts: u32| {
            format!(
                "evicted (memory_leak: container app at 165 MiB of 192 MiB (86 %), 9 of 9 steps rising, +0.99 MiB/s: limit in about 27s, {restarts} restarts) so Deployment/shop/web replaces it (HealingPolicy shop/web)"
            )
        };
        assert!(recycled_before_oom(&event(0)));
        assert!(!recycled_before_oom(&event(1)));
        // "10 restarts)" ends in "0 restarts)" too; only ", 0" is none.
        assert!(!recycled_before_oom(&event(10)));
        assert!(!recycled_before_oom(""));
    }
}
