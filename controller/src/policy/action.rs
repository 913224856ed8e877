//! What a policy does to an unhealthy pod, and the names it goes by: metric label, spec name,
//! Event reason and action.

/// What to do to an unhealthy pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Evict the pod (Eviction API) so its owner replaces it.
    Evict,
    /// Restart the rollout of the pod's Deployment.
    RolloutRestart,
    /// Set the pod's Deployment to this many replicas.
    ScaleTo(i32),
    /// Report only (HealingPolicy action `none`).
    Observe,
}

impl Action {
    /// Bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            Action::Evict => "evict",
            Action::RolloutRestart => "rollout_restart",
            Action::ScaleTo(_) => "scale_to",
            Action::Observe => "none",
        }
    }

    /// The name used in the HealingPolicy spec and status.
    pub fn spec_name(self) -> &'static str {
        match self {
            Action::Evict => "evict",
            Action::RolloutRestart => "rolloutRestart",
            Action::ScaleTo(_) => "scaleTo",
            Action::Observe => "none",
        }
    }

    /// Event `reason` and `action` of the action taken.
    pub fn event_names(self) -> (&'static str, &'static str) {
        match self {
            Action::Evict => ("Recycled", "Evict"),
            Action::RolloutRestart => ("RolloutRestarted", "RolloutRestart"),
            Action::ScaleTo(_) => ("Scaled", "ScaleTo"),
            Action::Observe => ("Observed", "Observe"),
        }
    }

    /// What the action does, in words: `evict pod web-abc`, `scaleTo 0 Deployment/shop/web`.
    pub fn target(self, pod: &str, owner: &str) -> String {
        match self {
            Action::Evict | Action::Observe => format!("{} {pod}", self.spec_name()),
            Action::RolloutRestart => format!("rolloutRestart {owner}"),
            Action::ScaleTo(n) => format!("scaleTo {n} {owner}"),
        }
    }

    /// Whether the action can be applied to a workload of `kind` (`None` = bare pod).
    /// Evicting needs any controller; restarting and scaling are implemented for Deployments.
    pub fn supports(self, kind: Option<&str>) -> bool {
        match self {
            Action::Evict | Action::Observe => kind.is_some(),
            Action::RolloutRestart | Action::ScaleTo(_) => kind == Some("Deployment"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_labels_are_distinct() {
        let labels = [
            Action::Evict,
            Action::RolloutRestart,
            Action::ScaleTo(1),
            Action::Observe,
        ]
        .map(Action::label);
        let mut sorted = labels.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), labels.len());
    }

    #[test]
    fn event_names_and_targets_say_which_action() {
        assert_eq!(Action::Evict.event_names(), ("Recycled", "Evict"));
        assert_eq!(Action::ScaleTo(0).event_names(), ("Scaled", "ScaleTo"));
        assert_eq!(Action::Evict.target("web-abc", "none"), "evict web-abc");
        assert_eq!(
            Action::ScaleTo(0).target("web-abc", "Deployment/shop/web"),
            "scaleTo 0 Deployment/shop/web"
        );
        assert_eq!(
            Action::RolloutRestart.target("web-abc", "Deployment/shop/web"),
            "rolloutRestart Deployment/shop/web"
        );
    }
}
