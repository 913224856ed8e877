//! Kubernetes I/O around [`crate::breaker`]: watch the CircuitBreakers, and every
//! `--prometheus-interval-secs` (leader only) ask each one's query, step its state machine,
//! scale its Deployment, and record the transition as Events, a metric and status.
//!
//! Fail safe:
//! - a failed scale call keeps the old state (the transition is retried next round);
//! - a target an HPA scales is refused (`Ready=False`, `TargetAutoscaled`): the HPA would scale
//!   it back up and the two would fight;
//! - without `--prometheus-url` or with a missing target nothing is scaled, and `Ready=False`
//!   says why.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use crate::breaker::{self, Inputs, State, Step};
use crate::breaker_crd::{CircuitBreaker, CircuitBreakerStatus, TransitionRecord};
use crate::crd::FIELD_MANAGER;
use crate::reconcile::Context;
use crate::status::condition;
use crate::{Error, Result, owner, promql};

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

/// Watch and evaluate until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    if !ctx.config().circuit_breakers {
        return future::pending().await;
    }
    let (reader, writer) = reflector::store::<CircuitBreaker>();
    let api: Api<CircuitBreaker> = Api::all(ctx.client().clone());
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
    }
}

async fn evaluate_all(ctx: Arc<Context>, reader: Store<CircuitBreaker>) {
    let mut tick = tokio::time::interval(Duration::from_secs(
        ctx.config().prometheus_interval_secs.max(1),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The status each breaker was last given, by UID: the cache may not have seen the write yet
    // when the next round starts, and stepping an old memory twice would scale twice.
    let mut written: HashMap<String, CircuitBreakerStatus> = HashMap::new();
    loop {
        tick.tick().await;
        let breakers = reader.state();
        written.retain(|uid, _| breakers.iter().any(|cb| cb.uid().as_deref() == Some(uid)));
        let mut counts: HashMap<State, i64> = HashMap::new();
        for cb in breakers {
            let ns = cb.namespace().unwrap_or_default();
            if !ctx.in_scope(&ns) {
                continue;
            }
            let uid = cb.uid().unwrap_or_default();
            let status = written
                .get(&uid)
                .or(cb.status.as_ref())
                .cloned()
                .unwrap_or_default();
            let state = status.state.as_deref().map_or(State::Closed, State::parse);
            *counts.entry(state).or_default() += 1;
            if !ctx.is_leader() {
                written.remove(&uid);
                continue;
            }
            match evaluate(&ctx, &cb, status).await {
                Ok(s) => {
                    written.insert(uid, s);
                }
                Err(e) => {
                    ctx.metrics
                        .reconcile_errors_total
                        .with_label_values(&[e.metric_label()])
                        .inc();
                    warn!(breaker = %key(&cb), error = %e, "circuit breaker round failed");
                }
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

/// One round for one breaker whose status is `status`; returns the status it now has.
async fn evaluate(
    ctx: &Context,
    cb: &CircuitBreaker,
    mut status: CircuitBreakerStatus,
) -> Result<CircuitBreakerStatus> {
    let now = Timestamp::now();
    let ns = cb.namespace().unwrap_or_default();
    let rule = match cb.spec.rule() {
        Ok(r) => r,
        Err(e) => {
            let r = Readiness::not("InvalidSpec", e.to_string());
            return write(ctx, cb, status, &r, now).await;
        }
    };
    let deployments: Api<Deployment> = Api::namespaced(ctx.client().clone(), &ns);
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
        return write(ctx, cb, status, &r, now).await;
    };
    if let Some(hpa) = owner::autoscaler_of(ctx.client(), &ns, target)
        .await
        .map_err(Error::TargetLookupFailed)?
    {
        let r = Readiness::not(
            "TargetAutoscaled",
            format!(
                "HorizontalPodAutoscaler {hpa} scales Deployment {target}: a breaker would fight it"
            ),
        );
        return write(ctx, cb, status, &r, now).await;
    }
    let Some(url) = ctx.config().prometheus_url.clone() else {
        let r = Readiness::not(
            "NoPrometheus",
            "the controller runs without --prometheus-url".to_owned(),
        );
        return write(ctx, cb, status, &r, now).await;
    };
    let ratio = promql::ask(ctx, &url, "circuit_breaker", &key(cb), &cb.spec.query)
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
    let dry_run = cb.spec.dry_run || ctx.config().dry_run;
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
    if let (Some(n), false) = (step.scale_to, dry_run)
        && let Err(e) = scale(&deployments, target, n).await
    {
        ctx.metrics.circuit_scale_failures_total.inc();
        let r = Readiness::not("ScaleFailed", format!("scaling {target} to {n}: {e}"));
        // The old memory stays: the transition is retried next round.
        write(ctx, cb, status, &r, now).await?;
        return Err(Error::ActionFailed(e));
    }
    status.remember(&step.memory, &rule);
    if let Some(tr) = &step.transition {
        let (from, to) = (tr.from.name(), tr.to.name());
        ctx.metrics
            .circuit_transitions_total
            .with_label_values(&[from, to])
            .inc();
        info!(breaker = %key(cb), from, to, cause = tr.cause.name(), dry_run, "{}", tr.message);
        let message = if dry_run {
            format!("dry-run: {}", tr.message)
        } else {
            tr.message.clone()
        };
        status.push(TransitionRecord {
            from: from.into(),
            to: to.into(),
            reason: tr.cause.name().into(),
            message: message.clone(),
            time: Time(now),
            dry_run,
        });
        let (type_, reason) = match tr.to {
            State::Open => (EventType::Warning, "CircuitOpened"),
            State::HalfOpen => (EventType::Normal, "CircuitHalfOpened"),
            State::Closed => (EventType::Normal, "CircuitClosed"),
        };
        let note = format!("{from} → {to} ({}): {message}", tr.cause.name());
        let (cb_ref, dep_ref) = (cb.object_ref(&()), dep.object_ref(&()));
        let on_breaker = ctx.publish(&cb_ref, type_, reason, "Scale", note.clone());
        let on_target = ctx.publish(
            &dep_ref,
            type_,
            reason,
            "Scale",
            format!("CircuitBreaker {}: {note}", cb.name_any()),
        );
        future::join(on_breaker, on_target).await;
    }
    let r = Readiness {
        ready: true,
        reason: "Evaluated",
        message: format!("guarding Deployment {target}"),
    };
    write(ctx, cb, status, &r, now).await
}

async fn scale(api: &Api<Deployment>, name: &str, replicas: i32) -> Result<(), kube::Error> {
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    api.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Write `status` with the Ready condition `r` (unless the cache has it already); returns it.
async fn write(
    ctx: &Context,
    cb: &CircuitBreaker,
    mut status: CircuitBreakerStatus,
    r: &Readiness,
    now: Timestamp,
) -> Result<CircuitBreakerStatus> {
    let generation = cb.metadata.generation;
    let ready = condition(
        &status.conditions,
        "Ready",
        r.ready,
        r.reason,
        r.message.clone(),
        generation,
        now,
    );
    status.conditions = vec![ready];
    status.observed_generation = generation;
    if status.state.is_none() {
        status.state = Some(State::Closed.name().into());
    }
    if cb.status.as_ref() == Some(&status) {
        return Ok(status);
    }
    let api: Api<CircuitBreaker> =
        Api::namespaced(ctx.client().clone(), &cb.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "selfheal.io/v1alpha1",
        "kind": "CircuitBreaker",
        "status": status,
    });
    api.patch_status(
        &cb.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::StatusFailed)?;
    Ok(status)
}
