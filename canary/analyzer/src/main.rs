//! `selfheal-canary`: decides whether a canary may be promoted.
//!
//! Run with:
//!   selfheal-canary analyze --scrapes DIR          # DIR/before/POD.prom, DIR/after/POD.prom
//!   selfheal-canary analyze --prometheus URL --selector 'namespace="shop"' --window 60s
//!
//! Prints one JSON summary line on stdout (and to `--json FILE`), a human line on stderr, and
//! exits 0 promote, 1 rollback, 2 inconclusive, 3 error, 64 usage (canary/README.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use selfheal_canary::analysis::{self, Thresholds};
use selfheal_canary::prometheus::{self, Query};
use selfheal_canary::window;

/// Exit status of an error before a verdict (unreadable input, Prometheus down).
const EXIT_ERROR: u8 = 3;
/// Exit status of bad usage (sysexits EX_USAGE; 2 is taken by "inconclusive").
const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "selfheal-canary",
    version,
    about = "Canary analysis: promote, roll back or wait"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compare canary and stable over a window; exit 0 promote, 1 rollback, 2 inconclusive, 3 error.
    Analyze(Analyze),
}

#[derive(Debug, Args)]
struct Analyze {
    /// Directory with before/POD.prom and after/POD.prom: two scrapes of every pod's /metrics.
    #[arg(
        long,
        env = "CANARY_SCRAPES",
        conflicts_with = "prometheus",
        required_unless_present = "prometheus"
    )]
    scrapes: Option<PathBuf>,
    /// Prometheus base URL (with self-healing/'s recording rules loaded); the window is then the
    /// recorded selfheal:http_*:rate1m series averaged over --window.
    #[arg(long, env = "CANARY_PROMETHEUS_URL")]
    prometheus: Option<String>,
    /// Extra PromQL label matchers for the recorded series (namespace, job), e.g. namespace="shop",job="web".
    #[arg(long, env = "CANARY_SELECTOR", default_value = "")]
    selector: String,
    /// Window for Prometheus queries (PromQL duration).
    #[arg(long, env = "CANARY_WINDOW", default_value = "60s", value_parser = promql_duration)]
    window: String,
    /// Prometheus request timeout in seconds.
    #[arg(long, env = "CANARY_TIMEOUT_SECS", default_value_t = 10)]
    timeout_secs: u64,
    /// Fewest canary requests in the window for a verdict.
    #[arg(long, env = "CANARY_MIN_REQUESTS", default_value_t = 50)]
    min_requests: u64,
    /// Highest canary 5xx ratio (0-1), whatever stable does.
    #[arg(long, env = "CANARY_MAX_ERROR_RATIO", default_value_t = 0.05, value_parser = ratio)]
    max_error_ratio: f64,
    /// Highest canary-minus-stable 5xx ratio (0-1).
    #[arg(long, env = "CANARY_MAX_ERROR_RATIO_DELTA", default_value_t = 0.02, value_parser = ratio)]
    max_error_ratio_delta: f64,
    /// Highest canary p95 / stable p95.
    #[arg(long, env = "CANARY_MAX_P95_RATIO", default_value_t = 1.5)]
    max_p95_ratio: f64,
    /// The p95 ratio fails only when the canary is also this many milliseconds slower.
    #[arg(long, env = "CANARY_P95_TOLERANCE_MS", default_value_t = 25.0)]
    p95_tolerance_ms: f64,
    /// Highest canary p95 in milliseconds, whatever stable does (default: none).
    #[arg(long, env = "CANARY_MAX_P95_MS")]
    max_p95_ms: Option<f64>,
    /// Value of the `track` label of the stable pods.
    #[arg(long, default_value = "stable")]
    stable_track: String,
    /// Value of the `track` label of the canary pods.
    #[arg(long, default_value = "canary")]
    canary_track: String,
    /// Also write the JSON summary to this file.
    #[arg(long, env = "CANARY_JSON")]
    json: Option<PathBuf>,
}

fn promql_duration(s: &str) -> Result<String, String> {
    prometheus::duration_seconds(s)
        .filter(|secs| *secs > 0.0)
        .map(|_| s.to_owned())
        .ok_or_else(|| format!("{s:?} is not a PromQL duration such as 60s or 5m"))
}

