//! React first, then explain. The Events that say what was done (and the evidence they carry)
//! are published here, after the action and off the reconcile: the reconcile returns as soon as
//! the API server accepted the eviction, patch or scale, and the next pod is not kept waiting for
//! a log read, an owner lookup or an Event write.
//!
//! Each [`Explanation`] runs in its own task, at most [`MAX_IN_FLIGHT`] at a time. It looks up the
//! exact owner when the reconciler only derived it from names ([`crate::owner::Workload::is_derived`]),
//! gathers the evidence ([`crate::explain::evidence`]; the evicted pod stays readable during its grace
//! period), then publishes the Events. When every slot is taken the Events are published at once,
//! with the evidence read off the pod only (no log). A failed lookup or log read never touches the
//! action: it is said in the Event, logged, and counted in `evidence_total{result}`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use evidence::LogTail;

/// What the pod's containers died of.
pub mod evidence;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::owner::{OwnerResolver, Workload};

/// Explanations gathered at once; past this the Events go out without a log tail.
pub(crate) const MAX_IN_FLIGHT: u32 = 64;

/// Which Events of an [`Explanation`] carry the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Evidence {
    /// Neither (a refusal, a deferral: nothing died of it).
    None,
    /// The owner's (the pod's Event is about the pod itself).
    OnOwner,
    /// Both (giving up: a human reads either).
    OnBoth,
}

/// The Events about one pod that an action or decision produced, to publish after it.
#[derive(Debug, Clone)]
pub(crate) struct Explanation {
    /// The pod (its statuses are the evidence, its name the log to read).
    pub(crate) pod: Arc<Pod>,
    pub(crate) pod_ref: ObjectReference,
    /// The owner, possibly only derived from names (looked up before its Event is sent).
    pub(crate) workload: Option<Workload>,
    /// Type, reason and action of the Events.
    pub(crate) event: (EventType, &'static str, &'static str),
    pub(crate) pod_note: String,
    pub(crate) owner_note: String,
    pub(crate) evidence: Evidence,
}

impl Explanation {
    /// Events with `note` on the pod and, naming the pod, on its owner.
    pub(crate) fn about_pod(
        pod: &Arc<Pod>,
        pod_ref: &ObjectReference,
        workload: Option<&Workload>,
        event: (EventType, &'static str, &'static str),
        note: String,
    ) -> Self {
        Self {
            owner_note: format!("pod {}: {note}", pod.name_any()),
            pod: pod.clone(),
            pod_ref: pod_ref.clone(),
            workload: workload.cloned(),
            event,
            pod_note: note,
            evidence: Evidence::None,
        }
    }

    /// The same, with the evidence on `which` Events.
    pub(crate) fn with_evidence(mut self, which: Evidence) -> Self {
        self.evidence = which;
        self
    }

    /// The owner's note replaced (it says more than "pod x: note").
    pub(crate) fn owner_note(mut self, note: String) -> Self {
        self.owner_note = note;
        self
    }

    /// The notes with `evidence` attached where it belongs. Pure.
    fn notes(&self, evidence: Option<&str>) -> (String, String) {
        let attach = |note: &str| match evidence {
            Some(e) => format!("{note}. {e}"),
            None => note.to_owned(),
        };
        match self.evidence {
            Evidence::None => (self.pod_note.clone(), self.owner_note.clone()),
            Evidence::OnOwner => (self.pod_note.clone(), attach(&self.owner_note)),
            Evidence::OnBoth => (attach(&self.pod_note), attach(&self.owner_note)),
        }
    }
}

/// Publishes [`Explanation`]s off the reconcile (see the module doc).
#[derive(Clone)]
pub(crate) struct Explainer {
    client: Client,
    events: Events,
    owners: Arc<OwnerResolver>,
    metrics: Arc<Metrics>,
    /// `Some` with `--log-evidence`.
    log_tail: Option<LogTail>,
    slots: Arc<Semaphore>,
}

/// What went wrong while explaining, for `evidence_total{result}`.
const OK: &str = "ok";
const OWNER_FAILED: &str = "owner_lookup_failed";
const LOG_FAILED: &str = "log_failed";
const BUSY: &str = "busy";

