//! The zombie reaper's I/O: look up the node of an overdue Terminating pod and force-delete the
//! pod when [`crate::healers::zombie::rule::judge`] says so, with an Event on the pod and its owner and a metric.
//! The delete comes first; the owner's exact reference and the Events follow through
//! [`crate::explain`], off the reconcile.
//!
//! Backoff: a pod is judged once when its deletion deadline plus `--zombie-after-secs` passes,
//! deleted once (a failure requeues through the reconciler's exponential backoff), and a pod
//! left alone on a healthy node is looked at again only after another `--zombie-after-secs`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::explain::{Explainer, Explanation};
use crate::healers::zombie::rule::{self as zombie, Holds, NodeState, Verdict, ZombieRule};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::owner::OwnerResolver;
use crate::{Error, Result};

/// Pod UIDs reported as left alone are forgotten when there are more than this.
const REPORTED_MAX: usize = 20_000;

/// What reaping needs: the API, the rule, and where to say what it did.
pub struct Reaper {
    /// The API client.
    pub client: Client,
    /// `--zombie-*` flags.
    pub rule: ZombieRule,
    /// `--dry-run`: say what would be deleted, delete nothing.
    pub dry_run: bool,
    /// Counters of force deletes and refusals.
    pub metrics: Arc<Metrics>,
    /// Events on the pod and its owner, published after the delete.
    pub(crate) explainer: Explainer,
    /// Only the leader deletes.
    pub leader: Leadership,
    /// The pod's owner, for the owner's Event.
    pub owners: Arc<OwnerResolver>,
    /// Pods already reported as left alone (said once, not at every look).
    reported: Mutex<HashSet<String>>,
}

impl Reaper {
    /// A reaper that has reported nothing yet.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: Client,
        rule: ZombieRule,
        dry_run: bool,
        metrics: Arc<Metrics>,
        explainer: Explainer,
        leader: Leadership,
        owners: Arc<OwnerResolver>,
    ) -> Self {
        Self {
            client,
            rule,
            dry_run,
            metrics,
            explainer,
            leader,
            owners,
            reported: Mutex::new(HashSet::new()),
        }
    }

    /// True the first time this is asked for a pod UID: a zombie left alone on a healthy node
    /// is reported once, not at every look.
    fn first_report(&self, uid: &str) -> bool {
        let mut seen = self
            .reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() > REPORTED_MAX {
            seen.clear();
        }
        seen.insert(uid.to_owned())
    }

    /// Handle a Terminating pod: reap it, wait for it to become overdue, or leave it.
    pub async fn handle(&self, pod: &Arc<Pod>, now: Timestamp) -> Result<Action> {
        handle(self, pod, now).await
    }
}

