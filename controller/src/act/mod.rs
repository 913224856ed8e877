//! Carrying out a decision to act on an unhealthy pod: the governing policy's action (evict,
//! rollout restart, scale), or in dry-run and for action `none` a report of it; and the metrics,
//! policy records and Events that say what was done or refused.
//!
//! React first, then explain: [`plan`] puts the action's API call before everything that only
//! explains it, and the explanation (the exact owner, the evidence, the Events) is handed to
//! [`crate::explain`], which publishes it in a task of its own. Nothing is read from the API
//! server between the decision and the action.
//!
//! - [`crate::act::evict`]: the Eviction API (PodDisruptionBudgets honoured, a refusal backs off);
//! - [`crate::act::workload`]: a rollout restart or a scale of the pod's Deployment;
//! - [`crate::act::report`]: the pods left alone, deferred or given up on.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::info;

use crate::Result;
use crate::context::Context;
use crate::explain::{Evidence, Explanation};
use crate::owner::Workload;
use crate::policy::{self, Execution, Observed, Reason};
use crate::watched::Governed;
use case::Case;

/// The pod being acted on, and how a refusal is reported.
pub mod case;
/// The Eviction API call and its PDB backoff.
pub mod evict;
/// Why a pod is left alone, waits, or is given up on.
pub mod report;
/// Rollout restart and scale of the pod's Deployment.
pub mod workload;

/// One step of carrying out a decision to act, in the order [`plan`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Say why the action cannot be taken (nothing changes, nothing to explain).
    Refuse,
    /// Count and record an action that is only reported (dry-run, action `none`).
    Report,
    /// The API call that heals: evict, patch, scale.
    Act,
    /// Hand the Events and their evidence to [`crate::explain`] (off the reconcile).
    Explain,
}

/// The steps for `execution`, in order. Pure. The evidence is gathered by [`Step::Explain`]
/// only, which always comes after [`Step::Act`]: the reaction is not kept waiting for it.
pub(crate) fn plan(execution: Execution) -> &'static [Step] {
    match execution {
        Execution::Unsupported(_) => &[Step::Refuse],
        Execution::Act(_) => &[Step::Act, Step::Explain],
        Execution::DryRun(_) | Execution::Observe => &[Step::Report, Step::Explain],
    }
}

/// What an action step returns: when to look at the pod again, and the Events to publish.
pub(crate) struct Outcome {
    pub(crate) requeue: Action,
    pub(crate) explain: Option<Explanation>,
}

impl Outcome {
    /// Nothing to say.
    pub(crate) fn silent(requeue: Action) -> Self {
        Self {
            requeue,
            explain: None,
        }
    }

    /// Then publish `explain`.
    pub(crate) fn explained(requeue: Action, explain: Explanation) -> Self {
        Self {
            requeue,
            explain: Some(explain),
        }
    }
}

/// Take `action`, the governing policy's (or, in dry-run / `none`, report it), then explain it.
pub(crate) async fn act(
    ctx: &Context,
    gov: &Governed<'_>,
    (pod, pod_ref): (&Arc<Pod>, &ObjectReference),
    workload: Option<&Workload>,
    (action, reason, observed): (policy::Action, Reason, &Observed),
    now: Timestamp,
) -> Result<Action> {
    let owner_name = workload.map_or_else(|| "none".to_owned(), |w| w.key.to_string());
    let name = pod.name_any();
    let case = Case {
        ctx,
        gov,
        pod,
        pod_ref,
        workload,
        action,
        reason,
        now,
        ns: pod.namespace().unwrap_or_default(),
        uid: pod.uid().unwrap_or_default(),
        restarts: policy::total_restarts(pod),
        why: why(gov, reason, observed),
        by: gov.describe(),
        what: action.target(&name, &owner_name),
        owner_name,
        name,
    };
    let execution = policy::execution(
        &gov.policy,
        ctx.cfg.dry_run,
        workload.map(|w| w.key.kind.as_str()),
    );
    let mut outcome = Outcome::silent(Action::await_change());
    for step in plan(execution) {
        match step {
            Step::Refuse => refuse_unsupported(&case).await,
            Step::Report => outcome = report_only(&case, execution),
            Step::Act => {
                outcome = match (action, workload) {
                    (policy::Action::RolloutRestart | policy::Action::ScaleTo(_), Some(w)) => {
                        case.patch_workload(w).await?
                    }
                    _ => case.evict().await?,
                };
            }
            Step::Explain => {
                if let Some(e) = outcome.explain.take() {
                    ctx.explainer.explain(e).await;
                }
            }
        }
    }
    Ok(outcome.requeue)
}

