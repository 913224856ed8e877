//! CircuitBreaker on the real API server of the local cluster, with the real app and a real
//! Prometheus scraping it: the full cycle closed → open → half-open → open (the probe still
//! fails) → half-open → closed (fixed), each transition in status, as Events and in the metric,
//! with two controllers driving it at once; a breaker whose status write or scale the API server
//! refuses (a ValidatingAdmissionPolicy) finishing its transition later instead of losing it; and
//! a breaker refusing a Deployment an HPA scales.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use selfheal_controller::circuit_breaker::{CircuitBreaker, CircuitBreakerStatus};

const SLOW: Duration = Duration::from_secs(180);

async fn create_breaker(client: &Client, ns: &str, name: &str, yaml: &str) {
    let cb = CircuitBreaker::new(
        name,
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("spec parses: {e}\n{yaml}")),
    );
    Api::<CircuitBreaker>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cb)
        .await
        .expect("creating the CircuitBreaker");
}

async fn status(client: &Client, ns: &str, name: &str) -> CircuitBreakerStatus {
    Api::<CircuitBreaker>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("reading the CircuitBreaker")
        .status
        .unwrap_or_default()
}

async fn replicas(client: &Client, ns: &str, name: &str) -> i32 {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("reading the Deployment")
        .spec
        .replicas
        .unwrap_or(1)
}

fn reasons(s: &CircuitBreakerStatus) -> Vec<&str> {
    s.transitions.iter().map(|t| t.reason.as_str()).collect()
}

fn transitions(ctl: &Running, from: &str, to: &str) -> u64 {
    ctl.metrics
        .circuit_transitions_total
        .with_label_values(&[from, to])
        .get()
}

/// A ValidatingAdmissionPolicy (+ binding) named `name` that makes the API server refuse the
/// requests `rules` match in namespace `ns` when `expression` is false; [`Refusal::lift`] removes
/// it. (A test that panics first leaves it bound to a namespace that is deleted: harmless.)
struct Refusal {
    client: Client,
    name: String,
}

impl Refusal {
    async fn new(
        client: &Client,
        ns: &str,
        name: &str,
        rules: serde_json::Value,
        expression: &str,
    ) -> Self {
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": rules},
                "validations": [{"expression": expression, "message": format!("refused by the test's {name}")}],
            }
        }))
        .unwrap();
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
            }
        }))
        .unwrap();
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .create(&PostParams::default(), &policy)
            .await
            .unwrap();
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
        Self {
            client: client.clone(),
            name: name.to_owned(),
        }
    }

    async fn lift(self) {
        let dp = DeleteParams::default();
        Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone())
            .delete(&self.name, &dp)
            .await
            .unwrap();
        Api::<ValidatingAdmissionPolicy>::all(self.client.clone())
            .delete(&self.name, &dp)
            .await
            .unwrap();
    }
}

