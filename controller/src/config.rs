//! Every knob is a flag and an environment variable (`CONTROLLER_*`, or the standard name where
//! one exists: `POD_NAME`, `POD_NAMESPACE`, `OTEL_EXPORTER_OTLP_ENDPOINT`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::healers::zombie::rule::ZombieRule;
use crate::leader::LeaderConfig;
use crate::policy::{Action, Policy};

/// Namespaces the controller never acts in, whatever its flags say: the cluster's own (its own
/// namespace is added at runtime). `--exclude-namespaces` adds to these; it cannot remove them.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for terminals.
    Text,
    /// One JSON object per line, for log collectors in the cluster.
    Json,
}

/// Subcommands; without one the controller runs.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Print a CRD as YAML (what `deploy/crd/` holds) and exit.
    Crdgen {
        /// Which CRD.
        #[arg(value_enum, default_value_t = CrdKind::HealingPolicy)]
        kind: CrdKind,
    },
}

/// The CRDs `crdgen` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CrdKind {
    /// `healingpolicies.selfheal.io`.
    HealingPolicy,
    /// `circuitbreakers.selfheal.io`.
    CircuitBreaker,
}

/// `selfheal-controller` configuration, parsed once in `main`.
#[derive(Debug, Clone, Parser)]
#[command(name = "selfheal-controller", version, about)]
pub struct Config {
    /// Optional subcommand (`crdgen`).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Watch HealingPolicy objects (selfheal.io/v1alpha1); the CRD must be installed. Off = the
    /// flags below are the only policy.
    #[arg(long, env = "CONTROLLER_HEALING_POLICIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub healing_policies: bool,

    /// Run CircuitBreaker objects (selfheal.io/v1alpha1); the CRD must be installed, and the
    /// breakers need `--prometheus-url`. Off = no breaker is evaluated.
    #[arg(long, env = "CONTROLLER_CIRCUIT_BREAKERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub circuit_breakers: bool,

    /// Recycle when the pod's total container restarts exceed this count.
    #[arg(long, env = "CONTROLLER_RESTART_THRESHOLD", default_value_t = 3)]
    pub restart_threshold: u32,

    /// Restart-rate trigger: recycle when this many restarts happen within the rate window (0 = off).
    #[arg(long, env = "CONTROLLER_RATE_RESTARTS", default_value_t = 3)]
    pub rate_restarts: u32,

    /// Length of the restart-rate window.
    #[arg(long, env = "CONTROLLER_RATE_WINDOW_SECS", default_value_t = 300)]
    pub rate_window_secs: u64,

    /// A container waiting in ImagePullBackOff/ErrImagePull for a pod older than this is recycled.
    #[arg(long, env = "CONTROLLER_IMAGE_PULL_GRACE_SECS", default_value_t = 300)]
    pub image_pull_grace_secs: u64,

    /// Pods younger than this are never recycled (they are re-checked when they reach it).
    #[arg(long, env = "CONTROLLER_MIN_POD_AGE_SECS", default_value_t = 60)]
    pub min_pod_age_secs: u64,

    /// Minimum time between two recycles of the same workload.
    #[arg(long, env = "CONTROLLER_COOLDOWN_SECS", default_value_t = 300)]
    pub cooldown_secs: u64,

    /// At most this many recycles per workload within the recycle window.
    #[arg(long, env = "CONTROLLER_MAX_RECYCLES_PER_WINDOW", default_value_t = 3)]
    pub max_recycles_per_window: u32,

    /// Length of the per-workload recycle window.
    #[arg(long, env = "CONTROLLER_RECYCLE_WINDOW_SECS", default_value_t = 3600)]
    pub recycle_window_secs: u64,

    /// After this many recycles of one workload (within the give-up window) stop and emit `GivingUp`.
    #[arg(long, env = "CONTROLLER_MAX_RETRIES", default_value_t = 5)]
    pub max_retries: u32,

    /// How long recycles count towards `max_retries`; a workload that stays quiet this long starts afresh.
    #[arg(long, env = "CONTROLLER_GIVEUP_WINDOW_SECS", default_value_t = 86_400)]
    pub giveup_window_secs: u64,

