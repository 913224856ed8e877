//! Injected faults: what is active, until when, the CPU burner threads, the memory leaker and
//! the connections held out of the pool.
//!
//! Each fault mode is the trigger of one recovery layer (see `app/README.md`). State lives behind
//! a short-lived `std::sync::Mutex`; time is passed in (`now`) so expiry is testable without sleeps.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Config, FaultProfile};
use crate::pool::{Hold, Pool};

/// A fault mode of `POST /crash?mode=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// Exit the process with [`CRASH_EXIT_CODE`].
    Exit,
    /// `/health` answers 503.
    Unhealthy,
    /// `/ready` answers 503.
    Unready,
    /// Burn CPU on N threads.
    Cpu,
    /// `/` answers P % of requests with 500.
    Errors,
    /// `/` is slowed down by N ms.
    Latency,
    /// Grow resident memory by N MiB/s up to a cap.
    Leak,
    /// Hold N (default all) connections of the pool.
    #[serde(rename = "pool-exhaust")]
    PoolExhaust,
    /// Clear every fault.
    Reset,
}

impl FaultKind {
    /// Every kind, for pre-registering metric label values.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Exit,
        FaultKind::Unhealthy,
        FaultKind::Unready,
        FaultKind::Cpu,
        FaultKind::Errors,
        FaultKind::Latency,
        FaultKind::Leak,
        FaultKind::PoolExhaust,
        FaultKind::Reset,
    ];

    /// Name used in query parameters, JSON and the `kind` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Exit => "exit",
            FaultKind::Unhealthy => "unhealthy",
            FaultKind::Unready => "unready",
            FaultKind::Cpu => "cpu",
            FaultKind::Errors => "errors",
            FaultKind::Latency => "latency",
            FaultKind::Leak => "leak",
            FaultKind::PoolExhaust => "pool-exhaust",
            FaultKind::Reset => "reset",
        }
    }

    /// Parses a mode name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Exit code of `POST /crash?mode=exit`, distinct from start-up failures (1) and panics (101).
pub const CRASH_EXIT_CODE: i32 = 3;

/// Upper bounds that keep a typo from wedging a node.
pub const MAX_SECONDS: u64 = 24 * 3600;
/// Largest accepted `ms` for the latency fault.
pub const MAX_LATENCY_MS: u64 = 120_000;
/// Largest accepted `threads` for the CPU fault.
pub const MAX_CPU_THREADS: u32 = 64;
/// Largest accepted `mib_per_sec` for the leak fault.
pub const MAX_LEAK_MIB_PER_SEC: u32 = 64;
/// Largest accepted `cap_mib` for the leak fault.
pub const MAX_LEAK_CAP_MIB: u32 = 4096;

const MIB: u64 = 1024 * 1024;
/// How often the leaker grows: small steps give a smooth trend, not a staircase.
const LEAK_TICK: Duration = Duration::from_millis(100);
/// Non-zero, so the kernel cannot back the pages with its shared zero page.
const LEAK_FILL: u8 = 0xA5;

/// When a fault ends: at a deadline, or when reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Until `mode=reset` (or a restart).
    Reset,
    /// Until this instant.
    Deadline(Instant),
}

impl Until {
    fn from_seconds(now: Instant, seconds: Option<u64>) -> Self {
        match seconds {
            Some(s) => Until::Deadline(now + Duration::from_secs(s)),
            None => Until::Reset,
        }
    }

    fn active(self, now: Instant) -> bool {
        match self {
            Until::Reset => true,
            Until::Deadline(d) => now < d,
        }
    }

    fn remaining_secs(self, now: Instant) -> Option<u64> {
        match self {
            Until::Reset => None,
            Until::Deadline(d) => Some(d.saturating_duration_since(now).as_secs()),
        }
    }
}