/// Whether a dry-run of `attempt` is refused by the test's admission policy (the policy takes a
/// moment to reach the API server's admission chain after it is created).
async fn refused<T, F>(attempt: F) -> bool
where
    F: Future<Output = kube::Result<T>>,
{
    matches!(attempt.await, Err(kube::Error::Api(s)) if s.message.contains("refused by the test"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_probes_reopens_and_closes_on_a_real_error_ratio() {
    in_namespace("sh-cb-cycle", |client, ns| async move {
        let prom = prometheus_scraping(&ns).await;
        let url = format!("--prometheus-url={}", prom.url);
        // Two controllers drive the breaker at once (a second install, or a stale leader): every
        // status write is conditional, so the history below comes out whole and once.
        let flags = ["--restart-threshold=100000", &url, "--prometheus-interval-secs=2"];
        let ctls = [start(config(&ns, &flags)).await, start(config(&ns, &flags)).await];
        let failing = [("APP_FAULT_PROFILE", "errors"), ("APP_FAULT_ERROR_PERCENT", "100")];
        create_deployment(&client, &ns, &app_deployment("web", 2, &failing)).await;
        let _load = traffic(&client, &ns, "web", 2);
        let query = format!(
            // NB: `or vector(0)`: a pod that never failed has no 5xx series, and without it the
            // healthy probe would answer nothing instead of 0.
            "(sum(rate(http_requests_total{{namespace=\"{ns}\",route=\"/\",status=~\"5..\"}}[5s])) or vector(0)) / sum(rate(http_requests_total{{namespace=\"{ns}\",route=\"/\"}}[5s]))"
        );
        let spec = format!(
            "targetRef: {{kind: Deployment, name: web}}\nquery: '{query}'\nthreshold: 0.5\ntripAfter: 2\nopenFor: 10s\nmaxOpenFor: 1m\nprobeReplicas: 1\nprobeFor: 10s\n"
        );
        create_breaker(&client, &ns, "web", &spec).await;

        // Closed → Open: 100 % errors.
        wait_for("the circuit to open", SLOW, || async {
            status(&client, &ns, "web").await.state.as_deref() == Some("Open")
        })
        .await;
        let s = status(&client, &ns, "web").await;
        assert_eq!(s.previous_replicas, Some(2), "{s:?}");
        assert_eq!(replicas(&client, &ns, "web").await, 0, "open scales to zero");
        assert_eq!(reasons(&s), ["Tripped"]);
        assert!(s.transitions[0].message.contains("scaled from 2 to 0"), "{s:?}");

        // Open → HalfOpen → Open: the probe replica still answers errors; the open time doubles.
        wait_for("the probe to fail and the circuit to reopen", SLOW, || async {
            reasons(&status(&client, &ns, "web").await).contains(&"ProbeFailed")
        })
        .await;
        let s = status(&client, &ns, "web").await;
        assert_eq!(reasons(&s), ["Tripped", "OpenTimeElapsed", "ProbeFailed"]);
        assert_eq!((s.state.as_deref(), s.opens), (Some("Open"), 2));
        assert!(s.transitions[2].message.contains("half-open in 20s"), "{s:?}");

        // The dependency is fixed while open: the next probe answers well and the circuit closes.
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Strategic(serde_json::json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "app", "env": [{"name": "APP_FAULT_PROFILE", "value": "none"}]}
                ]}}}})),
            )
            .await
            .unwrap();
        assert_eq!(replicas(&client, &ns, "web").await, 0, "the template change scaled nothing");
        wait_for("the circuit to close", SLOW, || async {
            status(&client, &ns, "web").await.state.as_deref() == Some("Closed")
        })
        .await;
        let s = status(&client, &ns, "web").await;
        assert_eq!(
            reasons(&s),
            ["Tripped", "OpenTimeElapsed", "ProbeFailed", "OpenTimeElapsed", "ProbeSucceeded"]
        );
        assert_eq!(replicas(&client, &ns, "web").await, 2, "the remembered replicas come back");
        assert_eq!(s.previous_replicas, None);
        assert!(s.last_closed.is_some());
        for (from, to, n) in [
            ("Closed", "Open", 1),
            ("Open", "HalfOpen", 2),
            ("HalfOpen", "Open", 1),
            ("HalfOpen", "Closed", 1),
        ] {
            let counted: u64 = ctls.iter().map(|c| transitions(c, from, to)).sum();
            assert_eq!(counted, n, "{from} → {to}");
        }
        for reason in ["CircuitOpened", "CircuitHalfOpened", "CircuitClosed"] {
            let events = our_events(&client, &ns, reason).await;
            for kind in ["CircuitBreaker", "Deployment"] {
                assert!(
                    events.iter().any(|e| regarding_kind(e) == kind),
                    "no {reason} Event on the {kind}"
                );
            }
        }
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Evaluated"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transition_whose_status_write_or_scale_is_refused_is_finished_later_not_lost() {
    in_namespace("sh-cb-intent", |client, ns| async move {
        let prom = prometheus().await;
        let url = format!("--prometheus-url={}", prom.url);
        let mut d = crashing_deployment("web", 2, &[]);
        d.spec.template.spec.as_mut().unwrap().containers[0].command =
            Some(vec!["sleep".into(), "3600".into()]);
        create_deployment(&client, &ns, &d).await;
        // The query always answers 1.0: the first round trips the breaker.
        create_breaker(
            &client,
            &ns,
            "web",
            "targetRef: {kind: Deployment, name: web}\nquery: 'vector(1)'\nthreshold: 0.5\ntripAfter: 1\nopenFor: 10m\nmaxOpenFor: 10m\n",
        )
        .await;
        let breakers = Api::<CircuitBreaker>::namespaced(client.clone(), &ns);
        let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
        let dry = PatchParams {
            dry_run: true,
            ..PatchParams::default()
        };

        // 1. The API server refuses every status that says Open: the breaker must not scale.
        let no_open = Refusal::new(
            &client,
            &ns,
            &format!("{ns}-no-open"),
            serde_json::json!([{"apiGroups": ["selfheal.io"], "apiVersions": ["*"], "operations": ["UPDATE"], "resources": ["circuitbreakers/status"]}]),
            "!has(object.status) || !has(object.status.state) || object.status.state != 'Open'",
        )
        .await;
        let open = Patch::Merge(serde_json::json!({"status": {"state": "Open"}}));
        wait_for("the status refusal to take effect", Duration::from_secs(30), || async {
            refused(breakers.patch_status("web", &dry, &open)).await
        })
        .await;
        let ctl = start(config(
            &ns,
            &["--restart-threshold=100000", &url, "--prometheus-interval-secs=1"],
        ))
        .await;
        let status_failures = || {
            ctl.metrics
                .reconcile_errors_total
                .with_label_values(&["status_failed"])
                .get()
        };
        wait_for("a refused status write", Duration::from_secs(60), || async {
            status_failures() >= 1
        })
        .await;
        // Two more rounds (1 s apart) to act on whatever the first one left.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            replicas(&client, &ns, "web").await,
            2,
            "the breaker scaled although it could not record the open state and the replicas to restore"
        );
        assert_ne!(status(&client, &ns, "web").await.state.as_deref(), Some("Open"));

        // 2. Status writes pass, the scale is refused: the intent is recorded and kept.
        let no_scale = Refusal::new(
            &client,
            &ns,
            &format!("{ns}-no-scale"),
            serde_json::json!([{"apiGroups": ["apps"], "apiVersions": ["*"], "operations": ["UPDATE"], "resources": ["deployments/scale"]}]),
            "false",
        )
        .await;
        let zero = Patch::Merge(serde_json::json!({"spec": {"replicas": 0}}));
        wait_for("the scale refusal to take effect", Duration::from_secs(30), || async {
            refused(deployments.patch_scale("web", &dry, &zero)).await
        })
        .await;
        no_open.lift().await;
        wait_for("Open with a pending scale to 0, the scale refused", Duration::from_secs(60), || async {
            let s = status(&client, &ns, "web").await;
            s.state.as_deref() == Some("Open")
                && s.pending_scale == Some(0)
                && s.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "ScaleFailed")
        })
        .await;
        assert_eq!(replicas(&client, &ns, "web").await, 2);
        assert_eq!(status(&client, &ns, "web").await.previous_replicas, Some(2));
        assert!(ctl.metrics.circuit_scale_failures_total.get() >= 1);

        // 3. The scale passes again: the next round finishes the recorded scale, and the target
        //    at 2 replicas is not mistaken for a manual override.
        no_scale.lift().await;
        wait_for("the recorded scale to be finished", Duration::from_secs(60), || async {
            let s = status(&client, &ns, "web").await;
            s.pending_scale.is_none() && s.state.as_deref() == Some("Open")
        })
        .await;
        let s = status(&client, &ns, "web").await;
        assert_eq!(replicas(&client, &ns, "web").await, 0);
        assert_eq!(reasons(&s), ["Tripped"], "{s:?}");
        assert_eq!(s.previous_replicas, Some(2));
        assert_eq!(transitions(&ctl, "Closed", "Open"), 1);
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.reason, "Evaluated", "{s:?}");
        let events = our_events(&client, &ns, "CircuitOpened").await;
        assert!(events.iter().any(|e| regarding_kind(e) == "Deployment"), "no CircuitOpened Event on the Deployment");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_refuses_a_deployment_an_hpa_scales() {
    in_namespace("sh-cb-hpa", |client, ns| async move {
        let prom = prometheus().await;
        let url = format!("--prometheus-url={}", prom.url);
        let ctl = start(config(
            &ns,
            &["--restart-threshold=100000", &url, "--prometheus-interval-secs=1"],
        ))
        .await;
        let mut d = crashing_deployment("web", 2, &[]);
        d.spec.template.spec.as_mut().unwrap().containers[0].command =
            Some(vec!["sleep".into(), "3600".into()]);
        create_deployment(&client, &ns, &d).await;
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2, "maxReplicas": 4,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
            }
        }))
        .unwrap();
        Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &hpa)
            .await
            .unwrap();
        // The query always answers 1.0: without the HPA this breaker would open at once.
        create_breaker(
            &client,
            &ns,
            "web",
            "targetRef: {kind: Deployment, name: web}\nquery: 'vector(1)'\nthreshold: 0.5\ntripAfter: 1\nopenFor: 10s\n",
        )
        .await;
        wait_for("Ready=False TargetAutoscaled", Duration::from_secs(60), || async {
            status(&client, &ns, "web").await.conditions.iter().any(|c| {
                c.type_ == "Ready" && c.status == "False" && c.reason == "TargetAutoscaled"
            })
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let s = status(&client, &ns, "web").await;
        assert_eq!(s.state.as_deref(), Some("Closed"), "{s:?}");
        assert!(s.transitions.is_empty(), "{s:?}");
        assert_eq!(replicas(&client, &ns, "web").await, 2);
        assert_eq!(transitions(&ctl, "Closed", "Open"), 0);
    })
    .await;
}

