//! Recycling against the real API server of the local cluster (`make cluster-up`, or any cluster in
//! `KUBECONFIG`): real crashing containers, real evictions, real PodDisruptionBudgets and Events.
//! Each test runs the reconciler in-process, scoped to its own namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

const SLOW: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_deployment_is_evicted_replaced_and_reported_with_evidence() {
    in_namespace("sh-recycle", |client, ns| async move {
        // The log tail is opt-in (Events are widely readable); this test opts in.
        let ctl = start(config(&ns, &["--log-evidence=true"])).await;
        create_deployment(&client, &ns, &crashing_deployment("web", 1, &[])).await;

        wait_for("the first pod", SLOW, || async {
            !live_pods(&client, &ns, "web").await.is_empty()
        })
        .await;
        let first_uid = live_pods(&client, &ns, "web").await[0]
            .uid()
            .unwrap_or_default();
        // Two Events, written one after the other: wait for both, not just the first.
        wait_for(
            "Recycled events on the pod and on its Deployment",
            SLOW,
            || async {
                let events = our_events(&client, &ns, "Recycled").await;
                events.iter().any(|e| regarding_kind(e) == "Pod")
                    && events.iter().any(|e| regarding_kind(e) == "Deployment")
            },
        )
        .await;

        let on_owner = our_events(&client, &ns, "Recycled").await;
        let owner_event = on_owner
            .iter()
            .find(|e| regarding_kind(e) == "Deployment")
            .unwrap_or_else(|| panic!("no Recycled event on the Deployment: {on_owner:#?}"));
        let note = owner_event.note.clone().unwrap_or_default();
        assert!(
            note.contains("exit 3"),
            "evidence lacks the exit code: {note}"
        );
        assert!(
            note.contains("boom-from-web"),
            "evidence lacks the log tail: {note}"
        );
        assert!(
            recycles(&ctl.metrics, &ns) >= 1,
            "recycles_total not incremented"
        );

        wait_for("a replacement pod with a new UID", SLOW, || async {
            live_pods(&client, &ns, "web")
                .await
                .iter()
                .any(|p| p.uid().unwrap_or_default() != first_uid)
        })
        .await;
        let evicted = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .find(|p| p.uid().unwrap_or_default() == first_uid);
        assert!(
            evicted.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
            "the original pod is still alive"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disruption_budget_blocks_eviction_which_is_retried_never_forced() {
    in_namespace("sh-pdb", |client, ns| async move {
        let pdb = PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("web".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(0)),
                selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
                    ..LabelSelector::default()
                }),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        };
        Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &pdb)
            .await
            .expect("creating PDB");
        let ctl = start(config(&ns, &[])).await;
        create_deployment(&client, &ns, &crashing_deployment("web", 1, &[])).await;

        wait_for(
            "two refused evictions (first try and a retry)",
            SLOW,
            || async { ctl.metrics.evictions_blocked_total.get() >= 2 },
        )
        .await;
        let blocked = our_events(&client, &ns, "RecycleBlocked").await;
        assert!(
            blocked.iter().any(|e| regarding_kind(e) == "Pod"),
            "no RecycleBlocked on the pod: {blocked:#?}"
        );
        assert!(
            blocked.iter().any(|e| regarding_kind(e) == "Deployment"),
            "no RecycleBlocked on the owner"
        );
        assert_eq!(
            recycles(&ctl.metrics, &ns),
            0,
            "a blocked eviction was counted as a recycle"
        );
        assert!(
            our_events(&client, &ns, "Recycled").await.is_empty(),
            "pod was recycled despite the PDB"
        );
        let pods = live_pods(&client, &ns, "web").await;
        assert_eq!(pods.len(), 1, "pod was removed despite the PDB");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_pod_is_never_evicted_and_the_refusal_is_reported() {
    in_namespace("sh-bare", |client, ns| async move {
        let ctl = start(config(&ns, &[])).await;
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("bare".into()),
                labels: Some(BTreeMap::from([("app".to_owned(), "bare".to_owned())])),
                ..ObjectMeta::default()
            },
            spec: Some(crashing_spec("boom-bare")),
            ..Pod::default()
        };
        let created = Api::<Pod>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &pod)
            .await
            .expect("creating bare pod");

        wait_for("a NotRecycled event on the bare pod", SLOW, || async {
            !our_events(&client, &ns, "NotRecycled").await.is_empty()
        })
        .await;
        let events = our_events(&client, &ns, "NotRecycled").await;
        let note = events[0].note.clone().unwrap_or_default();
        assert!(
            note.contains("no controller owner"),
            "NotRecycled does not say why: {note}"
        );
        let now = live_pods(&client, &ns, "bare").await;
        assert_eq!(now.len(), 1, "bare pod is gone");
        assert_eq!(now[0].uid(), created.uid());
        assert!(restarts(&now[0]) > 1, "pod did not cross the threshold");
        assert_eq!(
            ctl.metrics
                .not_recycled_total
                .with_label_values(&["no_controller"])
                .get(),
            1
        );
        assert_eq!(recycles(&ctl.metrics, &ns), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_out_pod_is_never_evicted_and_the_refusal_is_reported() {
    in_namespace("sh-optout", |client, ns| async move {
        let ctl = start(config(&ns, &[])).await;
        create_deployment(
            &client,
            &ns,
            &crashing_deployment("web", 1, &[("selfheal.io/ignore", "true")]),
        )
        .await;

        wait_for("a NotRecycled event", SLOW, || async {
            our_events(&client, &ns, "NotRecycled")
                .await
                .iter()
                .any(|e| regarding_kind(e) == "Pod")
        })
        .await;
        let note = our_events(&client, &ns, "NotRecycled").await[0]
            .note
            .clone()
            .unwrap_or_default();
        assert!(
            note.contains("opted out"),
            "NotRecycled does not say why: {note}"
        );
        // Let a few more restarts happen: still untouched.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let pods = live_pods(&client, &ns, "web").await;
        assert_eq!(pods.len(), 1);
        assert!(restarts(&pods[0]) > 1);
        assert_eq!(recycles(&ctl.metrics, &ns), 0);
        assert_eq!(
            ctl.metrics
                .not_recycled_total
                .with_label_values(&["opted_out"])
                .get(),
            1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_is_given_up_on_after_max_retries() {
    in_namespace("sh-giveup", |client, ns| async move {
        let ctl = start(config(
            &ns,
            &[
                "--restart-threshold=0",
                "--max-retries=2",
                "--max-recycles-per-window=10",
            ],
        ))
        .await;
        create_deployment(&client, &ns, &crashing_deployment("web", 1, &[])).await;

        wait_for(
            "a GivingUp event on the Deployment",
            Duration::from_secs(300),
            || async {
                our_events(&client, &ns, "GivingUp")
                    .await
                    .iter()
                    .any(|e| regarding_kind(e) == "Deployment")
            },
        )
        .await;
        assert_eq!(
            recycles(&ctl.metrics, &ns),
            2,
            "expected exactly max-retries recycles"
        );
        assert_eq!(ctl.metrics.giveups_total.get(), 1);
        let giving_up = our_events(&client, &ns, "GivingUp").await;
        let note = giving_up[0].note.clone().unwrap_or_default();
        assert!(
            note.contains("recycled 2 times"),
            "GivingUp does not say what it saw: {note}"
        );
        assert_eq!(giving_up[0].type_.as_deref(), Some("Warning"));
        // Given up means given up: the crashing pod stays.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(recycles(&ctl.metrics, &ns), 2);
        assert_eq!(live_pods(&client, &ns, "web").await.len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_namespace_is_left_untouched() {
    in_namespace("sh-excluded", |client, ns| async move {
        let exclude = format!("--exclude-namespaces=kube-system,{ns}");
        let ctl = start(config(&ns, &[exclude.as_str(), "--restart-threshold=0"])).await;
        create_deployment(&client, &ns, &crashing_deployment("web", 1, &[])).await;

        wait_for("the pod to restart twice", SLOW, || async {
            live_pods(&client, &ns, "web")
                .await
                .first()
                .is_some_and(|p| restarts(p) >= 2)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(recycles(&ctl.metrics, &ns), 0);
        assert_eq!(
            ctl.metrics.watched_pods.get(),
            0,
            "excluded namespace was watched"
        );
        for reason in ["Recycled", "NotRecycled", "RecycleBlocked", "GivingUp"] {
            assert!(
                our_events(&client, &ns, reason).await.is_empty(),
                "{reason} event in an excluded namespace"
            );
        }
        assert_eq!(live_pods(&client, &ns, "web").await.len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_records_the_decision_but_evicts_nothing() {
    in_namespace("sh-dryrun", |client, ns| async move {
        let ctl = start(config(&ns, &["--dry-run"])).await;
        create_deployment(&client, &ns, &crashing_deployment("web", 1, &[])).await;
        wait_for("a dry-run Recycled event", SLOW, || async {
            our_events(&client, &ns, "Recycled")
                .await
                .iter()
                .any(|e| e.action.as_deref() == Some("DryRun"))
        })
        .await;
        let pods = live_pods(&client, &ns, "web").await;
        assert_eq!(pods.len(), 1);
        assert!(pods[0].metadata.deletion_timestamp.is_none());
        assert_eq!(recycles(&ctl.metrics, &ns), 0);
    })
    .await;
}

/// `--exclude-namespaces` adds to the system namespaces; it cannot take them out. A crash-looping
/// Deployment in kube-public, a controller told to watch kube-public and to exclude nothing: the
/// pod is never watched, never recycled, never reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_namespaces_stay_excluded_whatever_the_flag_says() {
    let client = client().await;
    let ns = "kube-public";
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("sh-system-{:x}", nanos ^ std::process::id());
    let ctl = start(config(
        ns,
        &["--exclude-namespaces=", "--restart-threshold=0"],
    ))
    .await;
    create_deployment(&client, ns, &crashing_deployment(&name, 1, &[])).await;
    // The body runs in its own task so the Deployment is deleted even when an assertion fails.
    let body = {
        let client = client.clone();
        let name = name.clone();
        tokio::spawn(async move {
            wait_for("the kube-public pod to restart twice", SLOW, || async {
                live_pods(&client, ns, &name)
                    .await
                    .first()
                    .is_some_and(|p| restarts(p) >= 2)
            })
            .await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert_eq!(ctl.metrics.watched_pods.get(), 0, "kube-public was watched");
            assert_eq!(
                recycles(&ctl.metrics, ns),
                0,
                "a kube-public pod was recycled"
            );
            assert_eq!(live_pods(&client, ns, &name).await.len(), 1);
        })
    };
    let outcome = body.await;
    let _ = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client, ns)
        .delete(&name, &Default::default())
        .await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The lifetime restart threshold counts only restarts that still describe the pod. A container
/// that crashed twice and has run Ready since, past the rate window, is left alone: a
/// `NotRecycled` Event says why, and nothing is evicted. Without the rule it is recycled at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_in_the_past_are_left_alone_and_said_so() {
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Volume, VolumeMount};
    in_namespace("sh-past", |client, ns| async move {
        // Crash twice (a counter in an emptyDir survives the container), then run for good.
        let mut d = crashing_deployment("web", 1, &[]);
        let spec = d.spec.template.spec.as_mut().unwrap();
        spec.volumes = Some(vec![Volume {
            name: "state".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }]);
        let c = &mut spec.containers[0];
        c.volume_mounts = Some(vec![VolumeMount {
            name: "state".into(),
            mount_path: "/state".into(),
            ..VolumeMount::default()
        }]);
        c.command = Some(vec![
            "sh".into(),
            "-c".into(),
            "n=$(cat /state/n 2>/dev/null || echo 0); echo $((n + 1)) > /state/n; \
             [ \"$n\" -ge 2 ] && exec sleep 3600; echo boom; exit 3"
                .into(),
        ]);
        create_deployment(&client, &ns, &d).await;
        let rate_window = 5;
        wait_for(
            "the pod Ready after 2 restarts, the last one past the rate window",
            SLOW,
            || async {
                live_pods(&client, &ns, "web")
                    .await
                    .first()
                    .is_some_and(|p| {
                        let finished = p
                            .status
                            .as_ref()
                            .and_then(|s| s.container_statuses.as_ref())
                            .and_then(|c| c.first())
                            .and_then(|c| c.last_state.as_ref())
                            .and_then(|s| s.terminated.as_ref())
                            .and_then(|t| t.finished_at.as_ref())
                            .map(|t| t.0);
                        restarts(p) == 2
                            && selfheal_controller::policy::is_ready(p)
                            && finished.is_some_and(|f| {
                                k8s_openapi::jiff::Timestamp::now()
                                    .duration_since(f)
                                    .as_secs()
                                    > rate_window + 1
                            })
                    })
            },
        )
        .await;
        // Threshold 1: 2 restarts are over it. The controller starts only now, so the history it
        // could have seen in memory is empty, as after a restart of the controller.
        let window = format!("--rate-window-secs={rate_window}");
        let ctl = start(config(&ns, &["--restart-threshold=1", window.as_str()])).await;
        wait_for("a NotRecycled event", SLOW, || async {
            !our_events(&client, &ns, "NotRecycled").await.is_empty()
        })
        .await;
        let note = our_events(&client, &ns, "NotRecycled").await[0]
            .note
            .clone()
            .unwrap_or_default();
        assert!(
            note.contains("has not restarted within the rate window"),
            "NotRecycled does not say why: {note}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            recycles(&ctl.metrics, &ns),
            0,
            "a recovered pod was recycled"
        );
        assert!(our_events(&client, &ns, "Recycled").await.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recycle_history_survives_a_controller_restart() {
    // Two namespaces: the workload's, and the controller's own (always out of its scope), which
    // holds the history ConfigMap.
    in_namespaces(&["sh-memory", "sh-memory-ctl"], |client, names| async move {
        let (ns, own) = (names[0].clone(), names[1].clone());
        let own_flag = format!("--pod-namespace={own}");
        let flags = [
            "--restart-threshold=0",
            "--max-retries=1",
            "--max-recycles-per-window=10",
            "--history-configmap=selfheal-history",
            own_flag.as_str(),
        ];
        let first = start(config(&ns, &flags)).await;
        create_deployment(&client, &ns, &crashing_deployment("web", 1, &[])).await;
        wait_for("the first recycle", SLOW, || async {
            recycles(&first.metrics, &ns) == 1
        })
        .await;
        let key = format!("Deployment/{ns}/web");
        let configmaps = Api::<ConfigMap>::namespaced(client.clone(), &own);
        wait_for("the recycle saved in the history ConfigMap", Duration::from_secs(30), || async {
            configmaps
                .get_opt("selfheal-history")
                .await
                .unwrap()
                .and_then(|cm| cm.data?.remove("history.json"))
                .is_some_and(|json| json.contains(&key))
        })
        .await;
        // The controller restarts (a new process, an empty memory) while the pod crash-loops on.
        drop(first);
        let second = start(config(&ns, &flags)).await;
        wait_for("GivingUp from the restarted controller", SLOW, || async {
            second.metrics.giveups_total.get() == 1
        })
        .await;
        assert_eq!(
            recycles(&second.metrics, &ns),
            0,
            "the restarted controller forgot the first recycle and recycled again (max-retries 1)"
        );
        let note = our_events(&client, &ns, "GivingUp")
            .await
            .into_iter()
            .find_map(|e| e.note)
            .unwrap_or_default();
        assert!(note.contains("recycled 1 times"), "{note}");
    })
    .await;
}
