//! `selfheal-demo`: the seven-layer self-healing demo and its load generator.
//!
//! Run with:
//! ```text
//! selfheal-demo load --url http://10.96.12.34/ --duration 30s --concurrency 4 --rate 50 --json load.json
//! selfheal-demo load --service selfheal-demo/selfheal-app:http --requests 200
//! ```
//! See demo/README.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use selfheal_demo::load::{self, Limit, LoadConfig, Recorder, Target};
use selfheal_demo::{duration, stats};

#[derive(Debug, Parser)]
#[command(name = "selfheal-demo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send HTTP load to a URL or a Service; print availability and latency.
    Load(LoadArgs),
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Plain http:// URL to GET (a ClusterIP from the local cluster's host, a port-forward,
    /// `minikube service --url`).
    #[arg(
        long,
        env = "DEMO_LOAD_URL",
        conflicts_with = "service",
        required_unless_present = "service"
    )]
    url: Option<String>,

    /// NAMESPACE/SERVICE[:PORT][/PATH]: go through the API server's service proxy of the
    /// current kube context instead (works on minikube; one more hop).
    #[arg(long, env = "DEMO_LOAD_SERVICE")]
    service: Option<String>,

    /// How long to send (30s, 500ms, 2m).
    #[arg(long, env = "DEMO_LOAD_DURATION", value_parser = duration::parse, default_value = "30s", conflicts_with = "requests")]
    duration: Duration,

    /// Send exactly this many requests instead of running for --duration.
    #[arg(long, env = "DEMO_LOAD_REQUESTS")]
    requests: Option<u64>,

    /// Requests in flight at most.
    #[arg(long, env = "DEMO_LOAD_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,

    /// Total requests per second across workers (0 = as fast as answers come).
    #[arg(long, env = "DEMO_LOAD_RATE", default_value_t = 50.0)]
    rate: f64,

    /// Per-request deadline; slower counts as a timeout.
    #[arg(long, env = "DEMO_LOAD_TIMEOUT", value_parser = duration::parse, default_value = "2s")]
    timeout: Duration,

    /// Also write the summary (with the per-second series) as JSON to this file.
    #[arg(long, env = "DEMO_LOAD_JSON")]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Load(args) => load_command(args).await,
    }
}

async fn load_command(args: LoadArgs) -> anyhow::Result<()> {
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        anyhow::bail!("--rate must be 0 or a positive number");
    }
    let target = match (&args.url, &args.service) {
        (Some(url), _) => Target::url(url)?,
        (None, Some(spec)) => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the cluster of the current kube context")?;
            Target::service_proxy(client, spec)?
        }
        (None, None) => anyhow::bail!("give --url or --service"),
    };
    let limit = match args.requests {
        Some(n) => Limit::Requests(n),
        None => Limit::Duration(args.duration),
    };
    let config = LoadConfig {
        concurrency: usize::from(args.concurrency),
        rate: (args.rate > 0.0).then_some(args.rate),
        limit,
        timeout: args.timeout,
    };
    eprintln!(
        ">>> load: GET {} ({:?}, concurrency {}, rate {})",
        target.describe(),
        limit,
        config.concurrency,
        config
            .rate
            .map_or("unlimited".to_owned(), |r| format!("{r}/s"))
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Ctrl-C ends the run early and still prints what was measured.
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });
    let run = load::run(target.clone(), config, Recorder::default(), stop_rx).await;
    let summary = stats::summarize(&run.samples, run.duration.as_secs_f64());
    print!("{}", stats::render(&summary));
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "target": target.describe(),
            "started": run.started.to_string(),
            "summary": summary,
        });
        let text = serde_json::to_string_pretty(&doc).context("encoding the summary")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!(">>> summary written to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_needs_exactly_one_target() {
        assert!(Cli::try_parse_from(["selfheal-demo", "load"]).is_err());
        assert!(
            Cli::try_parse_from([
                "selfheal-demo",
                "load",
                "--url",
                "http://a/",
                "--service",
                "n/s"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["selfheal-demo", "load", "--url", "http://a/"]).is_ok());
    }

    #[test]
    fn load_flags_parse_with_units() {
        let cli = Cli::try_parse_from([
            "selfheal-demo",
            "load",
            "--service",
            "demo/web",
            "--duration",
            "2m",
            "--concurrency",
            "8",
            "--rate",
            "0",
        ])
        .expect("parses");
        let Command::Load(a) = cli.command;
        assert_eq!(a.duration, Duration::from_secs(120));
        assert_eq!(a.concurrency, 8);
        assert_eq!(a.rate, 0.0);
        assert!(
            Cli::try_parse_from([
                "selfheal-demo",
                "load",
                "--url",
                "http://a/",
                "--concurrency",
                "0"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "selfheal-demo",
                "load",
                "--url",
                "http://a/",
                "--duration",
                "5s",
                "--requests",
                "3"
            ])
            .is_err()
        );
    }
}