#[tokio::test]
async fn the_example_applies_and_the_api_server_refuses_bad_specs() {
    in_namespace("sh-cb-cel", |client, ns| async move {
        let api = Api::<CircuitBreaker>::namespaced(client.clone(), &ns);
        let path = format!(
            "{}/examples/circuit-breakers/web.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let example: CircuitBreaker = serde_saphyr::from_str(&text).unwrap();
        api.create(&PostParams::default(), &example)
            .await
            .unwrap_or_else(|e| panic!("{path} refused: {e}"));
        for (patch, message) in [
            ("openFor: 5s", "openFor must be at least 10s"),
            ("openFor: 2m\nmaxOpenFor: 1m", "maxOpenFor must not be shorter than openFor"),
            ("probeFor: 1s", "probeFor must be at least 10s"),
        ] {
            let yaml = format!(
                "targetRef: {{kind: Deployment, name: web}}\nquery: 'vector(0)'\nthreshold: 0.5\n{patch}\n"
            );
            let cb = CircuitBreaker::new("bad", serde_saphyr::from_str(&yaml).unwrap());
            let err = api
                .create(&PostParams::default(), &cb)
                .await
                .expect_err("a bad spec must be refused");
            assert!(err.to_string().contains(message), "{patch}: {err}");
        }
        let bad_kind = CircuitBreaker::new(
            "bad",
            serde_saphyr::from_str("targetRef: {kind: StatefulSet, name: db}\nquery: q\nthreshold: 0.5\n").unwrap(),
        );
        let err = api.create(&PostParams::default(), &bad_kind).await.expect_err("refused");
        assert!(err.to_string().contains("targetRef.kind must be Deployment"), "{err}");
    })
    .await;
}