/// A validated fault request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injection {
    /// Exit the process.
    Exit,
    /// Fail liveness until reset.
    Unhealthy,
    /// Fail readiness for `seconds` (or until reset).
    Unready {
        /// Duration; `None` = until reset.
        seconds: Option<u64>,
    },
    /// Burn CPU.
    Cpu {
        /// Duration.
        seconds: u64,
        /// Busy threads.
        threads: u32,
    },
    /// Serve errors on `/`.
    Errors {
        /// Error rate in percent.
        percent: u8,
        /// Duration; `None` = until reset.
        seconds: Option<u64>,
    },
    /// Slow `/` down.
    Latency {
        /// Added delay in milliseconds.
        ms: u64,
        /// Duration; `None` = until reset.
        seconds: Option<u64>,
    },
    /// Leak resident memory.
    Leak {
        /// Growth rate in MiB per second.
        mib_per_sec: u32,
        /// Leaked memory stops growing at this many MiB and is held.
        cap_mib: u32,
        /// Duration, after which the memory is freed; `None` = until reset.
        seconds: Option<u64>,
    },
    /// Hold connections of the pool.
    PoolExhaust {
        /// Connections to hold, 1 to the pool size.
        held: u32,
        /// Duration, after which they are given back; `None` = until reset.
        seconds: Option<u64>,
    },
    /// Clear everything.
    Reset,
}

impl Injection {
    /// The mode of this injection.
    pub fn kind(&self) -> FaultKind {
        match self {
            Injection::Exit => FaultKind::Exit,
            Injection::Unhealthy => FaultKind::Unhealthy,
            Injection::Unready { .. } => FaultKind::Unready,
            Injection::Cpu { .. } => FaultKind::Cpu,
            Injection::Errors { .. } => FaultKind::Errors,
            Injection::Latency { .. } => FaultKind::Latency,
            Injection::Leak { .. } => FaultKind::Leak,
            Injection::PoolExhaust { .. } => FaultKind::PoolExhaust,
            Injection::Reset => FaultKind::Reset,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    unhealthy: bool,
    unready: Option<Active<()>>,
    errors: Option<Active<u8>>,
    latency: Option<Active<u64>>,
    cpu: Option<CpuBurn>,
    leak: Option<Leak>,
    pool: Option<PoolHold>,
}

#[derive(Debug, Clone, Copy)]
struct Active<T> {
    value: T,
    until: Until,
    from_profile: bool,
}

#[derive(Debug)]
struct CpuBurn {
    threads: u32,
    until: Until,
    stop: Arc<AtomicBool>,
}

impl Drop for CpuBurn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The running leaker thread; dropping it makes the thread free its memory and exit.
#[derive(Debug)]
struct Leak {
    until: Until,
    from_profile: bool,
    stop: Arc<AtomicBool>,
    /// Bytes this leaker holds right now.
    leaked: Arc<AtomicU64>,
    /// `None` when the thread could not be spawned.
    thread: Option<std::thread::Thread>,
}

impl Drop for Leak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake it from its tick sleep so the memory goes back now, not up to a tick later.
        // Not joined: freeing gigabytes must not stall the handler holding the state lock.
        if let Some(t) = &self.thread {
            t.unpark();
        }
    }
}

/// Connections the `pool-exhaust` fault keeps out of the pool; dropping it gives them back.
#[derive(Debug)]
struct PoolHold {
    hold: Hold,
    until: Until,
    from_profile: bool,
}

/// The `pool-exhaust` fault holding (or waiting for) every connection, as `/ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolExhaustion {
    /// Connections held right now.
    pub held: u32,
    /// Pool size.
    pub size: u32,
    /// Set by the start-up fault profile rather than `POST /crash`.
    pub from_profile: bool,
}

/// Parameters of one leaker thread.
#[derive(Debug, Clone, Copy)]
struct LeakPlan {
    mib_per_sec: u32,
    cap_mib: u32,
    deadline: Option<Instant>,
}

/// The fault switchboard shared by all handlers.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
    /// The pool `GET /` borrows from; here because the `pool-exhaust` fault takes from it.
    pool: Pool,
    /// Requests seen by `/`, to spread errors evenly (no RNG: exactly P of every 100).
    served: AtomicU64,
    /// Bytes held by all leaker threads, including a replaced one that is still freeing.
    leaked_bytes: Arc<AtomicU64>,
}

/// Active faults, as reported by `GET /crash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Snapshot {
    /// `/health` fails.
    pub unhealthy: bool,
    /// `/ready` fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unready: Option<FaultStatus>,
    /// Error rate on `/` in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<FaultStatus>,
    /// Added latency on `/` in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<FaultStatus>,
    /// CPU burner threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<FaultStatus>,
    /// Memory leaked so far by the active leak, in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leak: Option<FaultStatus>,
    /// Pool connections held so far by the `pool-exhaust` fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_exhaust: Option<FaultStatus>,
    /// Bytes currently held by leaker threads, for `selfheal_app_leaked_bytes`.
    #[serde(skip)]
    pub leaked_bytes: u64,
}

