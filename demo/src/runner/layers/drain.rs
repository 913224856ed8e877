//! Layer 6, PDB-guarded drain: the demo's pods are evicted through the Eviction API, as
//! `kubectl drain` does (after a cordon when there is more than one node); the
//! PodDisruptionBudget refuses what would go below it, and every evicted pod is replaced.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, EvictParams, Patch, PatchParams};
use kube::runtime::watcher;

use crate::extract;
use crate::report::{LayerReport, MarkKind, Status};
use crate::runner::wait::wait_for;
use crate::runner::{Runner, is_status, progress};
use crate::verdict;

impl Runner {
    pub(in crate::runner) async fn layer_drain(
        &self,
        r: &mut LayerReport,
        schedulable: usize,
    ) -> std::result::Result<(), String> {
        let pdbs: Api<PodDisruptionBudget> =
            Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let Some(pdb) = pdbs
            .get_opt(&self.deployment)
            .await
            .map_err(|e| format!("reading the PDB: {e}"))?
        else {
            r.status = Status::NotAvailable;
            return Err("the release has no PodDisruptionBudget (podDisruptionBudget.enabled=false or 1 replica)".into());
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut pods = self.ready_pods().await.map_err(|e| e.to_string())?;
        let want = pods.len();
        let mut cordoned = None;
        if schedulable > 1 {
            // A real drain of the node of the first pod: cordon it, evict our pods there.
            let node = pods
                .first()
                .and_then(|p| p.spec.as_ref()?.node_name.clone())
                .ok_or("pod without a node")?;
            let nodes: Api<Node> = Api::all(self.client.clone());
            nodes
                .patch(
                    &node,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": {"unschedulable": true}})),
                )
                .await
                .map_err(|e| format!("cordoning {node}: {e}"))?;
            progress(format!(
                "    cordoned {node} ({schedulable} schedulable nodes): draining the demo's pods from it"
            ));
            pods.retain(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
            });
            cordoned = Some(node);
        } else {
            progress(
                "    single schedulable node: no cordon; every pod is evicted through the Eviction API, as kubectl drain does",
            );
        }
        let (allowed, healthy, desired) = extract::pdb_status(&pdb);
        r.theoretical_min = Some(
            self.settings
                .drain(pods.len() as u32, allowed.max(1) as u32),
        );
        r.evidence(
            "pods_before",
            pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        );
        r.evidence("pdb_before", serde_json::json!({"disruptionsAllowed": allowed, "currentHealthy": healthy, "desiredHealthy": desired}));
        let result = self.evict_all(r, &pods, &pdbs, deadline).await;
        if let Some(node) = cordoned {
            let nodes: Api<Node> = Api::all(self.client.clone());
            let _ = nodes
                .patch(
                    &node,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": {"unschedulable": false}})),
                )
                .await;
            progress(format!("    uncordoned {node}"));
        }
        result?;
        let originals: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        let (healed_at, ready) = wait_for(
            self.pods(),
            watcher::Config::default().labels(&self.selector),
            "every evicted pod replaced and Ready",
            deadline,
            |ps| verdict::drained_and_replaced(ps, &originals, want, Timestamp::now()),
        )
        .await?;
        r.mark(
            healed_at,
            MarkKind::Healed,
            format!("all {} pods replaced, {ready} Ready", originals.len()),
            "pod condition Ready (newest)",
        );
        r.evidence("ready_after", ready);
        Ok(())
    }

    /// Evict each pod like `kubectl drain`: a 429 from the PDB means wait until the budget allows
    /// one more (watched on the PDB's status), then try again.
    async fn evict_all(
        &self,
        r: &mut LayerReport,
        pods: &[Pod],
        pdbs: &Api<PodDisruptionBudget>,
        deadline: Instant,
    ) -> std::result::Result<(), String> {
        let mut evicted = 0u32;
        let mut refused = 0u32;
        for p in pods {
            let name = p.name_any();
            loop {
                match self.pods().evict(&name, &EvictParams::default()).await {
                    Ok(_) => {
                        evicted += 1;
                        let kind = if evicted == 1 {
                            MarkKind::Fault
                        } else {
                            MarkKind::Info
                        };
                        r.mark(
                            Timestamp::now(),
                            kind,
                            format!("evicted {name}"),
                            "Eviction API answer (201)",
                        );
                        progress(format!("    evicted {name}"));
                        break;
                    }
                    Err(e) if is_status(&e, 429) => {
                        refused += 1;
                        let pdb = pdbs.get(&self.deployment).await.ok();
                        let (allowed, healthy, desired) =
                            pdb.as_ref().map_or((0, 0, 0), extract::pdb_status);
                        if refused == 1 {
                            r.mark(Timestamp::now(), MarkKind::Detected, format!("PDB refused evicting {name} (429): currentHealthy {healthy}, desiredHealthy {desired}, disruptionsAllowed {allowed}"), "Eviction API answer (429)");
                        }
                        progress(format!(
                            "    PDB refused evicting {name} (429, {healthy} healthy, {desired} required); waiting for the budget"
                        ));
                        wait_for(
                            pdbs.clone(),
                            watcher::Config::default()
                                .fields(&format!("metadata.name={}", self.deployment)),
                            "the PDB to allow another disruption",
                            deadline,
                            |ps| (extract::pdb_status(ps.first()?).0 > 0).then_some(()),
                        )
                        .await?;
                    }
                    Err(e) if is_status(&e, 404) => break,
                    Err(e) => return Err(format!("evicting {name}: {e}")),
                }
            }
        }
        r.evidence("evictions", evicted);
        r.evidence("evictions_refused", refused);
        if refused == 0 {
            r.evidence(
                "note",
                "the PDB never had to refuse: more pods than minAvailable + evictions in flight",
            );
        }
        Ok(())
    }
}
