//! The memoryTrend healer: a pod whose working set rises steadily towards its limit.

/// The trend: samples, the rule, the verdict (pure).
pub mod rule;
/// Reads the working set of pods under a memory-trend policy from the metrics API.
pub mod sampler;
