//! The decisions that do not act, said once each: a pod left alone (`Skip`), deferred (`Wait`)
//! or whose workload is given up on (`GiveUp`) gets a `NotRecycled`/`GivingUp` Event on the pod
//! and its owner and a `not_recycled_total`/`giveups_total` count. The Events (and the give-up's
//! evidence) are published by [`crate::explain`], off the reconcile.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use crate::context::Context;
use crate::explain::{Evidence, Explanation};
use crate::owner::Workload;
use crate::policy::{self, Reason, SkipReason, WaitCause};
use crate::watched::Governed;

/// The pod a decision is about, and who decided.
pub(crate) struct Subject<'a> {
    pub(crate) pod: &'a Arc<Pod>,
    pub(crate) pod_ref: &'a ObjectReference,
    pub(crate) workload: Option<&'a Workload>,
    pub(crate) gov: &'a Governed<'a>,
}

impl Subject<'_> {
    /// Events of `type_`/`reason`/`action` with `note` on the pod and, naming it, its owner.
    fn explanation(
        &self,
        event: (EventType, &'static str, &'static str),
        note: String,
    ) -> Explanation {
        Explanation::about_pod(self.pod, self.pod_ref, self.workload, event, note)
    }

    /// True the first time `label` is said about this pod under its policy.
    fn first_report(&self, ctx: &Context, label: &'static str) -> bool {
        ctx.first_report(self.gov, &self.pod.uid().unwrap_or_default(), label)
    }

    /// `not_recycled_total{reason=label}` and a `NotRecycled` Event (`action`) on the pod and
    /// its owner.
    async fn not_recycled(
        &self,
        ctx: &Context,
        label: &'static str,
        action: &'static str,
        note: String,
    ) {
        ctx.metrics
            .not_recycled_total
            .with_label_values(&[label])
            .inc();
        let e = self.explanation((EventType::Normal, "NotRecycled", action), note);
        ctx.explainer.explain(e).await;
    }
}

/// An unhealthy pod left alone (opted out, bare pod, restarts in the past): said once.
pub(crate) async fn skipped(ctx: &Context, s: &Subject<'_>, skip: SkipReason) {
    if !skip.is_reported() || !s.first_report(ctx, skip.label()) {
        return;
    }
    let restarts = policy::total_restarts(s.pod);
    info!(restarts, cause = skip.label(), "not recycling pod");
    let note = format!(
        "{restarts} restarts; not recycled: {} ({})",
        skip.describe(),
        s.gov.describe()
    );
    s.not_recycled(ctx, skip.label(), "Skip", note).await;
}

/// An unhealthy pod that has to wait (age, cooldown, window cap, min healthy): said once.
pub(crate) async fn deferred(
    ctx: &Context,
    s: &Subject<'_>,
    reason: Reason,
    cause: WaitCause,
    until: Timestamp,
) {
    let label = cause.label();
    if !s.first_report(ctx, label) {
        return;
    }
    let restarts = policy::total_restarts(s.pod);
    info!(restarts, reason = reason.label(), cause = label, %until, "recycle deferred");
    let note = format!(
        "{} ({restarts} restarts); not recycled yet: {}; next check at {until} ({})",
        reason.label(),
        cause.describe(),
        s.gov.describe()
    );
    s.not_recycled(ctx, label, "Wait", note).await;
}

/// The workload was recycled `max_retries` times and the pod is still unhealthy: say so once per
/// give-up, with the evidence, and count it.
pub(crate) async fn gave_up(
    ctx: &Context,
    s: &Subject<'_>,
    reason: Reason,
    recycles: u32,
    now: Timestamp,
) {
    let first = s
        .workload
        .is_some_and(|w| ctx.history.lock().mark_gave_up(&w.key, now));
    if !first {
        return;
    }
    ctx.metrics.giveups_total.inc();
    ctx.record(s.gov.source.as_ref(), |r| r.gave_up(now));
    let owner_name = s
        .workload
        .map_or_else(|| "none".to_owned(), |w| w.key.to_string());
    let restarts = policy::total_restarts(s.pod);
    warn!(workload = %owner_name, recycles, reason = reason.label(), "giving up on workload");
    let note = format!(
        "giving up: {owner_name} recycled {recycles} times (max {}, {}) and pod {} is still unhealthy ({}, {restarts} restarts); needs a human",
        s.gov.policy.max_retries,
        s.gov.describe(),
        s.pod.name_any(),
        reason.label()
    );
    let e = s
        .explanation((EventType::Warning, "GivingUp", "GiveUp"), note.clone())
        .owner_note(note)
        .with_evidence(Evidence::OnBoth);
    ctx.explainer.explain(e).await;
}
