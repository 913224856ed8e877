//! Zombie pods: pods stuck `Terminating` because no kubelet is left to confirm their end.
//!
//! A pod's deletion finishes when its node's kubelet reports the containers gone. When the node
//! is gone or not ready, nobody ever does: the pod stays `Terminating`, its StatefulSet cannot
//! start the replacement with the same name, and its PVC stays attached. The cure is a force
//! delete (grace period 0) — but on a healthy node that skips the kubelet's clean-up while the
//! containers may still run, so it needs an explicit opt-in there.
//!
//! Pure: the node's state is passed in; [`crate::reaper`] does the I/O.

use k8s_openapi::api::core::v1::{Node, Pod};
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
    /// Overdue on a node that cannot finish it: force-delete.
    Reap {
        /// How long past its deletion deadline.
        overdue: SignedDuration,
    },
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

/// Judge a terminating pod bound to a node in `node` state.
pub fn judge(pod: &Pod, node: NodeState, rule: &ZombieRule, now: Timestamp) -> Verdict {
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
        _ => Verdict::Reap { overdue },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{at, pod, secs};
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus, PodSpec};
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
                judge(&p, state, &rule(), at(NOW)),
                Verdict::Reap { overdue: secs(301) }
            );
        }
    }

    #[test]
    fn a_pod_is_not_overdue_before_its_deadline_plus_the_delay() {
        let p = terminating(Some("n1"), 299);
        assert_eq!(
            judge(&p, NodeState::Gone, &rule(), at(NOW)),
            Verdict::NotYet { until: at(NOW + 1) }
        );
    }

    #[test]
    fn a_healthy_node_keeps_its_pod_unless_opted_in() {
        let p = terminating(Some("n1"), 3600);
        assert_eq!(
            judge(&p, NodeState::Ready, &rule(), at(NOW)),
            Verdict::NodeHealthy {
                overdue: secs(3600)
            }
        );
        let opted_in = ZombieRule {
            on_healthy_nodes: true,
            ..rule()
        };
        assert_eq!(
            judge(&p, NodeState::Ready, &opted_in, at(NOW)),
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
                judge(&p, NodeState::Gone, &r, at(NOW)),
                Verdict::NotApplicable
            );
        }
    }
}
