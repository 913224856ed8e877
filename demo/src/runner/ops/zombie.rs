//! Layer 11, zombie reap: a pod on a Node no kubelet answers for stays Terminating forever; the
//! controller's reaper force-deletes it.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;

use super::LayerResult;
use crate::report::{LayerReport, MarkKind, Status};
use crate::runner::wait::{floor_second, wait_for};
use crate::runner::{Runner, is_status, progress};
use crate::scenario::{self, SCENARIO_LABEL};

impl Runner {
    /// A pod on a node that is gone stays Terminating forever (no kubelet confirms the stop);
    /// the reaper force-deletes it after `--zombie-after-secs`.
    pub(in crate::runner) async fn layer_zombie(&self, r: &mut LayerReport) -> LayerResult {
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
