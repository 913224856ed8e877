//! Layer 2, readiness removal: `/ready` answers 503 on one pod for a while; the Service's
//! EndpointSlices drop it, then take it back.

use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::watcher;

use crate::extract::{self, EndpointState};
use crate::report::{LayerReport, MarkKind};
use crate::runner::wait::wait_for;
use crate::runner::{Runner, progress};

impl Runner {
    pub(in crate::runner) async fn layer_readiness(
        &self,
        r: &mut LayerReport,
    ) -> std::result::Result<(), String> {
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
}