impl Explainer {
    /// Explainer publishing through `events`; `log_tail` when logs go into the evidence.
    pub(crate) fn new(
        client: Client,
        events: Events,
        owners: Arc<OwnerResolver>,
        metrics: Arc<Metrics>,
        log_tail: Option<LogTail>,
    ) -> Self {
        Self {
            client,
            events,
            owners,
            metrics,
            log_tail,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize)),
        }
    }

    /// Publish `e` in a task of its own and return at once; with every slot taken, publish it
    /// now without API reads (the Events are kept, the log tail is not).
    pub(crate) async fn explain(&self, e: Explanation) {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let this = self.clone();
                tokio::spawn(async move {
                    this.publish(e, true).await;
                    drop(slot);
                });
            }
            Err(_) => {
                warn!(pod = %e.pod.name_any(), "too many explanations in flight: Events sent without the log tail");
                self.count(BUSY);
                self.publish(e, false).await;
            }
        }
    }

    /// Wait (at most `grace`) for the explanations in flight, so a stopping controller does not
    /// drop the Events of its last actions.
    pub(crate) async fn drain(&self, grace: Duration) {
        if tokio::time::timeout(grace, self.slots.acquire_many(MAX_IN_FLIGHT))
            .await
            .is_err()
        {
            warn!(
                ?grace,
                "explanations still in flight at shutdown; their Events are lost"
            );
        }
    }

    async fn publish(&self, e: Explanation, lookups: bool) {
        let owner = async {
            match &e.workload {
                Some(w) if lookups && w.is_derived() => match self.owners.resolve(&e.pod).await {
                    Ok(exact) => {
                        if exact.as_ref().map(|x| &x.key) != Some(&w.key) {
                            warn!(derived = %w.key, exact = ?exact.as_ref().map(|x| x.key.to_string()), "the owner named by the pod is not its owner");
                        }
                        (exact, None)
                    }
                    Err(err) => {
                        warn!(error = %err, workload = %w.key, "owner lookup failed; Event sent without the owner's UID");
                        (e.workload.clone(), Some(OWNER_FAILED))
                    }
                },
                _ => (e.workload.clone(), None),
            }
        };
        let gathered = async {
            if e.evidence == Evidence::None {
                return (None, None);
            }
            let (text, failed) = self.evidence(&e.pod, lookups).await;
            (Some(text), failed)
        };
        let ((workload, owner_failed), (evidence, log_failed)) =
            futures::future::join(owner, gathered).await;
        self.count(owner_failed.or(log_failed).unwrap_or(OK));
        let (pod_note, owner_note) = e.notes(evidence.as_deref());
        debug!(pod = %e.pod.name_any(), reason = e.event.1, "publishing explanation");
        self.events
            .publish_both(&e.pod_ref, workload.as_ref(), e.event, pod_note, owner_note)
            .await;
    }

    /// The evidence of `pod`; the log tail only with `read_log` and `--log-evidence`.
    async fn evidence(&self, pod: &Pod, read_log: bool) -> (String, Option<&'static str>) {
        let mut parts = evidence::terminations(pod);
        let mut failed = None;
        // NB: opt-in. A log tail copied into an Event is readable by everyone who can read Events
        // in that namespace, often more people than can read the pod's logs.
        if let (Some(tail), Some(c), true) =
            (self.log_tail, evidence::most_restarted(pod), read_log)
        {
            match evidence::previous_log(&self.client, pod, c, tail).await {
                Ok(log) => parts.push(format!("log tail of {c}: {log}")),
                Err(err) => {
                    warn!(pod = %pod.name_any(), container = c, error = %err, "previous log unavailable for the evidence");
                    failed = Some(LOG_FAILED);
                    parts.push(format!("log of {c} unavailable: {err}"));
                }
            }
        }
        (evidence::render(&parts), failed)
    }

    fn count(&self, result: &str) {
        self.metrics
            .evidence_total
            .with_label_values(&[result])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pod;

    fn explanation(evidence: Evidence) -> Explanation {
        let p = Arc::new(pod().build());
        Explanation::about_pod(
            &p,
            &ObjectReference::default(),
            None,
            (EventType::Normal, "Recycled", "Evict"),
            "evicted".into(),
        )
        .with_evidence(evidence)
    }

    #[test]
    fn the_evidence_goes_on_the_events_that_ask_for_it() {
        let e = Some("container app: exit 1");
        assert_eq!(
            explanation(Evidence::None).notes(e),
            ("evicted".into(), "pod web-abc: evicted".into())
        );
        assert_eq!(
            explanation(Evidence::OnOwner).notes(e),
            (
                "evicted".into(),
                "pod web-abc: evicted. container app: exit 1".into()
            )
        );
        assert_eq!(
            explanation(Evidence::OnBoth).notes(e),
            (
                "evicted. container app: exit 1".into(),
                "pod web-abc: evicted. container app: exit 1".into()
            )
        );
    }
}
