//! CircuitBreakers: scale a Deployment to zero while its error ratio is over a threshold, probe
//! it half-open, restore it. Runs beside the pod reconciler (started by `main`), sharing nothing
//! with it but the process.

/// The state machine: closed → open → half-open → closed (pure).
pub mod machine;
/// The `CircuitBreaker` custom resource: types, CEL validation, CRD generation.
pub mod resource;
/// Watches the CircuitBreakers and, every interval, asks, steps, scales and records each one.
pub mod run;

pub use resource::{CircuitBreaker, CircuitBreakerSpec, CircuitBreakerStatus};
pub use run::{Breakers, run};
