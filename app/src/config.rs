//! Command line and environment configuration (clap derive; every flag has an env var).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::faults::{MAX_LATENCY_MS, MAX_LEAK_CAP_MIB, MAX_LEAK_MIB_PER_SEC};
use crate::pool::{DEFAULT_POOL_SIZE, MAX_POOL_SIZE};

// Every numeric setting has a range, checked by clap at start: a typo in the chart stops the
// pod with a message naming the flag and the range (exit 2) instead of misbehaving later.
// The README's settings table lists the same ranges (a test below keeps them equal).

/// Largest `--warmup-secs`. An hour is far beyond any real start-up; unbounded, a huge value
/// overflowed `Instant` (start + warm-up) and the app panicked at start.
pub const MAX_WARMUP_SECS: u64 = 3600;
/// Largest `--shutdown-delay-secs` and `--shutdown-timeout-secs`: both must fit, with the span
/// flush, in the pod's `terminationGracePeriodSeconds`; ten minutes each is already generous.
pub const MAX_SHUTDOWN_SECS: u64 = 600;
/// Largest `--request-timeout-ms` (5 min): above the largest injected latency, so the latency
/// fault can be shown without 408s.
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 300_000;
/// Largest `--pool-wait-ms`; keep the wait below the request timeout anyway.
pub const MAX_POOL_WAIT_MS: u64 = 120_000;
/// Largest `--body-limit-bytes` (16 MiB): the app takes small JSON bodies only.
pub const MAX_BODY_LIMIT_BYTES: u64 = 16 * 1024 * 1024;
/// Default `--max-concurrent-requests`: far above the default pool (10), so load drains the
/// pool (the demo's 503 `pool_exhausted`) long before it is shed.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: u32 = 256;
/// Largest `--max-concurrent-requests`.
pub const MAX_CONCURRENT_REQUESTS: u32 = 10_000;
/// Default `--header-read-timeout-ms`.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Smallest `--header-read-timeout-ms`: below this, a client on a slow link could not send a
/// normal request head.
pub const MIN_HEADER_READ_TIMEOUT_MS: u64 = 100;
/// Largest `--header-read-timeout-ms` (5 min).
pub const MAX_HEADER_READ_TIMEOUT_MS: u64 = 300_000;
/// Largest `probe --timeout-ms` (5 min).
pub const MAX_PROBE_TIMEOUT_MS: u64 = 300_000;

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

impl Cli {
    /// Parses the command line and the environment. A bad value exits as clap does (usage error,
    /// code 2, the flag, the value and the range), plus the variable's name when the value came
    /// from the environment: in a pod the chart sets variables, not flags.
    pub fn parse_or_exit() -> Self {
        Self::try_parse().unwrap_or_else(|err| {
            let args: Vec<String> = std::env::args().collect();
            with_env_tip(err, &args).exit()
        })
    }
}

