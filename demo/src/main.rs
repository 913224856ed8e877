//! `selfheal-demo`: the seven-layer self-healing demo and its load generator.
//!
//! Run with:
//! ```text
//! selfheal-demo load --url http://10.96.12.34/ --duration 30s --concurrency 4 --rate 50 --json load.json
//! selfheal-demo load --service selfheal-demo/selfheal-app:http --requests 200
//! selfheal-demo run --list
//! selfheal-demo run --layer 1 --layer 2 --json report.json --svg timeline.svg
//! ```
//! See demo/README.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use selfheal_demo::load::{self, Limit, LoadConfig, Recorder, Target};
use selfheal_demo::report::{self, LAYERS, Status};
use selfheal_demo::runner::{self, RunConfig, Runner};
use selfheal_demo::{duration, stats, svg};

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
    /// Break the app once per layer, watch the cluster heal it, print the recovery table.
    Run(RunArgs),
}

/// One `--layer` value: a layer, or the four ops scenarios for `ops`.
#[derive(Debug, Clone, PartialEq)]
struct Layers(Vec<u8>);

fn layer_arg(text: &str) -> Result<Layers, String> {
    report::parse_layers(text).map(Layers)
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Run only this layer: 1-11, or leak, pool, breaker, zombie, ops (all four) (repeatable or
    /// comma-separated; default: the seven recovery layers in order).
    #[arg(long = "layer", env = "DEMO_LAYERS", value_delimiter = ',', value_parser = layer_arg)]
    layers: Vec<Layers>,

    /// Print the layers and exit.
    #[arg(long)]
    list: bool,

    /// Leave the faults and anything the runner installed in place for inspection.
    #[arg(long, env = "DEMO_KEEP")]
    keep: bool,

    /// Namespace of the demo (created, and deleted afterwards, when missing).
    #[arg(long, env = "DEMO_NAMESPACE", default_value = "selfheal-demo")]
    namespace: String,

    /// Helm release of the app (installed, and uninstalled afterwards, when missing).
    #[arg(long, env = "DEMO_RELEASE", default_value = "selfheal-app")]
    release: String,

    /// Write the JSON report here.
    #[arg(long, env = "DEMO_JSON")]
    json: Option<PathBuf>,

    /// Write the SVG timeline here.
    #[arg(long, env = "DEMO_SVG")]
    svg: Option<PathBuf>,

    /// Repository root (the chart, values and layer scripts are found from here).
    #[arg(long, env = "DEMO_REPO_ROOT", default_value = ".")]
    repo_root: PathBuf,

    /// Values file for an install and for layer 4's bad release (relative to --repo-root).
    #[arg(
        long,
        env = "DEMO_VALUES",
        default_value = "helm-chart/values-demo.yaml"
    )]
    values: PathBuf,

    /// App image repository.
    #[arg(
        long,
        env = "DEMO_IMAGE_REPOSITORY",
        default_value = "localhost/selfheal-app"
    )]
    image_repository: String,

    /// App image tag.
    #[arg(long, env = "IMAGE_TAG", default_value = "dev")]
    image_tag: String,

    /// Plain http:// URL of the Service for the background load (default: its NodePort on
    /// 127.0.0.1 when that answers, else the API server's service proxy).
    #[arg(long, env = "DEMO_LOAD_URL")]
    load_url: Option<String>,

    /// Requests per second of the background load.
    #[arg(long, env = "DEMO_LOAD_RATE", default_value_t = 20.0)]
    load_rate: f64,

    /// How long layer 2 keeps its pod unready.
    #[arg(long, env = "DEMO_UNREADY_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
    unready_secs: u64,

    /// Helm's timeout for layer 4's bad release.
    #[arg(long, env = "DEMO_HELM_TIMEOUT", value_parser = duration::parse, default_value = "60s")]
    helm_timeout: Duration,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Plain http:// URL to GET (a NodePort on 127.0.0.1 of the local cluster's host, a
    /// port-forward, `minikube service --url`).
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

    /// Open a new connection for every request (no keep-alive), so kube-proxy spreads them
    /// over every Ready pod, including ones that appear during the run.
    #[arg(long, env = "DEMO_LOAD_NO_KEEPALIVE")]
    no_keepalive: bool,

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
                // NB: kube's client logs every non-2xx answer at ERROR; through the service
                // proxy a 503 is a measured failure, not a log line. Errors still reach the report.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
                }),
        )
        .init();
    match Cli::parse().command {
        Command::Load(args) => load_command(args).await,
        Command::Run(args) => run_command(args).await,
    }
}

