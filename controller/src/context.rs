//! The pod reconciler's context: the client, the flags, the caches, what the signal sources
//! observed, the recycle history and the per-pod bookkeeping. Built once by `main` (or a test),
//! shared by the reconciler, the actions and the watch loops; it holds data, the I/O is theirs.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tokio::sync::Notify;

use crate::Result;
use crate::config::Config;
use crate::events::Events;
use crate::explain::Explainer;
use crate::explain::evidence::LogTail;
use crate::healers::pool::Exhaustion;
use crate::healers::promql;
use crate::healers::zombie::reaper::Reaper;
use crate::healing_policy::resource::HealingPolicy;
use crate::healing_policy::selection;
use crate::healing_policy::status::PolicyRecord;
use crate::history::{RestartTracker, SharedHistory};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::owner::OwnerResolver;
use crate::policy::Policy;
use crate::signals::Signals;
use crate::watched::{Governed, Watched};

/// Everything a reconcile needs.
pub struct Context {
    pub(crate) client: Client,
    pub(crate) cfg: Config,
    /// Metrics shared with the HTTP server.
    pub metrics: Arc<Metrics>,
    /// Publishes the Events and evidence of what was done, after it and off the reconcile.
    pub(crate) explainer: Explainer,
    pub(crate) leader: Leadership,
    pub(crate) owners: Arc<OwnerResolver>,
    pub(crate) state: Mutex<State>,
    /// The pod and HealingPolicy caches (filled by [`crate::run::run`]) and the default policy.
    pub(crate) watched: Arc<Watched>,
    /// What the memory sampler and the PromQL triggers observed.
    pub(crate) signals: Arc<Signals>,
    /// Per-workload recycle history, shared with [`crate::history::store`].
    pub(crate) history: Arc<SharedHistory>,
    /// Terminating pods go to the zombie reaper.
    pub(crate) reaper: Reaper,
    /// The client for `--prometheus-url`, for the PromQL triggers.
    pub(crate) prom: Option<selfheal_promql::Client>,
    /// True once the policies are listed (or when they are switched off): nothing acts before,
    /// or a pod a policy governs could get the default policy.
    pub(crate) policies_synced: AtomicBool,
    /// Wakes the status writer after an action.
    pub(crate) status_dirty: Notify,
}

/// What the reconciler remembers per pod and per policy between reconciles.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) restarts: RestartTracker,
    /// Consecutive reconcile errors per pod UID, for exponential backoff.
    pub(crate) failures: HashMap<String, u32>,
    /// Consecutive PDB refusals per pod UID, and when the next eviction may be tried.
    pub(crate) blocked: HashMap<String, (u32, Timestamp)>,
    /// Last `NotRecycled` cause (and the policy deciding) reported per pod UID, so a cause is
    /// reported once per policy.
    pub(crate) reported: HashMap<String, (&'static str, String)>,
    /// When an action was taken on each pod UID. Until the watch shows the pod terminating, the
    /// cache has not caught up with the action (status updates the kubelet wrote before the
    /// eviction still arrive after it), and deciding again would count the same crash loop twice.
    pub(crate) acted: HashMap<String, Timestamp>,
    pub(crate) reconciles: u64,
    /// What was done under each HealingPolicy (`namespace/name`), for its status.
    pub(crate) records: HashMap<String, PolicyRecord>,
}

impl Context {
    /// Build the context; `leader` says whether this replica may act. Build `client` with
    /// [`crate::run::client`]/[`crate::run::client_from`] so a PDB refusal (429) reaches the
    /// reconciler.
    pub fn new(client: Client, cfg: Config, metrics: Arc<Metrics>, leader: Leadership) -> Self {
        let events = Events::new(&client, &cfg.pod_name, &leader, &metrics);
        let owners = Arc::new(OwnerResolver::new(client.clone()));
        let explainer = Explainer::new(
            client.clone(),
            events,
            owners.clone(),
            metrics.clone(),
            cfg.log_evidence.then_some(LogTail {
                lines: cfg.log_tail_lines,
                bytes: cfg.log_tail_bytes,
            }),
        );
        let reaper = Reaper::new(
            client.clone(),
            cfg.zombie_rule(),
            cfg.dry_run,
            metrics.clone(),
            explainer.clone(),
            leader.clone(),
            owners.clone(),
        );
        Self {
            explainer,
            watched: Arc::new(Watched::new(cfg.policy())),
            prom: promql::client(cfg.prometheus_url.as_deref()),
            signals: Arc::default(),
            history: Arc::default(),
            reaper,
            owners,
            client,
            cfg,
            metrics,
            leader,
            state: Mutex::new(State::default()),
            policies_synced: AtomicBool::new(false),
            status_dirty: Notify::new(),
        }
    }

    /// The default policy (the flags).
    pub(crate) fn policy(&self) -> &Policy {
        self.watched.default_policy()
    }

    /// Whether this replica leads (and may act): its leader term is running now.
    pub fn is_leader(&self) -> bool {
        self.leader.is_current()
    }

    /// `Err(NotLeader)` unless this replica leads right now (see [`Leadership::ensure`]).
    pub fn ensure_leader(&self, write: &'static str) -> Result<()> {
        self.leader.ensure(write)
    }

    /// The flags this controller runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The API client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The governing policy's errorRate answer, if it is fresh (within three query intervals).
    pub(crate) fn error_ratio(&self, gov: &Governed<'_>, now: Timestamp) -> Option<f64> {
        let max_age = promql::answer_max_age(self.cfg.prometheus_interval_secs);
        self.signals.error_ratio(&gov.key()?, now, max_age)
    }

    /// Whether `pod` reads as out of connections under its governing policy.
    pub(crate) fn pool_exhaustion(
        &self,
        gov: &Governed<'_>,
        pod: &Pod,
        now: Timestamp,
    ) -> Option<Exhaustion> {
        let rule = gov.policy.pool_exhaustion?;
        let max_age = promql::answer_max_age(self.cfg.prometheus_interval_secs);
        self.signals.pool_exhaustion(pod, &rule, now, max_age)
    }

    /// Update the record of a HealingPolicy and wake the status writer.
    pub(crate) fn record(
        &self,
        hp: Option<&Arc<HealingPolicy>>,
        f: impl FnOnce(&mut PolicyRecord),
    ) {
        let Some(hp) = hp else { return };
        {
            let mut st = self.state();
            let rec = st
                .records
                .entry(selection::key(hp))
                .or_insert_with(|| PolicyRecord::seeded(hp.status.as_ref()));
            f(rec);
        }
        self.status_dirty.notify_one();
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // NB: nothing panics while holding the lock; recover the data rather than wedge.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Exponential backoff for the `attempt`th try, within `--backoff-*`.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let (base, max) = self.cfg.backoff();
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        base.saturating_mul(factor).min(max)
    }

    /// True the first time `label` is reported for pod `uid` under the policy `gov` (until the
    /// pod's cause or policy changes): a cause is said once, not at every reconcile.
    pub(crate) fn first_report(&self, gov: &Governed<'_>, uid: &str, label: &'static str) -> bool {
        let cause = (label, gov.describe());
        self.state().reported.insert(uid.to_owned(), cause.clone()) != Some(cause)
    }
}
