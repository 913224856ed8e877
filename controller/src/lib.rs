//! `selfheal-controller`: heals pods and workloads — recycles pods whose containers restart too
//! often or whose signals (memory trend, error rate, pool exhaustion) say they are unhealthy,
//! reaps zombie pods, and runs CircuitBreakers — safely.
//!
//! The binary (`src/main.rs`) only wires these modules together: the pod reconciler
//! ([`run::run`] with a [`context::Context`]) and the CircuitBreakers ([`circuit_breaker::run`]
//! with [`circuit_breaker::Breakers`]) run as sibling tasks. The cluster tests in `tests/` drive
//! the same library API in-process. Layers, each importing only those below it: `run` →
//! `reconcile` → `act` → `context` → `explain` → rules, resources, signals, caches and `events`.
//! The reconciler reacts first, then explains: the action's API call comes before any evidence
//! is gathered, and the Events are published by [`explain`] in tasks of their own.

/// Carrying out a decision: evict, restart or scale, reports of pods left alone.
pub mod act;
/// CircuitBreakers: the custom resource, the state machine (pure), and the loop that runs them.
pub mod circuit_breaker;
/// Command-line flags and environment variables.
pub mod config;
/// The pod reconciler's context: client, flags, caches, observations, history, bookkeeping.
pub mod context;
/// Kubernetes Events on the objects the controller acts on and their owners.
pub mod events;
/// After an action: the exact owner, the evidence and the Events, off the reconcile.
pub mod explain;
/// One folder per healer: its pure rule and its signal source.
pub mod healers;
/// HealingPolicies: the custom resource, which policy selects a pod, and the status (pure).
pub mod healing_policy;
/// Per-workload recycle history (pure), and its ConfigMap so a failover keeps it.
pub mod history;
/// `/metrics`, `/healthz` and `/readyz` on their own port.
pub mod http;
/// Leader election on a `coordination.k8s.io/v1` Lease.
pub mod leader;
/// Prometheus metrics in the controller's own registry.
pub mod metrics;
/// Resolution of a pod's controlling workload (ReplicaSet → Deployment).
pub mod owner;
/// The pure decision: act (which action), skip, wait or give up.
pub mod policy;
/// One reconcile of one pod: decide, then act or say why not.
pub mod reconcile;
/// The pod reconciler's run: API client, watches, trimmed caches, signal sources, status writer.
pub mod run;
/// What the signal sources observed (memory samples, PromQL answers), kept for the reconciler.
pub mod signals;
/// The pod and HealingPolicy caches, and which policy governs a pod.
pub mod watched;

/// Builders for pods and policies used by the unit tests.
#[cfg(test)]
pub mod fixtures;

/// Everything that can fail in the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Eviction API call failed with something other than a PDB refusal.
    #[error("evicting pod failed: {0}")]
    EvictFailed(#[source] kube::Error),
    /// Reading the pod's owner (ReplicaSet) failed.
    #[error("resolving pod owner failed: {0}")]
    OwnerLookupFailed(#[source] kube::Error),
    /// Publishing a Kubernetes Event failed.
    #[error("publishing event failed: {0}")]
    EventFailed(#[source] kube::Error),
    /// Reading, creating or renewing the leader Lease failed.
    #[error("lease operation failed: {0}")]
    LeaseFailed(#[source] kube::Error),
    /// Restarting or scaling the pod's Deployment failed.
    #[error("healing action failed: {0}")]
    ActionFailed(#[source] kube::Error),
    /// Reading or writing a HealingPolicy's or CircuitBreaker's status failed.
    #[error("reading or writing status failed: {0}")]
    StatusFailed(#[source] kube::Error),
    /// Force-deleting a zombie pod failed.
    #[error("force-deleting pod failed: {0}")]
    ForceDeleteFailed(#[source] kube::Error),
    /// Reading the node of a Terminating pod failed.
    #[error("reading node failed: {0}")]
    NodeLookupFailed(#[source] kube::Error),
    /// Reading a PersistentVolumeClaim of a Terminating pod failed.
    #[error("reading volume claim failed: {0}")]
    ClaimLookupFailed(#[source] kube::Error),
    /// Reading a CircuitBreaker's target Deployment or the HPAs of its namespace failed.
    #[error("reading circuit breaker target failed: {0}")]
    TargetLookupFailed(#[source] kube::Error),
    /// The pod lacks a field the controller cannot do without (name or namespace).
    #[error("pod is missing {0}")]
    MissingField(&'static str),
    /// Reading or saving the recycle history ConfigMap failed.
    #[error("recycle history ConfigMap: {0}")]
    HistoryFailed(#[source] kube::Error),
    /// Reading or saving the recycle history ConfigMap took longer than its timeout.
    #[error("recycle history ConfigMap: no answer within the timeout")]
    HistoryTimedOut,
    /// The recycle history ConfigMap does not parse (or could not be serialised).
    #[error("recycle history is not valid JSON: {0}")]
    HistoryCorrupt(#[source] serde_json::Error),
    /// A write was about to be sent while this process does not hold a current leader Lease.
    #[error("not the leader (or the lease lapsed): {0} not sent")]
    NotLeader(&'static str),
}

impl Error {
    /// Bounded label for `reconcile_errors_total{error}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::EvictFailed(_) => "evict_failed",
            Error::OwnerLookupFailed(_) => "owner_lookup_failed",
            Error::EventFailed(_) => "event_failed",
            Error::LeaseFailed(_) => "lease_failed",
            Error::ActionFailed(_) => "action_failed",
            Error::StatusFailed(_) => "status_failed",
            Error::ForceDeleteFailed(_) => "force_delete_failed",
            Error::NodeLookupFailed(_) => "node_lookup_failed",
            Error::ClaimLookupFailed(_) => "claim_lookup_failed",
            Error::TargetLookupFailed(_) => "target_lookup_failed",
            Error::MissingField(_) => "missing_field",
            Error::NotLeader(_) => "not_leader",
            Error::HistoryFailed(_) => "history_failed",
            Error::HistoryTimedOut => "history_timed_out",
            Error::HistoryCorrupt(_) => "history_corrupt",
        }
    }

    /// The API server refused a write because the object changed since it was read (409).
    pub fn is_conflict(&self) -> bool {
        let api = match self {
            Error::StatusFailed(kube::Error::Api(s))
            | Error::ActionFailed(kube::Error::Api(s))
            | Error::HistoryFailed(kube::Error::Api(s)) => s,
            _ => return false,
        };
        api.code == 409
    }
}

/// Result with the controller's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use context::Context;
pub use run::run;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_distinct_metric_label() {
        let errs = [
            Error::MissingField("name"),
            Error::NotLeader("eviction"),
            Error::HistoryFailed(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::HistoryTimedOut,
            Error::HistoryCorrupt(serde_json::from_str::<u8>("x").expect_err("not json")),
            Error::EvictFailed(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::OwnerLookupFailed(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::EventFailed(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::LeaseFailed(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::ActionFailed(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::StatusFailed(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::ForceDeleteFailed(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::NodeLookupFailed(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::ClaimLookupFailed(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::TargetLookupFailed(kube::Error::LinesCodecMaxLineLengthExceeded),
        ];
        let mut labels: Vec<_> = errs.iter().map(Error::metric_label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), errs.len());
    }
}