async fn run_command(args: RunArgs) -> anyhow::Result<()> {
    if args.list {
        for (n, name, fault, detected, healed) in LAYERS {
            let alias = report::SCENARIOS
                .iter()
                .find(|s| s.1 == n)
                .map_or(String::new(), |s| format!(" ({})", s.0));
            println!(
                "{n:>2}  {:<32} fault: {fault}; detected by {detected}; healed by {healed}",
                format!("{name}{alias}")
            );
        }
        return Ok(());
    }
    if !(args.load_rate.is_finite() && args.load_rate > 0.0) {
        anyhow::bail!("--load-rate must be a positive number");
    }
    let mut layers: Vec<u8> = if args.layers.is_empty() {
        report::DEFAULT_LAYERS.collect()
    } else {
        args.layers
            .iter()
            .flat_map(|l| l.0.iter().copied())
            .collect()
    };
    layers.dedup();
    let client = runner::client().await?;
    let cfg = RunConfig {
        namespace: args.namespace,
        release: args.release,
        layers,
        keep: args.keep,
        repo_root: args.repo_root,
        values: args.values,
        image_repository: args.image_repository,
        image_tag: args.image_tag,
        load_url: args.load_url,
        load_rate: args.load_rate,
        unready_secs: args.unready_secs,
        helm_timeout_secs: args.helm_timeout.as_secs().max(1),
    };
    let demo = Runner::setup(client, cfg)
        .await
        .context("setting up the demo")?;
    let run = demo.run().await.context("running the layers")?;
    println!();
    print!("{}", report::table(&run.layers));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&run).context("encoding the report")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!(">>> JSON report: {}", path.display());
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, svg::render(&run))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(">>> SVG timeline: {}", path.display());
    }
    let failed: Vec<String> = run
        .layers
        .iter()
        .filter(|l| l.status == Status::Failed)
        .map(|l| l.layer.to_string())
        .collect();
    if !failed.is_empty() {
        anyhow::bail!(
            "layer(s) {} failed (see the table and the reasons under it)",
            failed.join(", ")
        );
    }
    Ok(())
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
        fresh_connections: args.no_keepalive,
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
    fn run_layers_are_repeatable_or_comma_separated_and_bounded() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["selfheal-demo", "run"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        let Ok(Cli {
            command: Command::Run(a),
        }) = parse(&["--layer", "3", "--layer", "1,2"])
        else {
            panic!("parses")
        };
        assert_eq!(a.layers, [vec![3], vec![1], vec![2]].map(Layers));
        assert_eq!(a.namespace, "selfheal-demo");
        assert_eq!(a.helm_timeout, Duration::from_secs(60));
        let Ok(Cli {
            command: Command::Run(ops),
        }) = parse(&["--layer", "leak,11", "--layer", "ops"])
        else {
            panic!("scenario names parse")
        };
        assert_eq!(
            ops.layers,
            [vec![8], vec![11], vec![8, 9, 10, 11]].map(Layers)
        );
        assert!(parse(&["--layer", "12"]).is_err());
        assert!(parse(&["--layer", "0"]).is_err());
        assert!(parse(&["--layer", "leek"]).is_err());
        assert!(parse(&["--list"]).is_ok());
    }

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
        let Command::Load(a) = cli.command else {
            panic!("parsed as load")
        };
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
