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
//! fixed or deleted). It saves within [`SAVE_EVERY`] of each change, with server-side apply (only
//! the leader writes, and it merged what was there when its term began).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::crd::FIELD_MANAGER;
use crate::history::Stored;
use crate::reconcile::Context;
use crate::{Error, Result};

/// The ConfigMap key holding the JSON.
pub const DATA_KEY: &str = "history.json";
/// How soon a change is saved (and how often a follower checks whether it leads now).
pub const SAVE_EVERY: Duration = Duration::from_millis(500);

/// Reads and writes the history ConfigMap.
pub struct HistoryStore {
    api: Api<ConfigMap>,
    name: String,
}

impl HistoryStore {
    /// The ConfigMap `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
        }
    }

    /// The stored history (empty when there is no ConfigMap yet).
    pub async fn load(&self) -> Result<Stored> {
        let Some(cm) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(Error::HistoryFailed)?
        else {
            return Ok(Stored::default());
        };
        match cm.data.as_ref().and_then(|d| d.get(DATA_KEY)) {
            None => Ok(Stored::default()),
            Some(json) => serde_json::from_str(json).map_err(Error::HistoryCorrupt),
        }
    }

    /// Replace the stored history with `stored`.
    pub async fn save(&self, stored: &Stored) -> Result<()> {
        let json = serde_json::to_string(stored).map_err(Error::HistoryCorrupt)?;
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "labels": {"app.kubernetes.io/name": "selfheal-controller"},
                "annotations": {"selfheal.io/what": "the controller's recycle history: cooldowns, windows and give-ups survive a restart; delete to forget"},
            },
            "data": {DATA_KEY: json},
        });
        self.api
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await
            .map(|_| ())
            .map_err(Error::HistoryFailed)
    }
}

/// Load the history at the start of every leader term, then save it after every change, until
/// the task is dropped. Without `--history-configmap` the history stays in memory.
pub async fn run(ctx: Arc<Context>) {
    let name = ctx.config().history_configmap.clone();
    if name.is_empty() {
        ctx.history_ready.store(true, Ordering::Relaxed);
        return std::future::pending().await;
    }
    let store = HistoryStore::new(ctx.client().clone(), &ctx.config().pod_namespace, &name);
    let mut tick = tokio::time::interval(SAVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !ctx.is_leader() {
            // The next term starts by reading what the leader of this one saved.
            ctx.history_ready.store(false, Ordering::Relaxed);
            continue;
        }
        if !ctx.history_ready.load(Ordering::Relaxed) {
            match store.load().await {
                Ok(stored) => {
                    info!(configmap = %name, workloads = stored.workloads.len(), "loaded the recycle history");
                    ctx.merge_history(&stored);
                    ctx.history_ready.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    failed(
                        &ctx,
                        &e,
                        "reading the recycle history failed: nothing acts until it is read (delete the ConfigMap to start afresh)",
                    );
                    continue;
                }
            }
        }
        let Some(snapshot) = ctx.history_if_changed() else {
            continue;
        };
        let saved = match ctx.ensure_leader("the recycle history") {
            Ok(()) => store.save(&snapshot).await,
            Err(e) => Err(e),
        };
        if let Err(e) = saved {
            ctx.history_changed_again();
            failed(&ctx, &e, "saving the recycle history failed; retrying");
        }
    }
}

fn failed(ctx: &Context, e: &Error, what: &str) {
    ctx.metrics
        .reconcile_errors_total
        .with_label_values(&[e.metric_label()])
        .inc();
    warn!(error = %e, "{what}");
}
