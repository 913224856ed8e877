//! The pure decision: what the policy says about a pod, given what the controller remembers and
//! the time. No I/O; every rule has a table test.
//!
//! - [`crate::policy::rules`]: the [`crate::policy::Policy`] (thresholds, scope, action), from
//!   the flags or a HealingPolicy;
//! - [`crate::policy::pod`]: what is read off a pod (restarts, readiness, opt-out);
//! - [`trigger`](mod@crate::policy::trigger): whether a pod is unhealthy and why
//!   ([`crate::policy::Reason`]);
//! - [`decide`](mod@crate::policy::decide): act, skip, wait or give up
//!   ([`crate::policy::Decision`]), and how to act ([`crate::policy::Execution`]);
//! - [`crate::policy::action`]: the [`crate::policy::Action`] and the names it goes by.
//!
//! The same function serves the default policy (the controller's flags) and every
//! `HealingPolicy` ([`crate::healing_policy::resource::HealingPolicySpec::to_policy`]).

/// What a policy does to an unhealthy pod.
pub mod action;
/// Act, skip, wait or give up.
pub mod decide;
/// What the decision reads off a pod.
pub mod pod;
/// The thresholds, scope and action of one policy.
pub mod rules;
/// Whether a pod is unhealthy, and why.
pub mod trigger;

pub use action::Action;
pub use decide::{
    Decision, Execution, MIN_HEALTHY_RECHECK, SkipReason, WaitCause, decide, execution,
};
pub use pod::{
    IGNORE_ANNOTATION, has_controller, is_ready, not_ready_since, opted_out, total_restarts,
};
pub use rules::{Policy, in_scope};
pub use trigger::{
    Observed, Reason, lifetime_over_threshold, next_check, restarts_are_current, trigger,
};
