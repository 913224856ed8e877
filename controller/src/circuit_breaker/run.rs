//! Kubernetes I/O around [`crate::circuit_breaker::machine`]: watch the CircuitBreakers, and every
//! `--prometheus-interval-secs` (leader only) read each one afresh, ask its query, step its state
//! machine, scale its Deployment, and record the transition as Events, a metric and status.
//!
//! Fail safe:
//! - intent first: a transition that scales is written to status (new state, the replicas to
//!   restore, `pendingScale`) before the target is touched; a round that finds `pendingScale`
//!   finishes that scale before deciding anything. A crash, a failed scale or a failed write
//!   between the two steps is finished by the next round instead of losing the memory;
//! - every status write is conditional on the version the round read (and then on its own last
//!   write): a second writer loses its round with a 409 and scales nothing, it never replaces
//!   history it has not seen;
//! - a target an HPA scales is refused (`Ready=False`, `TargetAutoscaled`): the HPA would scale
//!   it back up and the two would fight;
//! - without `--prometheus-url` or with a missing target nothing is scaled, and `Ready=False`
//!   says why.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt, future};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::circuit_breaker::machine::{self as breaker, Inputs, State, Step};
use crate::circuit_breaker::resource::{CircuitBreaker, CircuitBreakerStatus, TransitionRecord};
use crate::config::Config;
use crate::events::Events;
use crate::healers::promql;
use crate::healing_policy::resource::FIELD_MANAGER;
use crate::healing_policy::status::condition;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::policy::{self, Policy};
use crate::{Error, Result, owner};

/// What the breaker loop needs: it shares nothing with the pod reconciler but the process.
pub struct Breakers {
    client: Client,
    cfg: Config,
    /// `--namespaces` / `--exclude-namespaces`, as a policy reads them.
    scope: Policy,
    metrics: Arc<Metrics>,
    events: Events,
    leader: Leadership,
    /// The client for `--prometheus-url` (`None`: no breaker is evaluated).
    prom: Option<selfheal_promql::Client>,
}

impl Breakers {
    /// The breakers' inputs; `leader` says whether this replica may act.
    pub fn new(client: Client, cfg: Config, metrics: Arc<Metrics>, leader: Leadership) -> Self {
        let events = Events::new(&client, &cfg.pod_name, &leader, &metrics);
        Self {
            prom: promql::client(cfg.prometheus_url.as_deref()),
            scope: cfg.policy(),
            client,
            cfg,
            metrics,
            events,
            leader,
        }
    }

    fn in_scope(&self, ns: &str) -> bool {
        policy::in_scope(&self.scope, ns)
    }
}

/// Why a breaker is not evaluated (`Ready=False`), or `Evaluated`.
struct Readiness {
    ready: bool,
    reason: &'static str,
    message: String,
}

impl Readiness {
    fn not(reason: &'static str, message: String) -> Self {
        Self {
            ready: false,
            reason,
            message,
        }
    }
}

/// Watch and evaluate every CircuitBreaker until `shutdown` resolves (only wait for it without
/// `--circuit-breakers`).
pub async fn run(ctx: Arc<Breakers>, shutdown: impl Future<Output = ()>) {
    if !ctx.cfg.circuit_breakers {
        return shutdown.await;
    }
    let (reader, writer) = reflector::store::<CircuitBreaker>();
    let api: Api<CircuitBreaker> = Api::all(ctx.client.clone());
    let watch = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(|ev| {
            if let Err(e) = ev {
                warn!(error = %e, "watching CircuitBreakers failed (is the CRD installed? --circuit-breakers=false runs without)");
            }
            future::ready(())
        });
    tokio::select! {
        () = watch => {}
        () = evaluate_all(ctx, reader) => {}
        () = shutdown.fuse() => info!("circuit breakers stopped"),
    }
}

