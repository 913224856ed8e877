//! Layer 1, liveness restart: `/health` answers 503 on one pod; the kubelet's liveness probe
//! restarts the container (`Killing` Event) and it comes back Ready.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::extract;
use crate::report::{LayerReport, MarkKind};
use crate::runner::wait::floor_second;
use crate::runner::{Runner, progress};
use crate::verdict;

impl Runner {
    pub(in crate::runner) async fn layer_liveness(
        &self,
        r: &mut LayerReport,
    ) -> std::result::Result<(), String> {
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
}
