//! The pod cache holds thousands of pods: each is trimmed to what the decision, the evidence,
//! the memory trend and the zombie reaper read before it is stored.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EphemeralVolumeSource, Pod, PodCondition, PodSpec, PodStatus, ResourceRequirements,
    Volume,
};

use crate::policy::IGNORE_ANNOTATION;

/// Keep only what the decision, the evidence and the eviction need: the cache holds thousands of
/// pods, and managedFields, specs and most of the status are most of their weight.
pub fn trim(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    // NB: labels stay: HealingPolicy selectors match on them.
    meta.generate_name = None;
    meta.finalizers = None;
    if let Some(a) = meta.annotations.take() {
        let kept: BTreeMap<_, _> = a
            .into_iter()
            .filter(|(k, _)| k == IGNORE_ANNOTATION)
            .collect();
        meta.annotations = (!kept.is_empty()).then_some(kept);
    }
    // NB: of the spec only the containers' memory limits stay: the memory trend predicts
    // against them.
    // The node name and the claim volumes (their names only) stay for the zombie reaper, which
    // leaves a pod holding a ReadWriteOnce volume alone until its node is known dead.
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        node_name: spec.node_name,
        volumes: spec.volumes.map(|vols| {
            vols.into_iter()
                .filter(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some())
                .map(|v| Volume {
                    persistent_volume_claim: v.persistent_volume_claim,
                    ephemeral: v.ephemeral.map(|_| EphemeralVolumeSource::default()),
                    name: v.name,
                    ..Volume::default()
                })
                .collect()
        }),
        containers: spec
            .containers
            .into_iter()
            .map(|c| Container {
                resources: c.resources.and_then(|r| {
                    let memory = r.limits?.remove("memory")?;
                    Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([("memory".to_owned(), memory)])),
                        ..ResourceRequirements::default()
                    })
                }),
                name: c.name,
                ..Container::default()
            })
            .collect(),
        ..PodSpec::default()
    });
    if let Some(status) = pod.status.take() {
        let slim = |mut list: Vec<k8s_openapi::api::core::v1::ContainerStatus>| {
            for c in &mut list {
                c.image = String::new();
                c.image_id = String::new();
                c.container_id = None;
                c.resources = None;
                c.volume_mounts = None;
                c.allocated_resources = None;
                c.allocated_resources_status = None;
                c.user = None;
                c.started = None;
                c.stop_signal = None;
                for s in [c.state.as_mut(), c.last_state.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = s.terminated.as_mut() {
                        t.message = None;
                        t.container_id = None;
                    }
                    if let Some(w) = s.waiting.as_mut() {
                        w.message = None;
                    }
                }
            }
            list
        };
        // NB: the Ready condition stays for `notReadyFor` and `minHealthyReplicas`.
        let ready: Vec<PodCondition> = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ == "Ready")
            .map(|c| PodCondition {
                message: None,
                last_probe_time: None,
                ..c
            })
            .collect();
        pod.status = Some(PodStatus {
            phase: status.phase,
            conditions: (!ready.is_empty()).then_some(ready),
            container_statuses: status.container_statuses.map(slim),
            init_container_statuses: status.init_container_statuses.map(slim),
            ..PodStatus::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pod;
    use crate::policy::{self, Observed};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn trim_keeps_what_the_decision_needs_and_drops_the_rest() {
        let mut p = pod()
            .with_restarts(5)
            .waiting("CrashLoopBackOff")
            .last_terminated("OOMKilled", 137)
            .annotated(IGNORE_ANNOTATION, "true")
            .annotated("kubectl.kubernetes.io/last-applied-configuration", "{...}")
            .labelled("app", "web")
            .ready(false, 30)
            .owned_by_rs("web")
            .build();
        p.metadata.managed_fields = Some(vec![Default::default()]);
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("web:1".into()),
                resources: Some(ResourceRequirements {
                    limits: Some(BTreeMap::from([
                        ("memory".into(), Quantity("128Mi".into())),
                        ("cpu".into(), Quantity("1".into())),
                    ])),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            }],
            node_name: Some("n1".into()),
            service_account_name: Some("web".into()),
            ..PodSpec::default()
        });
        let before = p.clone();
        trim(&mut p);
        assert!(p.metadata.managed_fields.is_none());
        // Of the spec, the memory limit stays (the memory trend needs it).
        let spec = p.spec.as_ref().expect("slim spec");
        // ... and the node name (the zombie reaper looks the node up).
        assert_eq!(
            (
                spec.node_name.as_deref(),
                spec.service_account_name.as_deref()
            ),
            (Some("n1"), None)
        );
        let c = &spec.containers[0];
        assert_eq!((c.name.as_str(), c.image.as_deref()), ("app", None));
        assert_eq!(
            crate::healers::memory_trend::rule::memory_limits(&p),
            vec![("app".to_owned(), 128 << 20)]
        );
        assert_eq!(p.metadata.annotations.as_ref().map(BTreeMap::len), Some(1));
        // Selectors match on labels; notReadyFor and minHealthyReplicas read the Ready condition.
        assert_eq!(p.metadata.labels, before.metadata.labels);
        assert_eq!(
            policy::not_ready_since(&p),
            policy::not_ready_since(&before)
        );
        assert!(policy::not_ready_since(&p).is_some());
        assert_eq!(
            p.metadata.owner_references,
            before.metadata.owner_references
        );
        let pol = crate::fixtures::policy();
        let now = crate::fixtures::NOW;
        let h = Default::default();
        assert_eq!(
            policy::decide(&p, &pol, &h, &Observed::default(), 0, now),
            policy::decide(&before, &pol, &h, &Observed::default(), 0, now)
        );
    }
}
