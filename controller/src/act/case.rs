//! The pod being acted on (`Case`): who decides, what is wrong, the words the Events use, and
//! the bookkeeping every action shares (the reserved recycle slot, the outcome metric, the
//! policy's record). A refused action is reported once per pod and cause.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use tracing::warn;

use crate::context::Context;
use crate::healing_policy::resource::LastAction;
use crate::owner::Workload;
use crate::policy::{self, Reason};
use crate::watched::Governed;

/// One pod being acted on: who decides, what is wrong, and the words the Events use.
pub(crate) struct Case<'a> {
    pub(crate) ctx: &'a Context,
    pub(crate) gov: &'a Governed<'a>,
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
    }

    /// Record a failed action in the governing HealingPolicy's status.
    pub(crate) fn record_failed(&self, message: String) {
        self.ctx
            .record(self.gov.source.as_ref(), |r| r.failed(message));
    }

    /// An action this pod's case refuses: said once, the slot given back, the policy Degraded.
    pub(crate) async fn refuse(&self, label: &'static str, outcome: &'static str, note: String) {
        self.unreserve();
        self.count(outcome);
        refused(
            self.ctx,
            self.gov,
            &self.uid,
            label,
            (self.pod_ref, self.workload),
            note,
        )
        .await;
    }
}

/// Report a refused action once per pod and cause: `not_recycled_total{reason=label}`, a
/// `NotRecycled` Warning on the pod and its owner; the policy's status says it failed every time.
pub(crate) async fn refused(
    ctx: &Context,
    gov: &Governed<'_>,
    uid: &str,
    label: &'static str,
    (pod_ref, workload): (&ObjectReference, Option<&Workload>),
    note: String,
) {
    if ctx.first_report(gov, uid, label) {
        ctx.metrics
            .not_recycled_total
            .with_label_values(&[label])
            .inc();
        warn!(reason = label, "{note}");
        let owner_note = format!(
            "pod {}: {note}",
            pod_ref.name.as_deref().unwrap_or_default()
        );
        ctx.events
            .publish_both(
                pod_ref,
                workload,
                (EventType::Warning, "NotRecycled", "Skip"),
                note.clone(),
                owner_note,
            )
            .await;
    }
    ctx.record(gov.source.as_ref(), |r| r.failed(note));
}
