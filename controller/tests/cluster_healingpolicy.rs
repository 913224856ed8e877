//! HealingPolicy on the real API server of the local cluster (`make cluster-up`, or any cluster in
//! `KUBECONFIG`): the generated CRD installs, its CEL rules refuse every example under
//! `examples/healing-policies/rejected/` with the rule's message and accept the fixed version,
//! the good examples apply and get a status, and an in-process controller acts — or, in dry-run,
//! deliberately does not — under a policy, then stops when the policy is deleted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, ExecAction, Probe, ResourceRequirements};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{Api, Client, ResourceExt};
use selfheal_controller::healing_policy::{HealingPolicy, HealingPolicyStatus};

const SLOW: Duration = Duration::from_secs(180);

fn examples(dir: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/healing-policies")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    files
}

fn comment(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
        .unwrap_or_else(|| panic!("example lacks a `# {key}:` line"))
        .to_owned()
}

fn dynamic_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<HealingPolicy>(&()),
    )
}

async fn create_dry_run(
    api: &Api<DynamicObject>,
    doc: &serde_json::Value,
) -> kube::Result<DynamicObject> {
    let obj: DynamicObject = serde_json::from_value(doc.clone()).expect("a Kubernetes object");
    api.create(
        &PostParams {
            dry_run: true,
            ..PostParams::default()
        },
        &obj,
    )
    .await
}