/// The trigger in words, with what was measured for the signals that measure.
fn why(gov: &Governed<'_>, reason: Reason, observed: &Observed) -> String {
    match (reason, &observed.leak, observed.error_ratio, &observed.pool) {
        (Reason::MemoryLeak, Some(l), _, _) => format!("{}: {}", reason.label(), l.describe()),
        (Reason::PoolExhausted, _, _, Some(p)) => format!("{}: {}", reason.label(), p.describe()),
        (Reason::ErrorRate, _, Some(r), _) => format!(
            "{}: the policy's query answered {r:.3}, over {}",
            reason.label(),
            gov.policy.error_rate.unwrap_or_default()
        ),
        _ => reason.label().to_owned(),
    }
}

/// Restart and scale apply to Deployments only.
async fn refuse_unsupported(case: &Case<'_>) {
    let note = format!(
        "{} ({} restarts) but action {} supports Deployments only and the owner is {} ({})",
        case.why,
        case.restarts,
        case.action.spec_name(),
        case.owner_name,
        case.by
    );
    case.refuse("unsupported_owner", "unsupported", note).await;
}

/// Dry-run or action `none`: count and record what would be done; the Events say it.
fn report_only(case: &Case<'_>, execution: Execution) -> Outcome {
    let (action, reason, restarts, why, by) =
        (case.action, case.reason, case.restarts, &case.why, &case.by);
    let dry_run = matches!(execution, Execution::DryRun(_));
    let note = if dry_run {
        case.count("dry_run");
        format!(
            "dry-run: would {} ({why}, {restarts} restarts) ({by})",
            case.what
        )
    } else {
        case.count("observed");
        format!("observed: {why} ({restarts} restarts); action none, nothing changed ({by})")
    };
    info!(workload = %case.owner_name, reason = reason.label(), restarts, action = action.label(), "{note}");
    case.record_done(true);
    let (event_reason, event_action) = action.event_names();
    let event_action = if dry_run { "DryRun" } else { event_action };
    Outcome::explained(
        Action::await_change(),
        case.explanation(
            (EventType::Normal, event_reason, event_action),
            note,
            Evidence::OnOwner,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Action as Do;

    #[test]
    fn the_action_comes_before_the_evidence_and_nothing_is_read_before_it() {
        for execution in [
            Execution::Act(Do::Evict),
            Execution::Act(Do::RolloutRestart),
            Execution::Act(Do::ScaleTo(0)),
        ] {
            let steps = plan(execution);
            assert_eq!(steps.first(), Some(&Step::Act), "{execution:?}: {steps:?}");
            let act = steps.iter().position(|s| *s == Step::Act);
            let explain = steps.iter().position(|s| *s == Step::Explain);
            assert!(
                act < explain,
                "{execution:?}: evidence before the action: {steps:?}"
            );
        }
    }

    #[test]
    fn reports_are_explained_and_refusals_are_not() {
        assert_eq!(
            plan(Execution::DryRun(Do::Evict)),
            &[Step::Report, Step::Explain]
        );
        assert_eq!(plan(Execution::Observe), &[Step::Report, Step::Explain]);
        assert_eq!(
            plan(Execution::Unsupported(Do::ScaleTo(1))),
            &[Step::Refuse]
        );
    }

    /// The requests the scripted API server got, as "METHOD path", in order.
    type Seen = Arc<std::sync::Mutex<Vec<String>>>;

    /// A scripted API server: records `METHOD path` of every request, in order, and answers
    /// what an eviction with evidence needs.
    fn api_server() -> (kube::Client, Seen) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let log = log.clone();
            async move {
                let line = format!("{} {}", req.method(), req.uri().path());
                let body = req.into_body().collect_bytes().await?;
                let entry = if line.contains("/events") {
                    format!("{line} {}", String::from_utf8_lossy(&body))
                } else {
                    line.clone()
                };
                log.lock().expect("not poisoned").push(entry);
                let json = |v: serde_json::Value| v.to_string().into_bytes();
                let (status, out) = if line.ends_with("/eviction") {
                    (
                        201,
                        json(
                            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                        ),
                    )
                } else if line.contains("/replicasets/") {
                    (
                        200,
                        json(serde_json::json!({
                            "apiVersion": "apps/v1", "kind": "ReplicaSet",
                            "metadata": {"name": "web-7d9", "namespace": "shop", "uid": "uid-rs",
                                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "web", "uid": "uid-deployment", "controller": true}]},
                        })),
                    )
                } else if line.ends_with("/log") {
                    (200, b"panic: out of connections".to_vec())
                } else {
                    // Events: echo what was sent.
                    (201, body.to_vec())
                };
                let resp = http::Response::builder()
                    .status(status)
                    .body(kube::client::Body::from(out))
                    .expect("a response");
                Ok::<_, kube::Error>(resp)
            }
        });
        (kube::Client::new(service, "default"), seen)
    }

    /// A synced, leading controller (policies off, `flags` added) talking to [`api_server`],
    /// and a crash-looping pod of ReplicaSet web-7d9 that is an hour old.
    fn leader_and_sick_pod(
        flags: &[&str],
    ) -> (
        Arc<crate::context::Context>,
        Arc<crate::metrics::Metrics>,
        Seen,
        k8s_openapi::api::core::v1::Pod,
    ) {
        use crate::config::Config;
        use crate::context::Context;
        use crate::fixtures::pod;
        use crate::leader::Leadership;
        use crate::metrics::Metrics;
        use clap::Parser;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        use std::sync::atomic::Ordering;

        let (client, seen) = api_server();
        let args = ["selfheal-controller", "--healing-policies=false"];
        let cfg = Config::try_parse_from(args.iter().chain(flags)).expect("flags parse");
        let metrics = Arc::new(Metrics::new());
        let ctx = Arc::new(Context::new(
            client,
            cfg,
            metrics.clone(),
            Leadership::always(),
        ));
        ctx.policies_synced.store(true, Ordering::Relaxed);
        ctx.history.set_ready(true);
        let mut sick = pod()
            .with_restarts(9)
            .last_terminated("Error", 2)
            .waiting("CrashLoopBackOff")
            .owned_by_rs("web-7d9")
            .labelled("pod-template-hash", "7d9")
            .build();
        sick.metadata.creation_timestamp = Some(Time(
            Timestamp::now() - std::time::Duration::from_secs(3600),
        ));
        (ctx, metrics, seen, sick)
    }

    #[tokio::test]
    async fn the_eviction_is_the_first_request_and_the_evidence_follows_it() {
        let (ctx, metrics, seen, sick) = leader_and_sick_pod(&["--log-evidence=true"]);

        crate::reconcile::reconcile(Arc::new(sick), ctx.clone())
            .await
            .expect("reconciled");
        let at_return = seen.lock().expect("not poisoned").clone();
        ctx.explainer.drain(std::time::Duration::from_secs(5)).await;
        let all = seen.lock().expect("not poisoned").clone();

        // React first: nothing was read before the eviction, which is the first request.
        assert_eq!(
            at_return.first().map(String::as_str),
            Some("POST /api/v1/namespaces/shop/pods/web-abc/eviction"),
            "{all:#?}"
        );
        let evicted = all.iter().position(|l| l.ends_with("/eviction"));
        for read in ["/replicasets/web-7d9", "/pods/web-abc/log"] {
            let at = all.iter().position(|l| l.ends_with(read));
            assert!(
                at.is_some() && at > evicted,
                "{read} not after the eviction: {all:#?}"
            );
        }
        // Then explain: the Events went out, evidence counted, the action counted once.
        assert!(
            all.iter()
                .filter(|l| l.starts_with("POST") && l.contains("/events"))
                .count()
                >= 2,
            "{all:#?}"
        );
        let on_owner = all
            .iter()
            .find(|l| l.contains("/events") && l.contains("uid-deployment"))
            .unwrap_or_else(|| panic!("no Event on the looked-up Deployment: {all:#?}"));
        assert!(
            on_owner.contains("log tail of app: panic: out of connections")
                && on_owner.contains("last terminated Error (exit 2)"),
            "{on_owner}"
        );
        let text = metrics.encode();
        assert!(text.contains("evidence_total{result=\"ok\"} 1"), "{text}");
        assert!(
            text.contains("recycles_total{namespace=\"shop\",reason=\"crash_loop_back_off\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_pod_acted_on_is_not_decided_again_before_the_cache_sees_the_action() {
        let (ctx, metrics, seen, mut sick) = leader_and_sick_pod(&["--max-retries=1"]);
        sick.metadata.resource_version = Some("41".into());
        let sick = Arc::new(sick);

        // The queued reconcile runs on the same cached copy before the watch brings the eviction.
        for _ in 0..2 {
            crate::reconcile::reconcile(sick.clone(), ctx.clone())
                .await
                .expect("reconciled");
        }
        ctx.explainer.drain(std::time::Duration::from_secs(5)).await;
        let all = seen.lock().expect("not poisoned").clone();
        let evictions = all.iter().filter(|l| l.ends_with("/eviction")).count();
        assert_eq!(evictions, 1, "{all:#?}");
        assert!(
            !all.iter()
                .any(|l| l.contains("GivingUp") || l.contains("NotRecycled")),
            "the stale copy was decided on again: {all:#?}"
        );
        assert_eq!(metrics.giveups_total.get(), 0);

        // A newer copy without a deletion (a status update the kubelet wrote before the
        // eviction, arriving after it) is not decided on either.
        let mut newer = (*sick).clone();
        newer.metadata.resource_version = Some("42".into());
        crate::reconcile::reconcile(Arc::new(newer), ctx.clone())
            .await
            .expect("reconciled");
        ctx.explainer.drain(std::time::Duration::from_secs(5)).await;
        let all = seen.lock().expect("not poisoned").clone();
        assert_eq!(all.iter().filter(|l| l.ends_with("/eviction")).count(), 1);
        assert_eq!(metrics.giveups_total.get(), 0, "{all:#?}");
    }
}
