//! The ops scenarios (layers 8–11: leak, pool, breaker, zombie) as pure plans: the workload each
//! one breaks, the policy it installs, and the fastest heal its settings allow. The runner
//! (`runner/ops.rs`) does the Kubernetes I/O.
//!
//! Each scenario gets a Deployment of its own, copied from the release's pod template (same
//! image, probes and security context) under new labels, so its faults never touch the Service
//! the background load measures, and its policy selects only its own pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::report::Theory;

/// Label every scenario object carries, valued with the scenario's name: teardown and the
/// policies select by it.
pub const SCENARIO_LABEL: &str = "selfheal.io/demo-scenario";

/// Leaked MiB per second (the app's `mode=leak` accepts whole numbers only).
pub const LEAK_MIB_PER_SEC: u32 = 1;
/// Samples the demo's memoryTrend policy asks for (the CRD's default is 12; 6 keeps the demo
/// under three minutes at a 15 s metrics resolution and still shows a trend, not a spike).
pub const LEAK_MIN_SAMPLES: u32 = 6;
/// The policy's `limitPercent`: 75, not the CRD's 85, because the demo's samples are 15 s apart
/// (60 s on minikube) and the container keeps leaking through its graceful stop; measured with
/// 85 %: recycled at 149 of 160 MiB, 10 s from the OOM kill.
pub const LEAK_LIMIT_PERCENT: f64 = 75.0;
/// Working set of an idle app container, MiB (measured: 6–9 MiB; rounded up).
pub const APP_BASELINE_MIB: u32 = 12;

/// Name of a scenario's Deployment (and Service, policy, breaker): `<release>-<scenario>`.
pub fn object_name(release: &str, scenario: &str) -> String {
    format!("{release}-{scenario}")
}

/// The scenario's labels: its own name, so neither the release's Service nor its PDB or HPA
/// select these pods.
pub fn labels(release: &str, scenario: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            object_name(release, scenario),
        ),
        (SCENARIO_LABEL.to_owned(), scenario.to_owned()),
    ])
}

