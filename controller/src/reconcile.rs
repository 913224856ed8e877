//! Kubernetes I/O around the pure decision: the pod and HealingPolicy watches, evidence, Events,
//! the actions (eviction, rollout restart, scale) and the policies' status.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt, future, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, EphemeralVolumeSource, ObjectReference, Pod, PodCondition, PodSpec, PodStatus,
    ResourceRequirements, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{EvictParams, LogParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::Notify;
use tracing::{debug, info, instrument, warn};

use crate::breaker_loop;
use crate::config::Config;
use crate::crd::{
    self, HealingPolicy, HealingPolicyStatus, LastAction, PoolExhaustionTrigger, SpecError,
};
use crate::exhaustion::{self, Exhaustion, PoolRule, PoolTracker};
use crate::history::{History, RestartTracker};
use crate::history_store;
use crate::leader::{Leadership, Term};
use crate::metrics::Metrics;
use crate::owner::{OwnerResolver, Workload, controller_ref};
use crate::policy::{self, Decision, IGNORE_ANNOTATION, Observed, Policy, Reason, SkipReason};
use crate::promql;
use crate::reaper;
use crate::sampler::{self, Reading};
use crate::status::{self as pstatus, PolicyRecord};
use crate::trend::{self, MemorySamples, Sample};
use crate::{Error, Result};

/// Pod-template annotation a `rolloutRestart` sets (what `kubectl rollout restart` does with its own).
pub const RESTARTED_AT_ANNOTATION: &str = "selfheal.io/restarted-at";
/// How often policy status is recomputed (and written when it changed); actions write at once.
const STATUS_PERIOD: Duration = Duration::from_secs(5);

/// `reportingController` of our Events.
pub const REPORTING_CONTROLLER: &str = "selfheal.io/controller";
/// Events notes are limited to 1 kB by the API server.
const NOTE_MAX_BYTES: usize = 1000;
/// How long in-flight reconciles get to finish after shutdown was requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// Per-pod bookkeeping (dedup, backoff) is dropped when it grows past this.
const BOOKKEEPING_MAX: usize = 20_000;

/// Everything a reconcile needs.
pub struct Context {
    client: Client,
    cfg: Config,
    policy: Policy,
    /// Metrics shared with the HTTP server.
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    leader: Leadership,
    owners: OwnerResolver,
    state: Mutex<State>,
    /// The pod cache (set by [`run`]): sibling readiness and matched-pod counts.
    pods: OnceLock<Store<Pod>>,
    /// The HealingPolicy cache (set by [`run`] when `--healing-policies`).
    policies: OnceLock<Store<HealingPolicy>>,
    /// True once the policies are listed (or when they are switched off): nothing acts before,
    /// or a pod a policy governs could get the default policy.
    policies_synced: AtomicBool,
    /// Wakes the status writer after an action.
    status_dirty: Notify,
    /// True once this term's leader has read the stored recycle history
    /// ([`crate::history_store`]): nothing acts before, or a cooldown could be forgotten.
    pub(crate) history_ready: AtomicBool,
}

/// The policy deciding for one pod.
struct Governed<'a> {
    /// The HealingPolicy, or `None` for the default policy (the flags).
    source: Option<Arc<HealingPolicy>>,
    policy: Cow<'a, Policy>,
}

impl Governed<'_> {
    fn describe(&self) -> String {
        self.source.as_ref().map_or_else(
            || "default policy".to_owned(),
            |hp| format!("HealingPolicy {}", pstatus::key(hp)),
        )
    }
}

#[derive(Default)]
struct State {
    history: History,
    restarts: RestartTracker,
    /// Consecutive reconcile errors per pod UID, for exponential backoff.
    failures: HashMap<String, u32>,
    /// Consecutive PDB refusals per pod UID, and when the next eviction may be tried.
    blocked: HashMap<String, (u32, Timestamp)>,
    /// Last `NotRecycled` cause (and the policy deciding) reported per pod UID, so a cause is
    /// reported once per policy.
    reported: HashMap<String, (&'static str, String)>,
    reconciles: u64,
    /// What was done under each HealingPolicy (`namespace/name`), for its status.
    records: HashMap<String, PolicyRecord>,
    /// Working-set samples for the memory trend (fed by [`crate::sampler`]).
    memory: MemorySamples,
    /// Latest errorRate answer per HealingPolicy (`namespace/name`) and when it came (fed by
    /// [`crate::promql`]).
    error_rates: HashMap<String, (f64, Timestamp)>,
    /// Pool saturation and latency answers per pod UID (fed by [`crate::promql`]).
    pools: PoolTracker,
}

impl Context {
    /// Build the context; `leader` says whether this replica may act. Build `client` with
    /// [`client`]/[`client_from`] so a PDB refusal (429) reaches the reconciler.
    pub fn new(client: Client, cfg: Config, metrics: Arc<Metrics>, leader: Leadership) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.into(),
            instance: Some(cfg.pod_name.clone()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            owners: OwnerResolver::new(client.clone()),
            policy: cfg.policy(),
            client,
            cfg,
            metrics,
            leader,
            state: Mutex::new(State::default()),
            pods: OnceLock::new(),
            policies: OnceLock::new(),
            policies_synced: AtomicBool::new(false),
            status_dirty: Notify::new(),
            history_ready: AtomicBool::new(false),
        }
    }

