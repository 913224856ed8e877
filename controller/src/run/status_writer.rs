//! The leader writes each HealingPolicy's status (computed by
//! [`crate::healing_policy::status::compute`]) with server-side apply, when it changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use tracing::{debug, warn};

use crate::context::Context;
use crate::healing_policy::resource::{FIELD_MANAGER, HealingPolicy, HealingPolicyStatus};
use crate::healing_policy::selection;
use crate::healing_policy::status::{self as pstatus, PolicyRecord};
use crate::{Error, Result};

/// How often policy status is recomputed (and written when it changed); actions write at once.
const STATUS_PERIOD: Duration = Duration::from_secs(5);

/// The leader recomputes every policy's status every `STATUS_PERIOD` (5 s) and after each action,
/// and writes it with server-side apply when it changed.
pub async fn run(ctx: Arc<Context>) {
    let Some(store) = ctx.watched.policies().cloned() else {
        return future::pending().await;
    };
    let mut written: HashMap<String, HealingPolicyStatus> = HashMap::new();
    let mut tick = tokio::time::interval(STATUS_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = ctx.status_dirty.notified() => {}
        }
        if !ctx.is_leader() || !ctx.policies_synced.load(Ordering::Relaxed) {
            continue;
        }
        let policies = store.state();
        if policies.is_empty() {
            written.clear();
            continue;
        }
        let now = Timestamp::now();
        let mut matched: HashMap<String, u32> = HashMap::new();
        if let Some(pods) = ctx.watched.pods() {
            for pod in pods.state() {
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if let Some(hp) = selection::governing(&policies, &pod) {
                    *matched.entry(selection::key(hp)).or_default() += 1;
                }
            }
        }
        for hp in &policies {
            let key = selection::key(hp);
            let policy = hp.spec.to_policy(ctx.policy());
            let status = {
                let mut st = ctx.state();
                let rec = st
                    .records
                    .entry(key.clone())
                    .or_insert_with(|| PolicyRecord::seeded(hp.status.as_ref()));
                rec.absorb(hp.status.as_ref());
                pstatus::compute(
                    hp,
                    &policy,
                    rec,
                    matched.get(&key).copied().unwrap_or(0),
                    ctx.cfg.prometheus_url.is_some(),
                    now,
                )
            };
            if hp.status.as_ref() == Some(&status) || written.get(&key) == Some(&status) {
                continue;
            }
            let written_now = match ctx.ensure_leader("a policy status") {
                Ok(()) => write_status(&ctx.client, hp, &status).await,
                Err(e) => Err(e),
            };
            match written_now {
                Ok(()) => {
                    debug!(policy = %key, matched = status.matched_pods, "policy status written");
                    written.insert(key, status);
                }
                Err(e) if e.is_conflict() => {
                    // Written since our cache saw it (by us a moment ago, or by someone else):
                    // the next round absorbs that version first, then writes over it.
                    debug!(policy = %key, "policy status changed since read; next round");
                }
                Err(e) => {
                    ctx.metrics
                        .reconcile_errors_total
                        .with_label_values(&[e.metric_label()])
                        .inc();
                    warn!(policy = %key, error = %e, "writing policy status failed");
                }
            }
        }
        let live: Vec<String> = policies.iter().map(|hp| selection::key(hp)).collect();
        written.retain(|k, _| live.contains(k));
    }
}

/// Server-side apply of the whole status under our field manager, `force` because the status is
/// ours, conditional on the version the cache holds (the `resourceVersion` in the patch): a
/// status someone wrote since is absorbed first (next round), never written over unseen. A spec
/// edit moves the version too, which costs one round.
async fn write_status(
    client: &Client,
    hp: &HealingPolicy,
    status: &HealingPolicyStatus,
) -> Result<()> {
    let api: Api<HealingPolicy> =
        Api::namespaced(client.clone(), &hp.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "selfheal.io/v1alpha1",
        "kind": "HealingPolicy",
        "metadata": {"resourceVersion": hp.resource_version()},
        "status": status,
    });
    api.patch_status(
        &hp.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(Error::StatusFailed)
}