/// `k=v,k=v` of [`labels`], for list and watch calls.
pub fn selector(release: &str, scenario: &str) -> String {
    labels(release, scenario)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What a scenario changes in the copied pod template.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tweaks {
    /// Replicas of the scenario Deployment.
    pub replicas: i32,
    /// Memory limit of the app container, MiB (`None`: the release's).
    pub memory_limit_mib: Option<u32>,
    /// Environment set on the app container (replacing a variable of the same name).
    pub env: Vec<(String, String)>,
}

/// A Deployment for `scenario`, from the release's Deployment: its pod template under the
/// scenario's labels (template annotations dropped: a rollout trigger of the release means
/// nothing here), with `tweaks` applied. `None` when the release has no pod spec.
pub fn deployment(
    release_deployment: &Deployment,
    release: &str,
    scenario: &str,
    tweaks: &Tweaks,
) -> Option<Deployment> {
    let mut template: PodTemplateSpec = release_deployment.spec.template.clone();
    let mut spec = template.spec.take()?;
    let labels = labels(release, scenario);
    template.metadata = Some(ObjectMeta {
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    });
    let app = spec.containers.first_mut()?;
    if let Some(mib) = tweaks.memory_limit_mib {
        let resources = app.resources.get_or_insert_with(Default::default);
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert("memory".to_owned(), Quantity(format!("{mib}Mi")));
    }
    let env = app.env.get_or_insert_with(Vec::new);
    for (name, value) in &tweaks.env {
        env.retain(|e| &e.name != name);
        env.push(EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            value_from: None,
        });
    }
    template.spec = Some(spec);
    Some(Deployment {
        metadata: ObjectMeta {
            name: Some(object_name(release, scenario)),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: k8s_openapi::api::apps::v1::DeploymentSpec {
            replicas: Some(tweaks.replicas),
            selector: LabelSelector {
                match_labels: Some(labels),
                match_expressions: None,
            },
            template,
            ..Default::default()
        },
        status: None,
    })
}

/// How the leak scenario is sized from how often the controller can see memory.
#[derive(Debug, Clone, PartialEq)]
pub struct LeakPlan {
    /// Seconds between two distinct memory samples: the slower of the controller's sampling
    /// and metrics-server's resolution (a repeated value is not a new sample).
    pub sample_every_secs: f64,
    /// Memory limit of the scenario's container, MiB.
    pub limit_mib: u32,
    /// Where the leak stops growing, MiB: above the limit, so the OOM kill is real if the
    /// controller does not act.
    pub cap_mib: u32,
    /// The policy's trend window, seconds.
    pub window_secs: u64,
}

impl LeakPlan {
    /// The limit must leave room for [`LEAK_MIN_SAMPLES`] rising samples before usage crosses
    /// [`LEAK_LIMIT_PERCENT`] of it, plus one sample of margin; rounded up to 32 MiB.
    pub fn new(controller_sample_secs: f64, metrics_resolution_secs: f64) -> Self {
        let every = controller_sample_secs.max(metrics_resolution_secs).max(1.0);
        let growth = f64::from(LEAK_MIB_PER_SEC) * every * f64::from(LEAK_MIN_SAMPLES + 1);
        let needed = (f64::from(APP_BASELINE_MIB) + growth) / (LEAK_LIMIT_PERCENT / 100.0);
        let limit_mib = ((needed / 32.0).ceil() as u32).max(2) * 32;
        LeakPlan {
            sample_every_secs: every,
            limit_mib,
            cap_mib: limit_mib + 64,
            // Twice the span the samples need: a window that cuts the trend short never fires.
            window_secs: (every * f64::from(LEAK_MIN_SAMPLES) * 2.0).ceil().max(60.0) as u64,
        }
    }

    /// The HealingPolicy (spec) the scenario installs.
    pub fn policy_spec(&self, release: &str) -> serde_json::Value {
        serde_json::json!({
            "selector": {"matchLabels": labels(release, "leak")},
            "triggers": {"memoryTrend": {
                "window": format!("{}s", self.window_secs),
                "minSamples": LEAK_MIN_SAMPLES,
                "limitPercent": LEAK_LIMIT_PERCENT as u32,
            }},
            "action": {"type": "evict"},
            "cooldown": "10m",
        })
    }

    /// Fastest heal: the leak reaches `limitPercent` of the limit from the idle baseline, the
    /// next sample sees it, then the replacement starts.
    pub fn theory(&self, startup_period: f64) -> Theory {
        let threshold = f64::from(self.limit_mib) * LEAK_LIMIT_PERCENT / 100.0;
        let climb = ((threshold - f64::from(APP_BASELINE_MIB)) / f64::from(LEAK_MIB_PER_SEC))
            .max(self.sample_every_secs * f64::from(LEAK_MIN_SAMPLES - 1));
        Theory {
            heal_secs: climb + self.sample_every_secs + startup_period,
            basis: format!(
                "climb to {LEAK_LIMIT_PERCENT} % of {} MiB at {LEAK_MIB_PER_SEC} MiB/s (at least {} samples {} s apart) + one sample + startup period {startup_period} s",
                self.limit_mib, LEAK_MIN_SAMPLES, self.sample_every_secs
            ),
        }
    }
}

/// `saturatedFor` of the pool scenario's policy (the CEL minimum is 10 s).
pub const POOL_SATURATED_FOR_SECS: u64 = 15;

/// The pool scenario's HealingPolicy (spec): the default saturation query, confirmed by the
/// pod's failing readiness (the app's `/ready` fails while its whole pool is held).
pub fn pool_policy_spec(release: &str) -> serde_json::Value {
    serde_json::json!({
        "selector": {"matchLabels": labels(release, "pool")},
        "triggers": {"poolExhaustion": {"saturatedFor": format!("{POOL_SATURATED_FOR_SECS}s")}},
        "action": {"type": "evict"},
        "cooldown": "10m",
    })
}

/// Pool scenario, fastest heal: saturated for `saturatedFor`, seen by the next query round —
/// or, for a pod younger than the controller's `--min-pod-age-secs`, that age — plus the
/// replacement's start.
pub fn pool_theory(
    prometheus_interval_secs: f64,
    min_pod_age_secs: f64,
    pod_age_secs: f64,
    startup_period: f64,
) -> Theory {
    let saturated = POOL_SATURATED_FOR_SECS as f64 + prometheus_interval_secs;
    let age_wait = (min_pod_age_secs - pod_age_secs).max(0.0);
    Theory {
        heal_secs: saturated.max(age_wait) + startup_period,
        basis: format!(
            "max(saturatedFor {POOL_SATURATED_FOR_SECS} s + one query round {prometheus_interval_secs} s, min pod age {min_pod_age_secs} s - age {pod_age_secs:.0} s) + startup period {startup_period} s"
        ),
    }
}

/// The breaker scenario's timings: short enough for a workshop, long enough that the rate
/// window has forgotten the failing pods before the probe is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPlan {
    /// PromQL rate window, seconds.
    pub rate_window_secs: u64,
    /// `tripAfter`.
    pub trip_after: u32,
    /// `openFor`, seconds.
    pub open_for_secs: u64,
    /// `probeFor`, seconds.
    pub probe_for_secs: u64,
}