async fn evaluate_all(ctx: Arc<Breakers>, reader: Store<CircuitBreaker>) {
    let mut tick =
        tokio::time::interval(Duration::from_secs(ctx.cfg.prometheus_interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut counts: HashMap<State, i64> = HashMap::new();
        for cached in reader.state() {
            let ns = cached.namespace().unwrap_or_default();
            if !ctx.in_scope(&ns) {
                continue;
            }
            let state = cached
                .status
                .as_ref()
                .and_then(|s| s.state.as_deref())
                .map_or(State::Closed, State::parse);
            *counts.entry(state).or_default() += 1;
            if !ctx.leader.is_current() {
                continue;
            }
            if let Err(e) = round(&ctx, &cached).await {
                if e.is_conflict() {
                    // Someone else wrote the breaker since we read it. Every scale follows a
                    // conditional write of the same round, so a stale read scaled nothing (a
                    // 409 on the write *after* a scale leaves that scale recorded as intent,
                    // which the next round finishes or finds done); the next round starts from
                    // what they wrote.
                    info!(breaker = %key(&cached), "the breaker changed under this round; next round reads it again");
                    continue;
                }
                ctx.metrics
                    .reconcile_errors_total
                    .with_label_values(&[e.metric_label()])
                    .inc();
                warn!(breaker = %key(&cached), error = %e, "circuit breaker round failed");
            }
        }
        for state in [State::Closed, State::Open, State::HalfOpen] {
            ctx.metrics
                .circuit_breakers
                .with_label_values(&[state.name()])
                .set(counts.get(&state).copied().unwrap_or(0));
        }
    }
}

fn key(cb: &CircuitBreaker) -> String {
    format!("{}/{}", cb.namespace().unwrap_or_default(), cb.name_any())
}

/// One round for the breaker `cached` names, on a fresh read of it: the cache may not have seen
/// this controller's last write yet, and deciding on an old status would step the machine twice.
async fn round(ctx: &Breakers, cached: &CircuitBreaker) -> Result<()> {
    let api: Api<CircuitBreaker> =
        Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let Some(cb) = api
        .get_opt(&cached.name_any())
        .await
        .map_err(Error::StatusFailed)?
    else {
        return Ok(());
    };
    let mut w = StatusWriter::new(api, &cb, ctx.leader.clone());
    evaluate(ctx, &cb, &mut w).await
}

/// One round for one breaker, writing through `w`.
async fn evaluate(ctx: &Breakers, cb: &CircuitBreaker, w: &mut StatusWriter) -> Result<()> {
    let now = Timestamp::now();
    let ns = cb.namespace().unwrap_or_default();
    let mut status = cb.status.clone().unwrap_or_default();
    let rule = match cb.spec.rule() {
        Ok(r) => r,
        Err(e) => {
            let r = Readiness::not("InvalidSpec", e.to_string());
            return w.put(status, &r, now).await;
        }
    };
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let target = &cb.spec.target_ref.name;
    let Some(dep) = deployments
        .get_opt(target)
        .await
        .map_err(Error::TargetLookupFailed)?
    else {
        let r = Readiness::not(
            "TargetNotFound",
            format!("Deployment {ns}/{target} not found"),
        );
        return w.put(status, &r, now).await;
    };
    let guarding = Readiness {
        ready: true,
        reason: "Evaluated",
        message: format!("guarding Deployment {target}"),
    };
    if let Some(hpa) = owner::autoscaler_of(&ctx.client, &ns, target)
        .await
        .map_err(Error::TargetLookupFailed)?
    {
        let r = Readiness::not(
            "TargetAutoscaled",
            format!(
                "HorizontalPodAutoscaler {hpa} scales Deployment {target}: a breaker would fight it"
            ),
        );
        // NB: a recorded scale is dropped too: the HPA owns the replicas now.
        status.pending_scale = None;
        return w.put(status, &r, now).await;
    }
    // A scale decided and recorded in an earlier round but not confirmed done (the controller
    // died, or the scale or the write after it failed): finish it before deciding anything,
    // otherwise the half-done scale would read as someone else's manual override.
    if let Some(n) = status.pending_scale {
        let dry_run = cb.spec.dry_run || ctx.cfg.dry_run;
        if dry_run || status.observed_generation != cb.metadata.generation {
            // The spec changed since the intent (another target, dry-run on): drop it; the
            // next round decides afresh from what it sees.
            status.pending_scale = None;
            info!(breaker = %key(cb), replicas = n, "dropped a recorded scale: the spec changed since");
            return w.put(status, &guarding, now).await;
        }
        // Claim the round with a conditional write first: of two writers holding the same
        // intent (a thawed ex-leader, a second install), only the one that wins it scales.
        let finishing = Readiness {
            ready: true,
            reason: "Evaluated",
            message: format!("finishing the recorded scale of Deployment {target} to {n}"),
        };
        w.put(status.clone(), &finishing, now).await?;
        scale_or_say(ctx, &deployments, target, n, w, &status, now).await?;
        status.pending_scale = None;
        if let Some(last) = status.transitions.last() {
            announce(ctx, cb, &dep, last).await;
        }
        info!(breaker = %key(cb), replicas = n, "finished a recorded scale");
        return w.put(status, &guarding, now).await;
    }
    let Some(prom) = ctx.prom.as_ref() else {
        let r = Readiness::not(
            "NoPrometheus",
            "the controller runs without --prometheus-url".to_owned(),
        );
        return w.put(status, &r, now).await;
    };
    let ratio = promql::ask(
        prom,
        &ctx.metrics,
        "circuit_breaker",
        &key(cb),
        &cb.spec.query,
    )
    .await
    .and_then(|s| promql::answer(s.into_iter().map(|(_, v)| v)));
    status.last_ratio = Some(ratio.map_or_else(|| "no answer".to_owned(), |r| format!("{r:.3}")));

    let mem = status.memory();
    let actual = dep.spec.replicas.unwrap_or(1);
    let ready = dep
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let dry_run = cb.spec.dry_run || ctx.cfg.dry_run;
    // NB: in dry-run nothing is scaled, so the machine sees the replicas it would have set.
    let replicas = match (dry_run, mem.state) {
        (true, State::Open) => 0,
        (true, State::HalfOpen) => rule
            .probe_replicas
            .min(mem.previous_replicas.unwrap_or(rule.probe_replicas))
            .max(1),
        _ => actual,
    };
    let step: Step = breaker::step(
        &mem,
        &rule,
        &Inputs {
            ratio,
            replicas,
            ready_replicas: ready,
            now,
        },
    );
    status.remember(&step.memory, &rule);
    let Some(tr) = &step.transition else {
        return w.put(status, &guarding, now).await;
    };
    let (from, to) = (tr.from.name(), tr.to.name());
    let message = if dry_run {
        format!("dry-run: {}", tr.message)
    } else {
        tr.message.clone()
    };
    let record = TransitionRecord {
        from: from.into(),
        to: to.into(),
        reason: tr.cause.name().into(),
        message,
        time: Time(now),
        dry_run,
    };
    status.push(record.clone());
    let scale_to = step.scale_to.filter(|_| !dry_run);
    if let Some(n) = scale_to {
        // Intent first: the new state and the replicas to restore are on the API server before
        // the target is touched. The write is conditional on the status this round read, so of
        // two controllers deciding the same transition only one scales.
        status.pending_scale = Some(n);
        w.put(status.clone(), &guarding, now).await?;
    }
    ctx.metrics
        .circuit_transitions_total
        .with_label_values(&[from, to])
        .inc();
    info!(breaker = %key(cb), from, to, cause = tr.cause.name(), dry_run, "{}", tr.message);
    if let Some(n) = scale_to {
        scale_or_say(ctx, &deployments, target, n, w, &status, now).await?;
        status.pending_scale = None;
    }
    announce(ctx, cb, &dep, &record).await;
    w.put(status, &guarding, now).await
}

/// Scale `target` to `n`; when that fails, say so in status (which keeps the recorded intent,
/// so the next round tries again) and return the error.
async fn scale_or_say(
    ctx: &Breakers,
    deployments: &Api<Deployment>,
    target: &str,
    n: i32,
    w: &mut StatusWriter,
    status: &CircuitBreakerStatus,
    now: Timestamp,
) -> Result<()> {
    ctx.leader.ensure("a CircuitBreaker scale")?;
    let patch = serde_json::json!({"spec": {"replicas": n}});
    let Err(e) = deployments
        .patch_scale(target, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    else {
        return Ok(());
    };
    ctx.metrics.circuit_scale_failures_total.inc();
    let r = Readiness::not("ScaleFailed", format!("scaling {target} to {n}: {e}"));
    w.put(status.clone(), &r, now).await?;
    Err(Error::ActionFailed(e))
}

/// The Events of a transition, on the breaker and on its target.
async fn announce(ctx: &Breakers, cb: &CircuitBreaker, dep: &Deployment, tr: &TransitionRecord) {
    let (type_, reason) = match State::parse(&tr.to) {
        State::Open => (EventType::Warning, "CircuitOpened"),
        State::HalfOpen => (EventType::Normal, "CircuitHalfOpened"),
        State::Closed => (EventType::Normal, "CircuitClosed"),
    };
    let note = format!("{} → {} ({}): {}", tr.from, tr.to, tr.reason, tr.message);
    let (cb_ref, dep_ref) = (cb.object_ref(&()), dep.object_ref(&()));
    let on_breaker = ctx
        .events
        .publish(&cb_ref, type_, reason, "Scale", note.clone());
    let on_target = ctx.events.publish(
        &dep_ref,
        type_,
        reason,
        "Scale",
        format!("CircuitBreaker {}: {note}", cb.name_any()),
    );
    future::join(on_breaker, on_target).await;
}

/// Writes one breaker's status, each write conditional on the last version seen (the read this
/// round began with, then each of its own writes): a write never replaces a status it has not
/// read, so a second writer (a follower that still thinks it leads, a second controller) can
/// lose a round but never erase a transition.
struct StatusWriter {
    api: Api<CircuitBreaker>,
    name: String,
    generation: Option<i64>,
    resource_version: Option<String>,
    last: Option<CircuitBreakerStatus>,
    leader: Leadership,
}

impl StatusWriter {
    fn new(api: Api<CircuitBreaker>, cb: &CircuitBreaker, leader: Leadership) -> Self {
        Self {
            api,
            name: cb.name_any(),
            generation: cb.metadata.generation,
            resource_version: cb.resource_version(),
            last: cb.status.clone(),
            leader,
        }
    }

    /// Write `status` with the Ready condition `r` (nothing when it is what was last written).
    async fn put(
        &mut self,
        mut status: CircuitBreakerStatus,
        r: &Readiness,
        now: Timestamp,
    ) -> Result<()> {
        let ready = condition(
            &status.conditions,
            "Ready",
            r.ready,
            r.reason,
            r.message.clone(),
            self.generation,
            now,
        );
        status.conditions = vec![ready];
        status.observed_generation = self.generation;
        if status.state.is_none() {
            status.state = Some(State::Closed.name().into());
        }
        if self.last.as_ref() == Some(&status) {
            return Ok(());
        }
        if !self.leader.is_current() {
            return Err(Error::NotLeader("a CircuitBreaker status"));
        }
        let patch = serde_json::json!({
            "apiVersion": "selfheal.io/v1alpha1",
            "kind": "CircuitBreaker",
            // NB: a resourceVersion in an apply patch is a precondition: 409 if it moved on.
            "metadata": {"resourceVersion": self.resource_version},
            "status": status,
        });
        let written = self
            .api
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(Error::StatusFailed)?;
        self.resource_version = written.resource_version();
        self.last = Some(status);
        Ok(())
    }
}
