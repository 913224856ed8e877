//! Command line and environment configuration (clap derive; every flag has an env var).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::faults::{MAX_LEAK_CAP_MIB, MAX_LEAK_MIB_PER_SEC};
use crate::pool::{DEFAULT_POOL_SIZE, MAX_POOL_SIZE};

/// Top-level command line: the server flags, or a subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "selfheal-app",
    version,
    about = "Self-healing demo microservice"
)]
pub struct Cli {
    /// Subcommand; without one the HTTP server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server configuration.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// GET a URL: exit 0 on a 2xx answer, 1 otherwise, with a one-line reason
    /// (for `helm test` and exec probes in an image without curl). Plain `http://` only.
    Probe(ProbeArgs),
}

/// Arguments of `selfheal-app probe`.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// URL to GET, e.g. `http://127.0.0.1:8080/ready`.
    pub url: String,
    /// Give up after this many milliseconds (connect + answer).
    #[arg(long, env = "PROBE_TIMEOUT_MS", default_value_t = 2000)]
    pub timeout_ms: u64,
}

/// Deployment track, reported by `/` and `selfheal_app_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Track {
    /// The main release.
    Stable,
    /// The canary release behind the canary Ingress.
    Canary,
}

impl Track {
    /// Lower-case name used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Stable => "stable",
            Track::Canary => "canary",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Fault profile applied at start-up: a "bad release" is one `--set` away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaultProfile {
    /// Healthy release.
    None,
    /// `/ready` fails from start (until `POST /crash?mode=reset`).
    Unready,
    /// `/` answers `--fault-error-percent` % of requests with 500 from start.
    Errors,
    /// `/` is slowed by `--fault-latency-ms` from start.
    Latency,
    /// `/health` fails from start (liveness restarts, then CrashLoopBackOff).
    Unhealthy,
    /// Resident memory grows by `--fault-leak-mib-per-sec` up to `--fault-leak-cap-mib` from start.
    Leak,
    /// Every connection of the pool is held from start: `/` answers 503, `/ready` fails.
    PoolExhaust,
}

/// Server configuration. Parse once in `main`, pass it down.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Allow fault injection through `POST /crash` (off unless asked for).
    #[arg(long, env = "CHAOS_ENABLED", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub enable_chaos: bool,

    /// Bearer token required by `POST /crash` when set.
    #[arg(long, env = "CHAOS_TOKEN", hide_env_values = true)]
    pub chaos_token: Option<String>,

    /// Fault profile applied at start-up (bad release).
    #[arg(long, env = "APP_FAULT_PROFILE", value_enum, default_value_t = FaultProfile::None)]
    pub fault_profile: FaultProfile,

    /// Error rate of the `errors` fault profile, in percent.
    #[arg(long, env = "APP_FAULT_ERROR_PERCENT", default_value_t = 50,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub fault_error_percent: u8,

    /// Added latency of the `latency` fault profile, in milliseconds.
    #[arg(long, env = "APP_FAULT_LATENCY_MS", default_value_t = 500)]
    pub fault_latency_ms: u64,

    /// Growth rate of the `leak` fault profile, in MiB per second.
    #[arg(long, env = "APP_FAULT_LEAK_MIB_PER_SEC", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LEAK_MIB_PER_SEC)))]
    pub fault_leak_mib_per_sec: u32,

    /// Leaked memory of the `leak` fault profile stops growing at this many MiB.
    #[arg(long, env = "APP_FAULT_LEAK_CAP_MIB", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LEAK_CAP_MIB)))]
    pub fault_leak_cap_mib: u32,

    /// Connections in the simulated pool; every `GET /` borrows one for its whole duration.
    #[arg(long, env = "APP_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_POOL_SIZE)))]
    pub pool_size: u32,

    /// How long `GET /` waits for a free pool connection before answering 503, in milliseconds.
    #[arg(long, env = "APP_POOL_WAIT_MS", default_value_t = 1000)]
    pub pool_wait_ms: u64,

    /// Deployment track reported by `/` and `selfheal_app_info`.
    #[arg(long, env = "APP_TRACK", value_enum, default_value_t = Track::Stable)]
    pub track: Track,

    /// Message returned by `/`.
    #[arg(long, env = "APP_MESSAGE", default_value = "hello from selfheal-app")]
    pub message: String,

    /// Pod name (Downward API); falls back to `HOSTNAME`.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Pod namespace (Downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,

    /// `/ready` answers 503 for this long after start.
    #[arg(long, env = "APP_WARMUP_SECS", default_value_t = 0)]
    pub warmup_secs: u64,

    /// After SIGTERM: keep serving (unready) this long so endpoints are removed first.
    #[arg(long, env = "APP_SHUTDOWN_DELAY_SECS", default_value_t = 5)]
    pub shutdown_delay_secs: u64,

    /// After the delay: deadline for in-flight requests to finish.
    #[arg(long, env = "APP_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,

    /// Requests taking longer are answered with 408.
    #[arg(long, env = "APP_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// Largest accepted request body, in bytes (413 above).
    #[arg(long, env = "APP_BODY_LIMIT_BYTES", default_value_t = 64 * 1024)]
    pub body_limit_bytes: usize,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// OTLP/HTTP base endpoint; `OTEL_EXPORTER_OTLP_ENDPOINT` is used when unset. No endpoint, no export.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
}

