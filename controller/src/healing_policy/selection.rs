//! Which HealingPolicy governs a pod: the policies selecting it (same namespace, labels match),
//! of which the first by name decides. Pure.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::resource::HealingPolicy;

/// The selector of a policy, or `None` when it is empty or malformed: such a policy selects
/// nothing (the CEL rule refuses an empty one; this is the second line of defence).
pub fn selector(hp: &HealingPolicy) -> Option<Selector> {
    let sel = Selector::try_from(hp.spec.selector.clone()).ok()?;
    (!sel.selects_all()).then_some(sel)
}

/// Whether `hp` selects `pod` (same namespace, labels match).
pub fn selects(hp: &HealingPolicy, pod: &Pod) -> bool {
    hp.namespace() == pod.namespace()
        && selector(hp)
            .is_some_and(|s| s.matches(pod.metadata.labels.as_ref().unwrap_or(&Default::default())))
}

/// The policy that decides for `pod`: of those selecting it, the first by name (a stable,
/// documented tie-break; the others report the pod as not governed by them).
pub fn governing<'a>(
    policies: impl IntoIterator<Item = &'a Arc<HealingPolicy>>,
    pod: &Pod,
) -> Option<&'a Arc<HealingPolicy>> {
    policies
        .into_iter()
        .filter(|hp| selects(hp, pod))
        .min_by(|a, b| a.name_any().cmp(&b.name_any()))
}

/// `namespace/name` of a policy: key of its [`crate::healing_policy::status::PolicyRecord`].
pub fn key(hp: &HealingPolicy) -> String {
    format!("{}/{}", hp.namespace().unwrap_or_default(), hp.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pod;

    use crate::fixtures::healing_policy as hp;

    const WEB: &str = "selector: {matchLabels: {app: web}}\ntriggers: {crashLoopBackOff: true}\naction: {type: evict}\n";

    #[test]
    fn the_first_matching_policy_by_name_governs_a_pod() {
        let p = pod().labelled("app", "web").build();
        let b = hp("b-web", WEB);
        let a = hp("a-web", WEB);
        let other = hp(
            "0-db",
            "selector: {matchLabels: {app: db}}\ntriggers: {oomKilled: true}\naction: {type: evict}\n",
        );
        let all = [b.clone(), other, a.clone()];
        assert_eq!(
            governing(&all, &p).map(|h| h.name_any()),
            Some("a-web".into())
        );
        let unlabelled = pod().build();
        assert!(governing(&all, &unlabelled).is_none());
    }

    #[test]
    fn a_policy_never_selects_pods_of_another_namespace() {
        let p = pod().in_namespace("other").labelled("app", "web").build();
        assert!(!selects(&hp("web", WEB), &p));
    }

    #[test]
    fn match_expressions_select_too() {
        let h = hp(
            "web",
            "selector: {matchExpressions: [{key: tier, operator: In, values: [front, api]}]}\ntriggers: {oomKilled: true}\naction: {type: evict}\n",
        );
        assert!(selects(&h, &pod().labelled("tier", "api").build()));
        assert!(!selects(&h, &pod().labelled("tier", "db").build()));
        assert_eq!(
            selector(&h).map(|s| s.to_string()),
            Some("tier in (api,front)".into())
        );
    }

    #[test]
    fn an_empty_selector_selects_nothing() {
        let h = hp(
            "all",
            "selector: {}\ntriggers: {oomKilled: true}\naction: {type: evict}\n",
        );
        assert!(!selects(&h, &pod().labelled("app", "web").build()));
    }
}
