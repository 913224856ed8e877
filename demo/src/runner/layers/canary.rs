//! Layer 7, canary rollback: `canary/deploy.sh` puts a canary that answers 50 % errors behind
//! the Service; `canary/promote.sh`'s analysis rolls it back (`CanaryRolledBack` Event).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;

use crate::extract;
use crate::report::{LayerReport, MarkKind, Status};
use crate::runner::steps::run_script;
use crate::runner::wait::{floor_second, wait_for};
use crate::runner::{Runner, progress};

impl Runner {
    pub(in crate::runner) async fn layer_canary(
        &self,
        r: &mut LayerReport,
    ) -> std::result::Result<(), String> {
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