/// One active fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FaultStatus {
    /// Percent, ms or threads, depending on the fault; 0 when it has none.
    pub value: u64,
    /// Seconds left; absent = until reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_secs: Option<u64>,
    /// Set by the start-up fault profile rather than `POST /crash`.
    pub from_profile: bool,
}

impl Snapshot {
    /// Names of the active faults, for logs and metrics.
    pub fn active_kinds(&self) -> Vec<FaultKind> {
        let mut kinds = Vec::new();
        if self.unhealthy {
            kinds.push(FaultKind::Unhealthy);
        }
        if self.unready.is_some() {
            kinds.push(FaultKind::Unready);
        }
        if self.cpu.is_some() {
            kinds.push(FaultKind::Cpu);
        }
        if self.errors.is_some() {
            kinds.push(FaultKind::Errors);
        }
        if self.latency.is_some() {
            kinds.push(FaultKind::Latency);
        }
        if self.leak.is_some() {
            kinds.push(FaultKind::Leak);
        }
        if self.pool_exhaust.is_some() {
            kinds.push(FaultKind::PoolExhaust);
        }
        kinds
    }
}

impl Faults {
    /// Faults as set by the start-up profile of `cfg`.
    pub fn from_profile(cfg: &Config) -> Self {
        let faults = Faults {
            pool: Pool::new(cfg.pool_size, cfg.pool_wait()),
            ..Faults::default()
        };
        {
            let mut st = faults.lock();
            match cfg.fault_profile {
                FaultProfile::None => {}
                FaultProfile::Unready => st.unready = profile_fault(()),
                FaultProfile::Errors => st.errors = profile_fault(cfg.fault_error_percent),
                FaultProfile::Latency => st.latency = profile_fault(cfg.fault_latency_ms),
                FaultProfile::Unhealthy => st.unhealthy = true,
                FaultProfile::Leak => {
                    let plan = LeakPlan {
                        mib_per_sec: cfg.fault_leak_mib_per_sec,
                        cap_mib: cfg.fault_leak_cap_mib,
                        deadline: None,
                    };
                    st.leak = Some(start_leak(plan, Until::Reset, true, &faults.leaked_bytes));
                }
                FaultProfile::PoolExhaust => {
                    st.pool = Some(PoolHold {
                        hold: faults.pool.hold(faults.pool.size(), None),
                        until: Until::Reset,
                        from_profile: true,
                    });
                }
            }
        }
        faults
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the plain-data state inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies an injection (not `Exit`, which the caller handles).
    pub fn apply(&self, injection: Injection, now: Instant) {
        let mut st = self.lock();
        fn active<T>(value: T, now: Instant, seconds: Option<u64>) -> Option<Active<T>> {
            Some(Active {
                value,
                until: Until::from_seconds(now, seconds),
                from_profile: false,
            })
        }
        match injection {
            Injection::Exit => {}
            Injection::Unhealthy => st.unhealthy = true,
            Injection::Unready { seconds } => st.unready = active((), now, seconds),
            Injection::Errors { percent, seconds } => st.errors = active(percent, now, seconds),
            Injection::Latency { ms, seconds } => st.latency = active(ms, now, seconds),
            Injection::Cpu { seconds, threads } => {
                let until = Until::from_seconds(now, Some(seconds));
                let stop = Arc::new(AtomicBool::new(false));
                spawn_burners(threads, now + Duration::from_secs(seconds), &stop);
                // Replacing the old burn drops it, which stops its threads.
                st.cpu = Some(CpuBurn {
                    threads,
                    until,
                    stop,
                });
            }
            Injection::Leak {
                mib_per_sec,
                cap_mib,
                seconds,
            } => {
                let until = Until::from_seconds(now, seconds);
                let plan = LeakPlan {
                    mib_per_sec,
                    cap_mib,
                    deadline: seconds.map(|s| now + Duration::from_secs(s)),
                };
                // Replacing the old leak drops it, which makes its thread free its memory.
                st.leak = Some(start_leak(plan, until, false, &self.leaked_bytes));
            }
            Injection::PoolExhaust { held, seconds } => {
                // The old hold goes first, or the new one would queue for its connections.
                st.pool = None;
                st.pool = Some(PoolHold {
                    hold: self
                        .pool
                        .hold(held, seconds.map(|s| now + Duration::from_secs(s))),
                    until: Until::from_seconds(now, seconds),
                    from_profile: false,
                });
            }
            Injection::Reset => *st = State::default(),
        }
    }

    /// The pool `GET /` borrows from.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// `Some` while the `pool-exhaust` fault holds, or waits for, every connection of the pool;
    /// a partial hold leaves the pod able to serve, so it does not count.
    pub fn pool_exhausted(&self, now: Instant) -> Option<PoolExhaustion> {
        let mut st = self.lock();
        expire_pool_hold(&mut st, now);
        let p = st.pool.as_ref()?;
        (p.hold.target() >= self.pool.size()).then(|| PoolExhaustion {
            held: p.hold.held(),
            size: self.pool.size(),
            from_profile: p.from_profile,
        })
    }

    /// Bytes currently held by leaker threads (0 once a reset leak has been freed).
    pub fn leaked_bytes(&self) -> u64 {
        self.leaked_bytes.load(Ordering::Relaxed)
    }

    /// Whether `/health` must fail.
    pub fn unhealthy(&self) -> bool {
        self.lock().unhealthy
    }

    /// Whether `/ready` must fail because of a fault; `Some(from_profile)` when it must.
    pub fn unready(&self, now: Instant) -> Option<bool> {
        self.lock()
            .unready
            .filter(|a| a.until.active(now))
            .map(|a| a.from_profile)
    }

    /// Decides the fate of one request to `/`: added latency and whether it fails.
    pub fn on_request(&self, now: Instant) -> RequestFault {
        let (percent, latency) = {
            let st = self.lock();
            (
                st.errors.filter(|a| a.until.active(now)).map(|a| a.value),
                st.latency.filter(|a| a.until.active(now)).map(|a| a.value),
            )
        };
        let fail = match percent {
            Some(p) => {
                let n = self.served.fetch_add(1, Ordering::Relaxed);
                spread_hit(n, p)
            }
            None => false,
        };
        RequestFault {
            delay: latency.map(Duration::from_millis),
            fail,
        }
    }

    /// Active faults at `now` (expired ones are omitted).
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let mut st = self.lock();
        expire_pool_hold(&mut st, now);
        let status = |value: u64, until: Until, from_profile: bool| FaultStatus {
            value,
            remaining_secs: until.remaining_secs(now),
            from_profile,
        };
        Snapshot {
            unhealthy: st.unhealthy,
            unready: st
                .unready
                .filter(|a| a.until.active(now))
                .map(|a| status(0, a.until, a.from_profile)),
            errors: st
                .errors
                .filter(|a| a.until.active(now))
                .map(|a| status(u64::from(a.value), a.until, a.from_profile)),
            latency: st
                .latency
                .filter(|a| a.until.active(now))
                .map(|a| status(a.value, a.until, a.from_profile)),
            cpu: st
                .cpu
                .as_ref()
                .filter(|c| c.until.active(now) && !c.stop.load(Ordering::Relaxed))
                .map(|c| status(u64::from(c.threads), c.until, false)),
            leak: st
                .leak
                .as_ref()
                .filter(|l| l.until.active(now) && !l.stop.load(Ordering::Relaxed))
                .map(|l| {
                    let mib = l.leaked.load(Ordering::Relaxed) / MIB;
                    status(mib, l.until, l.from_profile)
                }),
            pool_exhaust: st
                .pool
                .as_ref()
                .map(|p| status(u64::from(p.hold.held()), p.until, p.from_profile)),
            leaked_bytes: self.leaked_bytes(),
        }
    }
}

