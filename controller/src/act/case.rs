//! The pod being acted on (`Case`): who decides, what is wrong, the words the Events use, and
//! the bookkeeping every action shares (the reserved recycle slot, the outcome metric, the
//! policy's record). A refused action is reported once per pod and cause.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{debug, warn};

use super::Outcome;

use crate::context::Context;
use crate::explain::{Evidence, Explanation};
use crate::healing_policy::resource::LastAction;
use crate::owner::Workload;
use crate::policy::{self, Reason};
use crate::watched::Governed;
use crate::{Error, Result};

/// One pod being acted on: who decides, what is wrong, and the words the Events use.
pub(crate) struct Case<'a> {
    pub(crate) ctx: &'a Context,
    pub(crate) gov: &'a Governed<'a>,
    pub(crate) pod: &'a Arc<Pod>,
    pub(crate) pod_ref: &'a ObjectReference,
    pub(crate) workload: Option<&'a Workload>,
    pub(crate) action: policy::Action,
    pub(crate) reason: Reason,
    pub(crate) now: Timestamp,
    pub(crate) ns: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) restarts: u32,
    /// The trigger, and for a leak what was measured and when the limit is due.
    pub(crate) why: String,
    /// `Kind/namespace/name` of the workload, or `none`.
    pub(crate) owner_name: String,
    /// The policy deciding, in words.
    pub(crate) by: String,
    /// What the action does, in words.
    pub(crate) what: String,
}

impl Case<'_> {
    /// Give back the recycle slot reserved for the workload (the action did not happen).
    pub(crate) fn unreserve(&self) {
        if let Some(w) = self.workload {
            self.ctx.history.lock().unrecord(&w.key, self.now);
        }
    }

    /// `healing_actions_total{action, outcome}`.
    pub(crate) fn count(&self, outcome: &str) {
        self.ctx
            .metrics
            .healing_actions_total
            .with_label_values(&[self.action.label(), outcome])
            .inc();
    }

    /// Record the action in the governing HealingPolicy's status.
    pub(crate) fn record_done(&self, dry_run: bool) {
        let (action, reason, now) = (self.action, self.reason, self.now);
        self.ctx.record(self.gov.source.as_ref(), |r| {
            r.acted(
                LastAction {
                    action: action.spec_name().into(),
                    pod: self.name.clone(),
                    workload: self.owner_name.clone(),
                    reason: reason.label().into(),
                    dry_run,
                    time: Time(now),
                    summary: format!(
                        "{}{} ({})",
                        if dry_run { "dry-run: " } else { "" },
                        self.what,
                        reason.label()
                    ),
                },
                now,
            );
        });
        if !dry_run {
            // The pod is on its way out (evicted, or replaced by the rollout): `reconcile` leaves
            // it alone until the watch shows it terminating (see `State::acted`).
            self.ctx.state().acted.insert(self.uid.clone(), self.now);
        }
    }

    /// Record a failed action in the governing HealingPolicy's status.
    pub(crate) fn record_failed(&self, message: String) {
        self.ctx
            .record(self.gov.source.as_ref(), |r| r.failed(message));
    }

    /// The action's API call (`what`) failed with `e`: the slot is given back. A 404 (pod or
    /// Deployment gone meanwhile) ends the case quietly; anything else is counted, recorded in
    /// the policy's status and returned as `wrap(e)`, for the reconciler's backoff.
    pub(crate) fn failed(
        &self,
        e: kube::Error,
        what: &str,
        wrap: fn(kube::Error) -> Error,
    ) -> Result<Outcome> {
        self.unreserve();
        if let kube::Error::Api(status) = &e
            && status.code == 404
        {
            debug!(target_of = what, "gone before the action");
            return Ok(Outcome::silent(Action::await_change()));
        }
        self.count("failed");
        self.record_failed(format!("{what} failed: {e}"));
        Err(wrap(e))
    }

    /// Events about this pod (`note` on it, naming it on the owner) carrying `evidence`.
    pub(crate) fn explanation(
        &self,
        event: (EventType, &'static str, &'static str),
        note: String,
        evidence: Evidence,
    ) -> Explanation {
        Explanation::about_pod(self.pod, self.pod_ref, self.workload, event, note)
            .with_evidence(evidence)
    }

    /// An action this pod's case refuses: the slot given back, the policy Degraded every time;
    /// `not_recycled_total{reason=label}` and a `NotRecycled` Warning on the pod and its owner
    /// once per pod and cause.
    pub(crate) async fn refuse(&self, label: &'static str, outcome: &'static str, note: String) {
        self.unreserve();
        self.count(outcome);
        let ctx = self.ctx;
        if ctx.first_report(self.gov, &self.uid, label) {
            ctx.metrics
                .not_recycled_total
                .with_label_values(&[label])
                .inc();
            warn!(reason = label, "{note}");
            let e = self.explanation(
                (EventType::Warning, "NotRecycled", "Skip"),
                note.clone(),
                Evidence::None,
            );
            ctx.explainer.explain(e).await;
        }
        self.record_failed(note);
    }
}
