//! The runner's "has it happened yet?" decisions: pure functions over what a watch currently
//! holds, re-evaluated on every change. Each returns the API timestamp to record, or `None` to
//! keep waiting; `now` is the fallback when the API carries no time.

use std::borrow::Borrow;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::extract::{containers_started, hpa_replicas, pod_ready, restart_count, terminating};

/// Every replica updated, ready and the rollout observed: the replica count.
pub fn rolled_out(d: &Deployment) -> Option<i32> {
    let want = d.spec.replicas.unwrap_or(1);
    let s = d.status.as_ref()?;
    (s.observed_generation == d.metadata.generation
        && s.updated_replicas.unwrap_or(0) == want
        && s.ready_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want)
        .then_some(want)
}

/// Layer 1: the pod restarted (more restarts than `before`) and is Ready again: when, and the
/// new restart count.
pub fn restarted_and_ready(
    pod: Option<&Pod>,
    before: i32,
    now: Timestamp,
) -> Option<(Timestamp, i32)> {
    let pod = pod?;
    let (ready, at) = pod_ready(pod);
    let restarts = restart_count(pod);
    (ready && restarts > before).then(|| (at.unwrap_or(now), restarts))
}

/// Layer 3, between two crashes: what happened to the crashing pod (`uid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashStep {
    /// Restarted (new restart count) and listening again: crash it once more.
    Restarted(i32),
    /// Gone or terminating: it was recycled.
    Gone,
}

/// Layer 3: has the pod restarted past `last` (and started), or left? `None`: still waiting.
pub fn crash_step(pod: Option<&Pod>, uid: &str, last: i32) -> Option<CrashStep> {
    match pod {
        Some(p) if p.uid().as_deref() == Some(uid) && !terminating(p) => {
            let n = restart_count(p);
            (n > last && containers_started(p)).then_some(CrashStep::Restarted(n))
        }
        _ => Some(CrashStep::Gone),
    }
}

fn ready_pods<P: Borrow<Pod>>(pods: &[P]) -> Vec<&Pod> {
    pods.iter()
        .map(Borrow::borrow)
        .filter(|p| !terminating(p) && pod_ready(p).0)
        .collect()
}

fn newest_ready(pods: &[&Pod]) -> Option<Timestamp> {
    pods.iter().filter_map(|p| pod_ready(p).1).max()
}

/// Layer 3: `want` pods Ready again, one of them created at or after `since` and not the evicted
/// one: when it became Ready, and its name.
pub fn replacement_ready<P: Borrow<Pod>>(
    pods: &[P],
    evicted: &str,
    since: Timestamp,
    want: i32,
) -> Option<(Timestamp, String)> {
    let ready = ready_pods(pods);
    if (ready.len() as i32) < want {
        return None;
    }
    ready
        .iter()
        .filter(|p| {
            p.metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|c| c.0 >= since)
                && p.name_any() != evicted
        })
        .filter_map(|p| pod_ready(p).1.map(|t| (t, p.name_any())))
        .max_by_key(|(t, _)| *t)
}

/// Layer 5: the HPA wants more than `above` replicas: how many, and its lastScaleTime.
pub fn scaled_out(
    hpa: &HorizontalPodAutoscaler,
    above: i32,
    now: Timestamp,
) -> Option<(i32, Timestamp)> {
    let (_, desired, at) = hpa_replicas(hpa);
    (desired > above).then(|| (desired, at.unwrap_or(now)))
}

/// Layer 5: at least `target` pods Ready: when the last of them became Ready, and how many.
pub fn ready_at_least<P: Borrow<Pod>>(
    pods: &[P],
    target: i32,
    now: Timestamp,
) -> Option<(Timestamp, usize)> {
    let ready = ready_pods(pods);
    (ready.len() as i32 >= target).then(|| (newest_ready(&ready).unwrap_or(now), ready.len()))
}

