//! Layer 9, pool-exhaustion recycle: one pod holds its whole connection pool and fails
//! readiness; the poolExhaustion HealingPolicy has the controller recycle it and spare the other.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{LayerResult, healing_policies};
use crate::extract;
use crate::report::{LayerReport, MarkKind};
use crate::runner::wait::floor_second;
use crate::runner::{Runner, progress};
use crate::scenario::{self, Tweaks};

impl Runner {
    /// One pod's connection pool is held; saturation plus failing readiness recycles it. The
    /// other pod, healthy, is left alone.
    pub(in crate::runner) async fn layer_pool(&self, r: &mut LayerReport) -> LayerResult {
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
}