/// Drops an expired pool hold. Its timer task has usually given the connections back already;
/// this covers a hold made without a runtime, and keeps expired holds out of the reports.
fn expire_pool_hold(st: &mut State, now: Instant) {
    if st.pool.as_ref().is_some_and(|p| !p.until.active(now)) {
        st.pool = None;
    }
}

fn profile_fault<T>(value: T) -> Option<Active<T>> {
    Some(Active {
        value,
        until: Until::Reset,
        from_profile: true,
    })
}

/// What the `/` handler must do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestFault {
    /// Sleep this long first.
    pub delay: Option<Duration>,
    /// Answer 500.
    pub fail: bool,
}

/// True for exactly `percent` of every 100 consecutive `n`, evenly spread.
fn spread_hit(n: u64, percent: u8) -> bool {
    let p = u64::from(percent.min(100));
    ((n % 100) + 1) * p / 100 > (n % 100) * p / 100
}

fn spawn_burners(threads: u32, deadline: Instant, stop: &Arc<AtomicBool>) {
    for i in 0..threads {
        let stop = Arc::clone(stop);
        let spawned = std::thread::Builder::new()
            .name(format!("cpu-burn-{i}"))
            .spawn(move || {
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    for _ in 0..10_000 {
                        // xorshift: cheap work the optimiser cannot remove
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                    }
                    std::hint::black_box(x);
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "cannot spawn cpu burner thread");
        }
    }
}

