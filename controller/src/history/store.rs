//! The workload history ([`crate::history::Stored`]) in a ConfigMap of the controller's own
//! namespace, so a restart or a failover keeps cooldowns, per-window counts and give-ups.
//!
//! Why a ConfigMap of our own, not an annotation on each workload or the policy's status: the
//! controller writes nothing more to the objects it heals (GitOps tools would report every
//! annotation as drift, and the admission policy would have to allow it), the default policy has
//! no object to hold a status, and one object in one namespace needs only a namespaced Role.
//!
//! Fail safe: a leader acts only once it has read the stored history in its current term (a
//! missing ConfigMap is an empty history; one that does not parse stops every action until it is
//! fixed or deleted). It saves within [`SAVE_EVERY`] of each change, and once more when it stops.
//! Every save is conditional on the version last read or written: a save from a leader whose term
//! ran out meanwhile gets a 409, and the history is read, merged and saved again instead of one
//! controller's memory replacing another's. Each call has a timeout ([`CALL_TIMEOUT`], shorter than
//! any lease duration), so a hung call cannot keep an old term's "history read" flag alive.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::healing_policy::resource::FIELD_MANAGER;
use crate::history::{SharedHistory, Stored};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::{Error, Result};

/// The ConfigMap key holding the JSON.
pub const DATA_KEY: &str = "history.json";
/// How soon a change is saved (and how often a follower checks whether it leads now).
pub const SAVE_EVERY: Duration = Duration::from_millis(500);
/// Timeout of one read or save.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads and writes the history ConfigMap.
pub struct HistoryStore {
    api: Api<ConfigMap>,
    name: String,
    /// The version last read or written (`None`: none yet, or the ConfigMap does not exist).
    resource_version: Option<String>,
}

impl HistoryStore {
    /// The ConfigMap `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            resource_version: None,
        }
    }

    /// The stored history (empty when there is no ConfigMap yet).
    pub async fn load(&mut self) -> Result<Stored> {
        let got = tokio::time::timeout(CALL_TIMEOUT, self.api.get_opt(&self.name))
            .await
            .map_err(|_| Error::HistoryTimedOut)?;
        let Some(cm) = got.map_err(Error::HistoryFailed)? else {
            self.resource_version = None;
            return Ok(Stored::default());
        };
        self.resource_version = cm.metadata.resource_version.clone();
        match cm.data.as_ref().and_then(|d| d.get(DATA_KEY)) {
            None => Ok(Stored::default()),
            Some(json) => serde_json::from_str(json).map_err(Error::HistoryCorrupt),
        }
    }

    /// Replace the stored history with `stored`, if it is still the version last read or written
    /// (409 otherwise: [`Error::is_conflict`]).
    pub async fn save(&mut self, stored: &Stored) -> Result<()> {
        let json = serde_json::to_string(stored).map_err(Error::HistoryCorrupt)?;
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                // NB: a precondition; absent (first save) the apply creates the ConfigMap.
                "resourceVersion": self.resource_version,
                "labels": {"app.kubernetes.io/name": "selfheal-controller"},
                "annotations": {"selfheal.io/what": "the controller's recycle history: cooldowns, windows and give-ups survive a restart; delete to forget"},
            },
            "data": {DATA_KEY: json},
        });
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let written = tokio::time::timeout(
            CALL_TIMEOUT,
            self.api.patch(&self.name, &pp, &Patch::Apply(&cm)),
        )
        .await
        .map_err(|_| Error::HistoryTimedOut)?
        .map_err(Error::HistoryFailed)?;
        self.resource_version = written.metadata.resource_version;
        Ok(())
    }
}

/// What keeping the history in its ConfigMap needs.
pub struct HistorySync {
    /// The API client.
    pub client: Client,
    /// The controller's own namespace (`--pod-namespace`).
    pub namespace: String,
    /// The ConfigMap (`--history-configmap`; empty: the history stays in memory).
    pub name: String,
    /// Only the leader reads and saves.
    pub leader: Leadership,
    /// Failures are counted in `reconcile_errors_total`.
    pub metrics: Arc<Metrics>,
    /// The history the reconciler records into.
    pub history: Arc<SharedHistory>,
}

/// Load the history at the start of every leader term, then save it after every change, until
/// the task is dropped. Without `--history-configmap` the history stays in memory.
pub async fn run(sync: &HistorySync) {
    let name = sync.name.clone();
    let history = &sync.history;
    if name.is_empty() {
        history.set_ready(true);
        return std::future::pending().await;
    }
    let mut store = HistoryStore::new(sync.client.clone(), &sync.namespace, &name);
    let mut tick = tokio::time::interval(SAVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !sync.leader.is_current() {
            // The next term starts by reading what the leader of this one saved.
            history.set_ready(false);
            continue;
        }
        if !history.is_ready() {
            match store.load().await {
                Ok(stored) => {
                    info!(configmap = %name, workloads = stored.workloads.len(), "loaded the recycle history");
                    history.merge(&stored);
                    history.set_ready(true);
                }
                Err(e) => {
                    failed(
                        &sync.metrics,
                        &e,
                        "reading the recycle history failed: nothing acts until it is read (delete the ConfigMap to start afresh)",
                    );
                    continue;
                }
            }
        }
        let Some(snapshot) = history.if_changed() else {
            continue;
        };
        let saved = match sync.leader.ensure("the recycle history") {
            Ok(()) => store.save(&snapshot).await,
            Err(e) => Err(e),
        };
        if let Err(e) = saved {
            history.changed_again();
            if e.is_conflict() {
                // Someone saved since we read: read it again (and merge) before the next save.
                history.set_ready(false);
                info!(configmap = %name, "the recycle history changed since it was read; merging it again");
                continue;
            }
            failed(
                &sync.metrics,
                &e,
                "saving the recycle history failed; retrying",
            );
        }
    }
}

/// Save what changed once more as the controller stops (an action that finished during the
/// graceful shutdown is less than [`SAVE_EVERY`] old), while this process still leads.
pub async fn flush(sync: &HistorySync) {
    let (name, history) = (&sync.name, &sync.history);
    if name.is_empty() || !history.is_ready() || !sync.leader.is_current() {
        return;
    }
    let Some(snapshot) = history.if_changed() else {
        return;
    };
    let mut store = HistoryStore::new(sync.client.clone(), &sync.namespace, name);
    // NB: read first (the version, and anything merged meanwhile), then save the union.
    let saved = match store.load().await {
        Ok(stored) => {
            history.merge(&stored);
            let all = history.if_changed().unwrap_or(snapshot);
            store.save(&all).await
        }
        Err(e) => Err(e),
    };
    match saved {
        Ok(()) => info!(configmap = %name, "saved the recycle history on the way out"),
        Err(e) => failed(
            &sync.metrics,
            &e,
            "saving the recycle history on the way out failed",
        ),
    }
}

fn failed(metrics: &Metrics, e: &Error, what: &str) {
    metrics
        .reconcile_errors_total
        .with_label_values(&[e.metric_label()])
        .inc();
    warn!(error = %e, "{what}");
}