/// Adds "tip: the value came from the environment variable X" to a bad-value error whose flag is
/// not among `args`.
fn with_env_tip(mut err: clap::Error, args: &[String]) -> clap::Error {
    use clap::CommandFactory as _;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if err.kind() != ErrorKind::ValueValidation {
        return err;
    }
    // Rendered as `--warmup-secs <WARMUP_SECS>`.
    let Some(ContextValue::String(invalid)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let Some(flag) = invalid.split_whitespace().next().map(str::to_owned) else {
        return err;
    };
    let cmd = Cli::command();
    let env = cmd
        .get_arguments()
        .chain(cmd.get_subcommands().flat_map(clap::Command::get_arguments))
        .find(|a| {
            a.get_long()
                .is_some_and(|l| flag.strip_prefix("--") == Some(l))
        })
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned());
    let on_command_line = args
        .iter()
        .any(|a| *a == flag || a.starts_with(&format!("{flag}=")));
    if let (Some(env), false) = (env, on_command_line) {
        err.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![
                format!("the value came from the environment variable {env}").into(),
            ]),
        );
    }
    err
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
    /// Give up after this many milliseconds (connect + answer), 1 to 300000.
    #[arg(long, env = "PROBE_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_PROBE_TIMEOUT_MS))]
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

    /// Error rate of the `errors` fault profile, in percent (0 to 100).
    #[arg(long, env = "APP_FAULT_ERROR_PERCENT", default_value_t = 50,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub fault_error_percent: u8,

    /// Added latency of the `latency` fault profile, in milliseconds (0 to 120000, as for
    /// `POST /crash?mode=latency`).
    #[arg(long, env = "APP_FAULT_LATENCY_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(0..=MAX_LATENCY_MS))]
    pub fault_latency_ms: u64,

    /// Growth rate of the `leak` fault profile, in MiB per second (1 to 64).
    #[arg(long, env = "APP_FAULT_LEAK_MIB_PER_SEC", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LEAK_MIB_PER_SEC)))]
    pub fault_leak_mib_per_sec: u32,

    /// Leaked memory of the `leak` fault profile stops growing at this many MiB (1 to 4096).
    #[arg(long, env = "APP_FAULT_LEAK_CAP_MIB", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LEAK_CAP_MIB)))]
    pub fault_leak_cap_mib: u32,

    /// Connections in the simulated pool; every `GET /` borrows one for its whole duration
    /// (1 to 1000).
    #[arg(long, env = "APP_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_POOL_SIZE)))]
    pub pool_size: u32,

    /// How long `GET /` waits for a free pool connection before answering 503, in milliseconds
    /// (0 to 120000).
    #[arg(long, env = "APP_POOL_WAIT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=MAX_POOL_WAIT_MS))]
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

    /// `/ready` answers 503 for this long after start, in seconds (0 to 3600).
    #[arg(long, env = "APP_WARMUP_SECS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_WARMUP_SECS))]
    pub warmup_secs: u64,

    /// After SIGTERM: keep serving (unready) this long so endpoints are removed first, in
    /// seconds (0 to 600).
    #[arg(long, env = "APP_SHUTDOWN_DELAY_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=MAX_SHUTDOWN_SECS))]
    pub shutdown_delay_secs: u64,

    /// After the delay: deadline for in-flight requests to finish, in seconds (0 to 600).
    #[arg(long, env = "APP_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=MAX_SHUTDOWN_SECS))]
    pub shutdown_timeout_secs: u64,

    /// Requests taking longer are answered with 408, in milliseconds (1 to 300000).
    #[arg(long, env = "APP_REQUEST_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_REQUEST_TIMEOUT_MS))]
    pub request_timeout_ms: u64,

    /// Largest accepted request body, in bytes (413 above; 1 to 16777216).
    #[arg(long, env = "APP_BODY_LIMIT_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(1..=MAX_BODY_LIMIT_BYTES))]
    pub body_limit_bytes: usize,

    /// Requests served at once (1 to 10000); above it the app sheds load: 503 with
    /// `Retry-After` at once, instead of queueing until every request is slow. `/health`,
    /// `/ready`, `/metrics` and `/crash` are exempt.
    #[arg(long, env = "APP_MAX_CONCURRENT_REQUESTS", default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONCURRENT_REQUESTS)))]
    pub max_concurrent_requests: u32,

    /// A connection must send a complete request head within this many milliseconds of the
    /// server starting to wait for one, else it is closed (100 to 300000). Also closes
    /// kept-alive connections idle this long.
    #[arg(long, env = "APP_HEADER_READ_TIMEOUT_MS", default_value_t = DEFAULT_HEADER_READ_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64)
              .range(MIN_HEADER_READ_TIMEOUT_MS..=MAX_HEADER_READ_TIMEOUT_MS))]
    pub header_read_timeout_ms: u64,

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

    /// Deadline for a connection to send a complete request head.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
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
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
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
        assert_eq!(
            (
                parsed.max_concurrent_requests,
                parsed.header_read_timeout_ms
            ),
            (fixed.max_concurrent_requests, fixed.header_read_timeout_ms)
        );
    }

    /// Every numeric server setting: flag, env var, smallest and largest accepted value.
    const NUMERIC: &[(&str, &str, u64, u64)] = &[
        ("--fault-error-percent", "APP_FAULT_ERROR_PERCENT", 0, 100),
        (
            "--fault-latency-ms",
            "APP_FAULT_LATENCY_MS",
            0,
            MAX_LATENCY_MS,
        ),
        (
            "--fault-leak-mib-per-sec",
            "APP_FAULT_LEAK_MIB_PER_SEC",
            1,
            MAX_LEAK_MIB_PER_SEC as u64,
        ),
        (
            "--fault-leak-cap-mib",
            "APP_FAULT_LEAK_CAP_MIB",
            1,
            MAX_LEAK_CAP_MIB as u64,
        ),
        ("--pool-size", "APP_POOL_SIZE", 1, MAX_POOL_SIZE as u64),
        ("--pool-wait-ms", "APP_POOL_WAIT_MS", 0, MAX_POOL_WAIT_MS),
        ("--warmup-secs", "APP_WARMUP_SECS", 0, MAX_WARMUP_SECS),
        (
            "--shutdown-delay-secs",
            "APP_SHUTDOWN_DELAY_SECS",
            0,
            MAX_SHUTDOWN_SECS,
        ),
        (
            "--shutdown-timeout-secs",
            "APP_SHUTDOWN_TIMEOUT_SECS",
            0,
            MAX_SHUTDOWN_SECS,
        ),
        (
            "--request-timeout-ms",
            "APP_REQUEST_TIMEOUT_MS",
            1,
            MAX_REQUEST_TIMEOUT_MS,
        ),
        (
            "--body-limit-bytes",
            "APP_BODY_LIMIT_BYTES",
            1,
            MAX_BODY_LIMIT_BYTES,
        ),
        (
            "--max-concurrent-requests",
            "APP_MAX_CONCURRENT_REQUESTS",
            1,
            MAX_CONCURRENT_REQUESTS as u64,
        ),
        (
            "--header-read-timeout-ms",
            "APP_HEADER_READ_TIMEOUT_MS",
            MIN_HEADER_READ_TIMEOUT_MS,
            MAX_HEADER_READ_TIMEOUT_MS,
        ),
    ];

    #[test]
    fn numeric_settings_accept_their_bounds_and_refuse_beyond_them() {
        for &(flag, _, min, max) in NUMERIC {
            for ok in [min, max] {
                let v = ok.to_string();
                assert!(parse(&[flag, &v]).is_ok(), "{flag} {v} refused");
            }
            let below = min
                .checked_sub(1)
                .map_or("-1".to_owned(), |v| v.to_string());
            for bad in [below, (max + 1).to_string()] {
                // `--flag=-1`: as two words clap would read `-1` as a flag.
                let Err(err) = parse(&[&format!("{flag}={bad}")]) else {
                    panic!("{flag} {bad} accepted");
                };
                assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
                let msg = err.to_string();
                // The message names the flag, the value and (for values that parsed) the range.
                assert!(msg.contains(flag) && msg.contains(&bad), "{msg}");
                if bad != "-1" {
                    assert!(msg.contains(&format!("{min}..={max}")), "{msg}");
                }
            }
        }
    }

    #[test]
    fn every_numeric_flag_has_a_range() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            let numeric_default = arg
                .get_default_values()
                .first()
                .and_then(|d| d.to_str())
                .is_some_and(|d| d.parse::<u64>().is_ok());
            if !numeric_default {
                continue;
            }
            let flag = format!("--{}", arg.get_long().unwrap());
            let row = NUMERIC.iter().find(|(f, ..)| *f == flag);
            let (_, env, ..) = row.unwrap_or_else(|| panic!("{flag} has no range in NUMERIC"));
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(*env), "{flag}");
        }
        let probe = cmd.find_subcommand("probe").unwrap();
        let timeout = probe
            .get_arguments()
            .find(|a| a.get_long() == Some("timeout-ms"))
            .unwrap();
        assert_eq!(timeout.get_env().unwrap(), "PROBE_TIMEOUT_MS");
    }

    #[test]
    fn readme_settings_table_matches_ranges_and_defaults() {
        use clap::CommandFactory;
        let readme = include_str!("../README.md");
        let cmd = Cli::command();
        for &(flag, env, min, max) in NUMERIC {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{flag}` |")))
                .unwrap_or_else(|| panic!("README has no row for {flag}"));
            // | flag | env | default | range | meaning |
            let cols: Vec<&str> = row.split('|').map(str::trim).collect();
            let default = cmd
                .get_arguments()
                .find(|a| a.get_long() == flag.strip_prefix("--"))
                .and_then(|a| a.get_default_values().first()?.to_str())
                .unwrap();
            assert_eq!(cols[2], format!("`{env}`"), "{row}");
            assert_eq!(cols[3], format!("`{default}`"), "{row}");
            assert_eq!(cols[4], format!("{min}–{max}"), "{row}");
        }
    }

    #[test]
    fn probe_timeout_is_bounded() {
        for ok in ["1", "300000"] {
            assert!(parse(&["probe", "http://x/", "--timeout-ms", ok]).is_ok());
        }
        for bad in ["0", "300001"] {
            assert!(parse(&["probe", "http://x/", "--timeout-ms", bad]).is_err());
        }
    }

    #[test]
    fn value_errors_name_the_env_var_when_the_flag_was_not_given() {
        let err = parse(&["--warmup-secs", "3601"]).unwrap_err();
        // As if it came from APP_WARMUP_SECS: the flag is not on the command line.
        let from_env = with_env_tip(err, &["selfheal-app".to_owned()]).to_string();
        assert!(
            from_env.contains("0..=3600")
                && from_env
                    .contains("the value came from the environment variable APP_WARMUP_SECS"),
            "{from_env}"
        );
        let err = parse(&["--warmup-secs=3601"]).unwrap_err();
        let from_flag = with_env_tip(err, &["selfheal-app".into(), "--warmup-secs=3601".into()]);
        assert!(
            !from_flag.to_string().contains("APP_WARMUP_SECS"),
            "{from_flag}"
        );
        let err = parse(&["probe", "http://x/", "--timeout-ms", "0"]).unwrap_err();
        let probe = with_env_tip(err, &["selfheal-app".into(), "probe".into()]).to_string();
        assert!(probe.contains("PROBE_TIMEOUT_MS"), "{probe}");
    }

    #[test]
    fn warmup_above_an_hour_is_refused() {
        // Unbounded, 2^64-1 s overflowed `Instant` when the state was built.
        let err = parse(&["--warmup-secs", &u64::MAX.to_string()]).unwrap_err();
        assert!(err.to_string().contains("0..=3600"), "{err}");
        assert_eq!(
            parse(&["--warmup-secs", "3600"])
                .unwrap()
                .config
                .warmup_secs,
            3600
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