/// Spawns a leaker thread for `plan`; on spawn failure the fault is reported but leaks nothing.
fn start_leak(plan: LeakPlan, until: Until, from_profile: bool, total: &Arc<AtomicU64>) -> Leak {
    let stop = Arc::new(AtomicBool::new(false));
    let leaked = Arc::new(AtomicU64::new(0));
    let spawned = {
        let (stop, leaked, total) = (Arc::clone(&stop), Arc::clone(&leaked), Arc::clone(total));
        std::thread::Builder::new()
            .name("mem-leak".to_owned())
            .spawn(move || run_leak(plan, &stop, &leaked, &total))
    };
    let thread = match spawned {
        Ok(handle) => Some(handle.thread().clone()),
        Err(err) => {
            tracing::warn!(error = %err, "cannot spawn memory leaker thread");
            None
        }
    };
    Leak {
        until,
        from_profile,
        stop,
        leaked,
        thread,
    }
}

/// Body of the leaker thread: grows `heap` every tick, holds it at the cap, frees it on stop
/// or at the deadline.
fn run_leak(plan: LeakPlan, stop: &AtomicBool, leaked: &AtomicU64, total: &AtomicU64) {
    let cap_bytes = u64::from(plan.cap_mib) * MIB;
    let Ok(cap) = usize::try_from(cap_bytes) else {
        tracing::warn!(cap_mib = plan.cap_mib, "leak cap does not fit in memory");
        return;
    };
    // One reservation up front, filled gradually: pages become resident only when written, and
    // one large allocation is its own mapping (glibc maps anything above 32 MiB itself, smaller
    // ones usually too), so dropping it hands the memory back to the kernel instead of leaving
    // it in the allocator's free lists as many small chunks would.
    let mut heap: Vec<u8> = Vec::new();
    if let Err(err) = heap.try_reserve_exact(cap) {
        tracing::warn!(error = %err, cap_mib = plan.cap_mib, "cannot reserve memory to leak");
        return;
    }
    tracing::info!(
        mib_per_sec = plan.mib_per_sec,
        cap_mib = plan.cap_mib,
        "memory leak started"
    );
    let rate = u128::from(plan.mib_per_sec) * u128::from(MIB);
    let start = Instant::now();
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) || plan.deadline.is_some_and(|d| now >= d) {
            break;
        }
        // The target follows elapsed time, so a late tick catches up instead of slowing the rate.
        let due = rate * now.duration_since(start).as_millis() / 1000;
        let target = usize::try_from(due).map_or(cap, |d| d.min(cap));
        if target > heap.len() {
            let grown = target - heap.len();
            heap.resize(target, LEAK_FILL);
            leaked.store(heap.len() as u64, Ordering::Relaxed);
            total.fetch_add(grown as u64, Ordering::Relaxed);
            if heap.len() == cap {
                tracing::info!(
                    cap_mib = plan.cap_mib,
                    "memory leak reached its cap, holding"
                );
            }
        }
        let wait = plan.deadline.map_or(LEAK_TICK, |d| {
            d.saturating_duration_since(now).min(LEAK_TICK)
        });
        // Parked rather than slept so a reset (Drop of `Leak`) wakes it at once.
        std::thread::park_timeout(wait);
    }
    let held = heap.len() as u64;
    drop(heap);
    leaked.store(0, Ordering::Relaxed);
    total.fetch_sub(held, Ordering::Relaxed);
    tracing::info!(freed_mib = held / MIB, "leaked memory freed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_hit_fails_exactly_percent_of_each_hundred() {
        for p in [0u8, 1, 10, 33, 50, 99, 100] {
            let hits = (0..1000).filter(|&n| spread_hit(n, p)).count();
            assert_eq!(hits, usize::from(p) * 10, "percent {p}");
        }
    }

    #[test]
    fn timed_unready_expires_at_deadline() {
        let faults = Faults::default();
        let t0 = Instant::now();
        faults.apply(Injection::Unready { seconds: Some(5) }, t0);
        assert_eq!(faults.unready(t0 + Duration::from_secs(4)), Some(false));
        assert_eq!(faults.unready(t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn unready_without_seconds_lasts_until_reset() {
        let faults = Faults::default();
        let t0 = Instant::now();
        faults.apply(Injection::Unready { seconds: None }, t0);
        assert!(
            faults
                .unready(t0 + Duration::from_secs(MAX_SECONDS))
                .is_some()
        );
        faults.apply(Injection::Reset, t0);
        assert!(faults.unready(t0).is_none());
    }

    #[test]
    fn reset_clears_every_fault_and_stops_cpu_burners() {
        let faults = Faults::default();
        let t0 = Instant::now();
        faults.apply(Injection::Unhealthy, t0);
        faults.apply(
            Injection::Errors {
                percent: 100,
                seconds: None,
            },
            t0,
        );
        faults.apply(
            Injection::Latency {
                ms: 10,
                seconds: None,
            },
            t0,
        );
        faults.apply(
            Injection::Cpu {
                seconds: 60,
                threads: 1,
            },
            t0,
        );
        faults.apply(
            Injection::PoolExhaust {
                held: 10,
                seconds: None,
            },
            t0,
        );
        let stop = Arc::clone(&faults.lock().cpu.as_ref().unwrap().stop);
        assert_eq!(faults.snapshot(t0).active_kinds().len(), 5);
        faults.apply(Injection::Reset, t0);
        assert_eq!(faults.snapshot(t0), Snapshot::default());
        assert!(stop.load(Ordering::Relaxed), "burner threads told to stop");
        assert_eq!(
            faults.pool().stats().in_use,
            0,
            "pool connections given back"
        );
    }

    #[test]
    fn errors_fault_fails_requests_and_latency_adds_delay() {
        let faults = Faults::default();
        let t0 = Instant::now();
        faults.apply(
            Injection::Errors {
                percent: 100,
                seconds: Some(1),
            },
            t0,
        );
        faults.apply(
            Injection::Latency {
                ms: 250,
                seconds: None,
            },
            t0,
        );
        let f = faults.on_request(t0);
        assert!(f.fail);
        assert_eq!(f.delay, Some(Duration::from_millis(250)));
        let later = faults.on_request(t0 + Duration::from_secs(2));
        assert!(!later.fail, "errors expired after 1 s");
    }

    #[test]
    fn profile_faults_are_marked_as_such() {
        let mut cfg = Config::for_tests();
        cfg.fault_profile = FaultProfile::Errors;
        cfg.fault_error_percent = 20;
        let snap = Faults::from_profile(&cfg).snapshot(Instant::now());
        let errors = snap.errors.unwrap();
        assert_eq!(errors.value, 20);
        assert!(errors.from_profile);
        assert_eq!(errors.remaining_secs, None);
    }

    /// Polls `cond` every 10 ms for at most `timeout`; whether it became true.
    fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    }

    fn leak(mib_per_sec: u32, cap_mib: u32, seconds: Option<u64>) -> Injection {
        Injection::Leak {
            mib_per_sec,
            cap_mib,
            seconds,
        }
    }

    #[test]
    fn leak_grows_at_its_rate_and_holds_at_the_cap() {
        let faults = Faults::default();
        let t0 = Instant::now();
        faults.apply(leak(8, 2, None), t0);
        let cap = 2 * MIB;
        let mut peak = 0;
        let reached = eventually(Duration::from_secs(5), || {
            peak = peak.max(faults.leaked_bytes());
            peak >= cap
        });
        assert!(reached, "leaked only {peak} bytes, want {cap}");
        // 2 MiB at 8 MiB/s takes 250 ms; all at once would mean the rate is ignored.
        assert!(
            t0.elapsed() >= Duration::from_millis(200),
            "cap reached after {:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(faults.leaked_bytes(), cap, "held at the cap, not beyond");
        let status = faults.snapshot(Instant::now()).leak.unwrap();
        assert_eq!(status.value, 2, "MiB leaked so far");
        assert_eq!(status.remaining_secs, None);
        assert!(!status.from_profile);
        assert_eq!(faults.snapshot(Instant::now()).leaked_bytes, cap);
    }

    #[test]
    fn reset_frees_leaked_memory() {
        let faults = Faults::default();
        faults.apply(leak(8, 2, None), Instant::now());
        assert!(eventually(Duration::from_secs(5), || faults.leaked_bytes() > 0));
        faults.apply(Injection::Reset, Instant::now());
        assert!(faults.snapshot(Instant::now()).leak.is_none());
        assert!(
            eventually(Duration::from_secs(2), || faults.leaked_bytes() == 0),
            "still {} bytes leaked after reset",
            faults.leaked_bytes()
        );
    }

    #[test]
    fn new_leak_replaces_and_frees_the_old_one() {
        let faults = Faults::default();
        faults.apply(leak(64, 8, None), Instant::now());
        assert!(eventually(Duration::from_secs(5), || {
            faults.leaked_bytes() >= 4 * MIB
        }));
        faults.apply(leak(8, 1, None), Instant::now());
        // Only the new leak's 1 MiB may remain once the old thread has freed its 4+ MiB.
        assert!(
            eventually(Duration::from_secs(5), || faults.leaked_bytes() == MIB),
            "{} bytes leaked, want exactly the new cap",
            faults.leaked_bytes()
        );
        assert_eq!(faults.snapshot(Instant::now()).leak.unwrap().value, 1);
    }

    #[test]
    fn timed_leak_frees_its_memory_when_seconds_elapse() {
        let faults = Faults::default();
        let t0 = Instant::now();
        faults.apply(leak(8, 2, Some(1)), t0);
        assert_eq!(
            faults.snapshot(t0).leak.unwrap().remaining_secs,
            Some(1),
            "remaining_secs reported"
        );
        assert!(eventually(Duration::from_secs(5), || faults.leaked_bytes() > 0));
        assert!(
            eventually(Duration::from_secs(5), || faults.leaked_bytes() == 0),
            "not freed at the deadline"
        );
        assert!(t0.elapsed() >= Duration::from_secs(1), "freed too early");
        assert!(faults.snapshot(Instant::now()).leak.is_none());
    }

    #[test]
    fn leak_profile_starts_leaking_at_start_up() {
        let mut cfg = Config::for_tests();
        cfg.fault_profile = FaultProfile::Leak;
        cfg.fault_leak_mib_per_sec = 8;
        cfg.fault_leak_cap_mib = 1;
        let faults = Faults::from_profile(&cfg);
        assert!(eventually(Duration::from_secs(5), || {
            faults.leaked_bytes() == MIB
        }));
        let status = faults.snapshot(Instant::now()).leak.unwrap();
        assert!(status.from_profile);
        assert_eq!(status.remaining_secs, None);
        assert_eq!(
            faults.snapshot(Instant::now()).active_kinds(),
            vec![FaultKind::Leak]
        );
    }

    /// Resident set size of this process, from `/proc/self/status`.
    #[cfg(target_os = "linux")]
    fn rss_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        kib * 1024
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn leaked_memory_is_resident_and_returned_to_the_kernel_on_reset() {
        let faults = Faults::default();
        let before = rss_bytes();
        faults.apply(leak(64, 32, None), Instant::now());
        assert!(eventually(Duration::from_secs(5), || {
            faults.leaked_bytes() == 32 * MIB
        }));
        let during = rss_bytes();
        // Slack for other tests of this binary allocating or freeing at the same time.
        assert!(
            during >= before + 24 * MIB,
            "RSS grew by {} MiB only",
            during.saturating_sub(before) / MIB
        );
        faults.apply(Injection::Reset, Instant::now());
        assert!(eventually(Duration::from_secs(2), || faults.leaked_bytes() == 0));
        let after = rss_bytes();
        assert!(
            after + 24 * MIB <= during,
            "RSS fell by {} MiB only after reset",
            during.saturating_sub(after) / MIB
        );
    }

    fn pool_exhaust(held: u32, seconds: Option<u64>) -> Injection {
        Injection::PoolExhaust { held, seconds }
    }

    fn pool_faults(size: u32) -> Faults {
        let mut cfg = Config::for_tests();
        cfg.pool_size = size;
        Faults::from_profile(&cfg)
    }

    #[test]
    fn pool_exhaust_holds_every_connection_until_reset() {
        let faults = pool_faults(10);
        let t0 = Instant::now();
        assert_eq!(faults.pool_exhausted(t0), None);
        faults.apply(pool_exhaust(10, None), t0);
        assert_eq!(faults.pool().stats().in_use, 10);
        assert_eq!(faults.pool().available(), 0);
        let status = faults.snapshot(t0).pool_exhaust.unwrap();
        assert_eq!(status.value, 10, "connections held");
        assert_eq!(status.remaining_secs, None);
        assert!(!status.from_profile);
        assert_eq!(
            faults.pool_exhausted(t0 + Duration::from_secs(MAX_SECONDS)),
            Some(PoolExhaustion {
                held: 10,
                size: 10,
                from_profile: false
            })
        );
        assert_eq!(
            faults.snapshot(t0).active_kinds(),
            vec![FaultKind::PoolExhaust]
        );
        faults.apply(Injection::Reset, t0);
        assert_eq!(faults.pool().stats().in_use, 0);
        assert_eq!(faults.pool_exhausted(t0), None);
        assert!(faults.snapshot(t0).pool_exhaust.is_none());
    }

    #[test]
    fn partial_hold_takes_that_many_connections_and_does_not_exhaust_the_pool() {
        let faults = pool_faults(10);
        let t0 = Instant::now();
        faults.apply(pool_exhaust(3, None), t0);
        assert_eq!(faults.pool().stats().in_use, 3);
        assert_eq!(faults.snapshot(t0).pool_exhaust.unwrap().value, 3);
        assert_eq!(faults.pool_exhausted(t0), None, "7 connections still free");
    }

    #[test]
    fn new_pool_exhaust_replaces_the_old_hold() {
        let faults = pool_faults(10);
        let t0 = Instant::now();
        faults.apply(pool_exhaust(10, None), t0);
        faults.apply(pool_exhaust(4, Some(60)), t0);
        assert_eq!(faults.pool().stats().in_use, 4, "old hold given back first");
        let status = faults.snapshot(t0).pool_exhaust.unwrap();
        assert_eq!((status.value, status.remaining_secs), (4, Some(60)));
    }

    #[test]
    fn timed_pool_exhaust_ends_at_its_deadline() {
        let faults = pool_faults(5);
        let t0 = Instant::now();
        faults.apply(pool_exhaust(5, Some(5)), t0);
        assert!(faults.pool_exhausted(t0 + Duration::from_secs(4)).is_some());
        assert!(faults.pool_exhausted(t0 + Duration::from_secs(5)).is_none());
        assert!(
            faults
                .snapshot(t0 + Duration::from_secs(5))
                .pool_exhaust
                .is_none()
        );
        // No runtime in this test, so no timer task: the expired hold is dropped when looked at.
        assert_eq!(faults.pool().stats().in_use, 0, "connections given back");
    }

    #[tokio::test(start_paused = true)]
    async fn timed_pool_exhaust_gives_connections_back_by_itself() {
        let faults = pool_faults(5);
        faults.apply(pool_exhaust(5, Some(2)), Instant::now());
        assert_eq!(faults.pool().stats().in_use, 5);
        // Paused clock: the timer task runs at the deadline without a real 2 s wait.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(faults.pool().stats().in_use, 0, "released without a lookup");
    }

    #[tokio::test]
    async fn pool_exhaust_waits_for_busy_connections_and_counts_them_once_held() {
        let faults = pool_faults(3);
        let busy = faults.pool().acquire().await.unwrap();
        let t0 = Instant::now();
        faults.apply(pool_exhaust(3, None), t0);
        assert_eq!(faults.snapshot(t0).pool_exhaust.unwrap().value, 2);
        assert_eq!(
            faults.pool_exhausted(t0).map(|p| (p.held, p.size)),
            Some((2, 3)),
            "exhausted for new requests while it waits for the busy one"
        );
        drop(busy);
        for _ in 0..100 {
            if faults.snapshot(t0).pool_exhaust.unwrap().value == 3 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(faults.snapshot(t0).pool_exhaust.unwrap().value, 3);
    }

    #[test]
    fn pool_exhaust_profile_holds_every_connection_from_start() {
        let mut cfg = Config::for_tests();
        cfg.fault_profile = FaultProfile::PoolExhaust;
        cfg.pool_size = 6;
        let faults = Faults::from_profile(&cfg);
        let t0 = Instant::now();
        assert_eq!(faults.pool().stats().in_use, 6);
        let status = faults.snapshot(t0).pool_exhaust.unwrap();
        assert_eq!((status.value, status.from_profile), (6, true));
        assert_eq!(
            faults.pool_exhausted(t0).map(|p| p.from_profile),
            Some(true)
        );
        faults.apply(Injection::Reset, t0);
        assert_eq!(
            faults.pool().stats().in_use,
            0,
            "reset clears the profile too"
        );
    }

    #[test]
    fn fault_kind_names_round_trip() {
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(FaultKind::parse("boom"), None);
    }
}
