//! The healers beside the restart rules of [`crate::policy`]: each a pure rule and the source of
//! the signal it reads. The sources keep what they observe in [`crate::signals::Signals`] and
//! wake the reconciler; the reconciler decides.

/// A memory leak: the working-set trend (rule) and the metrics-API sampler (source).
pub mod memory_trend;
/// Connection-pool exhaustion: saturation confirmed by readiness or latency (pure).
pub mod pool;
/// The PromQL triggers' source: asks Prometheus the errorRate and poolExhaustion queries.
pub mod promql;
/// Zombie pods: Terminating on a node that cannot finish them (rule) and the reaper (I/O).
pub mod zombie;