    /// The policy deciding for `pod`: the first HealingPolicy (by name) selecting it, else the
    /// default. `Err` names a selecting policy whose spec cannot be used (nothing acts then).
    fn governing(&self, pod: &Pod) -> Result<Governed<'_>, (Arc<HealingPolicy>, SpecError)> {
        let default = Governed {
            source: None,
            policy: Cow::Borrowed(&self.policy),
        };
        let Some(store) = self.policies.get() else {
            return Ok(default);
        };
        let all = store.state();
        let Some(hp) = pstatus::governing(&all, pod) else {
            return Ok(default);
        };
        match hp.spec.to_policy(&self.policy) {
            Ok(p) => Ok(Governed {
                source: Some(hp.clone()),
                policy: Cow::Owned(p),
            }),
            Err(e) => Err((hp.clone(), e)),
        }
    }

    /// Whether this replica leads (and may act): its leader term is running now.
    pub fn is_leader(&self) -> bool {
        self.leader.is_current()
    }

    /// This replica's leadership (for loops that keep their own writers).
    pub fn leadership(&self) -> &Leadership {
        &self.leader
    }

    /// Take in a stored recycle history (start of a leader term).
    pub(crate) fn merge_history(&self, stored: &crate::history::Stored) {
        let mut st = self.state();
        st.history.merge(stored);
        // The union may hold more than what was stored: save it too.
        st.history.record_changed();
    }

    /// The recycle history to save, when something was recorded since the last call.
    pub(crate) fn history_if_changed(&self) -> Option<crate::history::Stored> {
        let mut st = self.state();
        st.history.take_changed().then(|| st.history.snapshot())
    }

    /// A save failed: offer the history again next time.
    pub(crate) fn history_changed_again(&self) {
        self.state().history.record_changed();
    }

    /// `Err(NotLeader)` unless this replica leads right now: asked right before every write, as
    /// a term can run out between the decision and the call (a stopped process, a slow call).
    pub fn ensure_leader(&self, write: &'static str) -> Result<()> {
        if self.is_leader() {
            return Ok(());
        }
        warn!(write, "leader term ran out before the write: not sent");
        Err(Error::NotLeader(write))
    }

    /// Whether `ns` is in the controller's scope (`--namespaces`, `--exclude-namespaces`).
    pub fn in_scope(&self, ns: &str) -> bool {
        policy::in_scope(&self.policy, ns)
    }

    /// The flags this controller runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The API client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Namespaces (in scope) with a HealingPolicy that has a `memoryTrend` trigger, sorted.
    pub fn memory_trend_namespaces(&self) -> Vec<String> {
        let Some(store) = self.policies.get() else {
            return Vec::new();
        };
        let mut out: Vec<String> = store
            .state()
            .iter()
            .filter(|hp| hp.spec.triggers.memory_trend.is_some())
            .filter_map(|hp| hp.namespace())
            .filter(|ns| policy::in_scope(&self.policy, ns))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Keep a metrics-API reading of a cached pod that a memory-trend policy governs. Returns the
    /// pod when its series now reads as a leak, so the reconciler looks at it.
    pub fn observe_memory(
        &self,
        ns: &str,
        reading: &Reading,
        now: Timestamp,
    ) -> Option<ObjectRef<Pod>> {
        let pod = self
            .pods
            .get()?
            .get(&ObjectRef::new(&reading.pod).within(ns))?;
        let gov = self.governing(&pod).ok()?;
        let rule = gov.policy.memory_trend?;
        let uid = pod.uid()?;
        let mut st = self.state();
        for (container, bytes) in &reading.containers {
            let sample = Sample {
                at: reading.at,
                bytes: *bytes,
            };
            st.memory.observe(&uid, container, sample, rule.window);
        }
        trend::leak(&st.memory, &pod, &rule, now).map(|_| ObjectRef::from_obj(&*pod))
    }

    /// The cached HealingPolicies whose namespace is in scope.
    fn policies_in_scope(&self) -> Vec<Arc<HealingPolicy>> {
        let Some(store) = self.policies.get() else {
            return Vec::new();
        };
        store
            .state()
            .into_iter()
            .filter(|hp| {
                hp.namespace()
                    .is_some_and(|ns| policy::in_scope(&self.policy, &ns))
            })
            .collect()
    }

    /// HealingPolicies with an errorRate trigger (in scope): key, query, threshold.
    pub fn error_rate_policies(&self) -> Vec<(String, String, f64)> {
        self.policies_in_scope()
            .iter()
            .filter_map(|hp| {
                let e = hp.spec.triggers.error_rate.as_ref()?;
                Some((pstatus::key(hp), e.query.clone(), e.threshold))
            })
            .collect()
    }

    /// Keep the answer of a policy's errorRate query (`None`: no answer, forget the last one).
    /// Returns the cached pods the policy governs when the answer is over `threshold`.
    pub fn observe_error_rate(
        &self,
        key: &str,
        ratio: Option<f64>,
        threshold: f64,
        now: Timestamp,
    ) -> Vec<ObjectRef<Pod>> {
        {
            let mut st = self.state();
            match ratio {
                Some(r) => st.error_rates.insert(key.to_owned(), (r, now)),
                None => st.error_rates.remove(key),
            };
        }
        if ratio.is_none_or(|r| r <= threshold) {
            return Vec::new();
        }
        self.governed_by(key)
            .iter()
            .map(|p| ObjectRef::from_obj(&**p))
            .collect()
    }

    /// How old a PromQL answer may be and still count: three query intervals.
    fn answer_max_age(&self) -> SignedDuration {
        SignedDuration::from_secs(
            i64::try_from(self.cfg.prometheus_interval_secs.saturating_mul(3)).unwrap_or(i64::MAX),
        )
    }

    /// The governing policy's errorRate answer, if it is fresh (within three query intervals).
    fn error_ratio(&self, gov: &Governed<'_>, now: Timestamp) -> Option<f64> {
        let key = pstatus::key(gov.source.as_ref()?);
        let max_age = self.answer_max_age();
        self.state()
            .error_rates
            .get(&key)
            .filter(|(_, at)| now.duration_since(*at) <= max_age)
            .map(|(r, _)| *r)
    }

    /// HealingPolicies with a usable poolExhaustion trigger (in scope): key, trigger, its rule.
    pub fn pool_policies(&self) -> Vec<(String, PoolExhaustionTrigger, PoolRule)> {
        self.policies_in_scope()
            .iter()
            .filter_map(|hp| {
                let t = hp.spec.triggers.pool_exhaustion.clone()?;
                // NB: an unusable spec is reported in the policy's status; nothing to ask then.
                let rule = t.rule().ok()?;
                Some((pstatus::key(hp), t, rule))
            })
            .collect()
    }

    /// The cached pods the HealingPolicy `key` governs now.
    fn governed_by(&self, key: &str) -> Vec<Arc<Pod>> {
        let Some(pods) = self.pods.get() else {
            return Vec::new();
        };
        pods.state()
            .into_iter()
            .filter(|p| {
                self.governing(p)
                    .ok()
                    .and_then(|g| g.source)
                    .is_some_and(|hp| pstatus::key(&hp) == key)
            })
            .collect()
    }

    /// Keep one round of the answers for pool policy `key`, whose trigger reads as `rule`
    /// (`None`: the query failed, which counts as no answer for every pod). Returns the governed
    /// pods that now read as exhausted.
    pub fn observe_pool(
        &self,
        key: &str,
        rule: &PoolRule,
        saturation: Option<&BTreeMap<(String, String), f64>>,
        latency: Option<&BTreeMap<(String, String), f64>>,
        now: Timestamp,
    ) -> Vec<ObjectRef<Pod>> {
        let governed = self.governed_by(key);
        let max_age = self.answer_max_age();
        let mut st = self.state();
        let mut wake = Vec::new();
        for pod in governed {
            let Some(uid) = pod.uid() else {
                continue;
            };
            let id = (pod.namespace().unwrap_or_default(), pod.name_any());
            st.pools.observe_saturation(
                &uid,
                saturation.and_then(|m| m.get(&id).copied()),
                rule,
                now,
            );
            st.pools
                .observe_latency(&uid, latency.and_then(|m| m.get(&id).copied()), now);
            let signals = st.pools.get(&uid).copied().unwrap_or_default();
            if exhaustion::assess(&signals, rule, policy::is_ready(&pod), now, max_age).is_some() {
                wake.push(ObjectRef::from_obj(&*pod));
            }
        }
        wake
    }

    /// Whether `pod` reads as out of connections under its governing policy.
    fn pool_exhaustion(&self, gov: &Governed<'_>, pod: &Pod, now: Timestamp) -> Option<Exhaustion> {
        let rule = gov.policy.pool_exhaustion?;
        let uid = pod.uid()?;
        let signals = self.state().pools.get(&uid).copied()?;
        exhaustion::assess(
            &signals,
            &rule,
            policy::is_ready(pod),
            now,
            self.answer_max_age(),
        )
    }

    /// Drop the samples of pods no longer in the cache; returns how many pods have samples.
    pub fn forget_gone_pods(&self) -> usize {
        let Some(store) = self.pods.get() else {
            return 0;
        };
        let live: std::collections::HashSet<String> =
            store.state().iter().filter_map(|p| p.uid()).collect();
        let mut st = self.state();
        st.memory.retain(|uid| live.contains(uid));
        st.pools.retain(|uid| live.contains(uid));
        st.memory.pods()
    }

    /// The Deployment (or other controller) owning `pod`, for Events on the owner.
    pub(crate) async fn owner_of(&self, pod: &Pod) -> Result<Option<Workload>> {
        self.owners.resolve(pod).await
    }

    /// True the first time this is asked for a pod UID (until the pod changes cause): a zombie
    /// left alone on a healthy node is reported once, not at every look.
    pub(crate) fn first_zombie_report(&self, uid: &str) -> bool {
        let cause = ("zombie_on_healthy_node", String::new());
        self.state().reported.insert(uid.to_owned(), cause.clone()) != Some(cause)
    }

    /// Update the record of a HealingPolicy and wake the status writer.
    fn record(&self, hp: Option<&Arc<HealingPolicy>>, f: impl FnOnce(&mut PolicyRecord)) {
        let Some(hp) = hp else { return };
        {
            let mut st = self.state();
            let rec = st
                .records
                .entry(pstatus::key(hp))
                .or_insert_with(|| PolicyRecord::seeded(hp.status.as_ref()));
            f(rec);
        }
        self.status_dirty.notify_one();
    }

    /// Ready pods with the same controller owner as `pod`, other than `pod` (from the cache).
    fn healthy_siblings(&self, pod: &Pod) -> u32 {
        let (Some(owner), Some(store)) = (controller_ref(&pod.metadata), self.pods.get()) else {
            return 0;
        };
        let n = store
            .state()
            .iter()
            .filter(|p| {
                p.namespace() == pod.namespace()
                    && p.uid() != pod.uid()
                    && p.metadata.deletion_timestamp.is_none()
                    && controller_ref(&p.metadata).is_some_and(|o| o.uid == owner.uid)
                    && policy::is_ready(p)
            })
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // NB: nothing panics while holding the lock; recover the data rather than wedge the controller.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let (base, max) = self.cfg.backoff();
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        base.saturating_mul(factor).min(max)
    }

    pub(crate) async fn publish(
        &self,
        target: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        // NB: an Event is a write too: none from a process whose leader term ran out.
        if !self.is_leader() {
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
    pub(crate) async fn publish_both(
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

fn truncate(mut s: String, max: usize) -> String {
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

/// The last `max` bytes of `s`, cut at a character boundary.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn to_std(d: SignedDuration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// A client for the cluster in the environment (in-cluster or `KUBECONFIG`); see [`client_from`].
pub async fn client(metrics: &Metrics) -> Result<Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    client_from(config, metrics)
}

/// The controller's client: counts its requests in `api_requests_total{verb}` (proof that an idle
/// controller does not poll) and has kube's built-in retry layer switched off.
///
/// NB: that layer retries every 429 inside the client, for up to 15 attempts with delays growing
/// to 1000 s. A PodDisruptionBudget refusing an eviction *is* a 429: with the layer on, the
/// eviction call would hang instead of returning, and no `RecycleBlocked` Event would be written.
/// Retries are ours instead: the reconcile requeues with exponential backoff.
pub fn client_from(mut config: kube::Config, metrics: &Metrics) -> Result<Client, kube::Error> {
    config.default_retry = false;
    let counter = metrics.api_requests_total.clone();
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        counter
            .with_label_values(&[crate::metrics::request_verb(
                req.method(),
                req.uri().query(),
            )])
            .inc();
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

/// Keep only what the decision, the evidence and the eviction need: the cache holds thousands of
/// pods, and managedFields, specs and most of the status are most of their weight.
pub fn trim(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    // NB: labels stay: HealingPolicy selectors match on them.
    meta.generate_name = None;
    meta.finalizers = None;
    if let Some(a) = meta.annotations.take() {
        let kept: BTreeMap<_, _> = a
            .into_iter()
            .filter(|(k, _)| k == IGNORE_ANNOTATION)
            .collect();
        meta.annotations = (!kept.is_empty()).then_some(kept);
    }
    // NB: of the spec only the containers' memory limits stay: the memory trend predicts
    // against them.
    // The node name and the claim volumes (their names only) stay for the zombie reaper, which
    // leaves a pod holding a ReadWriteOnce volume alone until its node is known dead.
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        node_name: spec.node_name,
        volumes: spec.volumes.map(|vols| {
            vols.into_iter()
                .filter(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some())
                .map(|v| Volume {
                    persistent_volume_claim: v.persistent_volume_claim,
                    ephemeral: v.ephemeral.map(|_| EphemeralVolumeSource::default()),
                    name: v.name,
                    ..Volume::default()
                })
                .collect()
        }),
        containers: spec
            .containers
            .into_iter()
            .map(|c| Container {
                resources: c.resources.and_then(|r| {
                    let memory = r.limits?.remove("memory")?;
                    Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([("memory".to_owned(), memory)])),
                        ..ResourceRequirements::default()
                    })
                }),
                name: c.name,
                ..Container::default()
            })
            .collect(),
        ..PodSpec::default()
    });
    if let Some(status) = pod.status.take() {
        let slim = |mut list: Vec<k8s_openapi::api::core::v1::ContainerStatus>| {
            for c in &mut list {
                c.image = String::new();
                c.image_id = String::new();
                c.container_id = None;
                c.resources = None;
                c.volume_mounts = None;
                c.allocated_resources = None;
                c.allocated_resources_status = None;
                c.user = None;
                c.started = None;
                c.stop_signal = None;
                for s in [c.state.as_mut(), c.last_state.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = s.terminated.as_mut() {
                        t.message = None;
                        t.container_id = None;
                    }
                    if let Some(w) = s.waiting.as_mut() {
                        w.message = None;
                    }
                }
            }
            list
        };
        // NB: the Ready condition stays for `notReadyFor` and `minHealthyReplicas`.
        let ready: Vec<PodCondition> = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ == "Ready")
            .map(|c| PodCondition {
                message: None,
                last_probe_time: None,
                ..c
            })
            .collect();
        pod.status = Some(PodStatus {
            phase: status.phase,
            conditions: (!ready.is_empty()).then_some(ready),
            container_statuses: status.container_statuses.map(slim),
            init_container_statuses: status.init_container_statuses.map(slim),
            ..PodStatus::default()
        });
    }
}

