//! `selfheal-controller`: recycles pods whose containers restart too often.
//!
//! Run locally against the cluster in `KUBECONFIG`:
//! `cargo run -p selfheal-controller -- --leader-election=false --dry-run`
//! (`--help` lists every flag and its `CONTROLLER_*` environment variable).
//! `selfheal-controller crdgen [healing-policy|circuit-breaker]` prints a CRD instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use selfheal_controller::circuit_breaker::{self, Breakers};
use selfheal_controller::config::{Command, Config, CrdKind, LogFormat};
use selfheal_controller::context::Context;
use selfheal_controller::healing_policy;
use selfheal_controller::http::{self, HttpState};
use selfheal_controller::leader::{LeaderElector, Leadership};
use selfheal_controller::metrics::Metrics;
use selfheal_controller::run;
use tokio::sync::watch;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    if let Some(Command::Crdgen { kind }) = cfg.command {
        let yaml = match kind {
            CrdKind::HealingPolicy => healing_policy::resource::crd_yaml(),
            CrdKind::CircuitBreaker => circuit_breaker::resource::crd_yaml(),
        };
        print!("{}", yaml.context("serialising the CRD")?);
        return Ok(());
    }
    if cfg.leader_election {
        // Refused before anything starts: these timings could let two replicas act at once.
        cfg.leader_config()
            .check()
            .map_err(|e| anyhow::anyhow!("invalid leader election flags: {e}"))?;
    }
    let mut tcfg =
        telemetry::TelemetryConfig::new("selfheal-controller", env!("CARGO_PKG_VERSION"));
    tcfg.log_format = match cfg.log_format {
        LogFormat::Json => telemetry::LogFormat::Json,
        LogFormat::Text => telemetry::LogFormat::Text,
    };
    tcfg.otlp_endpoint = cfg.otlp_endpoint.clone();
    tcfg.resource_attributes = vec![
        ("k8s.pod.name".into(), cfg.pod_name.clone()),
        ("k8s.namespace.name".into(), cfg.pod_namespace.clone()),
    ];
    let telemetry = telemetry::init(&tcfg).context("initialising telemetry")?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        dry_run = cfg.dry_run,
        "starting selfheal-controller"
    );

    let metrics = Arc::new(Metrics::new());
    // NB: the same client the cluster tests use (`run::client_from`): kube's retry layer
    // off, so a PodDisruptionBudget's 429 reaches the reconciler as `RecycleBlocked` instead of
    // being retried inside the client for minutes, and every request counted by verb.
    let client = run::client(&metrics).await.context("loading kubeconfig")?;
    let ready = Arc::new(AtomicBool::new(false));
    let alive = Arc::new(AtomicBool::new(true));
    // Two stop signals: the controller stops first, the Lease is released only after it has.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (release_tx, release_rx) = watch::channel(false);
    // The HTTP server stops last: while a failing process steps down, /healthz says 503.
    let (server_stop_tx, server_stop_rx) = watch::channel(false);
    let on = |rx: &watch::Receiver<bool>| {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let (leadership, mut elector) = if cfg.leader_election {
        let elector = LeaderElector::new(client.clone(), cfg.leader_config());
        (
            elector.leadership(),
            Some(tokio::spawn(elector.run(on(&release_rx)))),
        )
    } else {
        (Leadership::always(), None)
    };

    let mut server = tokio::spawn(http::serve(
        cfg.http_addr,
        HttpState {
            metrics: metrics.clone(),
            ready: ready.clone(),
            alive: alive.clone(),
        },
        on(&server_stop_rx),
    ));
    // The CircuitBreakers share nothing with the pod reconciler: a sibling task, its own inputs.
    let breakers = Arc::new(Breakers::new(
        client.clone(),
        cfg.clone(),
        metrics.clone(),
        leadership.clone(),
    ));
    let mut breaker = tokio::spawn(circuit_breaker::run(breakers, on(&stop_rx)));
    let ctx = Arc::new(Context::new(client, cfg, metrics, leadership));
    let mut controller = tokio::spawn(run::run(ctx, ready, on(&stop_rx)));

    // Every task runs until shutdown: one that ends (or panics) first is a failure. A process
    // whose reconciler died must not go on renewing the Lease and answering its liveness probe.
    let (mut controller_ended, mut breaker_ended) = (false, false);
    let failure = tokio::select! {
        () = shutdown_signal() => None,
        r = &mut controller => {
            controller_ended = true;
            Some(format!("the controller loop ended ({})", ended(r.map(|()| Ok(())))))
        }
        r = &mut breaker => {
            breaker_ended = true;
            Some(format!("the circuit breaker loop ended ({})", ended(r.map(|()| Ok(())))))
        }
        r = async {
            match elector.as_mut() {
                Some(t) => t.await,
                None => std::future::pending().await,
            }
        } => {
            elector = None;
            Some(format!("leader election ended ({})", ended(r.map(|()| Ok(())))))
        }
        r = &mut server => Some(format!("the health and metrics server ended ({})", ended(r))),
    };
    if let Some(why) = failure {
        alive.store(false, Ordering::Relaxed);
        tracing::error!(%why, "a controller loop stopped: stepping down and exiting with an error");
        // Nothing of the reconciler or the breakers may still be writing once the Lease is released.
        if !controller_ended {
            controller.abort();
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut controller).await;
        }
        if !breaker_ended {
            breaker.abort();
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut breaker).await;
        }
        let _ = release_tx.send(true);
        if let Some(elector) = elector {
            // Release the Lease so a healthy replica takes over now, not after the lease duration.
            let _ = tokio::time::timeout(Duration::from_secs(5), elector).await;
        }
        let _ = telemetry.shutdown();
        anyhow::bail!("{why}");
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    controller.await.context("controller task")?;
    breaker.await.context("circuit breaker task")?;
    let _ = release_tx.send(true);
    if let Some(elector) = elector {
        elector.await.context("leader election task")?;
    }
    let _ = server_stop_tx.send(true);
    server.await.context("http task")?.context("http server")?;
    telemetry.shutdown().context("flushing spans")?;
    Ok(())
}

/// How a task that should have run until shutdown ended.
fn ended(r: Result<std::io::Result<()>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Ok(())) => "returned".to_owned(),
        Ok(Err(e)) => format!("failed: {e}"),
        Err(e) if e.is_panic() => "panicked".to_owned(),
        Err(e) => format!("was cancelled: {e}"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