impl BreakerPlan {
    /// From Prometheus' scrape interval: a rate needs two samples in its window (four for a
    /// steady one), and the open time outlasts the window.
    pub fn new(scrape_interval_secs: u64) -> Self {
        let rate_window_secs = (scrape_interval_secs * 4).max(20);
        BreakerPlan {
            rate_window_secs,
            trip_after: 2,
            open_for_secs: rate_window_secs + 10,
            probe_for_secs: rate_window_secs,
        }
    }

    /// The error ratio of the scenario's pods: 5xx answers of `/` over all answers of `/`.
    /// `or vector(0)`: a pod that never failed has no 5xx series, and a healthy probe must
    /// answer 0, not nothing.
    pub fn query(&self, namespace: &str, release: &str) -> String {
        let pods = format!(
            "namespace=\"{namespace}\",pod=~\"{}-.+\",route=\"/\"",
            object_name(release, "breaker")
        );
        let w = self.rate_window_secs;
        format!(
            "(sum(rate(http_requests_total{{{pods},status=~\"5..\"}}[{w}s])) or vector(0)) / sum(rate(http_requests_total{{{pods}}}[{w}s]))"
        )
    }

    /// The CircuitBreaker (spec) the scenario installs.
    pub fn breaker_spec(&self, namespace: &str, release: &str) -> serde_json::Value {
        serde_json::json!({
            "targetRef": {"kind": "Deployment", "name": object_name(release, "breaker")},
            "query": self.query(namespace, release),
            "threshold": 0.5,
            "tripAfter": self.trip_after,
            "openFor": format!("{}s", self.open_for_secs),
            "maxOpenFor": "10m",
            "probeReplicas": 1,
            "probeFor": format!("{}s", self.probe_for_secs),
        })
    }

    /// Fastest full cycle: `tripAfter` rounds of errors, the open time, then `probeFor` of good
    /// answers from a probe that first has to start.
    pub fn theory(&self, prometheus_interval_secs: f64, startup_period: f64) -> Theory {
        let trip = f64::from(self.trip_after) * prometheus_interval_secs;
        Theory {
            heal_secs: trip
                + self.open_for_secs as f64
                + startup_period
                + self.probe_for_secs as f64,
            basis: format!(
                "tripAfter {} × {prometheus_interval_secs} s + openFor {} s + startup period {startup_period} s + probeFor {} s",
                self.trip_after, self.open_for_secs, self.probe_for_secs
            ),
        }
    }
}

/// Zombie scenario, fastest heal: the pod's grace period runs out, then the reaper's delay.
pub fn zombie_theory(grace_secs: f64, zombie_after_secs: f64) -> Theory {
    Theory {
        heal_secs: grace_secs + zombie_after_secs,
        basis: format!(
            "terminationGracePeriodSeconds {grace_secs} s + --zombie-after-secs {zombie_after_secs} s"
        ),
    }
}

