//! HealingPolicies: the custom resource that says which pods are healed how, which policy
//! governs a pod, and the status the controller reports on each.

/// Durations in specs: the schema pattern and the parser.
pub mod duration;
/// The `HealingPolicy` custom resource: types, CEL validation, CRD generation, spec → policy.
pub mod resource;
/// Which HealingPolicy governs a pod: selectors and the first-by-name rule (pure).
pub mod selection;
/// The status: what was done under each policy, and its conditions (pure).
pub mod status;
/// The triggers: the signals that make a pod unhealthy, their CEL rules and defaults.
pub mod triggers;

pub use duration::SpecError;
pub use resource::{HealingPolicy, HealingPolicySpec, HealingPolicyStatus};
