//! A rollout restart or a scale of the pod's Deployment (`rolloutRestart`, `scaleTo`). A scale
//! of a Deployment an HPA scales is refused: the two would fight over `spec.replicas`.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::info;

use super::Outcome;
use super::case::Case;
use crate::explain::Evidence;
use crate::owner::{self, Workload};
use crate::policy;
use crate::{Error, Result};

/// Pod-template annotation a `rolloutRestart` sets (what `kubectl rollout restart` does with its own).
pub const RESTARTED_AT_ANNOTATION: &str = "selfheal.io/restarted-at";

impl Case<'_> {
    /// Restart or scale the Deployment `w`. The Events saying so (evidence on the owner's) are
    /// returned, to be published after.
    pub(crate) async fn patch_workload(&self, w: &Workload) -> Result<Outcome> {
        let Case {
            ctx,
            action,
            reason,
            restarts,
            why,
            by,
            what,
            owner_name,
            name,
            ns,
            now,
            ..
        } = self;
        if let policy::Action::ScaleTo(n) = action {
            // NB: an HPA owns spec.replicas: a scale would be undone at its next sync and the two
            // would fight. Refused like the breaker refuses it; the HPA's own bounds are the fix.
            match owner::autoscaler_of(&ctx.client, ns, &w.key.name).await {
                Ok(None) => {}
                Ok(Some(hpa)) => {
                    let note = format!(
                        "{why} ({restarts} restarts) but scaleTo {n} refused: HorizontalPodAutoscaler {hpa} scales {owner_name}, a scale would fight it ({by})"
                    );
                    self.refuse("autoscaled", "refused", note).await;
                    return Ok(Outcome::silent(Action::await_change()));
                }
                Err(e) => {
                    self.unreserve();
                    self.count("failed");
                    return Err(Error::ActionFailed(e));
                }
            }
        }
        if let Err(e) = ctx.ensure_leader("a Deployment patch") {
            self.unreserve();
            return Err(e);
        }
        let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
        let pp = PatchParams::default();
        let result = match action {
            policy::Action::ScaleTo(n) => api
                .patch_scale(
                    &w.key.name,
                    &pp,
                    &Patch::Merge(serde_json::json!({ "spec": { "replicas": n } })),
                )
                .await
                .map(|_| ()),
            _ => api
                .patch(
                    &w.key.name,
                    &pp,
                    &Patch::Merge(serde_json::json!({ "spec": { "template": { "metadata": {
                        "annotations": { RESTARTED_AT_ANNOTATION: now.to_string() } } } } })),
                )
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => {
                self.count("done");
                info!(workload = %owner_name, reason = reason.label(), restarts, action = action.label(), "acted on workload");
                let note = format!("{what} ({why}, {restarts} restarts of pod {name}) ({by})");
                let (event_reason, event_action) = action.event_names();
                let explain = self
                    .explanation(
                        (EventType::Normal, event_reason, event_action),
                        note.clone(),
                        Evidence::OnOwner,
                    )
                    .owner_note(note);
                self.record_done(false);
                Ok(Outcome::explained(Action::await_change(), explain))
            }
            Err(e) => self.failed(e, what, Error::ActionFailed),
        }
    }
}