fn ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a ratio between 0 and 1"))
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let Command::Analyze(args) = cli.command;
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("selfheal-canary: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(args: &Analyze) -> anyhow::Result<u8> {
    let thresholds = Thresholds {
        min_requests: args.min_requests,
        max_error_ratio: args.max_error_ratio,
        max_error_ratio_delta: args.max_error_ratio_delta,
        max_p95_ratio: args.max_p95_ratio,
        p95_tolerance_seconds: args.p95_tolerance_ms / 1000.0,
        max_p95_seconds: args.max_p95_ms.map(|ms| ms / 1000.0),
    };
    let (source, windows) = match (&args.scrapes, &args.prometheus) {
        (Some(dir), _) => {
            let loaded = selfheal_canary::read_scrape_dir(dir)
                .and_then(|(before, after)| window::from_scrapes(&before, &after));
            (format!("scrapes:{}", dir.display()), loaded)
        }
        (None, Some(url)) => {
            let q = Query {
                url: url.clone(),
                selector: args.selector.clone(),
                window: args.window.clone(),
            };
            // NB: the query client is async; one small runtime for the two queries of a run.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let fetched = runtime.block_on(prometheus::fetch(
                &q,
                Duration::from_secs(args.timeout_secs),
            ));
            (format!("prometheus:{url}"), fetched)
        }
        (None, None) => anyhow::bail!("give --scrapes DIR or --prometheus URL"),
    };
    let windows = match windows {
        Ok(w) => w,
        Err(e) => {
            // The demo and CI read stdout: say "error" there too, not only on stderr.
            let summary = json!({
                "verdict": "error", "exit_code": EXIT_ERROR, "source": source,
                "error_kind": e.metric_label(), "error": e.to_string(),
            });
            emit(&summary, args.json.as_ref())?;
            return Err(e).context("analysis input");
        }
    };
    let empty = window::TrackWindow::default();
    let stable = windows.get(&args.stable_track).unwrap_or(&empty);
    let canary = windows.get(&args.canary_track).unwrap_or(&empty);
    let result = analysis::analyze(stable, canary, &thresholds);
    let code = result.verdict.exit_code();
    let summary = json!({
        "verdict": result.verdict,
        "exit_code": code,
        "source": source,
        "window": if args.prometheus.is_some() { Some(&args.window) } else { None },
        // Which requests count: every route but these (the recording rules' definition).
        "excluded_routes": window::EXCLUDED_ROUTES,
        "thresholds": thresholds,
        "stable": result.stable,
        "canary": result.canary,
        "checks": result.checks,
        "reasons": result.reasons,
    });
    emit(&summary, args.json.as_ref())?;
    eprintln!(
        "selfheal-canary: {verdict}: canary {cr} requests, error ratio {ce}, p95 {cp}; stable {sr} requests, error ratio {se}, p95 {sp}{why}",
        verdict = serde_json::to_string(&result.verdict)?.trim_matches('"'),
        cr = result.canary.requests.round(),
        ce = fmt_opt(result.canary.error_ratio, 1.0, ""),
        cp = fmt_opt(result.canary.p95_seconds, 1000.0, " ms"),
        sr = result.stable.requests.round(),
        se = fmt_opt(result.stable.error_ratio, 1.0, ""),
        sp = fmt_opt(result.stable.p95_seconds, 1000.0, " ms"),
        why = if result.reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", result.reasons.join("; "))
        },
    );
    Ok(code)
}

fn fmt_opt(v: Option<f64>, scale: f64, unit: &str) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{:.3}{unit}", v * scale))
}

fn emit(summary: &serde_json::Value, file: Option<&PathBuf>) -> anyhow::Result<()> {
    let line = serde_json::to_string(summary)?;
    println!("{line}");
    if let Some(path) = file {
        std::fs::write(path, format!("{line}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ratios_outside_zero_to_one_are_usage_errors() {
        let e = Cli::try_parse_from([
            "selfheal-canary",
            "analyze",
            "--scrapes",
            "d",
            "--max-error-ratio",
            "1.5",
        ])
        .unwrap_err();
        assert!(e.use_stderr());
        assert!(e.to_string().contains("not a ratio"), "{e}");
        assert!(
            Cli::try_parse_from(["selfheal-canary", "analyze"]).is_err(),
            "a source is required"
        );
        assert!(
            Cli::try_parse_from([
                "selfheal-canary",
                "analyze",
                "--scrapes",
                "d",
                "--prometheus",
                "http://p"
            ])
            .is_err(),
            "sources are exclusive"
        );
        let ok = Cli::try_parse_from(["selfheal-canary", "analyze", "--prometheus", "http://p"])
            .unwrap();
        let Command::Analyze(a) = ok.command;
        assert_eq!((a.min_requests, a.window.as_str()), (50, "60s"));
    }
}
