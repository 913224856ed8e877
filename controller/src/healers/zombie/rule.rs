//! Zombie pods: pods stuck `Terminating` because no kubelet is left to confirm their end.
//!
//! A pod's deletion finishes when its node's kubelet reports the containers gone. When the node
//! is gone or not ready, nobody ever does: the pod stays `Terminating`, its StatefulSet cannot
//! start the replacement with the same name, and its PVC stays attached. The cure is a force
//! delete (grace period 0) — but on a healthy node that skips the kubelet's clean-up while the
//! containers may still run, so it needs an explicit opt-in there.
//!
//! A pod that owns something only one copy may hold — a StatefulSet identity, a ReadWriteOnce
//! volume — is force-deleted only when its node is known dead: the Node object is gone, or it
//! carries the `node.kubernetes.io/out-of-service` taint an operator sets after shutting it down
//! (the Kubernetes non-graceful node shutdown rule). A node that is merely NotReady may come
//! back with the old containers still writing, while the replacement starts elsewhere.
//!
//! Pure: the node's state and what the pod holds are passed in; [`crate::healers::zombie::reaper`] does the I/O.

use k8s_openapi::api::core::v1::{Node, Pod};

/// The taint of the Kubernetes non-graceful node shutdown: the node is off and will not return
/// with its old containers, so what it held may be released.
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// When a terminating pod counts as a zombie, from the controller's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZombieRule {
    /// Overdue this long past its deletion deadline (`None` = the reaper is off).
    pub after: Option<SignedDuration>,
    /// Also force-delete on a node that is Ready (the kubelet is alive but stuck).
    pub on_healthy_nodes: bool,
}

/// The state of the node a pod is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// No Node object of that name.
    Gone,
    /// Tainted `node.kubernetes.io/out-of-service`: shut down for good, whatever its conditions.
    OutOfService,
    /// The Node's Ready condition is False, Unknown or missing.
    NotReady,
    /// The Node is Ready.
    Ready,
}

impl NodeState {
    /// Of a Node object, or `Gone` without one.
    pub fn of(node: Option<&Node>) -> Self {
        let Some(node) = node else {
            return NodeState::Gone;
        };
        let out_of_service = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .any(|t| t.key == OUT_OF_SERVICE_TAINT);
        if out_of_service {
            return NodeState::OutOfService;
        }
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            NodeState::Ready
        } else {
            NodeState::NotReady
        }
    }

    /// Bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            NodeState::Gone => "gone",
            NodeState::OutOfService => "out_of_service",
            NodeState::NotReady => "not_ready",
            NodeState::Ready => "ready",
        }
    }
}

/// What to do with a terminating pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not terminating, not on a node, or the reaper is off: not a zombie case at all.
    NotApplicable,
    /// Terminating, but not overdue yet: look again at `until`.
    NotYet {
        /// When it becomes overdue.
        until: Timestamp,
    },
    /// Overdue on a Ready node and no opt-in: leave it to its kubelet.
    NodeHealthy {
        /// How long past its deletion deadline.
        overdue: SignedDuration,
    },
    /// Overdue, but it holds something exclusive and its node still exists and is not marked
    /// out-of-service: force-deleting could run two copies. Left alone, and said so.
    Exclusive {
        /// How long past its deletion deadline.
        overdue: SignedDuration,
    },
    /// Overdue on a node that cannot finish it: force-delete.
    Reap {
        /// How long past its deletion deadline.
        overdue: SignedDuration,
    },
}

/// What a pod holds that only one copy may hold at a time, as far as the pod itself tells:
/// a StatefulSet identity, or claims whose access modes [`crate::healers::zombie::reaper`] reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holds {
    /// Controlled by a StatefulSet (a stable name and identity the replacement takes over).
    pub stateful_set: bool,
    /// PersistentVolumeClaims it mounts (`ephemeral` volumes under their generated claim name).
    pub claims: Vec<String>,
}

