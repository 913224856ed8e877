//! Shared application state: identity, metrics, faults, readiness and the exit request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit, watch};

use crate::Result;
use crate::config::{Config, Track};
use crate::faults::{Faults, PoolExhaustion};
use crate::metrics::Metrics;
use crate::pool::Pool;

/// Service name reported by `/` and used as the default OTel `service.name`.
pub const SERVICE_NAME: &str = "selfheal-app";
/// Crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Cheap-to-clone handle on the state shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pod: String,
    namespace: Option<String>,
    track: Track,
    message: String,
    chaos_enabled: bool,
    chaos_token: Option<String>,
    request_timeout: Duration,
    body_limit_bytes: usize,
    header_read_timeout: Duration,
    /// One permit per request served at once (`--max-concurrent-requests`).
    request_slots: Semaphore,
    max_concurrent_requests: u32,
    ready_at: Instant,
    draining: AtomicBool,
    metrics: Metrics,
    faults: Faults,
    exit_tx: watch::Sender<Option<i32>>,
}

/// Why `/ready` answers what it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// 200.
    Ready,
    /// Warm-up still running; seconds left (rounded up).
    WarmingUp(u64),
    /// SIGTERM received.
    Draining,
    /// `POST /crash?mode=unready`.
    FaultInjected,
    /// Started with `--fault-profile unready`.
    BadRelease,
    /// The `pool-exhaust` fault (or profile) holds every pool connection: `/` can only answer
    /// 503, so the pod leaves the Service until it is cleared.
    PoolExhausted(PoolExhaustion),
}

impl Readiness {
    /// Human-readable reason, returned in the body.
    pub fn reason(&self) -> String {
        match self {
            Readiness::Ready => "ready".into(),
            Readiness::WarmingUp(s) => format!("warming up ({s}s left)"),
            Readiness::Draining => "shutting down: draining connections".into(),
            Readiness::FaultInjected => {
                "fault injected: unready (POST /crash?mode=reset clears it)".into()
            }
            Readiness::BadRelease => "bad release: started with fault profile `unready`".into(),
            Readiness::PoolExhausted(p) if p.from_profile => format!(
                "bad release: started with fault profile `pool-exhaust`: connection pool \
                 exhausted ({}/{} connections held)",
                p.held, p.size
            ),
            Readiness::PoolExhausted(p) => format!(
                "fault injected: pool-exhaust: connection pool exhausted ({}/{} connections held; \
                 POST /crash?mode=reset releases them)",
                p.held, p.size
            ),
        }
    }
}

impl AppState {
    /// Builds the state from the config; the warm-up starts now.
    pub fn new(cfg: &Config) -> Result<Self> {
        let (exit_tx, _) = watch::channel(None);
        Ok(Self {
            inner: Arc::new(Inner {
                pod: cfg.pod_name(),
                namespace: cfg.pod_namespace.clone().filter(|s| !s.is_empty()),
                track: cfg.track,
                message: cfg.message.clone(),
                chaos_enabled: cfg.enable_chaos,
                chaos_token: cfg.chaos_token.clone().filter(|s| !s.is_empty()),
                request_timeout: cfg.request_timeout(),
                body_limit_bytes: cfg.body_limit_bytes,
                header_read_timeout: cfg.header_read_timeout(),
                request_slots: Semaphore::new(cfg.max_concurrent_requests as usize),
                max_concurrent_requests: cfg.max_concurrent_requests,
                ready_at: Instant::now() + cfg.warmup(),
                draining: AtomicBool::new(false),
                metrics: Metrics::new(VERSION, cfg.track)?,
                faults: Faults::from_profile(cfg),
                exit_tx,
            }),
        })
    }

