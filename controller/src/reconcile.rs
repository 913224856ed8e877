//! Kubernetes I/O around the pure decision: the pod watch, evidence, Events and evictions.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt, future, stream};
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodStatus};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{EvictParams, LogParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{debug, info, instrument, warn};

use crate::config::Config;
use crate::history::{History, RestartTracker};
use crate::metrics::Metrics;
use crate::owner::{OwnerResolver, Workload};
use crate::policy::{self, Decision, IGNORE_ANNOTATION, Policy, Reason, SkipReason};
use crate::{Error, Result};

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
    leader: watch::Receiver<bool>,
    owners: OwnerResolver,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    history: History,
    restarts: RestartTracker,
    /// Consecutive reconcile errors per pod UID, for exponential backoff.
    failures: HashMap<String, u32>,
    /// Consecutive PDB refusals per pod UID.
    blocked: HashMap<String, u32>,
    /// Last `NotRecycled` cause reported per pod UID, so a cause is reported once.
    reported: HashMap<String, &'static str>,
    reconciles: u64,
}

impl Context {
    /// Build the context; `leader` says whether this replica may act. Build `client` with
    /// [`client`]/[`client_from`] so a PDB refusal (429) reaches the reconciler.
    pub fn new(
        client: Client,
        cfg: Config,
        metrics: Arc<Metrics>,
        leader: watch::Receiver<bool>,
    ) -> Self {
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
        }
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

