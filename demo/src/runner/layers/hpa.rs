//! Layer 5, HPA scale-out: every pod burns a CPU; the HorizontalPodAutoscaler adds replicas and
//! they become Ready.

use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::watcher;

use crate::extract;
use crate::report::{LayerReport, MarkKind, Status};
use crate::runner::wait::wait_for;
use crate::runner::{Runner, progress};
use crate::verdict;

impl Runner {
    pub(in crate::runner) async fn layer_hpa(
        &self,
        r: &mut LayerReport,
    ) -> std::result::Result<(), String> {
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
}