    /// Pod (or host) name.
    pub fn pod(&self) -> &str {
        &self.inner.pod
    }
    /// Pod namespace, when known.
    pub fn namespace(&self) -> Option<&str> {
        self.inner.namespace.as_deref()
    }
    /// Deployment track.
    pub fn track(&self) -> Track {
        self.inner.track
    }
    /// Message of `/`.
    pub fn message(&self) -> &str {
        &self.inner.message
    }
    /// Whether `POST /crash` is allowed.
    pub fn chaos_enabled(&self) -> bool {
        self.inner.chaos_enabled
    }
    /// Bearer token required by `POST /crash`, if any.
    pub fn chaos_token(&self) -> Option<&str> {
        self.inner.chaos_token.as_deref()
    }
    /// Per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }
    /// Request body limit.
    pub fn body_limit_bytes(&self) -> usize {
        self.inner.body_limit_bytes
    }
    /// Deadline for a connection to send a complete request head.
    pub fn header_read_timeout(&self) -> Duration {
        self.inner.header_read_timeout
    }
    /// `--max-concurrent-requests`.
    pub fn max_concurrent_requests(&self) -> u32 {
        self.inner.max_concurrent_requests
    }
    /// Takes one request slot, or `None` when all are busy (the caller sheds the request).
    /// Never waits: a queue would only make every request slow instead of some fast.
    pub fn try_request_slot(&self) -> Option<SemaphorePermit<'_>> {
        self.inner.request_slots.try_acquire().ok()
    }
    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
    /// Fault switchboard.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }
    /// The connection pool `GET /` borrows from.
    pub fn pool(&self) -> &Pool {
        self.inner.faults.pool()
    }

    /// Whether the shutdown signal came: the pod is leaving the Service's endpoints.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Readiness at `now`, most important reason first.
    pub fn readiness(&self, now: Instant) -> Readiness {
        if self.draining() {
            return Readiness::Draining;
        }
        if let Some(from_profile) = self.inner.faults.unready(now) {
            return if from_profile {
                Readiness::BadRelease
            } else {
                Readiness::FaultInjected
            };
        }
        if let Some(exhaustion) = self.inner.faults.pool_exhausted(now) {
            return Readiness::PoolExhausted(exhaustion);
        }
        if now < self.inner.ready_at {
            let left = self.inner.ready_at - now;
            return Readiness::WarmingUp(left.as_secs() + u64::from(left.subsec_nanos() > 0));
        }
        Readiness::Ready
    }

    /// Whether `/health` answers 200.
    pub fn healthy(&self) -> bool {
        !self.inner.faults.unhealthy()
    }

    /// Turns unready for good (SIGTERM received).
    pub fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// Asks the server loop to exit the process with `code` (`/crash?mode=exit`).
    pub fn request_exit(&self, code: i32) {
        self.inner.exit_tx.send_replace(Some(code));
    }

    /// Receives the exit request of [`AppState::request_exit`].
    pub fn exit_requested(&self) -> watch::Receiver<Option<i32>> {
        self.inner.exit_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FaultProfile;

    #[test]
    fn warm_up_then_ready_then_draining() {
        let mut cfg = Config::for_tests();
        cfg.warmup_secs = 2;
        let state = AppState::new(&cfg).unwrap();
        let now = Instant::now();
        assert_eq!(state.readiness(now), Readiness::WarmingUp(2));
        assert_eq!(
            state.readiness(now + Duration::from_secs(3)),
            Readiness::Ready
        );
        state.begin_drain();
        assert_eq!(
            state.readiness(now + Duration::from_secs(3)),
            Readiness::Draining
        );
    }

    #[test]
    fn unready_profile_is_reported_as_bad_release() {
        let mut cfg = Config::for_tests();
        cfg.fault_profile = FaultProfile::Unready;
        let state = AppState::new(&cfg).unwrap();
        assert_eq!(state.readiness(Instant::now()), Readiness::BadRelease);
    }

    #[test]
    fn pool_exhaust_profile_is_reported_as_bad_release_with_the_held_count() {
        let mut cfg = Config::for_tests();
        cfg.fault_profile = FaultProfile::PoolExhaust;
        cfg.pool_size = 4;
        let state = AppState::new(&cfg).unwrap();
        let r = state.readiness(Instant::now());
        assert_eq!(
            r,
            Readiness::PoolExhausted(PoolExhaustion {
                held: 4,
                size: 4,
                from_profile: true
            })
        );
        assert!(r.reason().contains("bad release"), "{}", r.reason());
        assert!(
            r.reason().contains("4/4 connections held"),
            "{}",
            r.reason()
        );
    }

    #[test]
    fn draining_outranks_pool_exhaustion_and_pool_exhaustion_outranks_warm_up() {
        let mut cfg = Config::for_tests();
        cfg.fault_profile = FaultProfile::PoolExhaust;
        cfg.warmup_secs = 60;
        let state = AppState::new(&cfg).unwrap();
        assert!(matches!(
            state.readiness(Instant::now()),
            Readiness::PoolExhausted(_)
        ));
        state.begin_drain();
        assert_eq!(state.readiness(Instant::now()), Readiness::Draining);
    }

    #[test]
    fn exit_request_reaches_subscribers() {
        let state = AppState::new(&Config::for_tests()).unwrap();
        let rx = state.exit_requested();
        state.request_exit(3);
        assert_eq!(*rx.borrow(), Some(3));
    }
}