    /// Only watch these namespaces (comma-separated); empty = all namespaces not excluded.
    #[arg(long, env = "CONTROLLER_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Never act in these namespaces either (comma-separated): they are added to kube-system,
    /// kube-public, kube-node-lease and the controller's own namespace, which are always excluded.
    #[arg(long, env = "CONTROLLER_EXCLUDE_NAMESPACES", value_delimiter = ',')]
    pub exclude_namespaces: Vec<String>,

    /// Only watch pods matching this label selector (e.g. `app.kubernetes.io/part-of=shop`).
    #[arg(long, env = "CONTROLLER_LABEL_SELECTOR")]
    pub label_selector: Option<String>,

    /// Page size of the initial (and re-)LIST of pods: smaller pages keep the start-up memory
    /// peak down (whole pods are decoded before they are trimmed) at the cost of more requests.
    #[arg(long, env = "CONTROLLER_WATCH_PAGE_SIZE", default_value_t = 100)]
    pub watch_page_size: u32,

    /// Decide, log and record Events, but evict nothing.
    #[arg(long, env = "CONTROLLER_DRY_RUN", default_value_t = false)]
    pub dry_run: bool,

    /// Quote the tail of the crashed container's previous log in the evidence Event. Off by
    /// default: Events are readable by everyone who may read Events in the namespace, often more
    /// people than may read the pod's logs (which can hold tokens, URLs, personal data).
    #[arg(long, env = "CONTROLLER_LOG_EVIDENCE", default_value_t = false, action = clap::ArgAction::Set)]
    pub log_evidence: bool,

    /// Upper bound of the previous container's log tail quoted in the evidence Event.
    #[arg(long, env = "CONTROLLER_LOG_TAIL_BYTES", default_value_t = 512)]
    pub log_tail_bytes: usize,

    /// Lines of the previous container's log requested for the evidence.
    #[arg(long, env = "CONTROLLER_LOG_TAIL_LINES", default_value_t = 20)]
    pub log_tail_lines: i64,

    /// First retry delay after an API error or a PDB refusal; doubles on each failure.
    #[arg(long, env = "CONTROLLER_BACKOFF_BASE_MS", default_value_t = 1000)]
    pub backoff_base_ms: u64,

    /// Cap of the exponential backoff.
    #[arg(long, env = "CONTROLLER_BACKOFF_MAX_MS", default_value_t = 300_000)]
    pub backoff_max_ms: u64,

    /// How often the working set of pods under a `memoryTrend` policy is read from the metrics
    /// API (metrics.k8s.io); readings the metrics pipeline has not refreshed yet are ignored, so
    /// below metrics-server's resolution (15 s by default) this only shortens the reaction time.
    #[arg(long, env = "CONTROLLER_MEMORY_SAMPLE_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub memory_sample_secs: u64,

    /// Prometheus base URL for HealingPolicy `errorRate` and `poolExhaustion` triggers (e.g.
    /// `http://kube-prometheus-stack-prometheus.observability:9090`); unset = they are not
    /// evaluated and such policies report Degraded/TriggerNotEvaluated.
    #[arg(long, env = "CONTROLLER_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,

    /// How often each PromQL trigger query (errorRate, poolExhaustion) is asked; an answer older
    /// than three intervals never fires.
    #[arg(long, env = "CONTROLLER_PROMETHEUS_INTERVAL_SECS", default_value_t = 30,
          alias = "error-rate-interval-secs",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub prometheus_interval_secs: u64,

    /// Force-delete a pod still Terminating this long after its deletion deadline when its node
    /// is gone or not ready (0 = never).
    #[arg(long, env = "CONTROLLER_ZOMBIE_AFTER_SECS", default_value_t = 300)]
    pub zombie_after_secs: u64,