/// Layer 6: none of `originals` is left (not even terminating) and `want` pods are Ready.
pub fn drained_and_replaced<P: Borrow<Pod>>(
    pods: &[P],
    originals: &[String],
    want: usize,
    now: Timestamp,
) -> Option<(Timestamp, usize)> {
    let left = pods
        .iter()
        .map(Borrow::borrow)
        .any(|p| originals.contains(&p.name_any()));
    let ready = ready_pods(pods);
    (!left && ready.len() >= want).then(|| (newest_ready(&ready).unwrap_or(now), ready.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp literal")
    }
    const NOW: &str = "2026-01-01T11:00:00Z";

    /// A pod: name, uid, created, ready (with transition time), restarts, started, terminating.
    fn pod(name: &str, created: &str, ready_at: Option<&str>, restarts: i32) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "creationTimestamp": created},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready_at.is_some() {"True"} else {"False"},
                    "lastTransitionTime": ready_at.unwrap_or(created)}],
                "containerStatuses": [{"name": "app", "image": "x", "imageID": "", "ready": ready_at.is_some(),
                    "started": true, "restartCount": restarts, "state": {"running": {}}}]
            }
        });
        if name.starts_with("gone") {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T10:00:30Z");
        }
        serde_json::from_value(v).expect("pod literal")
    }

    #[test]
    fn a_restart_counts_only_once_ready_again() {
        let now = ts(NOW);
        let unready = pod("a", "2026-01-01T09:00:00Z", None, 1);
        assert_eq!(restarted_and_ready(Some(&unready), 0, now), None);
        let same = pod("a", "2026-01-01T09:00:00Z", Some("2026-01-01T10:00:05Z"), 0);
        assert_eq!(restarted_and_ready(Some(&same), 0, now), None);
        let back = pod("a", "2026-01-01T09:00:00Z", Some("2026-01-01T10:00:20Z"), 1);
        assert_eq!(
            restarted_and_ready(Some(&back), 0, now),
            Some((ts("2026-01-01T10:00:20Z"), 1))
        );
        assert_eq!(restarted_and_ready(None, 0, now), None);
    }

    #[test]
    fn crash_step_tells_restart_from_recycle() {
        let p = pod("web-1", "2026-01-01T09:00:00Z", None, 2);
        assert_eq!(
            crash_step(Some(&p), "uid-web-1", 1),
            Some(CrashStep::Restarted(2))
        );
        assert_eq!(
            crash_step(Some(&p), "uid-web-1", 2),
            None,
            "no new restart yet"
        );
        assert_eq!(crash_step(None, "uid-web-1", 2), Some(CrashStep::Gone));
        let other = pod("web-1", "2026-01-01T10:00:00Z", None, 0);
        assert_eq!(
            crash_step(Some(&other), "uid-other", 0),
            Some(CrashStep::Gone),
            "same name, new uid: the old pod is gone"
        );
        let leaving = pod("gone-1", "2026-01-01T09:00:00Z", None, 3);
        assert_eq!(
            crash_step(Some(&leaving), "uid-gone-1", 2),
            Some(CrashStep::Gone)
        );
    }

    #[test]
    fn the_replacement_must_be_new_ready_and_not_the_evicted_pod() {
        let since = ts("2026-01-01T10:00:00Z");
        let old = pod(
            "old",
            "2026-01-01T09:00:00Z",
            Some("2026-01-01T09:00:05Z"),
            0,
        );
        let evicted = pod(
            "evicted",
            "2026-01-01T09:00:00Z",
            Some("2026-01-01T09:00:05Z"),
            3,
        );
        let fresh_unready = pod("fresh", "2026-01-01T10:01:00Z", None, 0);
        assert_eq!(
            replacement_ready(&[old.clone(), fresh_unready], "evicted", since, 2),
            None
        );
        assert_eq!(
            replacement_ready(&[old.clone(), evicted], "evicted", since, 2),
            None
        );
        let fresh = pod(
            "fresh",
            "2026-01-01T10:01:00Z",
            Some("2026-01-01T10:01:02Z"),
            0,
        );
        assert_eq!(
            replacement_ready(&[old.clone(), fresh.clone()], "evicted", since, 2),
            Some((ts("2026-01-01T10:01:02Z"), "fresh".to_owned()))
        );
        assert_eq!(
            replacement_ready(&[fresh], "evicted", since, 2),
            None,
            "one of two replicas"
        );
    }

    #[test]
    fn scale_out_needs_more_than_the_start_and_enough_ready_pods() {
        let now = ts(NOW);
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"minReplicas": 2, "maxReplicas": 5, "scaleTargetRef": {"kind": "Deployment", "name": "web"}},
            "status": {"currentReplicas": 2, "desiredReplicas": 4, "lastScaleTime": "2026-01-01T10:00:30Z"}
        }))
        .expect("hpa literal");
        assert_eq!(
            scaled_out(&hpa, 2, now),
            Some((4, ts("2026-01-01T10:00:30Z")))
        );
        assert_eq!(scaled_out(&hpa, 4, now), None);
        let pods: Vec<Pod> = (0..4)
            .map(|i| {
                let ready = format!("2026-01-01T10:00:4{i}Z");
                pod(
                    &format!("p{i}"),
                    "2026-01-01T10:00:31Z",
                    (i < 3).then_some(ready.as_str()),
                    0,
                )
            })
            .collect();
        assert_eq!(ready_at_least(&pods, 4, now), None);
        assert_eq!(
            ready_at_least(&pods, 3, now),
            Some((ts("2026-01-01T10:00:42Z"), 3))
        );
    }

    #[test]
    fn a_drain_is_done_when_no_original_is_left_and_enough_are_ready() {
        let now = ts(NOW);
        let originals = vec!["a".to_owned(), "gone-b".to_owned()];
        let new1 = pod("c", "2026-01-01T10:00:10Z", Some("2026-01-01T10:00:12Z"), 0);
        let new2 = pod("d", "2026-01-01T10:00:11Z", Some("2026-01-01T10:00:14Z"), 0);
        let terminating = pod(
            "gone-b",
            "2026-01-01T09:00:00Z",
            Some("2026-01-01T09:00:02Z"),
            0,
        );
        assert_eq!(
            drained_and_replaced(
                &[new1.clone(), new2.clone(), terminating],
                &originals,
                2,
                now
            ),
            None,
            "an original still terminating"
        );
        assert_eq!(
            drained_and_replaced(std::slice::from_ref(&new1), &originals, 2, now),
            None
        );
        assert_eq!(
            drained_and_replaced(&[new1, new2], &originals, 2, now),
            Some((ts("2026-01-01T10:00:14Z"), 2))
        );
    }

    #[test]
    fn a_rollout_is_done_when_every_count_matches_and_is_observed() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 3},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}
        }))
        .expect("deployment literal");
        assert_eq!(rolled_out(&d), Some(2));
        if let Some(s) = d.status.as_mut() {
            s.observed_generation = Some(2);
        }
        assert_eq!(
            rolled_out(&d),
            None,
            "the controller has not seen the new spec"
        );
        if let Some(s) = d.status.as_mut() {
            s.observed_generation = Some(3);
            s.replicas = Some(3);
        }
        assert_eq!(rolled_out(&d), None, "an old pod is still there");
    }
}
