//! What each HealingPolicy's status says — pure, so it is tested without a cluster. The status
//! writer (`run/status_writer.rs`) writes the result with server-side apply.

use std::collections::VecDeque;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::healing_policy::resource::{HealingPolicy, HealingPolicyStatus, LastAction};
use crate::policy::Policy;

/// What the controller did under one policy (kept by the leader, in memory).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyRecord {
    /// The most recent action.
    pub last_action: Option<LastAction>,
    /// Times of actions, oldest first.
    pub actions: VecDeque<Timestamp>,
    /// Give-ups since this record started.
    pub give_ups: u32,
    /// Last give-up.
    pub last_give_up: Option<Timestamp>,
    /// Last failure to act, cleared by the next success.
    pub last_error: Option<String>,
}

impl PolicyRecord {
    /// A record continuing what an earlier leader wrote (last action and give-ups survive a
    /// failover; the action times do not, so `actionsInWindow` restarts from zero).
    pub fn seeded(status: Option<&HealingPolicyStatus>) -> Self {
        Self {
            last_action: status.and_then(|s| s.last_action.clone()),
            give_ups: status.map_or(0, |s| s.give_ups),
            ..Self::default()
        }
    }

    /// Take in what the policy's status says now, written by this controller or another one
    /// (a second install, a leader before a failover): the newer last action, the larger give-up
    /// count. Monotone, so reading an older status (a cache behind this controller's own last
    /// write) changes nothing; what another writer reported is never written over.
    pub fn absorb(&mut self, status: Option<&HealingPolicyStatus>) {
        let Some(status) = status else {
            return;
        };
        if let Some(theirs) = &status.last_action
            && self
                .last_action
                .as_ref()
                .is_none_or(|ours| theirs.time.0 > ours.time.0)
        {
            self.last_action = Some(theirs.clone());
        }
        self.give_ups = self.give_ups.max(status.give_ups);
    }

    /// An action was taken (or decided, in dry-run).
    pub fn acted(&mut self, action: LastAction, now: Timestamp) {
        self.last_action = Some(action);
        self.actions.push_back(now);
        self.last_error = None;
        // Bounded: nobody needs more than the last few hundred.
        while self.actions.len() > 512 {
            self.actions.pop_front();
        }
    }

    /// The controller gave up on a workload of this policy.
    pub fn gave_up(&mut self, now: Timestamp) {
        self.give_ups = self.give_ups.saturating_add(1);
        self.last_give_up = Some(now);
    }

    /// Acting failed or is impossible.
    pub fn failed(&mut self, message: String) {
        self.last_error = Some(message);
    }

    /// Actions at or after `now - window`.
    pub fn actions_since(&self, now: Timestamp, window: SignedDuration) -> u32 {
        let from = now - window;
        u32::try_from(self.actions.iter().filter(|t| **t >= from).count()).unwrap_or(u32::MAX)
    }
}