    /// Also force-delete overdue Terminating pods on Ready nodes (the kubelet is up but stuck;
    /// force-deleting skips its clean-up, so this is an explicit opt-in).
    #[arg(
        long,
        env = "CONTROLLER_ZOMBIE_ON_HEALTHY_NODES",
        default_value_t = false
    )]
    pub zombie_on_healthy_nodes: bool,

    /// Pods reconciled in parallel.
    #[arg(long, env = "CONTROLLER_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,

    /// Elect a leader through a Lease; off = this process always acts (single replica, tests).
    #[arg(long, env = "CONTROLLER_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader Lease (in `POD_NAMESPACE`).
    #[arg(
        long,
        env = "CONTROLLER_LEASE_NAME",
        default_value = "selfheal-controller"
    )]
    pub lease_name: String,

    /// A leader that has not renewed for this long is replaced.
    #[arg(long, env = "CONTROLLER_LEASE_DURATION_SECS", default_value_t = 15)]
    pub lease_duration_secs: u64,

    /// A leader that cannot renew within this long steps down (must be < lease duration).
    #[arg(
        long,
        env = "CONTROLLER_LEASE_RENEW_DEADLINE_SECS",
        default_value_t = 10
    )]
    pub lease_renew_deadline_secs: u64,

    /// How often the Lease is tried or renewed.
    #[arg(long, env = "CONTROLLER_LEASE_RETRY_PERIOD_SECS", default_value_t = 2)]
    pub lease_retry_period_secs: u64,

    /// This replica's identity (Lease holder, Event reporting instance); Downward API.
    #[arg(long, env = "POD_NAME", default_value = "selfheal-controller-local")]
    pub pod_name: String,

    /// ConfigMap (in `POD_NAMESPACE`) keeping the recycle history across restarts and
    /// failovers; empty = memory only (a restart forgets cooldowns and give-ups).
    #[arg(
        long,
        env = "CONTROLLER_HISTORY_CONFIGMAP",
        default_value = "selfheal-controller-history"
    )]
    pub history_configmap: String,

    /// Namespace the controller runs in (Lease namespace, always excluded); Downward API.
    #[arg(long, env = "POD_NAMESPACE", default_value = "selfheal-system")]
    pub pod_namespace: String,

    /// Address of the `/metrics`, `/healthz`, `/readyz` server.
    #[arg(long, env = "CONTROLLER_HTTP_ADDR", default_value = "0.0.0.0:8081")]
    pub http_addr: SocketAddr,

    /// Log format.
    #[arg(long, env = "CONTROLLER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// OTLP/HTTP endpoint for traces (e.g. `http://jaeger-collector:4318`); unset = no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl Config {
    /// The Lease settings of the flags (check them with [`LeaderConfig::check`]).
    pub fn leader_config(&self) -> LeaderConfig {
        LeaderConfig {
            lease_name: self.lease_name.clone(),
            namespace: self.pod_namespace.clone(),
            identity: self.pod_name.clone(),
            lease_duration: Duration::from_secs(self.lease_duration_secs),
            renew_deadline: Duration::from_secs(self.lease_renew_deadline_secs),
            retry_period: Duration::from_secs(self.lease_retry_period_secs),
        }
    }

    /// The decision thresholds, as the pure policy sees them.
    pub fn policy(&self) -> Policy {
        Policy {
            restart_threshold: Some(self.restart_threshold),
            rate_restarts: self.rate_restarts,
            rate_window: secs(self.rate_window_secs),
            image_pull_grace: Some(secs(self.image_pull_grace_secs)),
            // NB: on their own only in a HealingPolicy; here they name a restart trigger's reason.
            crash_loop: false,
            oom_killed: false,
            not_ready_for: None,
            // NB: HealingPolicy only: it needs per-workload thresholds and a memory limit.
            memory_trend: None,
            error_rate: None,
            pool_exhaustion: None,
            confidence: None,
            min_pod_age: secs(self.min_pod_age_secs),
            cooldown: secs(self.cooldown_secs),
            max_recycles_per_window: self.max_recycles_per_window,
            recycle_window: secs(self.recycle_window_secs),
            max_retries: self.max_retries,
            giveup_window: secs(self.giveup_window_secs),
            namespaces: self
                .namespaces
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            excluded_namespaces: self.excluded_namespaces(),
            action: Action::Evict,
            dry_run: self.dry_run,
            min_healthy: 0,
        }
    }

    /// When a Terminating pod counts as a zombie.
    pub fn zombie_rule(&self) -> ZombieRule {
        ZombieRule {
            after: (self.zombie_after_secs > 0).then(|| secs(self.zombie_after_secs)),
            on_healthy_nodes: self.zombie_on_healthy_nodes,
        }
    }

    /// Excluded namespaces: [`SYSTEM_NAMESPACES`], the controller's own and `--exclude-namespaces`.
    /// NB: additive on purpose. With cluster-wide RBAC, a flag that could drop kube-system would
    /// let one typo point the controller at the control plane's own pods.
    pub fn excluded_namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = SYSTEM_NAMESPACES.iter().map(|n| (*n).to_owned()).collect();
        let extra = self.exclude_namespaces.iter().chain([&self.pod_namespace]);
        for n in extra {
            if !n.is_empty() && !out.contains(n) {
                out.push(n.clone());
            }
        }
        out
    }

    /// Exponential backoff bounds.
    pub fn backoff(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.backoff_base_ms),
            Duration::from_millis(self.backoff_max_ms),
        )
    }
}

