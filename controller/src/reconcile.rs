//! One reconcile of one pod: bookkeeping (restart rate, backoff), the governing policy, what the
//! signal sources observed (judged here, once, by each healer's rule), the pure decision
//! ([`crate::policy::decide()`]), then [`crate::act`] carries it out or reports it. Nothing is
//! read from the API server before the action: the owner comes from the cache or the pod's names
//! ([`crate::owner::OwnerResolver::resolve_fast`]), and the Events and evidence follow the action
//! ([`crate::explain`]). Terminating pods go to the zombie reaper.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{debug, instrument, warn};

use crate::act;
use crate::act::report::{self, Subject};
use crate::context::Context;
use crate::healing_policy::selection;
use crate::policy::{self, Decision, Observed, Policy};
use crate::{Error, Result};

/// How long a pod acted on is left alone while its deletion is expected (see `State::acted`).
const ACTED_SETTLE: SignedDuration = SignedDuration::from_secs(120);

/// Per-pod bookkeeping (dedup, backoff) is dropped when it grows past this.
const BOOKKEEPING_MAX: usize = 20_000;

fn to_std(d: SignedDuration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// A failed reconcile: counted, and the pod requeued with exponential backoff.
pub(crate) fn error_policy(pod: Arc<Pod>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors_total
        .with_label_values(&[err.metric_label()])
        .inc();
    let uid = pod.uid().unwrap_or_default();
    let attempt = {
        let mut st = ctx.state();
        let n = st.failures.entry(uid).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = ctx.backoff(attempt);
    warn!(pod = %pod.name_any(), error = %err, attempt, ?delay, "reconcile failed, backing off");
    Action::requeue(delay)
}

#[instrument(skip_all, fields(pod = %pod.name_any(), namespace = pod.namespace().unwrap_or_default()))]
/// Reconcile one pod: decide, then act or say why not.
pub(crate) async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.time_reconcile();
    let now = Timestamp::now();
    // NB: the actions and Events need both; a pod without them is an error, not a skip.
    pod.namespace().ok_or(Error::MissingField("namespace"))?;
    pod.metadata
        .name
        .as_ref()
        .ok_or(Error::MissingField("name"))?;
    let uid = pod.uid().ok_or(Error::MissingField("uid"))?;
    let restarts = policy::total_restarts(&pod);

    let recent = {
        let mut st = ctx.state();
        st.reconciles += 1;
        if st.reconciles.is_multiple_of(1000) {
            let keep = ctx.policy().rate_window.max(ctx.policy().giveup_window);
            st.restarts.prune(now, ctx.policy().rate_window * 2);
            ctx.history.lock().prune(now, keep);
            if st.reported.len() + st.failures.len() + st.blocked.len() + st.acted.len()
                > BOOKKEEPING_MAX
            {
                st.reported.clear();
                st.failures.clear();
                st.blocked.clear();
                st.acted.clear();
            }
        }
        st.restarts
            .observe(&uid, now, restarts, ctx.policy().rate_window)
    };

    // Followers keep the cache and the restart rates warm, and act only once they lead.
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }
    if !ctx.policies_synced.load(Ordering::Relaxed) {
        // The HealingPolicies are not listed yet: the default could be the wrong policy.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if !ctx.history.is_ready() {
        // The stored recycle history is not read yet: a cooldown could be forgotten.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Terminating pods are the zombie reaper's (never a healing policy's).
    if pod.metadata.deletion_timestamp.is_some() {
        if policy::opted_out(&pod) {
            return Ok(Action::await_change());
        }
        return ctx.reaper.handle(&pod, now).await;
    }
    // NB: this controller acted on this pod moments ago, and the watch has not shown it
    // terminating yet: the copies still arriving (status updates written before the eviction,
    // or the pod a rollout has not reached) must not be decided on again — that would count the
    // same crash loop twice. After ACTED_SETTLE without a deletion, decide afresh.
    let acted_at = ctx.state().acted.get(&uid).copied();
    if let Some(settled) = acted_at.map(|at| at + ACTED_SETTLE).filter(|t| *t > now) {
        debug!(%settled, "acted on this pod already; waiting for its deletion");
        return Ok(Action::requeue(to_std(settled.duration_since(now))));
    }
    let gov = match ctx.watched.governing(&pod) {
        Ok(g) => g,
        Err((hp, e)) => {
            // NB: never fall back to the default for a pod its policy meant to govern.
            warn!(policy = %selection::key(&hp), error = %e, "healing policy unusable, pod left alone");
            ctx.record(Some(&hp), |r| r.failed(e.to_string()));
            return Ok(Action::await_change());
        }
    };
    let pol: &Policy = &gov.policy;
    let observed = Observed {
        recent_restarts: recent,
        leak: pol
            .memory_trend
            .as_ref()
            .and_then(|rule| ctx.signals.leak(&pod, rule, now)),
        error_ratio: pol.error_rate.and_then(|_| ctx.error_ratio(&gov, now)),
        pool: ctx.pool_exhaustion(&gov, &pod, now),
    };
    // NB: a pod over the lifetime threshold whose restarts are history goes on to `decide`,
    // which says once why it is left alone (`restarts_in_the_past`).
    if pod.metadata.deletion_timestamp.is_some()
        || (policy::trigger(&pod, pol, &observed, now).is_none()
            && !policy::lifetime_over_threshold(&pod, pol))
    {
        {
            let mut st = ctx.state();
            st.failures.remove(&uid);
            // NB: `blocked` stays: a crash-looping pod's trigger flickers between crashes, and
            // clearing the PDB backoff then would retry the eviction every second for ever.
            st.reported.remove(&uid);
        }
        // A trigger pending on time alone (notReadyFor, image-pull grace) sends no pod change.
        return Ok(match policy::next_check(&pod, pol, now) {
            Some(at) if pod.metadata.deletion_timestamp.is_none() => {
                Action::requeue(to_std(at.duration_since(now)) + Duration::from_millis(250))
            }
            _ => Action::await_change(),
        });
    }

    // NB: no API read before the action: the owner comes from the cache or the pod's names;
    // its exact reference (for the Event on it) is looked up after, by `explain`.
    let workload = if policy::has_controller(&pod) {
        ctx.owners.resolve_fast(&pod).await?
    } else {
        None
    };
    let siblings = if pol.min_healthy > 0 {
        ctx.watched.healthy_siblings(&pod)
    } else {
        0
    };
    let decision = {
        let mut st = ctx.state();
        // NB: lock order: `state`, then `history` (never the other way round).
        let mut recycled = ctx.history.lock();
        let history = workload
            .as_ref()
            .map(|w| recycled.get(&w.key))
            .unwrap_or_default();
        let decision = policy::decide(&pod, pol, &history, &observed, siblings, now);
        // A PodDisruptionBudget refused this pod's eviction: no new try before the backoff
        // delay, however often the pod changes meanwhile.
        let retry_at = st
            .blocked
            .get(&uid)
            .map(|(_, at)| *at)
            .filter(|at| *at > now);
        if let (Decision::Act { .. }, Some(at)) = (&decision, retry_at) {
            drop((st, recycled));
            debug!(%at, "eviction refused earlier; waiting out the backoff");
            return Ok(Action::requeue(
                to_std(at.duration_since(now)) + Duration::from_millis(250),
            ));
        }
        if let (Decision::Act { .. }, Some(w)) = (&decision, &workload) {
            // Reserve the slot now so a sibling pod reconciled concurrently sees the cooldown.
            recycled.record(&w.key, now);
        }
        st.failures.remove(&uid);
        decision
    };
    let pod_ref = pod.object_ref(&());

    let subject = Subject {
        pod: &pod,
        pod_ref: &pod_ref,
        workload: workload.as_ref(),
        gov: &gov,
    };
    match decision {
        Decision::Skip(skip) => {
            report::skipped(&ctx, &subject, skip).await;
            Ok(Action::await_change())
        }
        Decision::Wait {
            reason,
            cause,
            until,
        } => {
            report::deferred(&ctx, &subject, reason, cause, until).await;
            // NB: a little past `until` so the recheck does not land just before it.
            Ok(Action::requeue(
                to_std(until.duration_since(now)) + Duration::from_millis(250),
            ))
        }
        Decision::GiveUp { reason, recycles } => {
            report::gave_up(&ctx, &subject, reason, recycles, now).await;
            Ok(Action::await_change())
        }
        Decision::Act { action, reason } => {
            act::act(
                &ctx,
                &gov,
                (&pod, &pod_ref),
                workload.as_ref(),
                (action, reason, &observed),
                now,
            )
            .await
        }
    }
}