fn refusal_message(err: &kube::Error) -> Option<(u16, String)> {
    match err {
        kube::Error::Api(s) => Some((s.code, s.message.clone())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_crd_is_established_with_the_committed_schema() {
    in_namespace("sh-hp-crd", |client, _ns| async move {
        let crd = Api::<CustomResourceDefinition>::all(client.clone())
            .get("healingpolicies.selfheal.io")
            .await
            .expect("CRD installed");
        let committed = committed_crd();
        assert_eq!(crd.spec.names.short_names, committed.spec.names.short_names);
        assert_eq!(
            crd.spec.versions[0].schema, committed.spec.versions[0].schema,
            "the installed schema is the committed one"
        );
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cel_rule_refuses_its_bad_example_with_its_message_and_accepts_the_fix() {
    in_namespace("sh-hp-cel", |client, ns| async move {
        let api = dynamic_api(&client, &ns);
        let mut wrong = Vec::new();
        for path in examples("rejected") {
            let text = std::fs::read_to_string(&path).expect("example readable");
            let expect = comment(&text, "expect");
            let fix: serde_json::Value =
                serde_saphyr::from_str(&comment(&text, "fixed-by")).expect("fixed-by parses");
            let mut doc: serde_json::Value = serde_saphyr::from_str(&text).expect("example parses");
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            match create_dry_run(&api, &doc).await {
                Ok(_) => wrong.push(format!("{name}: ACCEPTED, expected refusal {expect:?}")),
                Err(e) => match refusal_message(&e) {
                    Some((422, msg)) if msg.contains(&expect) => {}
                    other => wrong.push(format!(
                        "{name}: refused with {other:?}, expected 422 containing {expect:?}"
                    )),
                },
            }
            for (k, v) in fix.as_object().expect("fixed-by is a mapping") {
                doc["spec"][k] = v.clone();
            }
            if let Err(e) = create_dry_run(&api, &doc).await {
                wrong.push(format!("{name}: the fixed version was refused: {e}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "CEL validation mismatch:\n{}",
            wrong.join("\n")
        );
    })
    .await;
}

/// `kubectl get healingpolicies` as the API server renders it (server-side printing).
async fn table(client: &Client, ns: &str) -> serde_json::Value {
    let req = http::Request::get(format!(
        "/apis/selfheal.io/v1alpha1/namespaces/{ns}/healingpolicies"
    ))
    .header(
        http::header::ACCEPT,
        "application/json;as=Table;v=v1;g=meta.k8s.io",
    )
    .body(Vec::new())
    .expect("request");
    let text = client.request_text(req).await.expect("table");
    serde_json::from_str(&text).expect("table json")
}

fn cell(table: &serde_json::Value, row_name: &str, column: &str) -> serde_json::Value {
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    let i = cols
        .iter()
        .position(|c| *c == column)
        .unwrap_or_else(|| panic!("no column {column} in {cols:?}"));
    table["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["cells"][0] == row_name)
        .map(|r| r["cells"][i].clone())
        .unwrap_or(serde_json::Value::Null)
}

fn condition(s: &HealingPolicyStatus, type_: &str) -> (String, String) {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_examples_apply_get_a_status_and_show_the_printer_columns() {
    in_namespace("sh-hp-examples", |client, ns| async move {
        let _ctl = start(config(&ns, &[])).await;
        let api = dynamic_api(&client, &ns);
        let mut names = Vec::new();
        for path in examples("") {
            let doc: serde_json::Value =
                serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let obj: DynamicObject = serde_json::from_value(doc).unwrap();
            names.push(obj.name_any());
            api.create(&PostParams::default(), &obj)
                .await
                .unwrap_or_else(|e| panic!("{} refused: {e}", path.display()));
        }
        for name in &names {
            wait_for(
                &format!("status of {name}"),
                Duration::from_secs(60),
                || async {
                    get_policy(&client, &ns, name)
                        .await
                        .status
                        .is_some_and(|s| condition(&s, "Ready").0 == "True" && s.selector.is_some())
                },
            )
            .await;
        }
        let typed_only = get_policy(&client, &ns, "shop-multi-signal")
            .await
            .status
            .unwrap();
        assert_eq!(
            condition(&typed_only, "Degraded"),
            ("True".into(), "TriggerNotEvaluated".into())
        );
        let web = get_policy(&client, &ns, "web-crashloop").await;
        let status = web.status.clone().unwrap();
        assert_eq!(
            condition(&status, "Degraded"),
            ("False".into(), "AsExpected".into())
        );
        assert_eq!(status.observed_generation, web.metadata.generation);

        let t = table(&client, &ns).await;
        let cols: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            cols,
            [
                "Name",
                "Selector",
                "Action",
                "Dry-Run",
                "Matched",
                "Last-Action",
                "Age"
            ]
        );
        assert_eq!(cell(&t, "web-crashloop", "Selector"), "app=web");
        assert_eq!(cell(&t, "api-oom", "Selector"), "tier in (api)");
        assert_eq!(cell(&t, "worker-bad-image", "Action"), "scaleTo");
        assert_eq!(cell(&t, "shop-multi-signal", "Dry-Run"), true);
        assert_eq!(cell(&t, "web-crashloop", "Matched"), 0);

        // The short name and category resolve through discovery, as `kubectl get hp` does.
        let crd = Api::<CustomResourceDefinition>::all(client.clone())
            .get("healingpolicies.selfheal.io")
            .await
            .unwrap();
        assert_eq!(crd.spec.names.short_names, Some(vec!["hp".to_owned()]));
        // Status is ours only: written by server-side apply under our field manager.
        let managers: Vec<(String, Option<String>)> = web
            .managed_fields()
            .iter()
            .map(|m| (m.manager.clone().unwrap_or_default(), m.subresource.clone()))
            .collect();
        assert!(
            managers.contains(&("selfheal-controller".into(), Some("status".into()))),
            "status not applied by field manager selfheal-controller: {managers:?}"
        );
    })
    .await;
}

/// Config whose default policy never fires, so only the HealingPolicy can act.
fn policy_only_config(ns: &str, extra: &[&str]) -> selfheal_controller::config::Config {
    let mut flags = vec!["--restart-threshold=100000"];
    flags.extend_from_slice(extra);
    config(ns, &flags)
}

const EVICT_WEB: &str = "selector: {matchLabels: {app: web}}\n\
triggers: {crashLoopBackOff: true, restartCount: {over: 1}}\n\
action: {type: evict}\ncooldown: 10s\nmaxRetries: 10\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_status_reports_the_eviction_the_controller_made() {
    in_namespace("sh-hp-evict", |client, ns| async move {
        let ctl = start(policy_only_config(&ns, &[])).await;
        create_policy(&client, &ns, "web", EVICT_WEB).await;
        create_deployment(&client, &ns, &crashing_deployment("web", 1, &[])).await;
        wait_for("the first pod", SLOW, || async {
            !live_pods(&client, &ns, "web").await.is_empty()
        })
        .await;
        let first = live_pods(&client, &ns, "web").await[0].name_any();

        wait_for(
            "the policy's status to report an eviction",
            SLOW,
            || async {
                get_policy(&client, &ns, "web")
                    .await
                    .status
                    .and_then(|s| s.last_action)
                    .is_some()
            },
        )
        .await;
        let hp = get_policy(&client, &ns, "web").await;
        let status = hp.status.clone().unwrap();
        let last = status.last_action.clone().unwrap();
        assert_eq!(last.action, "evict");
        assert_eq!(last.pod, first);
        assert!(!last.dry_run);
        assert!(last.workload.starts_with("Deployment/"), "{last:?}");
        assert!(status.actions_in_window >= 1);
        assert_eq!(status.observed_generation, hp.metadata.generation);
        assert_eq!(status.selector.as_deref(), Some("app=web"));
        assert_eq!(condition(&status, "Ready").0, "True");
        assert!(healing_actions(&ctl.metrics, "evict", "done") >= 1);
        assert!(recycles(&ctl.metrics, &ns) >= 1);
        // The status write and the Event race each other: wait for the Event too.
        let names_policy = format!("HealingPolicy {ns}/web");
        wait_for(
            "a Recycled Event that names the policy",
            Duration::from_secs(30),
            || async {
                our_events(&client, &ns, "Recycled")
                    .await
                    .iter()
                    .any(|e| e.note.as_deref().is_some_and(|n| n.contains(&names_policy)))
            },
        )
        .await;
        wait_for("matchedPods to count the replacement", SLOW, || async {
            get_policy(&client, &ns, "web")
                .await
                .status
                .is_some_and(|s| s.matched_pods == 1)
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_policy_acts_on_nothing() {
    in_namespace("sh-hp-dry", |client, ns| async move {
        let ctl = start(policy_only_config(&ns, &[])).await;
        create_policy(&client, &ns, "web", &format!("{EVICT_WEB}dryRun: true\n")).await;
        create_deployment(&client, &ns, &crashing_deployment("web", 1, &[])).await;
        wait_for("the first pod", SLOW, || async {
            !live_pods(&client, &ns, "web").await.is_empty()
        })
        .await;
        let uid = live_pods(&client, &ns, "web").await[0].uid().unwrap();
        wait_for("a dry-run Recycled event", SLOW, || async {
            our_events(&client, &ns, "Recycled")
                .await
                .iter()
                .any(|e| e.action.as_deref() == Some("DryRun"))
        })
        .await;
        // Let the pod keep crashing well past the trigger and the 10 s cooldown: still untouched.
        wait_for("the pod to restart 3 times", SLOW, || async {
            live_pods(&client, &ns, "web")
                .await
                .iter()
                .any(|p| restarts(p) >= 3)
        })
        .await;
        let pods = live_pods(&client, &ns, "web").await;
        assert_eq!(pods.len(), 1);
        assert_eq!(
            pods[0].uid().unwrap(),
            uid,
            "a dry-run policy replaced the pod"
        );
        assert_eq!(recycles(&ctl.metrics, &ns), 0);
        assert_eq!(healing_actions(&ctl.metrics, "evict", "done"), 0);
        assert!(healing_actions(&ctl.metrics, "evict", "dry_run") >= 1);
        let status = get_policy(&client, &ns, "web").await.status.unwrap();
        let last = status.last_action.unwrap();
        assert!(
            last.dry_run && last.summary.starts_with("dry-run: "),
            "{last:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_policy_stops_its_actions() {
    in_namespace("sh-hp-delete", |client, ns| async move {
        let ctl = start(policy_only_config(&ns, &[])).await;
        create_policy(&client, &ns, "web", EVICT_WEB).await;
        create_deployment(&client, &ns, &crashing_deployment("web", 1, &[])).await;
        wait_for("the first eviction", SLOW, || async {
            recycles(&ctl.metrics, &ns) >= 1
        })
        .await;
        Api::<HealingPolicy>::namespaced(client.clone(), &ns)
            .delete("web", &DeleteParams::default())
            .await
            .expect("deleting the policy");
        wait_for("the policy to be gone", Duration::from_secs(30), || async {
            Api::<HealingPolicy>::namespaced(client.clone(), &ns)
                .get_opt("web")
                .await
                .unwrap()
                .is_none()
        })
        .await;
        let after_delete = recycles(&ctl.metrics, &ns);
        // The replacement crash-loops past everything the policy asked for (restarts > 1,
        // CrashLoopBackOff, 10 s cooldown) — and nothing acts on it any more.
        wait_for("a live pod restarted 3 times", SLOW, || async {
            live_pods(&client, &ns, "web")
                .await
                .iter()
                .any(|p| restarts(p) >= 3)
        })
        .await;
        assert_eq!(
            recycles(&ctl.metrics, &ns),
            after_delete,
            "evicted after the policy was deleted"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_restart_policy_restarts_the_deployment() {
    in_namespace("sh-hp-restart", |client, ns| async move {
        let ctl = start(policy_only_config(&ns, &[])).await;
        create_policy(
            &client,
            &ns,
            "web",
            "selector: {matchLabels: {app: web}}\ntriggers: {crashLoopBackOff: true}\naction: {type: rolloutRestart}\ncooldown: 10m\n",
        )
        .await;
        create_deployment(&client, &ns, &crashing_deployment("web", 1, &[])).await;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        wait_for("the pod template to carry selfheal.io/restarted-at", SLOW, || async {
            deployments
                .get("web")
                .await
                .unwrap()
                .spec
                .template
                .metadata
                .and_then(|m| m.annotations)
                .is_some_and(|a| a.contains_key("selfheal.io/restarted-at"))
        })
        .await;
        // The Event follows the patch: wait for it rather than race it.
        wait_for("a RolloutRestarted Event on the Deployment", Duration::from_secs(30), || async {
            our_events(&client, &ns, "RolloutRestarted").await.iter().any(|e| regarding_kind(e) == "Deployment")
        })
        .await;
        assert!(healing_actions(&ctl.metrics, "rollout_restart", "done") >= 1);
        wait_for("lastAction rolloutRestart", Duration::from_secs(30), || async {
            get_policy(&client, &ns, "web").await.status.and_then(|s| s.last_action).is_some_and(|l| l.action == "rolloutRestart")
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_to_policy_scales_the_deployment() {
    in_namespace("sh-hp-scale", |client, ns| async move {
        let ctl = start(policy_only_config(&ns, &[])).await;
        create_policy(
            &client,
            &ns,
            "web",
            "selector: {matchLabels: {app: web}}\ntriggers: {crashLoopBackOff: true}\naction: {type: scaleTo, replicas: 0, allowScaleToZero: true}\ncooldown: 10m\n",
        )
        .await;
        create_deployment(&client, &ns, &crashing_deployment("web", 1, &[])).await;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        wait_for("the Deployment scaled to 0", SLOW, || async {
            deployments.get("web").await.unwrap().spec.replicas == Some(0)
        })
        .await;
        // The Event is written after the scale call returns: wait for it, then the counter
        // (incremented before the Event) is settled too.
        wait_for("a Scaled Event on the Deployment", Duration::from_secs(30), || async {
            our_events(&client, &ns, "Scaled").await.iter().any(|e| regarding_kind(e) == "Deployment")
        })
        .await;
        assert_eq!(healing_actions(&ctl.metrics, "scale_to", "done"), 1);
    })
    .await;
}

/// `scaleTo` never fights an HPA: the Deployment an autoscaler owns is left at its size, with a
/// `NotRecycled` Event that names the HPA, and the action counted as refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_to_policy_refuses_a_deployment_an_hpa_scales() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    in_namespace("sh-hp-hpa", |client, ns| async move {
        let ctl = start(policy_only_config(&ns, &[])).await;
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 3,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 70}}}]
            }
        }))
        .unwrap();
        Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &hpa)
            .await
            .expect("creating the HPA");
        create_policy(
            &client,
            &ns,
            "web",
            "selector: {matchLabels: {app: web}}\ntriggers: {crashLoopBackOff: true}\naction: {type: scaleTo, replicas: 2}\ncooldown: 10m\n",
        )
        .await;
        create_deployment(&client, &ns, &crashing_deployment("web", 1, &[])).await;
        wait_for("a NotRecycled Event naming the HPA", SLOW, || async {
            our_events(&client, &ns, "NotRecycled").await.iter().any(|e| {
                e.note.as_deref().unwrap_or_default().contains("HorizontalPodAutoscaler web scales")
            })
        })
        .await;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        assert_eq!(deployments.get("web").await.unwrap().spec.replicas, Some(1));
        assert!(healing_actions(&ctl.metrics, "scale_to", "refused") >= 1);
        assert_eq!(healing_actions(&ctl.metrics, "scale_to", "done"), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_policy_acts_on_a_pod_that_never_turns_ready_while_others_get_the_default() {
    in_namespace("sh-hp-notready", |client, ns| async move {
        // Default policy: the flags (threshold 1) — it recycles the crashing `web`.
        let ctl = start(config(&ns, &[])).await;
        create_policy(
            &client,
            &ns,
            "stuck",
            "selector: {matchLabels: {app: stuck}}\ntriggers: {notReadyFor: 10s}\naction: {type: none}\ncooldown: 10m\n",
        )
        .await;
        // `stuck` runs fine but its readiness probe always fails: no restarts, no pod changes
        // after it is first marked unready — only the timed re-check can catch it.
        let mut stuck = crashing_deployment("stuck", 1, &[]);
        let spec = stuck.spec.template.spec.as_mut().unwrap();
        let c: &mut Container = &mut spec.containers[0];
        c.command = Some(vec!["sh".into(), "-c".into(), "sleep 3600".into()]);
        c.readiness_probe = Some(Probe {
            exec: Some(ExecAction { command: Some(vec!["false".into()]) }),
            period_seconds: Some(2),
            ..Probe::default()
        });
        create_deployment(&client, &ns, &stuck).await;
        create_deployment(&client, &ns, &crashing_deployment("web", 1, &[])).await;

        wait_for("an Observed event for the unready pod", SLOW, || async {
            our_events(&client, &ns, "Observed").await.iter().any(|e| e.note.as_deref().is_some_and(|n| n.contains("not_ready")))
        })
        .await;
        wait_for("the default policy to recycle web", SLOW, || async { recycles(&ctl.metrics, &ns) >= 1 }).await;
        assert!(healing_actions(&ctl.metrics, "none", "observed") >= 1);
        let stuck_pods = live_pods(&client, &ns, "stuck").await;
        assert_eq!(stuck_pods.len(), 1, "action none must not replace the pod");
        let status = get_policy(&client, &ns, "stuck").await.status.unwrap();
        assert_eq!(status.matched_pods, 1, "the policy governs stuck only: {status:?}");
        let last = status.last_action.unwrap();
        assert_eq!((last.action.as_str(), last.reason.as_str(), last.dry_run), ("none", "not_ready", true));
    })
    .await;
}

/// `web` running the app with its `leak` profile: +1 MiB/s up to 172 MiB leaked, under a
/// 192 MiB limit. The working set passes 85 % of the limit about 150 s in, still climbing, and
/// levels off below the limit at the cap, so the OOM kill never comes: only the trend can act.
fn leaking_deployment() -> Deployment {
    let mut d = crashing_deployment("web", 1, &[]);
    let spec = d.spec.template.spec.as_mut().unwrap();
    let c: &mut Container = &mut spec.containers[0];
    c.name = "app".into();
    c.image = Some(APP_IMAGE.into());
    c.command = None;
    let env = |k: &str, v: &str| EnvVar {
        name: k.into(),
        value: Some(v.into()),
        ..EnvVar::default()
    };
    c.env = Some(vec![
        env("APP_FAULT_PROFILE", "leak"),
        env("APP_FAULT_LEAK_MIB_PER_SEC", "1"),
        env("APP_FAULT_LEAK_CAP_MIB", "172"),
    ]);
    c.resources = Some(ResourceRequirements {
        limits: Some([("memory".to_owned(), Quantity("192Mi".into()))].into()),
        ..ResourceRequirements::default()
    });
    spec.termination_grace_period_seconds = Some(2);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_trend_policy_recycles_a_leaking_pod_before_the_oom_kill() {
    in_namespace("sh-hp-leak", |client, ns| async move {
        let ctl = start(policy_only_config(&ns, &["--memory-sample-secs=5"])).await;
        // Six samples (metrics-server refreshes every 15 s here) over a 3 m window.
        create_policy(
            &client,
            &ns,
            "web",
            "selector: {matchLabels: {app: web}}\ntriggers: {memoryTrend: {window: 3m, minSamples: 6}}\naction: {type: evict}\ncooldown: 10m\n",
        )
        .await;
        create_deployment(&client, &ns, &leaking_deployment()).await;
        wait_for("the first pod", SLOW, || async {
            !live_pods(&client, &ns, "web").await.is_empty()
        })
        .await;
        let first = live_pods(&client, &ns, "web").await[0].clone();
        wait_for(
            "a Recycled Event for the leak",
            Duration::from_secs(360),
            || async {
                our_events(&client, &ns, "Recycled").await.iter().any(|e| {
                    regarding_kind(e) == "Pod"
                        && e.note.as_deref().is_some_and(|n| n.contains("memory_leak"))
                })
            },
        )
        .await;
        let events = our_events(&client, &ns, "Recycled").await;
        let note = events
            .iter()
            .find_map(|e| e.note.clone().filter(|n| n.contains("memory_leak")))
            .unwrap();
        // What was measured and when the limit was due, for the human reading the Event.
        assert!(note.contains("container app at"), "{note}");
        assert!(note.contains("of 192 MiB"), "{note}");
        assert!(note.contains("steps rising"), "{note}");
        assert!(note.contains("limit in about") || note.contains("limit not reached"), "{note}");
        // Recycled before the kernel killed it: the pod had not restarted.
        assert!(note.contains(", 0 restarts)"), "{note}");
        assert!(
            ctl.metrics
                .recycles_total
                .with_label_values(&[&ns, "memory_leak"])
                .get()
                >= 1
        );
        assert!(
            ctl.metrics
                .memory_metrics_reads_total
                .with_label_values(&["ok"])
                .get()
                >= 6
        );
        wait_for("the leaking pod to be replaced", SLOW, || async {
            live_pods(&client, &ns, "web")
                .await
                .iter()
                .all(|p| p.uid() != first.uid())
        })
        .await;
        wait_for("lastAction memory_leak", Duration::from_secs(30), || async {
            get_policy(&client, &ns, "web")
                .await
                .status
                .and_then(|s| s.last_action)
                .is_some_and(|l| l.reason == "memory_leak" && l.pod == first.name_any())
        })
        .await;
    })
    .await;
}

/// `name` running `sleep 3600`: healthy, never restarting.
fn sleeping_deployment(name: &str) -> Deployment {
    let mut d = crashing_deployment(name, 1, &[]);
    let spec = d.spec.template.spec.as_mut().unwrap();
    spec.containers[0].command = Some(vec!["sleep".into(), "3600".into()]);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rate_policy_acts_on_the_answer_of_a_real_prometheus() {
    let prom = prometheus().await;
    in_namespace("sh-hp-errors", |client, ns| async move {
        let url = format!("--prometheus-url={}", prom.url);
        let ctl = start(policy_only_config(&ns, &[&url, "--prometheus-interval-secs=2"])).await;
        // Observe only: the point is the trigger, not the action.
        create_policy(
            &client,
            &ns,
            "bad",
            "selector: {matchLabels: {app: bad}}\ntriggers: {errorRate: {query: 'vector(0.5)', threshold: 0.1}}\naction: {type: none}\ncooldown: 10m\n",
        )
        .await;
        create_policy(
            &client,
            &ns,
            "good",
            "selector: {matchLabels: {app: good}}\ntriggers: {errorRate: {query: 'vector(0.01)', threshold: 0.1}}\naction: {type: none}\ncooldown: 10m\n",
        )
        .await;
        create_deployment(&client, &ns, &sleeping_deployment("bad")).await;
        create_deployment(&client, &ns, &sleeping_deployment("good")).await;
        wait_for("an Observed Event for the error rate", SLOW, || async {
            our_events(&client, &ns, "Observed").await.iter().any(|e| {
                e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("error_rate: the policy's query answered 0.500, over 0.1"))
            })
        })
        .await;
        // Several more answers for `good` (every 2 s): 0.01 is under its threshold.
        let asked = ctl.metrics.prometheus_queries_total.with_label_values(&["error_rate", "ok"]).get();
        wait_for("four more queries", Duration::from_secs(30), || async {
            ctl.metrics.prometheus_queries_total.with_label_values(&["error_rate", "ok"]).get() >= asked + 4
        })
        .await;
        // Make the controller look at `good` again now that it has answers (any pod change does).
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
        let good_pod = live_pods(&client, &ns, "good").await[0].name_any();
        pods.patch(
            &good_pod,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {"poked": "yes"}}})),
        )
        .await
        .unwrap();
        let asked = ctl.metrics.prometheus_queries_total.with_label_values(&["error_rate", "ok"]).get();
        wait_for("two more queries", Duration::from_secs(30), || async {
            ctl.metrics.prometheus_queries_total.with_label_values(&["error_rate", "ok"]).get() >= asked + 2
        })
        .await;
        let good = get_policy(&client, &ns, "good").await.status.unwrap_or_default();
        assert!(good.last_action.is_none(), "acted under an error rate of 0.01: {good:?}");
        assert_eq!(ctl.metrics.prometheus_queries_total.with_label_values(&["error_rate", "error"]).get(), 0);
        wait_for("bad's lastAction error_rate", Duration::from_secs(30), || async {
            get_policy(&client, &ns, "bad")
                .await
                .status
                .is_some_and(|s| {
                    s.last_action.as_ref().is_some_and(|l| l.reason == "error_rate")
                        && condition(&s, "Degraded").0 == "False"
                })
        })
        .await;
    })
    .await;
}

/// poolExhaustion with the real app and a real Prometheus scraping it. `stuck` holds its whole
/// pool (profile `pool-exhaust`, so its readiness fails): both signals, evicted. `busy` has a
/// pool of one connection that slow requests keep full (profile `latency`, four workers of
/// traffic) but answers readiness: one signal only, left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_policy_recycles_a_stuck_pod_and_spares_a_busy_one() {
    in_namespace("sh-hp-pool", |client, ns| async move {
        let prom = prometheus_scraping(&ns).await;
        let url = format!("--prometheus-url={}", prom.url);
        let ctl = start(policy_only_config(&ns, &[&url, "--prometheus-interval-secs=2"])).await;
        for app in ["stuck", "busy"] {
            let yaml = format!(
                "selector: {{matchLabels: {{app: {app}}}}}\ntriggers: {{poolExhaustion: {{saturatedFor: 10s}}}}\naction: {{type: evict}}\ncooldown: 10m\n"
            );
            create_policy(&client, &ns, app, &yaml).await;
        }
        let stuck = app_deployment("stuck", 1, &[("APP_FAULT_PROFILE", "pool-exhaust")]);
        let busy = app_deployment(
            "busy",
            1,
            &[
                ("APP_FAULT_PROFILE", "latency"),
                ("APP_FAULT_LATENCY_MS", "3000"),
                ("APP_POOL_SIZE", "1"),
                ("APP_POOL_WAIT_MS", "0"),
            ],
        );
        create_deployment(&client, &ns, &stuck).await;
        create_deployment(&client, &ns, &busy).await;
        wait_for("both pods", SLOW, || async {
            live_pods(&client, &ns, "stuck").await.len() == 1
                && live_pods(&client, &ns, "busy").await.len() == 1
        })
        .await;
        let first_stuck = live_pods(&client, &ns, "stuck").await[0].name_any();
        let first_busy = live_pods(&client, &ns, "busy").await[0].name_any();
        let _load = traffic(&client, &ns, "busy", 4);

        wait_for("a Recycled Event for the stuck pool", SLOW, || async {
            our_events(&client, &ns, "Recycled").await.iter().any(|e| {
                regarding_kind(e) == "Pod"
                    && e.note.as_deref().is_some_and(|n| n.contains("pool_exhausted"))
            })
        })
        .await;
        let events = our_events(&client, &ns, "Recycled").await;
        let event = events
            .iter()
            .find(|e| e.note.as_deref().is_some_and(|n| n.contains("pool_exhausted")))
            .unwrap();
        let note = event.note.clone().unwrap();
        assert_eq!(
            event.regarding.as_ref().and_then(|r| r.name.as_deref()),
            Some(first_stuck.as_str()),
            "{note}"
        );
        assert!(note.contains("pool 100 % in use for"), "{note}");
        assert!(note.contains("readiness failing"), "{note}");
        assert!(healing_actions(&ctl.metrics, "evict", "done") >= 1);
        let last = get_policy(&client, &ns, "stuck").await.status.unwrap().last_action.unwrap();
        assert_eq!((last.reason.as_str(), last.pod.as_str()), ("pool_exhausted", first_stuck.as_str()));

        // busy has been saturated all along, for longer than saturatedFor: one signal, no action.
        let full = format!(
            "min_over_time((selfheal_app_pool_connections_in_use{{namespace=\"{ns}\",pod=\"{first_busy}\"}} / selfheal_app_pool_connections_max{{namespace=\"{ns}\",pod=\"{first_busy}\"}})[20s:1s])"
        );
        wait_for("busy's pool to read full for 20 s", SLOW, || async {
            query(&prom.url, &full).await.is_some_and(|v| v.iter().any(|x| *x >= 1.0))
        })
        .await;
        let asked = ctl.metrics.prometheus_queries_total.with_label_values(&["pool_saturation", "ok"]).get();
        wait_for("three more saturation queries", Duration::from_secs(30), || async {
            ctl.metrics.prometheus_queries_total.with_label_values(&["pool_saturation", "ok"]).get() >= asked + 6
        })
        .await;
        assert!(
            query(&prom.url, &full).await.is_some_and(|v| v.iter().any(|x| *x >= 1.0)),
            "busy's pool must still be full, or sparing it proves nothing"
        );
        let busy_pods = live_pods(&client, &ns, "busy").await;
        assert_eq!(busy_pods.len(), 1);
        assert_eq!(busy_pods[0].name_any(), first_busy, "the busy pod was replaced");
        let busy_status = get_policy(&client, &ns, "busy").await.status.unwrap_or_default();
        assert!(busy_status.last_action.is_none(), "acted on a busy, ready pod: {busy_status:?}");
        assert_eq!(ctl.metrics.prometheus_queries_total.with_label_values(&["pool_saturation", "error"]).get(), 0);
    })
    .await;
}