fn field_selector(cfg: &Config) -> String {
    let mut parts: Vec<String> = cfg
        .excluded_namespaces()
        .iter()
        .map(|n| format!("metadata.namespace!={n}"))
        .collect();
    let wanted: Vec<_> = cfg.namespaces.iter().filter(|n| !n.is_empty()).collect();
    if let [only] = wanted.as_slice() {
        parts.push(format!("metadata.namespace={only}"));
    }
    parts.join(",")
}

/// Watch pods and reconcile them until `shutdown` resolves. Sets `ready` once the cache is synced.
pub async fn run(
    ctx: Arc<Context>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let mut wc = watcher::Config::default().fields(&field_selector(&ctx.cfg));
    wc = wc.page_size(ctx.cfg.watch_page_size.max(1));
    if let Some(sel) = ctx.cfg.label_selector.as_deref().filter(|s| !s.is_empty()) {
        wc = wc.labels(sel);
    }
    let (reader, writer) = reflector::store();
    let _ = ctx.pods.set(reader.clone());
    let policy_changes = policy_watch(&ctx);
    let policy = ctx.policy.clone();
    let pods = watcher(api, wc)
        .default_backoff()
        .try_filter(move |ev| {
            let keep = match ev {
                watcher::Event::Apply(p)
                | watcher::Event::Delete(p)
                | watcher::Event::InitApply(p) => {
                    policy::in_scope(&policy, p.metadata.namespace.as_deref().unwrap_or_default())
                }
                watcher::Event::Init | watcher::Event::InitDone => true,
            };
            future::ready(keep)
        })
        .modify(trim)
        .reflect(writer)
        .applied_objects();

    // Whenever this replica becomes leader (a term after none, or after one that ran out), look
    // at every cached pod once: what changed while it did not lead was left to the leader.
    let became_leader = stream::unfold(
        (ctx.leader.clone(), Term::Follower),
        |(mut l, mut prev)| async move {
            loop {
                l.changed().await.ok()?;
                let (now, term) = (std::time::Instant::now(), l.term());
                let edge = term.current_at(now) && !prev.current_at(now);
                prev = term;
                if edge {
                    return Some(((), (l, prev)));
                }
            }
        },
    )
    .chain(stream::pending());

    // The memory sampler and the PromQL triggers name the pods that now read as unhealthy: a
    // leak or an answer from Prometheus changes no pod object.
    let (leak_tx, mut leak_rx) = tokio::sync::mpsc::channel::<ObjectRef<Pod>>(256);
    let leaks = stream::poll_fn(move |cx| leak_rx.poll_recv(cx));

    let controller = Controller::for_stream(pods, reader.clone())
        .with_config(ControllerConfig::default().concurrency(ctx.cfg.concurrency))
        .reconcile_all_on(became_leader)
        .reconcile_on(leaks)
        // A policy created, changed or deleted may change the decision for any pod.
        .reconcile_all_on(policy_changes)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| {
            if let Err(e) = res {
                debug!(error = %e, "reconcile failed");
            }
            future::ready(())
        });

    let readiness = {
        let reader = reader.clone();
        let policies = ctx.policies.get().cloned();
        async move {
            if reader.wait_until_ready().await.is_err() {
                return;
            }
            info!(pods = reader.len(), "pod cache synced");
            if let Some(p) = policies {
                if p.wait_until_ready().await.is_err() {
                    return;
                }
                info!(policies = p.len(), "healing policy cache synced");
            }
            ready.store(true, Ordering::Relaxed);
        }
    };
    let gauges = {
        let ctx = ctx.clone();
        async move {
            // NB: reads the local cache and the leader flag only; no API calls.
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                ctx.metrics
                    .watched_pods
                    .set(i64::try_from(reader.len()).unwrap_or(i64::MAX));
                ctx.metrics.leader.set(i64::from(ctx.is_leader()));
                if let Some(p) = ctx.policies.get() {
                    ctx.metrics
                        .healing_policies
                        .set(i64::try_from(p.len()).unwrap_or(i64::MAX));
                }
            }
        }
    };
    // NB: the Controller polls its shutdown trigger only once the cache is synced; with the API
    // server unreachable at start-up it would never stop. Give it a grace period, then leave.
    let deadline = async {
        shutdown.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        warn!(grace = ?SHUTDOWN_GRACE, "controller did not stop in time, leaving anyway");
    };
    tokio::select! {
        () = controller => info!("controller stopped"),
        () = deadline => {}
        () = async { readiness.await; future::pending::<()>().await } => {}
        () = gauges => {}
        () = status_writer(ctx.clone()) => {}
        () = sampler::run(ctx.clone(), leak_tx.clone()) => {}
        () = promql::run(ctx.clone(), leak_tx) => {}
        () = breaker_loop::run(ctx.clone()) => {}
        () = history_store::run(ctx.clone()) => {}
    }
    history_store::flush(&ctx).await;
}

