//! Layer 3, controller recycle: one pod's container exits after every restart; selfheal-controller
//! recycles the pod (`Recycled` Event) and a fresh one takes its place.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::watcher;

use crate::extract;
use crate::report::{LayerReport, MarkKind, Status};
use crate::runner::steps::controller_env;
use crate::runner::wait::{floor_second, wait_for};
use crate::runner::{Runner, progress};
use crate::verdict::{self, CrashStep};

impl Runner {
    pub(in crate::runner) async fn layer_recycle(
        &self,
        r: &mut LayerReport,
    ) -> std::result::Result<(), String> {
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
        let needed = restarts_needed(threshold, rate);
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
}

/// Restarts after which the controller recycles a pod: one over its threshold, or the
/// restart-rate rule's count (0 = off) when that comes first.
fn restarts_needed(threshold: u32, rate: u32) -> u32 {
    if rate > 0 {
        rate.min(threshold + 1)
    } else {
        threshold + 1
    }
}

#[cfg(test)]
mod tests {
    use super::restarts_needed;

    #[test]
    fn restarts_needed_is_one_over_the_threshold_without_a_rate_rule() {
        assert_eq!(restarts_needed(3, 0), 4);
        assert_eq!(restarts_needed(0, 0), 1);
    }

    #[test]
    fn restarts_needed_is_the_earlier_of_the_rate_rule_and_the_threshold() {
        assert_eq!(restarts_needed(3, 3), 3);
        assert_eq!(restarts_needed(5, 2), 2);
        assert_eq!(restarts_needed(2, 9), 3);
    }
}
