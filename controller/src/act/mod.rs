//! Carrying out a decision to act on an unhealthy pod: the governing policy's action (evict,
//! rollout restart, scale), or in dry-run and for action `none` a report of it; and the Events,
//! metrics and policy records that say what was done or refused.
//!
//! - [`crate::act::evict`]: the Eviction API (PodDisruptionBudgets honoured, a refusal backs off);
//! - [`crate::act::workload`]: a rollout restart or a scale of the pod's Deployment;
//! - [`crate::act::evidence`]: what the pod's containers died of, for the Events;
//! - [`crate::act::report`]: the pods left alone, deferred or given up on.

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::info;

use crate::Result;
use crate::context::Context;
use crate::owner::Workload;
use crate::policy::{self, Execution, Observed, Reason};
use crate::watched::Governed;
use case::Case;

/// The pod being acted on, and how a refusal is reported.
pub mod case;
/// The Eviction API call and its PDB backoff.
pub mod evict;
/// What the pod's containers died of.
pub mod evidence;
/// Why a pod is left alone, waits, or is given up on.
pub mod report;
/// Rollout restart and scale of the pod's Deployment.
pub mod workload;

/// Take the governing policy's action (or, in dry-run / `none`, report it).
pub(crate) async fn act(
    ctx: &Context,
    gov: &Governed<'_>,
    pod: &Pod,
    pod_ref: &ObjectReference,
    workload: Option<&Workload>,
    (reason, observed): (Reason, &Observed),
    now: Timestamp,
) -> Result<Action> {
    let action = gov.policy.action;
    let why = match (reason, &observed.leak, observed.error_ratio, &observed.pool) {
        (Reason::MemoryLeak, Some(l), _, _) => format!("{}: {}", reason.label(), l.describe()),
        (Reason::PoolExhausted, _, _, Some(p)) => format!("{}: {}", reason.label(), p.describe()),
        (Reason::ErrorRate, _, Some(r), _) => format!(
            "{}: the policy's query answered {r:.3}, over {}",
            reason.label(),
            gov.policy.error_rate.unwrap_or_default()
        ),
        _ => reason.label().to_owned(),
    };
    let owner_name = workload.map_or_else(|| "none".to_owned(), |w| w.key.to_string());
    let name = pod.name_any();
    let case = Case {
        ctx,
        gov,
        pod_ref,
        workload,
        action,
        reason,
        now,
        ns: pod.namespace().unwrap_or_default(),
        uid: pod.uid().unwrap_or_default(),
        restarts: policy::total_restarts(pod),
        why,
        by: gov.describe(),
        what: action.target(&name, &owner_name),
        owner_name,
        name,
    };
    let Case {
        restarts,
        why,
        by,
        what,
        owner_name,
        name,
        ..
    } = &case;

    let execution = policy::execution(
        &gov.policy,
        ctx.cfg.dry_run,
        workload.map(|w| w.key.kind.as_str()),
    );
    if matches!(execution, Execution::Unsupported(_)) {
        let note = format!(
            "{why} ({restarts} restarts) but action {} supports Deployments only and the owner is {owner_name} ({by})",
            action.spec_name()
        );
        case.refuse("unsupported_owner", "unsupported", note).await;
        return Ok(Action::await_change());
    }
    // Evidence first: the evicted pod takes its logs with it.
    let evidence = evidence::evidence(ctx, pod, &case.ns, name).await;

    let dry_run = matches!(execution, Execution::DryRun(_));
    if dry_run || execution == Execution::Observe {
        let note = if execution == Execution::Observe {
            case.count("observed");
            format!("observed: {why} ({restarts} restarts); action none, nothing changed ({by})")
        } else {
            case.count("dry_run");
            format!("dry-run: would {what} ({why}, {restarts} restarts) ({by})")
        };
        info!(workload = %owner_name, reason = reason.label(), restarts, action = action.label(), "{note}");
        let (event_reason, event_action) = action.event_names();
        ctx.events
            .publish_both(
                pod_ref,
                workload,
                (
                    EventType::Normal,
                    event_reason,
                    if dry_run { "DryRun" } else { event_action },
                ),
                note.clone(),
                format!("pod {name}: {note}. {evidence}"),
            )
            .await;
        case.record_done(true);
        return Ok(Action::await_change());
    }
    match (action, workload) {
        (policy::Action::RolloutRestart | policy::Action::ScaleTo(_), Some(w)) => {
            case.patch_workload(w, &evidence).await
        }
        _ => case.evict(&evidence).await,
    }
}
