//! The zombie reaper against the real API server of the local cluster (`make cluster-up`, or any
//! cluster in `KUBECONFIG`). A pod bound to a node no kubelet runs on stays `Terminating` once
//! deleted — exactly what a dead node leaves behind — so these tests make real zombies: on a Node
//! object without a kubelet (never Ready), on a node name that does not exist, and, with a
//! finalizer, on the cluster's own healthy node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use selfheal_controller::metrics::Metrics;

const SLOW: Duration = Duration::from_secs(60);
/// The reaper's delay in these tests (300 s in production).
const AFTER: &str = "--zombie-after-secs=3";

/// A bare pod `name` bound to `node` (no scheduler, no kubelet unless the node is real).
async fn pod_on(client: &Client, ns: &str, name: &str, node: &str, finalizer: bool) -> Pod {
    let mut spec = crashing_spec("zombie");
    spec.containers[0].command = Some(vec!["sleep".into(), "3600".into()]);
    spec.node_name = Some(node.into());
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            finalizers: finalizer.then(|| vec!["selfheal.io/test-hold".to_owned()]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        ..Pod::default()
    };
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect("creating pod")
}

/// Delete `name` the normal way (its 1 s grace period): it turns Terminating.
async fn delete(client: &Client, ns: &str, name: &str) {
    Api::<Pod>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
        .expect("deleting pod");
}

async fn exists(client: &Client, ns: &str, name: &str) -> bool {
    Api::<Pod>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("reading pod")
        .is_some()
}