/// Start the HealingPolicy watch (into `ctx.policies`) and return a stream that yields when a
/// policy is created, its spec changes (generation) or it is deleted — not on status writes —
/// and once when the first list is done.
fn policy_watch(ctx: &Arc<Context>) -> futures::stream::BoxStream<'static, ()> {
    if !ctx.cfg.healing_policies {
        ctx.policies_synced.store(true, Ordering::Relaxed);
        return stream::pending().boxed();
    }
    let (reader, writer) = reflector::store::<HealingPolicy>();
    let _ = ctx.policies.set(reader);
    let api: Api<HealingPolicy> = Api::all(ctx.client.clone());
    let wc = watcher::Config::default().fields(&field_selector(&ctx.cfg));
    let ctx = ctx.clone();
    let mut generations: HashMap<String, Option<i64>> = HashMap::new();
    watcher(api, wc)
        .default_backoff()
        .reflect(writer)
        .filter_map(move |ev| {
            let changed = match ev {
                Ok(watcher::Event::Apply(hp)) => {
                    let g = hp.metadata.generation;
                    generations.insert(pstatus::key(&hp), g) != Some(g)
                }
                Ok(watcher::Event::InitApply(hp)) => {
                    generations.insert(pstatus::key(&hp), hp.metadata.generation);
                    false
                }
                Ok(watcher::Event::Delete(hp)) => {
                    let key = pstatus::key(&hp);
                    generations.remove(&key);
                    ctx.state().records.remove(&key);
                    info!(policy = %key, "healing policy deleted");
                    true
                }
                Ok(watcher::Event::InitDone) => {
                    ctx.policies_synced.store(true, Ordering::Relaxed);
                    true
                }
                Ok(watcher::Event::Init) => false,
                Err(e) => {
                    warn!(error = %e, "watching HealingPolicies failed (is the CRD installed? --healing-policies=false runs without)");
                    false
                }
            };
            future::ready(changed.then_some(()))
        })
        .boxed()
}