    async fn publish(
        &self,
        target: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
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
    async fn publish_both(
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
    meta.labels = None;
    meta.generate_name = None;
    meta.finalizers = None;
    if let Some(a) = meta.annotations.take() {
        let kept: BTreeMap<_, _> = a
            .into_iter()
            .filter(|(k, _)| k == IGNORE_ANNOTATION)
            .collect();
        meta.annotations = (!kept.is_empty()).then_some(kept);
    }
    pod.spec = None;
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
        pod.status = Some(PodStatus {
            phase: status.phase,
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

    // Whenever this replica becomes leader, look at every cached pod once.
    let became_leader = stream::unfold(ctx.leader.clone(), |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            if *rx.borrow_and_update() {
                return Some(((), rx));
            }
        }
    })
    .chain(stream::pending());

    let controller = Controller::for_stream(pods, reader.clone())
        .with_config(ControllerConfig::default().concurrency(ctx.cfg.concurrency))
        .reconcile_all_on(became_leader)
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
        async move {
            if reader.wait_until_ready().await.is_ok() {
                ready.store(true, Ordering::Relaxed);
                info!(pods = reader.len(), "pod cache synced");
            }
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
                ctx.metrics.leader.set(i64::from(*ctx.leader.borrow()));
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
    }
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
    if !*ctx.leader.borrow() {
        return Ok(Action::await_change());
    }
    if pod.metadata.deletion_timestamp.is_some()
        || policy::trigger(&pod, &ctx.policy, recent, now).is_none()
    {
        let mut st = ctx.state();
        st.failures.remove(&uid);
        st.blocked.remove(&uid);
        st.reported.remove(&uid);
        return Ok(Action::await_change());
    }

    let workload = if policy::has_controller(&pod) {
        ctx.owners.resolve(&pod).await?
    } else {
        None
    };
    let decision = {
        let mut st = ctx.state();
        let history = workload
            .as_ref()
            .map(|w| st.history.get(&w.key))
            .unwrap_or_default();
        let decision = policy::decide(&pod, &ctx.policy, &history, recent, now);
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
            if skip.is_reported() && first_report(&ctx, &uid, skip_label(skip)) {
                info!(restarts, cause = skip_label(skip), "not recycling pod");
                ctx.metrics
                    .not_recycled_total
                    .with_label_values(&[skip_label(skip)])
                    .inc();
                let note = format!("{} restarts; not recycled: {}", restarts, skip.describe());
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
            if first_report(&ctx, &uid, label) {
                info!(restarts, reason = reason.label(), cause = label, %until, "recycle deferred");
                ctx.metrics
                    .not_recycled_total
                    .with_label_values(&[label])
                    .inc();
                let note = format!(
                    "{} ({} restarts); not recycled yet: {}; next check at {until}",
                    reason.label(),
                    restarts,
                    cause.describe()
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
                let evidence = evidence(&ctx, &pod, &ns, &name).await;
                warn!(workload = %owner_name, recycles, reason = reason.label(), "giving up on workload");
                let note = format!(
                    "giving up: {owner_name} recycled {recycles} times (max {}) and pod {name} is still unhealthy ({}, {restarts} restarts); needs a human. {evidence}",
                    ctx.policy.max_retries,
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
            recycle(&ctx, &pod, &pod_ref, workload.as_ref(), reason, now).await
        }
    }
}

fn first_report(ctx: &Context, uid: &str, label: &'static str) -> bool {
    ctx.state().reported.insert(uid.to_owned(), label) != Some(label)
}

fn skip_label(s: SkipReason) -> &'static str {
    match s {
        SkipReason::Healthy => "healthy",
        SkipReason::Terminating => "terminating",
        SkipReason::OutOfScope => "out_of_scope",
        SkipReason::OptedOut => "opted_out",
        SkipReason::NoController => "no_controller",
    }
}

fn wait_label(c: policy::WaitCause) -> &'static str {
    match c {
        policy::WaitCause::MinAge => "min_age",
        policy::WaitCause::Cooldown => "cooldown",
        policy::WaitCause::RateLimited => "rate_limited",
    }
}

async fn recycle(
    ctx: &Context,
    pod: &Pod,
    pod_ref: &ObjectReference,
    workload: Option<&Workload>,
    reason: Reason,
    now: Timestamp,
) -> Result<Action> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let restarts = policy::total_restarts(pod);
    let owner_name = workload.map_or_else(|| "none".to_owned(), |w| w.key.to_string());
    let unreserve = || {
        if let Some(w) = workload {
            ctx.state().history.unrecord(&w.key, now);
        }
    };
    // Evidence first: the evicted pod takes its logs with it.
    let evidence = evidence(ctx, pod, &ns, &name).await;

    if ctx.cfg.dry_run {
        info!(workload = %owner_name, reason = reason.label(), restarts, "dry-run: would evict pod");
        let note = format!(
            "dry-run: would evict ({}, {restarts} restarts)",
            reason.label()
        );
        ctx.publish_both(
            pod_ref,
            workload,
            (EventType::Normal, "Recycled", "DryRun"),
            note.clone(),
            format!("pod {name}: {note}. {evidence}"),
        )
        .await;
        return Ok(Action::await_change());
    }

    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    // NB: evict, not delete, so PodDisruptionBudgets are honoured.
    match api.evict(&name, &EvictParams::default()).await {
        Ok(_) => {
            ctx.metrics
                .recycles_total
                .with_label_values(&[&ns, reason.label()])
                .inc();
            ctx.state().blocked.remove(&uid);
            info!(workload = %owner_name, reason = reason.label(), restarts, "evicted pod");
            let note = format!(
                "evicted ({}, {restarts} restarts) so {owner_name} replaces it",
                reason.label()
            );
            ctx.publish_both(
                pod_ref,
                workload,
                (EventType::Normal, "Recycled", "Evict"),
                note,
                format!(
                    "evicted pod {name} ({}, {restarts} restarts). {evidence}",
                    reason.label()
                ),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(status)) if status.code == 429 => {
            unreserve();
            ctx.metrics.evictions_blocked_total.inc();
            let attempt = {
                let mut st = ctx.state();
                let n = st.blocked.entry(uid).or_insert(0);
                *n = n.saturating_add(1);
                *n
            };
            let delay = ctx.backoff(attempt);
            warn!(workload = %owner_name, attempt, ?delay, message = %status.message, "eviction blocked by disruption budget");
            let note = format!(
                "eviction refused ({}): {}; retry {attempt} in {}s, never forced",
                reason.label(),
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
    if let Some(c) = worst {
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

    #[test]
    fn trim_keeps_what_the_decision_needs_and_drops_the_rest() {
        let mut p = pod()
            .with_restarts(5)
            .waiting("CrashLoopBackOff")
            .last_terminated("OOMKilled", 137)
            .annotated(IGNORE_ANNOTATION, "true")
            .annotated("kubectl.kubernetes.io/last-applied-configuration", "{...}")
            .owned_by_rs("web")
            .build();
        p.metadata.managed_fields = Some(vec![Default::default()]);
        p.spec = Some(Default::default());
        let before = p.clone();
        trim(&mut p);
        assert!(p.metadata.managed_fields.is_none());
        assert!(p.spec.is_none());
        assert_eq!(p.metadata.annotations.as_ref().map(BTreeMap::len), Some(1));
        assert_eq!(
            p.metadata.owner_references,
            before.metadata.owner_references
        );
        let pol = crate::fixtures::policy();
        let now = crate::fixtures::NOW;
        let h = Default::default();
        assert_eq!(
            policy::decide(&p, &pol, &h, 0, now),
            policy::decide(&before, &pol, &h, 0, now)
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
            "metadata.namespace!=kube-system,metadata.namespace!=ops,metadata.namespace=shop"
        );
    }
}