/// Force-delete whatever a test left, after removing the test finalizer.
async fn clean_up(client: &Client, ns: &str, name: &str) {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let _ = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await;
    let _ = api
        .delete(
            name,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await;
}

/// Run `body`, then [`clean_up`] pod `name` even if `body` panicked: a pod left with the test
/// finalizer would keep the test namespace Terminating for ever.
async fn cleaning_up<Fut: Future<Output = ()>>(client: &Client, ns: &str, name: &str, body: Fut) {
    let result = std::panic::AssertUnwindSafe(body).catch_unwind().await;
    clean_up(client, ns, name).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Run `body` with a Node object `name` that has no kubelet (so it is never Ready), deleted
/// afterwards even if `body` panics.
async fn with_ghost_node<Fut: Future<Output = ()>>(client: &Client, name: &str, body: Fut) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("selfheal.io/test".to_owned(), "ghost".to_owned())].into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("creating ghost Node");
    let result = std::panic::AssertUnwindSafe(body).catch_unwind().await;
    if let Err(e) = nodes.delete(name, &DeleteParams::default()).await {
        eprintln!("deleting ghost node {name} failed: {e}");
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn deleted(m: &Metrics, state: &str) -> u64 {
    m.zombies_deleted_total.with_label_values(&[state]).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_stuck_terminating_on_a_node_that_is_not_ready_is_force_deleted() {
    in_namespace("sh-zombie-unready", |client, ns| async move {
        let node = format!("{ns}-ghost");
        with_ghost_node(&client, &node, async {
            let ctl = start(config(&ns, &[AFTER])).await;
            pod_on(&client, &ns, "stuck", &node, false).await;
            delete(&client, &ns, "stuck").await;
            wait_for("the zombie to be force-deleted", SLOW, || async {
                !exists(&client, &ns, "stuck").await
            })
            .await;
            wait_for("a ForceDeleted Event", Duration::from_secs(20), || async {
                !our_events(&client, &ns, "ForceDeleted").await.is_empty()
            })
            .await;
            let ev = our_events(&client, &ns, "ForceDeleted").await.remove(0);
            assert_eq!(ev.type_.as_deref(), Some("Warning"));
            assert_eq!(ev.action.as_deref(), Some("ForceDelete"));
            let note = ev.note.unwrap_or_default();
            assert!(
                note.contains(&format!("on node {node} (not ready)")),
                "{note}"
            );
            assert_eq!(deleted(&ctl.metrics, "not_ready"), 1);
            assert_eq!(healing_actions(&ctl.metrics, "force_delete", "done"), 1);
        })
        .await;
        clean_up(&client, &ns, "stuck").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_on_a_node_that_is_gone_is_force_deleted() {
    in_namespace("sh-zombie-gone", |client, ns| async move {
        let ctl = start(config(&ns, &[AFTER])).await;
        let node = format!("{ns}-no-such-node");
        pod_on(&client, &ns, "orphan", &node, false).await;
        delete(&client, &ns, "orphan").await;
        wait_for("the orphan to be force-deleted", SLOW, || async {
            !exists(&client, &ns, "orphan").await
        })
        .await;
        // NB: the controller-manager's pod GC deletes such orphans too (after 40 s); the metric
        // says it was the reaper.
        assert_eq!(deleted(&ctl.metrics, "gone"), 1);
        wait_for(
            "a ForceDeleted Event naming the gone node",
            Duration::from_secs(20),
            || async {
                our_events(&client, &ns, "ForceDeleted")
                    .await
                    .iter()
                    .any(|e| {
                        e.note
                            .as_deref()
                            .is_some_and(|n| n.contains(&format!("on node {node} (gone)")))
                    })
            },
        )
        .await;
        clean_up(&client, &ns, "orphan").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_the_zombie_and_deletes_nothing() {
    in_namespace("sh-zombie-dry", |client, ns| async move {
        let node = format!("{ns}-ghost");
        with_ghost_node(&client, &node, async {
            let ctl = start(config(&ns, &[AFTER, "--dry-run"])).await;
            pod_on(&client, &ns, "stuck", &node, false).await;
            delete(&client, &ns, "stuck").await;
            wait_for("a dry-run ForceDeleted Event", SLOW, || async {
                our_events(&client, &ns, "ForceDeleted")
                    .await
                    .iter()
                    .any(|e| e.action.as_deref() == Some("DryRun"))
            })
            .await;
            assert!(
                exists(&client, &ns, "stuck").await,
                "dry-run deleted the pod"
            );
            assert_eq!(deleted(&ctl.metrics, "not_ready"), 0);
            assert_eq!(healing_actions(&ctl.metrics, "force_delete", "dry_run"), 1);
        })
        .await;
        clean_up(&client, &ns, "stuck").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_on_a_healthy_node_is_left_to_its_kubelet_without_the_opt_in() {
    in_namespace("sh-zombie-healthy", |client, ns| async move {
        let ctl = start(config(&ns, &[AFTER])).await;
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default().labels("!selfheal.io/test"))
            .await
            .expect("listing nodes");
        let node = nodes.items[0].name_any();
        // A finalizer keeps the pod Terminating on a Ready node (a stuck kubelet looks the same).
        pod_on(&client, &ns, "held", &node, true).await;
        cleaning_up(&client, &ns, "held", async {
            delete(&client, &ns, "held").await;
            wait_for("a NotRecycled Event for the held pod", SLOW, || async {
                our_events(&client, &ns, "NotRecycled")
                    .await
                    .iter()
                    .any(|e| {
                        e.note
                            .as_deref()
                            .is_some_and(|n| n.contains("which is Ready: left to its kubelet"))
                    })
            })
            .await;
            assert!(exists(&client, &ns, "held").await);
            assert_eq!(deleted(&ctl.metrics, "ready"), 0);
            assert_eq!(
                ctl.metrics
                    .not_recycled_total
                    .with_label_values(&["zombie_on_healthy_node"])
                    .get(),
                1
            );
            assert_eq!(healing_actions(&ctl.metrics, "force_delete", "done"), 0);
        })
        .await;
    })
    .await;
}

/// A zombie that holds a ReadWriteOnce volume is not force-deleted while its node still exists
/// and is only NotReady: the node could return with the old container still writing. A
/// `NotRecycled` Event says what would release it; the `out-of-service` taint (Kubernetes'
/// non-graceful node shutdown) does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_holding_a_read_write_once_volume_waits_for_the_out_of_service_taint() {
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Volume, VolumeMount,
    };
    in_namespace("sh-zombie-rwo", |client, ns| async move {
        let node = format!("{ns}-ghost");
        with_ghost_node(&client, &node, async {
            // Pending for ever (no storage class here): what matters is its access mode.
            let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "selfheal-test-none",
                         "resources": {"requests": {"storage": "1Mi"}}}
            }))
            .unwrap();
            Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), &pvc)
                .await
                .expect("creating the claim");
            let ctl = start(config(&ns, &[AFTER])).await;
            let mut spec = crashing_spec("zombie");
            spec.containers[0].command = Some(vec!["sleep".into(), "3600".into()]);
            spec.containers[0].volume_mounts = Some(vec![VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                ..VolumeMount::default()
            }]);
            spec.volumes = Some(vec![Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: "data".into(),
                    ..Default::default()
                }),
                ..Volume::default()
            }]);
            spec.node_name = Some(node.clone());
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some("writer".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
                ..Pod::default()
            };
            Api::<Pod>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), &pod)
                .await
                .expect("creating pod");
            delete(&client, &ns, "writer").await;
            wait_for("a NotRecycled Event naming the claim", SLOW, || async {
                our_events(&client, &ns, "NotRecycled")
                    .await
                    .iter()
                    .any(|e| {
                        e.note.as_deref().is_some_and(|n| {
                            n.contains("volume claim data (ReadWriteOnce)")
                                && n.contains("node.kubernetes.io/out-of-service")
                        })
                    })
            })
            .await;
            // Two more reaper rounds (3 s apart): still there.
            tokio::time::sleep(Duration::from_secs(7)).await;
            assert!(
                exists(&client, &ns, "writer").await,
                "an RWO zombie was force-deleted on a node that may return"
            );
            assert_eq!(deleted(&ctl.metrics, "not_ready"), 0);

            // The operator says the node is off for good.
            Api::<Node>::all(client.clone())
                .patch(
                    &node,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": {"taints": [{
                        "key": "node.kubernetes.io/out-of-service",
                        "value": "nodeshutdown", "effect": "NoExecute"}]}})),
                )
                .await
                .expect("tainting the node");
            // NB: the controller-manager's pod GC force-deletes terminating pods on an
            // out-of-service node too (every 20 s); whichever is first, the pod goes.
            wait_for(
                "the zombie to go once the node is out of service",
                SLOW,
                || async { !exists(&client, &ns, "writer").await },
            )
            .await;
            clean_up(&client, &ns, "writer").await;
        })
        .await;
    })
    .await;
}