/// The leader recomputes every policy's status every [`STATUS_PERIOD`] and after each action,
/// and writes it with server-side apply when it changed.
async fn status_writer(ctx: Arc<Context>) {
    let Some(store) = ctx.policies.get().cloned() else {
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
        if let Some(pods) = ctx.pods.get() {
            for pod in pods.state() {
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if let Some(hp) = pstatus::governing(&policies, &pod) {
                    *matched.entry(pstatus::key(hp)).or_default() += 1;
                }
            }
        }
        for hp in &policies {
            let key = pstatus::key(hp);
            let policy = hp.spec.to_policy(&ctx.policy);
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
        let live: Vec<String> = policies.iter().map(|hp| pstatus::key(hp)).collect();
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
        &PatchParams::apply(crd::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(Error::StatusFailed)
}

fn error_policy(pod: Arc<Pod>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors_total
        .with_label_values(&[err.metric_label()])
        .inc();
    let uid = pod.uid().unwrap_or_default();
    let attempt = {
        let mut st = ctx.state();
        let n = st.failures.entry(uid).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = ctx.backoff(attempt);
    warn!(pod = %pod.name_any(), error = %err, attempt, ?delay, "reconcile failed, backing off");
    Action::requeue(delay)
}

#[instrument(skip_all, fields(pod = %pod.name_any(), namespace = pod.namespace().unwrap_or_default()))]
async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.time_reconcile();
    let now = Timestamp::now();
    let ns = pod.namespace().ok_or(Error::MissingField("namespace"))?;
    let name = pod
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingField("name"))?;
    let uid = pod.uid().ok_or(Error::MissingField("uid"))?;
    let restarts = policy::total_restarts(&pod);

    let recent = {
        let mut st = ctx.state();
        st.reconciles += 1;
        if st.reconciles.is_multiple_of(1000) {
            let keep = ctx.policy.rate_window.max(ctx.policy.giveup_window);
            st.restarts.prune(now, ctx.policy.rate_window * 2);
            st.history.prune(now, keep);
            if st.reported.len() + st.failures.len() + st.blocked.len() > BOOKKEEPING_MAX {
                st.reported.clear();
                st.failures.clear();
                st.blocked.clear();
            }
        }
        st.restarts
            .observe(&uid, now, restarts, ctx.policy.rate_window)
    };

    // Followers keep the cache and the restart rates warm, and act only once they lead.
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }
    if !ctx.policies_synced.load(Ordering::Relaxed) {
        // The HealingPolicies are not listed yet: the default could be the wrong policy.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if !ctx.history_ready.load(Ordering::Relaxed) {
        // The stored recycle history is not read yet: a cooldown could be forgotten.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Terminating pods are the zombie reaper's (never a healing policy's).
    if pod.metadata.deletion_timestamp.is_some() {
        if policy::opted_out(&pod) {
            return Ok(Action::await_change());
        }
        return reaper::handle(&ctx, &pod, now).await;
    }
    let gov = match ctx.governing(&pod) {
        Ok(g) => g,
        Err((hp, e)) => {
            // NB: never fall back to the default for a pod its policy meant to govern.
            warn!(policy = %pstatus::key(&hp), error = %e, "healing policy unusable, pod left alone");
            ctx.record(Some(&hp), |r| r.failed(e.to_string()));
            return Ok(Action::await_change());
        }
    };
    let pol: &Policy = &gov.policy;
    let observed = Observed {
        recent_restarts: recent,
        leak: pol
            .memory_trend
            .as_ref()
            .and_then(|rule| trend::leak(&ctx.state().memory, &pod, rule, now)),
        error_ratio: pol.error_rate.and_then(|_| ctx.error_ratio(&gov, now)),
        pool: ctx.pool_exhaustion(&gov, &pod, now),
    };
    // NB: a pod over the lifetime threshold whose restarts are history goes on to `decide`,
    // which says once why it is left alone (`restarts_in_the_past`).
    if pod.metadata.deletion_timestamp.is_some()
        || (policy::trigger(&pod, pol, &observed, now).is_none()
            && !policy::lifetime_over_threshold(&pod, pol))
    {
        {
            let mut st = ctx.state();
            st.failures.remove(&uid);
            // NB: `blocked` stays: a crash-looping pod's trigger flickers between crashes, and
            // clearing the PDB backoff then would retry the eviction every second for ever.
            st.reported.remove(&uid);
        }
        // A trigger pending on time alone (notReadyFor, image-pull grace) sends no pod change.
        return Ok(match policy::next_check(&pod, pol, now) {
            Some(at) if pod.metadata.deletion_timestamp.is_none() => {
                Action::requeue(to_std(at.duration_since(now)) + Duration::from_millis(250))
            }
            _ => Action::await_change(),
        });
    }

    let workload = if policy::has_controller(&pod) {
        ctx.owners.resolve(&pod).await?
    } else {
        None
    };
    let siblings = if pol.min_healthy > 0 {
        ctx.healthy_siblings(&pod)
    } else {
        0
    };
    let decision = {
        let mut st = ctx.state();
        let history = workload
            .as_ref()
            .map(|w| st.history.get(&w.key))
            .unwrap_or_default();
        let decision = policy::decide(&pod, pol, &history, &observed, siblings, now);
        // A PodDisruptionBudget refused this pod's eviction: no new try before the backoff
        // delay, however often the pod changes meanwhile.
        let retry_at = st
            .blocked
            .get(&uid)
            .map(|(_, at)| *at)
            .filter(|at| *at > now);
        if let (Decision::Recycle { .. }, Some(at)) = (&decision, retry_at) {
            drop(st);
            debug!(%at, "eviction refused earlier; waiting out the backoff");
            return Ok(Action::requeue(
                to_std(at.duration_since(now)) + Duration::from_millis(250),
            ));
        }
        if let (Decision::Recycle { .. }, Some(w)) = (&decision, &workload) {
            // Reserve the slot now so a sibling pod reconciled concurrently sees the cooldown.
            st.history.record(&w.key, now);
        }
        st.failures.remove(&uid);
        decision
    };
    let pod_ref = pod.object_ref(&());
    let owner_name = workload
        .as_ref()
        .map_or_else(|| "none".to_owned(), |w| w.key.to_string());

    match decision {
        Decision::Skip(skip) => {
            if skip.is_reported() && first_report(&ctx, &gov, &uid, skip_label(skip)) {
                info!(restarts, cause = skip_label(skip), "not recycling pod");
                ctx.metrics
                    .not_recycled_total
                    .with_label_values(&[skip_label(skip)])
                    .inc();
                let note = format!(
                    "{} restarts; not recycled: {} ({})",
                    restarts,
                    skip.describe(),
                    gov.describe()
                );
                ctx.publish_both(
                    &pod_ref,
                    workload.as_ref(),
                    (EventType::Normal, "NotRecycled", "Skip"),
                    note.clone(),
                    format!("pod {name}: {note}"),
                )
                .await;
            }
            Ok(Action::await_change())
        }
        Decision::Wait {
            reason,
            cause,
            until,
        } => {
            let label = wait_label(cause);
            if first_report(&ctx, &gov, &uid, label) {
                info!(restarts, reason = reason.label(), cause = label, %until, "recycle deferred");
                ctx.metrics
                    .not_recycled_total
                    .with_label_values(&[label])
                    .inc();
                let note = format!(
                    "{} ({} restarts); not recycled yet: {}; next check at {until} ({})",
                    reason.label(),
                    restarts,
                    cause.describe(),
                    gov.describe()
                );
                ctx.publish_both(
                    &pod_ref,
                    workload.as_ref(),
                    (EventType::Normal, "NotRecycled", "Wait"),
                    note.clone(),
                    format!("pod {name}: {note}"),
                )
                .await;
            }
            // NB: a little past `until` so the recheck does not land just before it.
            Ok(Action::requeue(
                to_std(until.duration_since(now)) + Duration::from_millis(250),
            ))
        }
        Decision::GiveUp { reason, recycles } => {
            let first = workload
                .as_ref()
                .is_some_and(|w| ctx.state().history.mark_gave_up(&w.key, now));
            if first {
                ctx.metrics.giveups_total.inc();
                ctx.record(gov.source.as_ref(), |r| r.gave_up(now));
                let evidence = evidence(&ctx, &pod, &ns, &name).await;
                warn!(workload = %owner_name, recycles, reason = reason.label(), "giving up on workload");
                let note = format!(
                    "giving up: {owner_name} recycled {recycles} times (max {}, {}) and pod {name} is still unhealthy ({}, {restarts} restarts); needs a human. {evidence}",
                    pol.max_retries,
                    gov.describe(),
                    reason.label()
                );
                ctx.publish_both(
                    &pod_ref,
                    workload.as_ref(),
                    (EventType::Warning, "GivingUp", "GiveUp"),
                    note.clone(),
                    note,
                )
                .await;
            }
            Ok(Action::await_change())
        }
        Decision::Recycle { reason } => {
            act(
                &ctx,
                &gov,
                &pod,
                &pod_ref,
                workload.as_ref(),
                (reason, &observed),
                now,
            )
            .await
        }
    }
}

fn first_report(ctx: &Context, gov: &Governed<'_>, uid: &str, label: &'static str) -> bool {
    let cause = (label, gov.describe());
    ctx.state().reported.insert(uid.to_owned(), cause.clone()) != Some(cause)
}

/// Report a refused action once per pod and cause: `not_recycled_total{reason=label}`, a
/// `NotRecycled` Warning on the pod and its owner; the policy's status says it failed every time.
async fn refused(
    ctx: &Context,
    gov: &Governed<'_>,
    uid: &str,
    label: &'static str,
    (pod_ref, workload): (&ObjectReference, Option<&Workload>),
    note: String,
) {
    if first_report(ctx, gov, uid, label) {
        ctx.metrics
            .not_recycled_total
            .with_label_values(&[label])
            .inc();
        warn!(reason = label, "{note}");
        let owner_note = format!(
            "pod {}: {note}",
            pod_ref.name.as_deref().unwrap_or_default()
        );
        ctx.publish_both(
            pod_ref,
            workload,
            (EventType::Warning, "NotRecycled", "Skip"),
            note.clone(),
            owner_note,
        )
        .await;
    }
    ctx.record(gov.source.as_ref(), |r| r.failed(note));
}

fn skip_label(s: SkipReason) -> &'static str {
    match s {
        SkipReason::Healthy => "healthy",
        SkipReason::Terminating => "terminating",
        SkipReason::OutOfScope => "out_of_scope",
        SkipReason::OptedOut => "opted_out",
        SkipReason::NoController => "no_controller",
        SkipReason::RestartsInThePast => "restarts_in_the_past",
    }
}

fn wait_label(c: policy::WaitCause) -> &'static str {
    match c {
        policy::WaitCause::MinAge => "min_age",
        policy::WaitCause::Cooldown => "cooldown",
        policy::WaitCause::RateLimited => "rate_limited",
        policy::WaitCause::MinHealthy => "min_healthy",
    }
}