/// Handle a Terminating pod: reap it, wait for it to become overdue, or leave it.
async fn handle(ctx: &Reaper, pod: &Arc<Pod>, now: Timestamp) -> Result<Action> {
    let rule = ctx.rule;
    let Some(until) = zombie::due(pod, &rule) else {
        return Ok(Action::await_change());
    };
    if now < until {
        let wait = until.duration_since(now).unsigned_abs();
        return Ok(Action::requeue(wait + Duration::from_millis(250)));
    }
    let Some(node_name) = zombie::node_of(pod) else {
        return Ok(Action::await_change());
    };
    let node = Api::<Node>::all(ctx.client.clone())
        .get_opt(node_name)
        .await
        .map_err(Error::NodeLookupFailed)?;
    let state = NodeState::of(node.as_ref());
    let name = pod.name_any();
    let ns = pod.namespace().unwrap_or_default();
    let uid = pod.uid().unwrap_or_default();
    let holds = Holds::of(pod);
    // NB: what the pod holds matters only while its node may still come back.
    let exclusive = match state {
        NodeState::Ready | NodeState::NotReady => exclusive(ctx, &ns, &holds).await?,
        NodeState::Gone | NodeState::OutOfService => None,
    };
    // A pod left alone is looked at again after another delay, not at every change.
    let look_again = rule
        .after
        .map_or(Duration::from_secs(300), |d| d.unsigned_abs());
    match zombie::judge(pod, state, exclusive.is_some(), &rule, now) {
        Verdict::NotApplicable => Ok(Action::await_change()),
        Verdict::NotYet { until } => Ok(Action::requeue(
            until.duration_since(now).unsigned_abs() + Duration::from_millis(250),
        )),
        Verdict::NodeHealthy { overdue } => {
            let note = format!(
                "Terminating {}s past its deletion deadline on node {node_name}, which is Ready: left to its kubelet (force-deleting on healthy nodes needs --zombie-on-healthy-nodes)",
                overdue.as_secs()
            );
            leave_alone(ctx, pod, "zombie_on_healthy_node", EventType::Normal, note).await?;
            Ok(Action::requeue(look_again))
        }
        Verdict::Exclusive { overdue } => {
            let note = format!(
                "Terminating {}s past its deletion deadline on node {node_name}, but it holds {} and the node still exists: a force delete could run two copies if the node returns. Delete the Node, or taint it {}=nodeshutdown:NoExecute once it is off",
                overdue.as_secs(),
                exclusive.unwrap_or_default(),
                zombie::OUT_OF_SERVICE_TAINT
            );
            leave_alone(ctx, pod, "zombie_holds_exclusive", EventType::Warning, note).await?;
            Ok(Action::requeue(look_again))
        }
        Verdict::Reap { overdue } => {
            // NB: no API read before the delete: see `OwnerResolver::resolve_fast`.
            let workload = ctx.owners.resolve_fast(pod).await?;
            let why = format!(
                "Terminating {}s past its deletion deadline on node {node_name} ({}), whose kubelet cannot finish it",
                overdue.as_secs(),
                match state {
                    NodeState::Gone => "gone",
                    NodeState::OutOfService => "tainted out-of-service",
                    NodeState::NotReady => "not ready",
                    NodeState::Ready => "Ready, opted in by --zombie-on-healthy-nodes",
                }
            );
            let explain = |event, note| {
                Explanation::about_pod(pod, &pod.object_ref(&()), workload.as_ref(), event, note)
            };
            let count = |outcome: &str| {
                ctx.metrics
                    .healing_actions_total
                    .with_label_values(&["force_delete", outcome])
                    .inc();
            };
            if ctx.dry_run {
                count("dry_run");
                let note = format!("dry-run: would force-delete: {why}");
                info!(node = node_name, "{note}");
                let e = explain((EventType::Normal, "ForceDeleted", "DryRun"), note);
                ctx.explainer.explain(e).await;
                return Ok(Action::await_change());
            }
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                // NB: only this pod, not a namesake created since (StatefulSets reuse names).
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            ctx.leader.ensure("a force delete")?;
            match Api::<Pod>::namespaced(ctx.client.clone(), &ns)
                .delete(&name, &dp)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                    // Gone already, or a namesake: nothing of ours to delete.
                    return Ok(Action::await_change());
                }
                Err(e) => {
                    count("failed");
                    return Err(Error::ForceDeleteFailed(e));
                }
            }
            count("done");
            ctx.metrics
                .zombies_deleted_total
                .with_label_values(&[state.label()])
                .inc();
            warn!(
                node = node_name,
                overdue_secs = overdue.as_secs(),
                node_state = state.label(),
                "force-deleted zombie pod"
            );
            let note = format!("force-deleted (grace period 0): {why}");
            let e = explain((EventType::Warning, "ForceDeleted", "ForceDelete"), note);
            ctx.explainer.explain(e).await;
            Ok(Action::await_change())
        }
    }
}

/// Say once per pod why an overdue Terminating pod is left alone: `not_recycled_total{reason}`
/// and a `NotRecycled` Event on the pod and its owner.
async fn leave_alone(
    ctx: &Reaper,
    pod: &Arc<Pod>,
    label: &'static str,
    type_: EventType,
    note: String,
) -> Result<()> {
    if !ctx.first_report(&pod.uid().unwrap_or_default()) {
        return Ok(());
    }
    ctx.metrics
        .not_recycled_total
        .with_label_values(&[label])
        .inc();
    info!(reason = label, "{note}");
    let workload = ctx.owners.resolve_fast(pod).await?;
    // The owner's Event names the pod; the pod's own does not need to.
    let e = Explanation::about_pod(
        pod,
        &pod.object_ref(&()),
        workload.as_ref(),
        (type_, "NotRecycled", "Skip"),
        note,
    );
    ctx.explainer.explain(e).await;
    Ok(())
}

/// What of `holds` only one copy may hold, in words (`None`: nothing). A claim that cannot be
/// found counts as exclusive: its volume may still be attached to the node (fail safe).
async fn exclusive(ctx: &Reaper, ns: &str, holds: &Holds) -> Result<Option<String>> {
    if holds.stateful_set {
        return Ok(Some("a StatefulSet identity".into()));
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    for claim in &holds.claims {
        let pvc = api.get_opt(claim).await.map_err(Error::ClaimLookupFailed)?;
        let modes = pvc
            .and_then(|p| p.spec)
            .and_then(|s| s.access_modes)
            .unwrap_or_else(|| vec!["unknown (claim not found)".into()]);
        if let Some(m) = modes
            .iter()
            .find(|m| *m != "ReadWriteMany" && *m != "ReadOnlyMany")
        {
            return Ok(Some(format!("volume claim {claim} ({m})")));
        }
    }
    Ok(None)
}
