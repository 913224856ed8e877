//! `selfheal-app`: demo microservice with health, readiness, metrics and fault injection.
//!
//! Run with `cargo run -p selfheal-app -- --enable-chaos` and try
//! `curl localhost:8080/`, `curl -XPOST 'localhost:8080/crash?mode=unready&seconds=30'`.
//! `selfheal-app probe http://127.0.0.1:8080/ready` exits 0 on a 2xx (for exec probes).
//! Every flag has an env var: `selfheal-app --help`.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;
use selfheal_app::config::{Cli, Command, Config, LogFormat};
use selfheal_app::state::{SERVICE_NAME, VERSION};
use selfheal_app::{AppState, ShutdownTiming, Stopped, probe, shutdown};

/// Upper bound for flushing spans on exit, so a dead collector cannot hold the pod.
const FLUSH_DEADLINE: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_or_exit();
    if let Some(Command::Probe(args)) = cli.command {
        std::process::exit(probe::run(&args).await);
    }
    let cfg = cli.config;

    let guard = telemetry::init(&telemetry_config(&cfg)).context("initialising telemetry")?;
    let state = AppState::new(&cfg).context("building app state")?;
    let signal = shutdown::signal().context("installing signal handlers")?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| selfheal_app::Error::BindFailed {
            addr: cfg.listen,
            source,
        })?;
    tracing::info!(
        addr = %listener.local_addr().context("reading the bound address")?,
        version = VERSION,
        track = cfg.track.as_str(),
        chaos_enabled = cfg.enable_chaos,
        fault_profile = ?cfg.fault_profile,
        otlp = guard.otlp_enabled(),
        "listening"
    );

    let stopped = selfheal_app::serve(listener, state, signal, ShutdownTiming::from(&cfg)).await;
    flush(guard);
    match stopped.context("serving HTTP")? {
        Stopped::Signal => Ok(()),
        Stopped::Crash(code) => std::process::exit(code),
    }
}

fn telemetry_config(cfg: &Config) -> telemetry::TelemetryConfig {
    let mut t = telemetry::TelemetryConfig::new(SERVICE_NAME, VERSION);
    t.log_format = match cfg.log_format {
        LogFormat::Json => telemetry::LogFormat::Json,
        LogFormat::Text => telemetry::LogFormat::Text,
    };
    t.otlp_endpoint = cfg.otlp_endpoint.clone();
    // The access log line carries its own fields; formatting span fields per request is waste.
    t.log_span_fields = false;
    t.resource_attributes
        .push(("deployment.track".into(), cfg.track.as_str().into()));
    t.resource_attributes
        .push(("k8s.pod.name".into(), cfg.pod_name()));
    if let Some(ns) = cfg.pod_namespace.as_ref().filter(|s| !s.is_empty()) {
        t.resource_attributes
            .push(("k8s.namespace.name".into(), ns.clone()));
    }
    t
}

/// Flushes spans on a helper thread, waiting at most [`FLUSH_DEADLINE`].
fn flush(guard: telemetry::TelemetryGuard) {
    if !guard.otlp_enabled() {
        return;
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(guard.shutdown());
    });
    match rx.recv_timeout(FLUSH_DEADLINE) {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "flushing spans failed"),
        Err(_) => tracing::warn!("flushing spans timed out"),
    }
}