impl Holds {
    /// Of a pod's owner reference and volumes.
    pub fn of(pod: &Pod) -> Self {
        let stateful_set = pod
            .metadata
            .owner_references
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|o| o.controller == Some(true) && o.kind == "StatefulSet");
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let claims = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_deref())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
                (Some(pvc), _) => Some(pvc.claim_name.clone()),
                // NB: the claim of a generic ephemeral volume is named <pod>-<volume>.
                (None, Some(_)) => Some(format!("{pod_name}-{}", v.name)),
                (None, None) => None,
            })
            .collect();
        Self {
            stateful_set,
            claims,
        }
    }
}

/// The node a terminating pod is bound to, when the reaper should look at it: `None` for a pod
/// that is not terminating or was never scheduled (the API server deletes those at once).
pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.metadata.deletion_timestamp.as_ref()?;
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// When `pod` becomes overdue under `rule` (its deletion deadline plus `after`).
pub fn due(pod: &Pod, rule: &ZombieRule) -> Option<Timestamp> {
    let after = rule.after?;
    node_of(pod)?;
    // NB: deletionTimestamp is the deadline (request time + grace period), not the request time.
    Some(pod.metadata.deletion_timestamp.as_ref()?.0 + after)
}

/// Judge a terminating pod bound to a node in `node` state. `exclusive`: it is a StatefulSet's,
/// or one of its claims is ReadWriteOnce(Pod) or could not be read (see [`Holds`]).
pub fn judge(
    pod: &Pod,
    node: NodeState,
    exclusive: bool,
    rule: &ZombieRule,
    now: Timestamp,
) -> Verdict {
    let Some(until) = due(pod, rule) else {
        return Verdict::NotApplicable;
    };
    if now < until {
        return Verdict::NotYet { until };
    }
    let overdue = pod
        .metadata
        .deletion_timestamp
        .as_ref()
        .map_or(SignedDuration::ZERO, |d| now.duration_since(d.0));
    match node {
        NodeState::Ready if !rule.on_healthy_nodes => Verdict::NodeHealthy { overdue },
        NodeState::Ready | NodeState::NotReady if exclusive => Verdict::Exclusive { overdue },
        _ => Verdict::Reap { overdue },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{at, pod, secs};
    use k8s_openapi::api::core::v1::{
        EphemeralVolumeSource, NodeCondition, NodeSpec, NodeStatus,
        PersistentVolumeClaimVolumeSource, PodSpec, Taint, Volume,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const NOW: i64 = 0;

    fn rule() -> ZombieRule {
        ZombieRule {
            after: Some(secs(300)),
            on_healthy_nodes: false,
        }
    }

    /// A pod on `node` whose deletion deadline was `ago` seconds before now.
    fn terminating(node: Option<&str>, ago: i64) -> Pod {
        let mut p = pod().owned_by_rs("web").build();
        p.metadata.deletion_timestamp = Some(Time(at(NOW - ago)));
        p.spec = Some(PodSpec {
            node_name: node.map(str::to_owned),
            ..PodSpec::default()
        });
        p
    }

    fn node(ready: Option<&str>) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: ready.map(|s| {
                    vec![NodeCondition {
                        type_: "Ready".into(),
                        status: s.into(),
                        ..NodeCondition::default()
                    }]
                }),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn node_state_reads_the_ready_condition() {
        assert_eq!(NodeState::of(None), NodeState::Gone);
        assert_eq!(NodeState::of(Some(&node(Some("True")))), NodeState::Ready);
        assert_eq!(
            NodeState::of(Some(&node(Some("Unknown")))),
            NodeState::NotReady
        );
        assert_eq!(
            NodeState::of(Some(&node(Some("False")))),
            NodeState::NotReady
        );
        assert_eq!(NodeState::of(Some(&node(None))), NodeState::NotReady);
    }

    #[test]
    fn an_overdue_pod_on_a_gone_or_unready_node_is_reaped() {
        let p = terminating(Some("n1"), 301);
        for state in [NodeState::Gone, NodeState::NotReady] {
            assert_eq!(
                judge(&p, state, false, &rule(), at(NOW)),
                Verdict::Reap { overdue: secs(301) }
            );
        }
    }

    #[test]
    fn an_exclusive_pod_is_reaped_only_when_its_node_is_gone_or_out_of_service() {
        let p = terminating(Some("n1"), 301);
        let opted_in = ZombieRule {
            on_healthy_nodes: true,
            ..rule()
        };
        for state in [NodeState::NotReady, NodeState::Ready] {
            assert_eq!(
                judge(&p, state, true, &opted_in, at(NOW)),
                Verdict::Exclusive { overdue: secs(301) },
                "{state:?}"
            );
        }
        for state in [NodeState::Gone, NodeState::OutOfService] {
            assert_eq!(
                judge(&p, state, true, &rule(), at(NOW)),
                Verdict::Reap { overdue: secs(301) },
                "{state:?}"
            );
        }
    }

    #[test]
    fn the_out_of_service_taint_wins_over_the_ready_condition() {
        let mut n = node(Some("True"));
        n.spec = Some(NodeSpec {
            taints: Some(vec![Taint {
                key: OUT_OF_SERVICE_TAINT.into(),
                value: Some("nodeshutdown".into()),
                effect: "NoExecute".into(),
                ..Taint::default()
            }]),
            ..NodeSpec::default()
        });
        assert_eq!(NodeState::of(Some(&n)), NodeState::OutOfService);
    }

    #[test]
    fn holds_names_the_stateful_set_and_every_claim() {
        let mut p = pod().owned_by("apps/v1", "StatefulSet", "db", true).build();
        p.metadata.name = Some("db-0".into());
        p.spec = Some(PodSpec {
            volumes: Some(vec![
                Volume {
                    name: "data".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: "data-db-0".into(),
                        ..Default::default()
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "scratch".into(),
                    ephemeral: Some(EphemeralVolumeSource::default()),
                    ..Volume::default()
                },
                Volume {
                    name: "tmp".into(),
                    empty_dir: Some(Default::default()),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        });
        let h = Holds::of(&p);
        assert!(h.stateful_set);
        assert_eq!(h.claims, ["data-db-0", "db-0-scratch"]);
        assert_eq!(
            Holds::of(&pod().owned_by_rs("web").build()),
            Holds::default()
        );
    }

    #[test]
    fn a_pod_is_not_overdue_before_its_deadline_plus_the_delay() {
        let p = terminating(Some("n1"), 299);
        assert_eq!(
            judge(&p, NodeState::Gone, false, &rule(), at(NOW)),
            Verdict::NotYet { until: at(NOW + 1) }
        );
    }

    #[test]
    fn a_healthy_node_keeps_its_pod_unless_opted_in() {
        let p = terminating(Some("n1"), 3600);
        assert_eq!(
            judge(&p, NodeState::Ready, false, &rule(), at(NOW)),
            Verdict::NodeHealthy {
                overdue: secs(3600)
            }
        );
        let opted_in = ZombieRule {
            on_healthy_nodes: true,
            ..rule()
        };
        assert_eq!(
            judge(&p, NodeState::Ready, false, &opted_in, at(NOW)),
            Verdict::Reap {
                overdue: secs(3600)
            }
        );
    }

    #[test]
    fn running_unscheduled_pods_and_a_switched_off_reaper_are_not_zombie_cases() {
        let mut running = terminating(Some("n1"), 3600);
        running.metadata.deletion_timestamp = None;
        let off = ZombieRule {
            after: None,
            ..rule()
        };
        for (p, r) in [
            (running, rule()),
            (terminating(None, 3600), rule()),
            (terminating(Some(""), 3600), rule()),
            (terminating(Some("n1"), 3600), off),
        ] {
            assert_eq!(
                judge(&p, NodeState::Gone, false, &r, at(NOW)),
                Verdict::NotApplicable
            );
        }
    }
}
