//! Test builders: `pod().with_restarts(6).owned_by_rs("web").build()`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Pod,
    PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::healing_policy::resource::{HealingPolicy, HealingPolicySpec};
use crate::policy::{Action, Policy};

/// The fixed "now" of every unit test.
pub const NOW: Timestamp = Timestamp::constant(1_800_000_000, 0);

/// `NOW` shifted by `secs` (negative = in the past).
pub fn at(secs: i64) -> Timestamp {
    NOW + SignedDuration::from_secs(secs)
}

/// Shorthand for a duration in seconds.
pub fn secs(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s)
}

/// Policy used by the decision table: threshold 3, rate 3 per 300 s, image pull grace 300 s,
/// min age 60 s, cooldown 300 s, 2 recycles per 3600 s, give up after 3 within a day.
pub fn policy() -> Policy {
    Policy {
        restart_threshold: Some(3),
        rate_restarts: 3,
        rate_window: secs(300),
        image_pull_grace: Some(secs(300)),
        crash_loop: false,
        oom_killed: false,
        not_ready_for: None,
        memory_trend: None,
        error_rate: None,
        pool_exhaustion: None,
        confidence: None,
        min_pod_age: secs(60),
        cooldown: secs(300),
        max_recycles_per_window: 2,
        recycle_window: secs(3600),
        max_retries: 3,
        giveup_window: secs(86_400),
        namespaces: Vec::new(),
        excluded_namespaces: vec!["kube-system".into(), "selfheal-system".into()],
        action: Action::Evict,
        dry_run: false,
        min_healthy: 0,
    }
}

/// HealingPolicy `name` in namespace `shop` (generation 2) with the spec `yaml`.
pub fn healing_policy(name: &str, yaml: &str) -> std::sync::Arc<HealingPolicy> {
    let spec: HealingPolicySpec = serde_saphyr::from_str(yaml).expect("spec parses");
    let mut hp = HealingPolicy::new(name, spec);
    hp.metadata.namespace = Some("shop".into());
    hp.metadata.generation = Some(2);
    std::sync::Arc::new(hp)
}

/// A leak of container `app`: 115 of 128 MiB, rising 512 KiB/s, the limit due in 26 s.
pub fn leak() -> crate::healers::memory_trend::rule::Leak {
    crate::healers::memory_trend::rule::Leak {
        container: "app".into(),
        usage_bytes: 115 << 20,
        limit_bytes: 128 << 20,
        rising_share: 1.0,
        samples: 14,
        bytes_per_sec: 524_288.0,
        time_to_limit: Some(secs(26)),
    }
}

/// Start building a one-container pod `web-abc` in namespace `shop`, one hour old, no restarts.
pub fn pod() -> PodBuilder {
    PodBuilder {
        pod: Pod {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("shop".into()),
                uid: Some("uid-web-abc".into()),
                creation_timestamp: Some(Time(at(-3600))),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                container_statuses: Some(vec![container("app")]),
                ..PodStatus::default()
            }),
        },
    }
}

fn container(name: &str) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        restart_count: 0,
        ready: true,
        image: "localhost/selfheal-toolbox:dev".into(),
        image_id: String::new(),
        ..ContainerStatus::default()
    }
}

/// Builder returned by [`pod`].
pub struct PodBuilder {
    pod: Pod,
}

impl PodBuilder {
    fn statuses(&mut self) -> &mut Vec<ContainerStatus> {
        self.pod
            .status
            .get_or_insert_with(PodStatus::default)
            .container_statuses
            .get_or_insert_with(Vec::new)
    }

    fn first(&mut self) -> &mut ContainerStatus {
        let s = self.statuses();
        if s.is_empty() {
            s.push(container("app"));
        }
        &mut s[0]
    }

    /// Restart count of the first container.
    pub fn with_restarts(mut self, n: i32) -> Self {
        self.first().restart_count = n;
        self
    }

    /// Add another container with its own restart count.
    pub fn with_container_restarts(mut self, name: &str, n: i32) -> Self {
        let mut c = container(name);
        c.restart_count = n;
        self.statuses().push(c);
        self
    }

    /// First container waiting with `reason`.
    pub fn waiting(mut self, reason: &str) -> Self {
        self.first().state = Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: None,
            }),
            ..ContainerState::default()
        });
        self
    }

    /// First container's previous instance terminated with `reason` and `exit_code`.
    pub fn last_terminated(mut self, reason: &str, exit_code: i32) -> Self {
        self.first().last_state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                reason: Some(reason.into()),
                exit_code,
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        });
        self
    }

    /// First container's previous instance finished `secs` before [`NOW`] (exit 1).
    pub fn last_finished(mut self, secs: i64) -> Self {
        self.first().last_state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                reason: Some("Error".into()),
                exit_code: 1,
                finished_at: Some(Time(at(-secs))),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        });
        self
    }

    /// Created `secs` before [`NOW`].
    pub fn aged(mut self, secs: i64) -> Self {
        self.pod.metadata.creation_timestamp = Some(Time(at(-secs)));
        self
    }

    /// Deletion requested.
    pub fn terminating(mut self) -> Self {
        self.pod.metadata.deletion_timestamp = Some(Time(NOW));
        self
    }

    /// In another namespace.
    pub fn in_namespace(mut self, ns: &str) -> Self {
        self.pod.metadata.namespace = Some(ns.into());
        self
    }

    /// Add an annotation.
    pub fn annotated(mut self, key: &str, value: &str) -> Self {
        self.pod
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    /// Add a label.
    pub fn labelled(mut self, key: &str, value: &str) -> Self {
        self.pod
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    /// Ready condition `ready`, last changed `secs` before [`NOW`].
    pub fn ready(mut self, ready: bool, secs: i64) -> Self {
        let status = self.pod.status.get_or_insert_with(PodStatus::default);
        status.conditions = Some(vec![PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            last_transition_time: Some(Time(at(-secs))),
            ..PodCondition::default()
        }]);
        self
    }

    /// Controlled by ReplicaSet `rs`.
    pub fn owned_by_rs(self, rs: &str) -> Self {
        self.owned_by("apps/v1", "ReplicaSet", rs, true)
    }

    /// Owned, but not controlled, by ConfigMap `name` (still a bare pod for our purposes).
    pub fn owned_by_non_controller(self, name: &str) -> Self {
        self.owned_by("v1", "ConfigMap", name, false)
    }

    /// Owner reference with `controller: controller`.
    pub fn owned_by(mut self, api_version: &str, kind: &str, name: &str, controller: bool) -> Self {
        self.pod
            .metadata
            .owner_references
            .get_or_insert_with(Vec::new)
            .push(OwnerReference {
                api_version: api_version.into(),
                kind: kind.into(),
                name: name.into(),
                uid: format!("uid-{name}"),
                controller: Some(controller),
                block_owner_deletion: None,
            });
        self
    }

    /// The pod.
    pub fn build(self) -> Pod {
        self.pod
    }
}