/// Event `reason` and `action` of a policy action.
fn event_names(action: policy::Action) -> (&'static str, &'static str) {
    match action {
        policy::Action::Evict => ("Recycled", "Evict"),
        policy::Action::RolloutRestart => ("RolloutRestarted", "RolloutRestart"),
        policy::Action::ScaleTo(_) => ("Scaled", "ScaleTo"),
        policy::Action::Observe => ("Observed", "Observe"),
    }
}

/// What an action does, in words: `evict pod web-abc`, `scaleTo 0 Deployment/shop/web`.
fn action_target(action: policy::Action, pod: &str, owner: &str) -> String {
    match action {
        policy::Action::Evict | policy::Action::Observe => format!("{} {pod}", action.spec_name()),
        policy::Action::RolloutRestart => format!("rolloutRestart {owner}"),
        policy::Action::ScaleTo(n) => format!("scaleTo {n} {owner}"),
    }
}

/// Take the governing policy's action (or, in dry-run / `none`, report it).
async fn act(
    ctx: &Context,
    gov: &Governed<'_>,
    pod: &Pod,
    pod_ref: &ObjectReference,
    workload: Option<&Workload>,
    (reason, observed): (Reason, &Observed),
    now: Timestamp,
) -> Result<Action> {
    let action = gov.policy.action;
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let restarts = policy::total_restarts(pod);
    // The trigger, and for a leak what was measured and when the limit is due.
    let why = match (reason, &observed.leak, observed.error_ratio, &observed.pool) {
        (Reason::MemoryLeak, Some(l), _, _) => format!("{}: {}", reason.label(), l.describe()),
        (Reason::PoolExhausted, _, _, Some(p)) => format!("{}: {}", reason.label(), p.describe()),
        (Reason::ErrorRate, _, Some(r), _) => format!(
            "{}: the policy's query answered {r:.3}, over {}",
            reason.label(),
            gov.policy.error_rate.unwrap_or_default()
        ),
        _ => reason.label().to_owned(),
    };
    let owner_name = workload.map_or_else(|| "none".to_owned(), |w| w.key.to_string());
    let by = gov.describe();
    let unreserve = || {
        if let Some(w) = workload {
            ctx.state().history.unrecord(&w.key, now);
        }
    };
    let count = |outcome: &str| {
        ctx.metrics
            .healing_actions_total
            .with_label_values(&[action.label(), outcome])
            .inc();
    };
    let what = action_target(action, &name, &owner_name);
    let record_done = |dry_run: bool| {
        ctx.record(gov.source.as_ref(), |r| {
            r.acted(
                LastAction {
                    action: action.spec_name().into(),
                    pod: name.clone(),
                    workload: owner_name.clone(),
                    reason: reason.label().into(),
                    dry_run,
                    time: Time(now),
                    summary: format!(
                        "{}{what} ({})",
                        if dry_run { "dry-run: " } else { "" },
                        reason.label()
                    ),
                },
                now,
            );
        });
    };

    let execution = policy::execution(
        &gov.policy,
        ctx.cfg.dry_run,
        workload.map(|w| w.key.kind.as_str()),
    );
    // An action this pod's case refuses: said once, the slot given back, the policy Degraded.
    let refuse = |label: &'static str, outcome: &'static str, note: String| {
        unreserve();
        count(outcome);
        refused(ctx, gov, &uid, label, (pod_ref, workload), note)
    };
    if matches!(execution, policy::Execution::Unsupported(_)) {
        let note = format!(
            "{} ({restarts} restarts) but action {} supports Deployments only and the owner is {owner_name} ({by})",
            why,
            action.spec_name()
        );
        refuse("unsupported_owner", "unsupported", note).await;
        return Ok(Action::await_change());
    }
    // Evidence first: the evicted pod takes its logs with it.
    let evidence = evidence(ctx, pod, &ns, &name).await;
    let (event_reason, event_action) = event_names(action);

    let dry_run = matches!(execution, policy::Execution::DryRun(_));
    if dry_run || execution == policy::Execution::Observe {
        let note = if execution == policy::Execution::Observe {
            count("observed");
            format!(
                "observed: {} ({restarts} restarts); action none, nothing changed ({by})",
                why
            )
        } else {
            count("dry_run");
            format!(
                "dry-run: would {what} ({}, {restarts} restarts) ({by})",
                why
            )
        };
        info!(workload = %owner_name, reason = reason.label(), restarts, action = action.label(), "{note}");
        ctx.publish_both(
            pod_ref,
            workload,
            (
                EventType::Normal,
                event_reason,
                if dry_run { "DryRun" } else { event_action },
            ),
            note.clone(),
            format!("pod {name}: {note}. {evidence}"),
        )
        .await;
        record_done(true);
        return Ok(Action::await_change());
    }

    if let (policy::Action::ScaleTo(n), Some(w)) = (action, workload) {
        // NB: an HPA owns spec.replicas: a scale would be undone at its next sync and the two
        // would fight. Refused like the breaker refuses it; the HPA's own bounds are the fix.
        match crate::owner::autoscaler_of(&ctx.client, &ns, &w.key.name).await {
            Ok(None) => {}
            Ok(Some(hpa)) => {
                let note = format!(
                    "{why} ({restarts} restarts) but scaleTo {n} refused: HorizontalPodAutoscaler {hpa} scales {owner_name}, a scale would fight it ({by})"
                );
                refuse("autoscaled", "refused", note).await;
                return Ok(Action::await_change());
            }
            Err(e) => {
                unreserve();
                count("failed");
                return Err(Error::ActionFailed(e));
            }
        }
    }
    if let (policy::Action::RolloutRestart | policy::Action::ScaleTo(_), Some(w)) =
        (action, workload)
    {
        if let Err(e) = ctx.ensure_leader("a Deployment patch") {
            unreserve();
            return Err(e);
        }
        let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
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
        return match result {
            Ok(()) => {
                count("done");
                info!(workload = %owner_name, reason = reason.label(), restarts, action = action.label(), "acted on workload");
                let note = format!("{what} ({}, {restarts} restarts of pod {name}) ({by})", why);
                ctx.publish_both(
                    pod_ref,
                    workload,
                    (EventType::Normal, event_reason, event_action),
                    note.clone(),
                    format!("{note}. {evidence}"),
                )
                .await;
                record_done(false);
                Ok(Action::await_change())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                unreserve();
                debug!("deployment gone before the action");
                Ok(Action::await_change())
            }
            Err(e) => {
                unreserve();
                count("failed");
                ctx.record(gov.source.as_ref(), |r| {
                    r.failed(format!("{what} failed: {e}"))
                });
                Err(Error::ActionFailed(e))
            }
        };
    }

    if let Err(e) = ctx.ensure_leader("an eviction") {
        unreserve();
        return Err(e);
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    // NB: evict, not delete, so PodDisruptionBudgets are honoured.
    match api.evict(&name, &EvictParams::default()).await {
        Ok(_) => {
            ctx.metrics
                .recycles_total
                .with_label_values(&[&ns, reason.label()])
                .inc();
            count("done");
            record_done(false);
            ctx.state().blocked.remove(&uid);
            info!(workload = %owner_name, reason = reason.label(), restarts, "evicted pod");
            let note = format!(
                "evicted ({}, {restarts} restarts) so {owner_name} replaces it ({by})",
                why
            );
            ctx.publish_both(
                pod_ref,
                workload,
                (EventType::Normal, "Recycled", "Evict"),
                note,
                format!(
                    "evicted pod {name} ({}, {restarts} restarts). {evidence}",
                    why
                ),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(status)) if status.code == 429 => {
            unreserve();
            count("blocked");
            ctx.metrics.evictions_blocked_total.inc();
            let (attempt, delay) = {
                let mut st = ctx.state();
                let entry = st.blocked.entry(uid).or_insert((0, now));
                let attempt = entry.0.saturating_add(1);
                let delay = ctx.backoff(attempt);
                *entry = (
                    attempt,
                    now + SignedDuration::try_from(delay).unwrap_or_default(),
                );
                (attempt, delay)
            };
            warn!(workload = %owner_name, attempt, ?delay, message = %status.message, "eviction blocked by disruption budget");
            let note = format!(
                "eviction refused ({}): {}; retry {attempt} in {}s, never forced",
                why,
                status.message,
                delay.as_secs()
            );
            ctx.publish_both(
                pod_ref,
                workload,
                (EventType::Warning, "RecycleBlocked", "Evict"),
                note.clone(),
                format!("pod {name}: {note}"),
            )
            .await;
            Ok(Action::requeue(delay))
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {
            unreserve();
            debug!("pod gone before eviction");
            Ok(Action::await_change())
        }
        Err(e) => {
            unreserve();
            count("failed");
            ctx.record(gov.source.as_ref(), |r| {
                r.failed(format!("evicting {name} failed: {e}"))
            });
            Err(Error::EvictFailed(e))
        }
    }
}

/// Last termination reason and exit code of every restarted container, plus the bounded tail of
/// the previous log of the most-restarted one. Never fails: missing logs are said so.
async fn evidence(ctx: &Context, pod: &Pod, ns: &str, name: &str) -> String {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for c in &statuses {
        if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
            out.push(format!(
                "container {}: last terminated {} (exit {}), {} restarts",
                c.name,
                t.reason.as_deref().unwrap_or("unknown"),
                t.exit_code,
                c.restart_count
            ));
        }
    }
    let worst = statuses
        .iter()
        .filter(|c| c.restart_count > 0)
        .max_by_key(|c| c.restart_count);
    // NB: opt-in. A log tail copied into an Event is readable by everyone who can read Events in
    // that namespace, often more people than can read the pod's logs.
    if let Some(c) = worst.filter(|_| ctx.cfg.log_evidence) {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        let lp = LogParams {
            container: Some(c.name.clone()),
            previous: true,
            tail_lines: Some(ctx.cfg.log_tail_lines),
            limit_bytes: i64::try_from(ctx.cfg.log_tail_bytes.saturating_mul(4)).ok(),
            ..LogParams::default()
        };
        match api.logs(name, &lp).await {
            Ok(log) => out.push(format!(
                "log tail of {}: {}",
                c.name,
                tail(log.trim_end(), ctx.cfg.log_tail_bytes)
            )),
            Err(e) => out.push(format!("log of {} unavailable: {e}", c.name)),
        }
    }
    if out.is_empty() {
        "no termination recorded".into()
    } else {
        out.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pod;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn trim_keeps_what_the_decision_needs_and_drops_the_rest() {
        let mut p = pod()
            .with_restarts(5)
            .waiting("CrashLoopBackOff")
            .last_terminated("OOMKilled", 137)
            .annotated(IGNORE_ANNOTATION, "true")
            .annotated("kubectl.kubernetes.io/last-applied-configuration", "{...}")
            .labelled("app", "web")
            .ready(false, 30)
            .owned_by_rs("web")
            .build();
        p.metadata.managed_fields = Some(vec![Default::default()]);
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("web:1".into()),
                resources: Some(ResourceRequirements {
                    limits: Some(BTreeMap::from([
                        ("memory".into(), Quantity("128Mi".into())),
                        ("cpu".into(), Quantity("1".into())),
                    ])),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            }],
            node_name: Some("n1".into()),
            service_account_name: Some("web".into()),
            ..PodSpec::default()
        });
        let before = p.clone();
        trim(&mut p);
        assert!(p.metadata.managed_fields.is_none());
        // Of the spec, the memory limit stays (the memory trend needs it).
        let spec = p.spec.as_ref().expect("slim spec");
        // ... and the node name (the zombie reaper looks the node up).
        assert_eq!(
            (
                spec.node_name.as_deref(),
                spec.service_account_name.as_deref()
            ),
            (Some("n1"), None)
        );
        let c = &spec.containers[0];
        assert_eq!((c.name.as_str(), c.image.as_deref()), ("app", None));
        assert_eq!(
            crate::trend::memory_limits(&p),
            vec![("app".to_owned(), 128 << 20)]
        );
        assert_eq!(p.metadata.annotations.as_ref().map(BTreeMap::len), Some(1));
        // Selectors match on labels; notReadyFor and minHealthyReplicas read the Ready condition.
        assert_eq!(p.metadata.labels, before.metadata.labels);
        assert_eq!(
            policy::not_ready_since(&p),
            policy::not_ready_since(&before)
        );
        assert!(policy::not_ready_since(&p).is_some());
        assert_eq!(
            p.metadata.owner_references,
            before.metadata.owner_references
        );
        let pol = crate::fixtures::policy();
        let now = crate::fixtures::NOW;
        let h = Default::default();
        assert_eq!(
            policy::decide(&p, &pol, &h, &Observed::default(), 0, now),
            policy::decide(&before, &pol, &h, &Observed::default(), 0, now)
        );
    }

    #[test]
    fn tail_and_truncate_respect_char_boundaries() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(truncate("ééééé".into(), 6), "é...");
        assert_eq!(truncate("short".into(), 10), "short");
    }

    #[test]
    fn field_selector_excludes_system_namespaces_and_pins_a_single_namespace() {
        use clap::Parser;
        let cfg = Config::try_parse_from([
            "c",
            "--namespaces=shop",
            "--pod-namespace=ops",
            "--exclude-namespaces=kube-system",
        ])
        .expect("parse");
        assert_eq!(
            field_selector(&cfg),
            "metadata.namespace!=kube-system,metadata.namespace!=kube-public,\
             metadata.namespace!=kube-node-lease,metadata.namespace!=ops,metadata.namespace=shop"
        );
    }
}