/// metrics-server's `--metric-resolution` from its container arguments (`15s`, `1m`); its
/// default, 60 s, when the flag is absent.
pub fn metric_resolution_secs(args: &[String]) -> f64 {
    let value = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--metric-resolution=")
            .map(str::to_owned)
            .or_else(|| (a == "--metric-resolution").then(|| args.get(i + 1).cloned())?)
    });
    value
        .and_then(|v| crate::duration::parse(&v).ok())
        .map_or(60.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "selfheal-app", "labels": {"app.kubernetes.io/instance": "selfheal-app"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app.kubernetes.io/name": "selfheal-app", "app.kubernetes.io/instance": "selfheal-app"}},
                "template": {
                    "metadata": {
                        "labels": {"app.kubernetes.io/name": "selfheal-app", "app.kubernetes.io/instance": "selfheal-app"},
                        "annotations": {"selfheal.io/restartedAt": "1"}
                    },
                    "spec": {"containers": [{
                        "name": "app",
                        "image": "localhost/selfheal-app:dev",
                        "env": [{"name": "APP_POOL_SIZE", "value": "10"}],
                        "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}
                    }]}
                }
            }
        }))
        .expect("deployment literal")
    }

    #[test]
    fn a_scenario_deployment_keeps_the_pod_but_not_the_release_labels() {
        let tweaks = Tweaks {
            replicas: 1,
            memory_limit_mib: Some(160),
            env: vec![("APP_POOL_SIZE".into(), "2".into())],
        };
        let d = deployment(&release(), "selfheal-app", "leak", &tweaks).expect("a deployment");
        assert_eq!(d.metadata.name.as_deref(), Some("selfheal-app-leak"));
        assert_eq!(d.spec.replicas, Some(1));
        let want = labels("selfheal-app", "leak");
        assert_eq!(d.spec.selector.match_labels.as_ref(), Some(&want));
        let meta = d
            .spec
            .template
            .metadata
            .as_ref()
            .expect("template metadata");
        // Not selected by the release's Service, PDB or HPA; no release rollout annotation.
        assert_eq!(meta.labels.as_ref(), Some(&want));
        assert!(!want.contains_key("app.kubernetes.io/instance"));
        assert!(meta.annotations.is_none());
        let c = &d.spec.template.spec.as_ref().expect("pod spec").containers[0];
        assert_eq!(c.image.as_deref(), Some("localhost/selfheal-app:dev"));
        let limits = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .expect("limits");
        assert_eq!(limits["memory"].0, "160Mi");
        assert_eq!(limits["cpu"].0, "500m");
        let env = c.env.as_ref().expect("env");
        assert_eq!(env.len(), 1, "replaced, not duplicated: {env:?}");
        assert_eq!(env[0].value.as_deref(), Some("2"));
    }

    #[test]
    fn no_pod_spec_no_scenario() {
        let mut d = release();
        d.spec.template.spec = None;
        assert!(deployment(&d, "r", "pool", &Tweaks::default()).is_none());
    }

    #[test]
    fn selector_lists_the_labels() {
        assert_eq!(
            selector("r", "pool"),
            "app.kubernetes.io/name=r-pool,selfheal.io/demo-scenario=pool"
        );
    }

    #[test]
    fn the_leak_limit_leaves_room_for_the_samples_before_the_threshold() {
        // Local cluster: metrics-server every 15 s, controller every 5 s.
        let p = LeakPlan::new(5.0, 15.0);
        assert_eq!(p.sample_every_secs, 15.0);
        // (12 + 1 × 15 × 7) / 0.75 = 156 → 160 MiB.
        assert_eq!(p.limit_mib, 160);
        assert!(p.cap_mib > p.limit_mib, "the OOM kill must be real");
        assert_eq!(p.window_secs, 180);
        // minikube's addon: 60 s.
        let slow = LeakPlan::new(15.0, 60.0);
        // (12 + 1 × 60 × 7) / 0.75 = 576 MiB.
        assert_eq!(slow.limit_mib, 576);
        assert_eq!(slow.window_secs, 720);
        // Enough samples fit below the threshold either way, and a sample period of leaking
        // past it still leaves more than another period before the limit.
        for plan in [&p, &slow] {
            let threshold = f64::from(plan.limit_mib) * 0.75;
            let climb = threshold - f64::from(APP_BASELINE_MIB);
            assert!(climb / plan.sample_every_secs >= f64::from(LEAK_MIN_SAMPLES));
            let headroom = f64::from(plan.limit_mib) - threshold - plan.sample_every_secs;
            assert!(headroom > plan.sample_every_secs, "{plan:?}");
        }
    }

    #[test]
    fn the_leak_policy_selects_only_the_scenario() {
        let spec = LeakPlan::new(5.0, 15.0).policy_spec("selfheal-app");
        assert_eq!(
            spec["selector"]["matchLabels"]["selfheal.io/demo-scenario"],
            "leak"
        );
        assert_eq!(spec["triggers"]["memoryTrend"]["window"], "180s");
        assert_eq!(spec["triggers"]["memoryTrend"]["minSamples"], 6);
        assert_eq!(spec["triggers"]["memoryTrend"]["limitPercent"], 75);
        assert_eq!(spec["action"]["type"], "evict");
    }

    #[test]
    fn leak_theory_is_the_climb_plus_a_sample_and_the_start() {
        let t = LeakPlan::new(5.0, 15.0).theory(1.0);
        // 160 × 0.75 = 120 MiB; (120 - 12) / 1 = 108 s.
        assert_eq!(t.heal_secs, 108.0 + 15.0 + 1.0);
        assert!(t.basis.contains("160 MiB"), "{}", t.basis);
    }

    #[test]
    fn the_pool_policy_uses_the_default_query() {
        let spec = pool_policy_spec("r");
        assert_eq!(spec["triggers"]["poolExhaustion"]["saturatedFor"], "15s");
        assert!(
            spec["triggers"]["poolExhaustion"]
                .get("saturationQuery")
                .is_none()
        );
        assert_eq!(pool_theory(5.0, 60.0, 120.0, 1.0).heal_secs, 21.0);
        // A fresh pod waits for the controller's minimum age first.
        assert_eq!(pool_theory(5.0, 60.0, 10.0, 1.0).heal_secs, 51.0);
    }

    #[test]
    fn the_breaker_forgets_the_failing_pods_before_judging_the_probe() {
        let p = BreakerPlan::new(5);
        assert_eq!(p.rate_window_secs, 20);
        assert!(p.open_for_secs > p.rate_window_secs);
        let q = p.query("demo", "selfheal-app");
        assert!(q.contains("pod=~\"selfheal-app-breaker-.+\""), "{q}");
        assert!(
            q.contains("status=~\"5..\"}[20s])) or vector(0)) / sum("),
            "{q}"
        );
        let spec = p.breaker_spec("demo", "selfheal-app");
        assert_eq!(spec["targetRef"]["name"], "selfheal-app-breaker");
        assert_eq!(spec["openFor"], "30s");
        // A 30 s scrape (kube-prometheus-stack's default) stretches every window.
        assert_eq!(BreakerPlan::new(30).rate_window_secs, 120);
        assert_eq!(p.theory(5.0, 1.0).heal_secs, 10.0 + 30.0 + 1.0 + 20.0);
    }

    #[test]
    fn zombie_theory_is_grace_plus_delay() {
        assert_eq!(zombie_theory(20.0, 30.0).heal_secs, 50.0);
    }

    #[test]
    fn metric_resolution_comes_from_the_arguments() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            metric_resolution_secs(&args(&["--metric-resolution=15s"])),
            15.0
        );
        assert_eq!(
            metric_resolution_secs(&args(&["--metric-resolution", "30s"])),
            30.0
        );
        assert_eq!(metric_resolution_secs(&args(&["--secure-port=4443"])), 60.0);
        assert_eq!(
            metric_resolution_secs(&args(&["--metric-resolution=nonsense"])),
            60.0
        );
    }
}
