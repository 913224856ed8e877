//! The zombie healer: pods Terminating long past their deadline on a node that cannot finish
//! them are force-deleted.

/// Force-deletes zombie pods (I/O around [`rule`]).
pub mod reaper;
/// Zombie pods: when one is overdue and whether it may be reaped (pure).
pub mod rule;