/// A status condition; `previous` are the conditions the object has now.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    // NB: the transition time moves only when the status flips, as the API conventions say.
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// The status of `hp`: `policy` is its spec turned into a decision policy (or why that failed),
/// `matched` the pods it governs now.
pub fn compute(
    hp: &HealingPolicy,
    policy: &Result<Policy, crate::healing_policy::SpecError>,
    rec: &PolicyRecord,
    matched: u32,
    prometheus: bool,
    now: Timestamp,
) -> HealingPolicyStatus {
    let previous = hp.status.as_ref().map_or(&[][..], |s| &s.conditions[..]);
    let generation = hp.metadata.generation;
    let selector_text = super::selection::selector(hp).map(|s| s.to_string());
    let (ready, degraded, window) = match policy {
        Err(e) => (
            condition(
                previous,
                "Ready",
                false,
                "InvalidSpec",
                e.to_string(),
                generation,
                now,
            ),
            condition(
                previous,
                "Degraded",
                true,
                "InvalidSpec",
                e.to_string(),
                generation,
                now,
            ),
            SignedDuration::ZERO,
        ),
        Ok(p) => {
            let mode = if p.dry_run { " (dry-run)" } else { "" };
            let ready = if selector_text.is_none() {
                condition(
                    previous,
                    "Ready",
                    false,
                    "EmptySelector",
                    "the selector selects nothing".into(),
                    generation,
                    now,
                )
            } else {
                condition(
                    previous,
                    "Ready",
                    true,
                    "Active",
                    format!(
                        "governing {matched} pods; action {}{mode}",
                        p.action.spec_name()
                    ),
                    generation,
                    now,
                )
            };
            let unevaluated = hp.spec.unevaluated_triggers(prometheus);
            let gave_up_recently = rec.last_give_up.is_some_and(|t| t >= now - p.giveup_window);
            let degraded = if !unevaluated.is_empty() {
                condition(
                    previous,
                    "Degraded",
                    true,
                    "TriggerNotEvaluated",
                    format!(
                        "{} accepted but not evaluated by this controller version; the other triggers work",
                        unevaluated.join(", ")
                    ),
                    generation,
                    now,
                )
            } else if let Some(err) = &rec.last_error {
                condition(
                    previous,
                    "Degraded",
                    true,
                    "ActionFailed",
                    err.clone(),
                    generation,
                    now,
                )
            } else if gave_up_recently {
                condition(
                    previous,
                    "Degraded",
                    true,
                    "GaveUp",
                    format!(
                        "gave up on a workload after {} actions within the retry window; see GivingUp Events",
                        p.max_retries
                    ),
                    generation,
                    now,
                )
            } else {
                condition(
                    previous,
                    "Degraded",
                    false,
                    "AsExpected",
                    "acting as specified".into(),
                    generation,
                    now,
                )
            };
            (ready, degraded, p.giveup_window)
        }
    };
    HealingPolicyStatus {
        observed_generation: generation,
        conditions: vec![ready, degraded],
        selector: selector_text,
        matched_pods: matched,
        last_action: rec.last_action.clone(),
        actions_in_window: rec.actions_since(now, window),
        give_ups: rec.give_ups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::{NOW, at, policy};

    use crate::fixtures::healing_policy as hp;

    const WEB: &str = "selector: {matchLabels: {app: web}}\ntriggers: {crashLoopBackOff: true}\naction: {type: evict}\n";

    #[test]
    fn absorbing_a_status_keeps_the_newer_action_and_never_lowers_give_ups() {
        let action = |pod: &str, secs: i64| LastAction {
            action: "evict".into(),
            pod: pod.into(),
            workload: "Deployment/shop/web".into(),
            reason: "crash_loop_back_off".into(),
            dry_run: false,
            time: Time(at(secs)),
            summary: format!("evict {pod}"),
        };
        let mut rec = PolicyRecord::default();
        rec.acted(action("ours", 10), at(10));
        rec.gave_up(at(11));
        let theirs = HealingPolicyStatus {
            last_action: Some(action("theirs", 20)),
            give_ups: 3,
            ..HealingPolicyStatus::default()
        };
        rec.absorb(Some(&theirs));
        assert_eq!(
            rec.last_action.as_ref().map(|a| a.pod.as_str()),
            Some("theirs")
        );
        assert_eq!(rec.give_ups, 3);
        // An older status (a cache behind our own write) changes nothing.
        let older = HealingPolicyStatus {
            last_action: Some(action("old", 5)),
            give_ups: 1,
            ..HealingPolicyStatus::default()
        };
        rec.absorb(Some(&older));
        rec.absorb(None);
        assert_eq!(
            rec.last_action.as_ref().map(|a| a.pod.as_str()),
            Some("theirs")
        );
        assert_eq!(rec.give_ups, 3);
    }

    fn cond<'a>(s: &'a HealingPolicyStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition present")
    }

    #[test]
    fn status_reports_matched_pods_last_action_and_window() {
        let h = hp("web", WEB);
        let p = h.spec.to_policy(&policy());
        let mut rec = PolicyRecord::default();
        let last = LastAction {
            action: "evict".into(),
            pod: "web-abc".into(),
            workload: "Deployment/shop/web".into(),
            reason: "crash_loop_back_off".into(),
            dry_run: false,
            time: Time(at(-10)),
            summary: "evict web-abc (crash_loop_back_off)".into(),
        };
        rec.acted(last.clone(), at(-7200)); // outside the 1h window
        rec.acted(last.clone(), at(-10));
        let s = compute(&h, &p, &rec, 3, true, NOW);
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.matched_pods, 3);
        assert_eq!(s.actions_in_window, 1);
        assert_eq!(s.last_action, Some(last));
        assert_eq!(s.selector.as_deref(), Some("app=web"));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Ready").message, "governing 3 pods; action evict");
        assert_eq!(cond(&s, "Degraded").status, "False");
    }

    #[test]
    fn failures_give_ups_and_typed_only_triggers_degrade_the_policy() {
        let h = hp("web", WEB);
        let p = h.spec.to_policy(&policy());
        let mut rec = PolicyRecord::default();
        rec.gave_up(at(-60));
        let s = compute(&h, &p, &rec, 1, true, NOW);
        assert_eq!(
            (
                cond(&s, "Degraded").status.as_str(),
                cond(&s, "Degraded").reason.as_str()
            ),
            ("True", "GaveUp")
        );
        assert_eq!(s.give_ups, 1);
        rec.failed("owner is a StatefulSet".into());
        let s = compute(&h, &p, &rec, 1, true, NOW);
        assert_eq!(cond(&s, "Degraded").reason, "ActionFailed");
        let typed = hp(
            "t",
            "selector: {matchLabels: {a: b}}\ntriggers: {errorRate: {query: 'x', threshold: 0.1}}\naction: {type: none}\n",
        );
        // errorRate needs --prometheus-url: without one it is accepted but not evaluated.
        let s = compute(
            &typed,
            &typed.spec.to_policy(&policy()),
            &PolicyRecord::default(),
            0,
            false,
            NOW,
        );
        assert_eq!(cond(&s, "Degraded").reason, "TriggerNotEvaluated");
        let s = compute(
            &typed,
            &typed.spec.to_policy(&policy()),
            &PolicyRecord::default(),
            0,
            true,
            NOW,
        );
        assert_eq!(cond(&s, "Degraded").status, "False");
    }

    #[test]
    fn an_unconvertible_spec_is_not_ready() {
        let h = hp("web", WEB);
        let err = Err(crate::healing_policy::SpecError {
            field: "spec.cooldown",
            message: "bad".into(),
        });
        let s = compute(&h, &err, &PolicyRecord::default(), 0, true, NOW);
        assert_eq!(
            (
                cond(&s, "Ready").status.as_str(),
                cond(&s, "Ready").reason.as_str()
            ),
            ("False", "InvalidSpec")
        );
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let mut h = (*hp("web", WEB)).clone();
        let p = h.spec.to_policy(&policy());
        let first = compute(&h, &p, &PolicyRecord::default(), 0, true, at(-100));
        h.status = Some(first.clone());
        let again = compute(&h, &p, &PolicyRecord::default(), 5, true, NOW);
        assert_eq!(cond(&again, "Ready").last_transition_time, Time(at(-100)));
        let mut rec = PolicyRecord::default();
        rec.failed("boom".into());
        let flipped = compute(&h, &p, &rec, 5, true, NOW);
        assert_eq!(cond(&flipped, "Degraded").last_transition_time, Time(NOW));
    }

    #[test]
    fn a_seeded_record_keeps_the_last_action_and_give_ups() {
        let status = HealingPolicyStatus {
            give_ups: 2,
            ..HealingPolicyStatus::default()
        };
        let rec = PolicyRecord::seeded(Some(&status));
        assert_eq!(rec.give_ups, 2);
        assert!(rec.actions.is_empty());
    }
}