fn secs(s: u64) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(i64::try_from(s).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let cfg = Config::try_parse_from(["selfheal-controller"]).expect("defaults parse");
        assert_eq!(cfg.restart_threshold, 3);
        assert_eq!(cfg.min_pod_age_secs, 60);
        assert!(!cfg.dry_run);
        assert!(cfg.leader_election);
        assert!(cfg.healing_policies);
        assert_eq!(cfg.command, None);
        assert_eq!(cfg.policy().action, Action::Evict);
        assert_eq!(cfg.http_addr.port(), 8081);
        assert_eq!(
            cfg.excluded_namespaces(),
            [
                "kube-system",
                "kube-public",
                "kube-node-lease",
                "selfheal-system"
            ]
        );
    }

    #[test]
    fn zombie_reaping_waits_five_minutes_spares_healthy_nodes_and_can_be_off() {
        let cfg = Config::try_parse_from(["selfheal-controller"]).expect("defaults parse");
        assert_eq!(
            cfg.zombie_rule(),
            ZombieRule {
                after: Some(secs(300)),
                on_healthy_nodes: false
            }
        );
        assert_eq!(cfg.memory_sample_secs, 15);
        let off = Config::try_parse_from(["selfheal-controller", "--zombie-after-secs=0"])
            .expect("flags parse");
        assert_eq!(off.zombie_rule().after, None);
        assert!(Config::try_parse_from(["selfheal-controller", "--memory-sample-secs=0"]).is_err());
    }

    #[test]
    fn exclude_namespaces_adds_to_the_system_namespaces_and_cannot_remove_them() {
        for flag in ["--exclude-namespaces=", "--exclude-namespaces=default"] {
            let cfg = Config::try_parse_from(["selfheal-controller", flag, "--pod-namespace=ops"])
                .expect("flags parse");
            let excluded = cfg.excluded_namespaces();
            for ns in SYSTEM_NAMESPACES.iter().chain(&["ops"]) {
                assert!(
                    excluded.iter().any(|e| e == ns),
                    "{flag}: {ns} not excluded"
                );
            }
            assert!(
                !crate::policy::in_scope(&cfg.policy(), "kube-system"),
                "{flag}"
            );
        }
    }

    #[test]
    fn namespace_lists_are_comma_separated_and_own_namespace_is_always_excluded() {
        let cfg = Config::try_parse_from([
            "selfheal-controller",
            "--namespaces=a,b",
            "--exclude-namespaces=x",
            "--pod-namespace=ops",
            "--leader-election=false",
            "--dry-run",
        ])
        .expect("flags parse");
        assert_eq!(cfg.namespaces, ["a", "b"]);
        assert_eq!(
            cfg.excluded_namespaces(),
            ["kube-system", "kube-public", "kube-node-lease", "x", "ops"]
        );
        assert!(!cfg.leader_election);
        assert!(cfg.dry_run);
        assert_eq!(cfg.policy().namespaces, ["a", "b"]);
    }

    #[test]
    fn crdgen_is_a_subcommand_and_policies_can_be_switched_off() {
        let cfg = Config::try_parse_from(["selfheal-controller", "crdgen"]).expect("parses");
        assert_eq!(
            cfg.command,
            Some(Command::Crdgen {
                kind: CrdKind::HealingPolicy
            })
        );
        let cfg = Config::try_parse_from(["selfheal-controller", "crdgen", "circuit-breaker"])
            .expect("parses");
        assert_eq!(
            cfg.command,
            Some(Command::Crdgen {
                kind: CrdKind::CircuitBreaker
            })
        );
        let cfg = Config::try_parse_from(["selfheal-controller", "--healing-policies=false"])
            .expect("parses");
        assert!(!cfg.healing_policies);
    }

    #[test]
    fn bad_numbers_are_rejected() {
        assert!(Config::try_parse_from(["selfheal-controller", "--restart-threshold=-1"]).is_err());
        assert!(Config::try_parse_from(["selfheal-controller", "--http-addr=nope"]).is_err());
    }
}
