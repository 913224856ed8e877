//! Kubernetes Events: what the controller did or refused, on the object it concerns and on the
//! workload that owns it. Only the leader writes them.

use std::sync::Arc;

use futures::future;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::{debug, warn};

use crate::Error;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::owner::Workload;

/// `reportingController` of our Events.
pub const REPORTING_CONTROLLER: &str = "selfheal.io/controller";
/// Events notes are limited to 1 kB by the API server.
const NOTE_MAX_BYTES: usize = 1000;

/// Publishes the controller's Events (the leader's only; a failure is counted and logged, never
/// fatal).
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    leader: Leadership,
    metrics: Arc<Metrics>,
}

impl Events {
    /// Events reported by this process (`instance`, its pod name) while it leads.
    pub fn new(
        client: &Client,
        instance: &str,
        leader: &Leadership,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.into(),
            instance: Some(instance.to_owned()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            leader: leader.clone(),
            metrics: metrics.clone(),
        }
    }

    /// One Event on `target`.
    pub async fn publish(
        &self,
        target: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        // NB: an Event is a write too: none from a process whose leader term ran out.
        if !self.leader.is_current() {
            debug!(reason, "leader term ran out: Event not sent");
            return;
        }
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, NOTE_MAX_BYTES)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, target).await {
            let err = Error::EventFailed(e);
            self.metrics
                .reconcile_errors_total
                .with_label_values(&[err.metric_label()])
                .inc();
            warn!(error = %err, reason, object = ?target.name, "publishing event failed");
        }
    }

    /// Event on the pod and, when there is one, on its owner.
    pub async fn publish_both(
        &self,
        pod: &ObjectReference,
        owner: Option<&Workload>,
        (type_, reason, action): (EventType, &str, &str),
        pod_note: String,
        owner_note: String,
    ) {
        let on_owner = owner.map(|w| self.publish(&w.reference, type_, reason, action, owner_note));
        let on_pod = self.publish(pod, type_, reason, action, pod_note);
        match on_owner {
            Some(o) => {
                future::join(on_pod, o).await;
            }
            None => on_pod.await,
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary, with `...` when cut.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max.saturating_sub(3);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("ééééé".into(), 6), "é...");
        assert_eq!(truncate("short".into(), 10), "short");
    }
}
