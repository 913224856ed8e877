//! Eviction through the Eviction API, so PodDisruptionBudgets are honoured. A refusal (429) is
//! never forced: the pod is retried with exponential backoff, however often it changes meanwhile.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::SignedDuration;
use kube::Api;
use kube::api::EvictParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::Outcome;
use super::case::Case;
use crate::explain::Evidence;
use crate::{Error, Result};

impl Case<'_> {
    /// Evict the pod. The `Recycled` Events (evidence on the owner's) or `RecycleBlocked` ones
    /// are returned, to be published after.
    pub(crate) async fn evict(&self) -> Result<Outcome> {
        let Case {
            ctx,
            reason,
            restarts,
            why,
            by,
            owner_name,
            name,
            ns,
            uid,
            now,
            ..
        } = self;
        if let Err(e) = ctx.ensure_leader("an eviction") {
            self.unreserve();
            return Err(e);
        }
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        // NB: evict, not delete, so PodDisruptionBudgets are honoured.
        match api.evict(name, &EvictParams::default()).await {
            Ok(_) => {
                ctx.metrics
                    .recycles_total
                    .with_label_values(&[ns, reason.label()])
                    .inc();
                self.count("done");
                self.record_done(false);
                ctx.state().blocked.remove(uid);
                info!(workload = %owner_name, reason = reason.label(), restarts, "evicted pod");
                let note = format!(
                    "evicted ({why}, {restarts} restarts) so {owner_name} replaces it ({by})"
                );
                let explain = self
                    .explanation(
                        (EventType::Normal, "Recycled", "Evict"),
                        note,
                        Evidence::OnOwner,
                    )
                    .owner_note(format!("evicted pod {name} ({why}, {restarts} restarts)"));
                Ok(Outcome::explained(Action::await_change(), explain))
            }
            Err(kube::Error::Api(status)) if status.code == 429 => {
                self.unreserve();
                self.count("blocked");
                ctx.metrics.evictions_blocked_total.inc();
                let (attempt, delay) = {
                    let mut st = ctx.state();
                    let entry = st.blocked.entry(uid.clone()).or_insert((0, *now));
                    let attempt = entry.0.saturating_add(1);
                    let delay = ctx.backoff(attempt);
                    *entry = (
                        attempt,
                        *now + SignedDuration::try_from(delay).unwrap_or_default(),
                    );
                    (attempt, delay)
                };
                warn!(workload = %owner_name, attempt, ?delay, message = %status.message, "eviction blocked by disruption budget");
                let note = format!(
                    "eviction refused ({why}): {}; retry {attempt} in {}s, never forced",
                    status.message,
                    delay.as_secs()
                );
                let explain = self.explanation(
                    (EventType::Warning, "RecycleBlocked", "Evict"),
                    note,
                    Evidence::None,
                );
                Ok(Outcome::explained(Action::requeue(delay), explain))
            }
            Err(e) => self.failed(e, &format!("evicting {name}"), Error::EvictFailed),
        }
    }
}