impl Config {
    /// Warm-up period.
    pub fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_secs)
    }

    /// Delay between SIGTERM and closing the listener.
    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_secs(self.shutdown_delay_secs)
    }

    /// Drain deadline for in-flight requests.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// Per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// How long `GET /` waits for a pool connection.
    pub fn pool_wait(&self) -> Duration {
        Duration::from_millis(self.pool_wait_ms)
    }

    /// Pod name, else `HOSTNAME`, else `unknown`.
    pub fn pod_name(&self) -> String {
        self.pod_name
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "unknown".to_owned())
    }

    /// Defaults, as if started without flags (ignores the environment; for tests).
    pub fn for_tests() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            enable_chaos: false,
            chaos_token: None,
            fault_profile: FaultProfile::None,
            fault_error_percent: 50,
            fault_latency_ms: 500,
            fault_leak_mib_per_sec: 1,
            fault_leak_cap_mib: 256,
            pool_size: DEFAULT_POOL_SIZE,
            pool_wait_ms: 1000,
            track: Track::Stable,
            message: "hello from selfheal-app".to_owned(),
            pod_name: Some("test-pod".to_owned()),
            pod_namespace: None,
            warmup_secs: 0,
            shutdown_delay_secs: 0,
            shutdown_timeout_secs: 1,
            request_timeout_ms: 10_000,
            body_limit_bytes: 64 * 1024,
            log_format: LogFormat::Text,
            otlp_endpoint: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("selfheal-app").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_defaults() {
        let cli = parse(&[
            "--listen",
            "127.0.0.1:9000",
            "--enable-chaos",
            "--track",
            "canary",
            "--fault-profile",
            "errors",
            "--fault-error-percent",
            "30",
            "--warmup-secs",
            "3",
            "--log-format",
            "json",
        ])
        .unwrap();
        let c = cli.config;
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert!(c.enable_chaos);
        assert_eq!(c.track, Track::Canary);
        assert_eq!(c.fault_profile, FaultProfile::Errors);
        assert_eq!(c.fault_error_percent, 30);
        assert_eq!(c.warmup(), Duration::from_secs(3));
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(cli.command.is_none());
    }

    #[test]
    fn enable_chaos_accepts_explicit_false() {
        let cli = parse(&["--enable-chaos=false"]).unwrap();
        assert!(!cli.config.enable_chaos);
    }

    #[test]
    fn error_percent_above_100_is_rejected() {
        assert!(parse(&["--fault-error-percent", "101"]).is_err());
    }

    #[test]
    fn leak_profile_takes_rate_and_cap_with_defaults() {
        let c = parse(&["--fault-profile", "leak"]).unwrap().config;
        assert_eq!(c.fault_profile, FaultProfile::Leak);
        assert_eq!(c.fault_leak_mib_per_sec, 1);
        assert_eq!(c.fault_leak_cap_mib, 256);
        let c = parse(&[
            "--fault-leak-mib-per-sec",
            "4",
            "--fault-leak-cap-mib",
            "512",
        ])
        .unwrap()
        .config;
        assert_eq!(c.fault_leak_mib_per_sec, 4);
        assert_eq!(c.fault_leak_cap_mib, 512);
    }

    #[test]
    fn leak_rate_and_cap_out_of_range_are_rejected() {
        for args in [
            ["--fault-leak-mib-per-sec", "0"],
            ["--fault-leak-mib-per-sec", "65"],
            ["--fault-leak-cap-mib", "0"],
            ["--fault-leak-cap-mib", "4097"],
        ] {
            assert!(parse(&args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn pool_flags_have_defaults_and_bounds() {
        let c = parse(&[]).unwrap().config;
        assert_eq!((c.pool_size, c.pool_wait_ms), (10, 1000));
        let c = parse(&[
            "--fault-profile",
            "pool-exhaust",
            "--pool-size",
            "1000",
            "--pool-wait-ms",
            "0",
        ])
        .unwrap()
        .config;
        assert_eq!(c.fault_profile, FaultProfile::PoolExhaust);
        assert_eq!(c.pool_size, 1000);
        assert_eq!(c.pool_wait(), Duration::ZERO);
        for args in [
            ["--pool-size", "0"],
            ["--pool-size", "1001"],
            ["--pool-wait-ms", "-1"],
            ["--pool-wait-ms", "soon"],
        ] {
            assert!(parse(&args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn for_tests_matches_the_flag_defaults() {
        let parsed = parse(&[]).unwrap().config;
        let fixed = Config::for_tests();
        assert_eq!(
            (parsed.pool_size, parsed.pool_wait_ms),
            (fixed.pool_size, fixed.pool_wait_ms)
        );
    }

    #[test]
    fn unknown_fault_profile_is_rejected() {
        assert!(parse(&["--fault-profile", "explode"]).is_err());
    }

    #[test]
    fn probe_subcommand_takes_url_and_timeout() {
        let cli = parse(&[
            "probe",
            "http://127.0.0.1:8080/ready",
            "--timeout-ms",
            "500",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Probe(p)) => {
                assert_eq!(p.url, "http://127.0.0.1:8080/ready");
                assert_eq!(p.timeout_ms, 500);
            }
            None => panic!("expected probe subcommand"),
        }
    }
}
