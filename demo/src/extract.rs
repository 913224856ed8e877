//! Pure readings of Kubernetes objects: the facts each layer's timing is built from (pod
//! conditions, container restarts, EndpointSlices, Events, HPA and PDB status, Helm release
//! Secrets). No I/O: the runner feeds them what its watches saw; tests feed them literals.

use std::borrow::Borrow;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

/// Annotation the EndpointSlice controller sets to the time of the pod change it reflects.
pub const SLICE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The pod's `Ready` condition: status and when it last changed.
pub fn pod_ready(pod: &Pod) -> (bool, Option<Timestamp>) {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map_or((false, None), |c| {
            (
                c.status == "True",
                c.last_transition_time.as_ref().map(|t| t.0),
            )
        })
}

/// Restarts of all containers together.
pub fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

/// The last termination of the first container that has one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Termination {
    /// When the container ended.
    pub finished_at: Option<Timestamp>,
    /// Exit code.
    pub exit_code: i32,
    /// `Error`, `OOMKilled`, `Completed`.
    pub reason: Option<String>,
}

/// The previous run of the pod's containers (`lastState.terminated`).
pub fn last_termination(pod: &Pod) -> Option<Termination> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|c| c.last_state.as_ref()?.terminated.as_ref())
        .map(|t| Termination {
            finished_at: t.finished_at.as_ref().map(|t| t.0),
            exit_code: t.exit_code,
            reason: t.reason.clone(),
        })
}

/// Whether every container is running and has passed its startup probe (can take a request
/// through the pod proxy).
pub fn containers_started(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            !cs.is_empty()
                && cs.iter().all(|c| {
                    c.started == Some(true) && c.state.as_ref().is_some_and(|s| s.running.is_some())
                })
        })
}

/// Whether any container waits in `CrashLoopBackOff`.
pub fn crash_looping(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("CrashLoopBackOff")
            })
        })
}

/// The port the app listens on: the container port named `http`, else the first, else 8080.
pub fn http_port(pod: &Pod) -> i32 {
    let ports: Vec<_> = pod
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .collect()
        })
        .unwrap_or_default();
    ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or(ports.first())
        .map_or(8080, |p| p.container_port)
}

/// Whether a pod is being deleted.
pub fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Where a pod stands in a Service's EndpointSlices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointState {
    /// Listed and ready: receives traffic.
    Ready,
    /// Listed but not ready: receives no traffic.
    NotReady,
    /// Not listed at all.
    Absent,
}

/// The state of `pod`'s endpoint across `slices` (ready wins over not-ready duplicates), and the
/// trigger time of the slice that lists it.
pub fn endpoint_state(
    slices: &[impl Borrow<EndpointSlice>],
    pod: &str,
) -> (EndpointState, Option<Timestamp>) {
    let mut state = EndpointState::Absent;
    let mut when = None;
    for slice in slices.iter().map(Borrow::<EndpointSlice>::borrow) {
        for ep in slice.endpoints.iter().flatten() {
            if ep.target_ref.as_ref().and_then(|r| r.name.as_deref()) != Some(pod) {
                continue;
            }
            let ready = ep.conditions.as_ref().and_then(|c| c.ready) == Some(true);
            if ready || state == EndpointState::Absent {
                state = if ready {
                    EndpointState::Ready
                } else {
                    EndpointState::NotReady
                };
                when = slice_trigger_time(slice);
            }
        }
    }
    (state, when)
}

/// Ready endpoints across the slices.
pub fn ready_endpoints(slices: &[impl Borrow<EndpointSlice>]) -> usize {
    slices
        .iter()
        .flat_map(|s| s.borrow().endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .count()
}

/// The slice's `last-change-trigger-time` annotation.
pub fn slice_trigger_time(slice: &EndpointSlice) -> Option<Timestamp> {
    slice
        .metadata
        .annotations
        .as_ref()?
        .get(SLICE_TRIGGER_TIME)?
        .parse()
        .ok()
}

/// When an Event (core/v1 view of either API) last happened: the newest of its series, last
/// timestamp, event time and first timestamp (kubelet Events repeat with a count; controller
/// Events with a series).
pub fn event_time(ev: &Event) -> Option<Timestamp> {
    [
        ev.series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref())
            .map(|t| t.0),
        ev.last_timestamp.as_ref().map(|t| t.0),
        ev.event_time.as_ref().map(|t| t.0),
        ev.first_timestamp.as_ref().map(|t| t.0),
    ]
    .into_iter()
    .flatten()
    .max()
}

/// A matching Event: when and what it said.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    /// Event time ([`event_time`]).
    pub at: Timestamp,
    /// `reason` of the Event.
    pub reason: String,
    /// Its message.
    pub message: String,
    /// The object it is about (`Kind/name`).
    pub object: String,
}

/// The earliest Event with `reason` about an object named `object` (any object when `None`)
/// that happened at or after `since` and whose message contains `needle`.
pub fn find_event(
    events: &[impl Borrow<Event>],
    reason: &str,
    object: Option<&str>,
    needle: &str,
    since: Timestamp,
) -> Option<Found> {
    events
        .iter()
        .map(Borrow::<Event>::borrow)
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| object.is_none_or(|o| e.involved_object.name.as_deref() == Some(o)))
        .filter(|e| e.message.as_deref().unwrap_or("").contains(needle))
        .filter_map(|e| {
            let at = event_time(e)?;
            (at >= since).then(|| Found {
                at,
                reason: reason.to_owned(),
                message: e.message.clone().unwrap_or_default(),
                object: format!(
                    "{}/{}",
                    e.involved_object.kind.as_deref().unwrap_or("?"),
                    e.involved_object.name.as_deref().unwrap_or("?")
                ),
            })
        })
        .min_by_key(|f| f.at)
}

/// One revision of a Helm release, from its storage Secret's labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revision {
    /// Revision number (`version` label).
    pub version: u32,
    /// `deployed`, `failed`, `superseded`, `pending-upgrade`, …
    pub status: String,
    /// When the revision was created (Secret creation).
    pub created: Option<Timestamp>,
    /// When Helm last changed its status (`modifiedAt` label, Unix seconds).
    pub modified: Option<Timestamp>,
}

/// The revisions of `release` among Helm storage Secrets (`owner=helm`), oldest first.
pub fn helm_revisions(secrets: &[impl Borrow<Secret>], release: &str) -> Vec<Revision> {
    let mut revs: Vec<Revision> = secrets
        .iter()
        .map(Borrow::<Secret>::borrow)
        .filter_map(|s| {
            let labels = s.metadata.labels.as_ref()?;
            if labels.get("owner").map(String::as_str) != Some("helm")
                || labels.get("name").map(String::as_str) != Some(release)
            {
                return None;
            }
            Some(Revision {
                version: labels.get("version")?.parse().ok()?,
                status: labels.get("status")?.clone(),
                created: s.metadata.creation_timestamp.as_ref().map(|t| t.0),
                modified: labels
                    .get("modifiedAt")
                    .and_then(|m| m.parse::<i64>().ok())
                    .and_then(|secs| Timestamp::from_second(secs).ok()),
            })
        })
        .collect();
    revs.sort_by_key(|r| r.version);
    revs
}

/// The `deployed` revision, if any.
pub fn deployed_revision(revs: &[Revision]) -> Option<&Revision> {
    revs.iter().rev().find(|r| r.status == "deployed")
}

/// HPA status that matters for a scale-out: (current, desired, lastScaleTime).
pub fn hpa_replicas(hpa: &HorizontalPodAutoscaler) -> (i32, i32, Option<Timestamp>) {
    hpa.status.as_ref().map_or((0, 0, None), |s| {
        (
            s.current_replicas.unwrap_or(0),
            s.desired_replicas,
            s.last_scale_time.as_ref().map(|t| t.0),
        )
    })
}

/// The HPA's `minReplicas` (1 when unset, as the API defaults it).
pub fn hpa_min(hpa: &HorizontalPodAutoscaler) -> i32 {
    hpa.spec.min_replicas.unwrap_or(1)
}

/// PDB status: (disruptionsAllowed, currentHealthy, desiredHealthy).
pub fn pdb_status(pdb: &PodDisruptionBudget) -> (i32, i32, i32) {
    pdb.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.disruptions_allowed.unwrap_or(0),
            s.current_healthy.unwrap_or(0),
            s.desired_healthy.unwrap_or(0),
        )
    })
}

/// Seconds from `from` to `to`, never negative: API times have one-second resolution (Events
/// have microseconds), so a reaction inside the same second may look a little early.
pub fn secs_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_millisecond() - from.as_millisecond()).max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod literal")
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp literal")
    }

    fn crashed_pod() -> Pod {
        pod(json!({
            "metadata": {"name": "web-1"},
            "spec": {"containers": [{"name": "app", "ports": [
                {"name": "metrics", "containerPort": 9090},
                {"name": "http", "containerPort": 8080}]}]},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T10:00:07Z"}],
                "containerStatuses": [{
                    "name": "app", "image": "x", "imageID": "", "ready": true, "started": true,
                    "restartCount": 2,
                    "state": {"running": {"startedAt": "2026-01-01T10:00:05Z"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "Error",
                        "finishedAt": "2026-01-01T10:00:04Z"}}
                }]
            }
        }))
    }

    #[test]
    fn a_restarted_ready_pod_reads_as_such() {
        let p = crashed_pod();
        assert_eq!(pod_ready(&p), (true, Some(ts("2026-01-01T10:00:07Z"))));
        assert_eq!(restart_count(&p), 2);
        let t = last_termination(&p).expect("terminated before");
        assert_eq!(t.exit_code, 137);
        assert_eq!(t.finished_at, Some(ts("2026-01-01T10:00:04Z")));
        assert!(containers_started(&p));
        assert!(!crash_looping(&p));
        assert_eq!(http_port(&p), 8080);
    }

    #[test]
    fn a_pod_without_status_is_not_ready_and_not_started() {
        let p = pod(json!({"metadata": {"name": "new"}}));
        assert_eq!(pod_ready(&p), (false, None));
        assert_eq!(restart_count(&p), 0);
        assert!(last_termination(&p).is_none());
        assert!(!containers_started(&p));
        assert_eq!(http_port(&p), 8080);
    }

    #[test]
    fn a_waiting_container_in_back_off_is_crash_looping() {
        let p = pod(
            json!({"metadata": {"name": "c"}, "status": {"containerStatuses": [{
            "name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 3, "started": false,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}),
        );
        assert!(crash_looping(&p));
        assert!(!containers_started(&p));
    }

    fn slice(trigger: &str, eps: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "s", "annotations": {SLICE_TRIGGER_TIME: trigger}},
            "addressType": "IPv4",
            "endpoints": eps
        }))
        .expect("slice literal")
    }

    #[test]
    fn endpoint_state_distinguishes_ready_unready_and_absent() {
        let slices = vec![slice(
            "2026-01-01T10:00:09Z",
            json!([
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "a"}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "b"}}
            ]),
        )];
        assert_eq!(
            endpoint_state(&slices, "a"),
            (EndpointState::Ready, Some(ts("2026-01-01T10:00:09Z")))
        );
        assert_eq!(endpoint_state(&slices, "b").0, EndpointState::NotReady);
        assert_eq!(endpoint_state(&slices, "c"), (EndpointState::Absent, None));
        assert_eq!(ready_endpoints(&slices), 1);
    }

    #[test]
    fn a_ready_duplicate_wins_over_a_stale_unready_one() {
        let slices = vec![
            slice(
                "2026-01-01T10:00:01Z",
                json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "a"}}]),
            ),
            slice(
                "2026-01-01T10:00:02Z",
                json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "a"}}]),
            ),
        ];
        assert_eq!(endpoint_state(&slices, "a").0, EndpointState::Ready);
    }

    fn event(v: serde_json::Value) -> Event {
        serde_json::from_value(v).expect("event literal")
    }

    #[test]
    fn find_event_picks_the_first_matching_one_after_since() {
        let events = vec![
            event(json!({"metadata": {"name": "e1"}, "reason": "Killing",
                "involvedObject": {"kind": "Pod", "name": "web-1"},
                "message": "Container app failed liveness probe, will be restarted",
                "firstTimestamp": "2026-01-01T09:00:00Z", "lastTimestamp": "2026-01-01T09:00:00Z"})),
            event(json!({"metadata": {"name": "e2"}, "reason": "Killing",
                "involvedObject": {"kind": "Pod", "name": "web-1"},
                "message": "Container app failed liveness probe, will be restarted",
                "firstTimestamp": "2026-01-01T09:00:00Z", "lastTimestamp": "2026-01-01T10:00:15Z", "count": 2})),
            event(json!({"metadata": {"name": "e3"}, "reason": "Killing",
                "involvedObject": {"kind": "Pod", "name": "web-2"},
                "message": "Container app failed liveness probe, will be restarted",
                "firstTimestamp": "2026-01-01T10:00:11Z"})),
            event(json!({"metadata": {"name": "e4"}, "reason": "Killing",
                "involvedObject": {"kind": "Pod", "name": "web-1"},
                "message": "Stopping container app",
                "firstTimestamp": "2026-01-01T10:00:12Z"})),
        ];
        let since = ts("2026-01-01T10:00:00Z");
        let f = find_event(&events, "Killing", Some("web-1"), "liveness", since).expect("found");
        assert_eq!(f.at, ts("2026-01-01T10:00:15Z"));
        assert_eq!(f.object, "Pod/web-1");
        let any = find_event(&events, "Killing", None, "liveness", since).expect("found");
        assert_eq!(any.object, "Pod/web-2");
        assert!(find_event(&events, "Killing", Some("web-9"), "", since).is_none());
    }

    #[test]
    fn controller_events_use_event_time_and_series() {
        let e = event(json!({"metadata": {"name": "r"}, "reason": "Recycled",
            "involvedObject": {"kind": "Deployment", "name": "web"},
            "eventTime": "2026-01-01T10:01:00.250000Z",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T10:02:00.500000Z"}}));
        assert_eq!(event_time(&e), Some(ts("2026-01-01T10:02:00.5Z")));
    }

    fn helm_secret(version: &str, status: &str, modified: &str) -> Secret {
        serde_json::from_value(json!({"metadata": {
            "name": format!("sh.helm.release.v1.web.v{version}"),
            "creationTimestamp": "2026-01-01T10:00:00Z",
            "labels": {"owner": "helm", "name": "web", "version": version, "status": status, "modifiedAt": modified}}}))
        .expect("secret literal")
    }

    #[test]
    fn helm_history_is_read_from_secret_labels() {
        let secrets = vec![
            helm_secret("3", "deployed", "1767261700"),
            helm_secret("1", "superseded", "1767261600"),
            helm_secret("2", "failed", "1767261650"),
        ];
        let other: Secret = serde_json::from_value(
            json!({"metadata": {"name": "x", "labels": {"owner": "helm", "name": "other", "version": "9", "status": "deployed"}}}),
        )
        .expect("secret literal");
        let mut all = secrets.clone();
        all.push(other);
        let revs = helm_revisions(&all, "web");
        assert_eq!(
            revs.iter().map(|r| r.version).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(revs[1].status, "failed");
        assert_eq!(revs[1].modified, Some(ts("2026-01-01T10:00:50Z")));
        assert_eq!(deployed_revision(&revs).map(|r| r.version), Some(3));
    }

    #[test]
    fn hpa_and_pdb_status_read_with_defaults() {
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"minReplicas": 2, "maxReplicas": 5, "scaleTargetRef": {"kind": "Deployment", "name": "web"}},
            "status": {"currentReplicas": 2, "desiredReplicas": 4, "lastScaleTime": "2026-01-01T10:00:30Z"}
        }))
        .expect("hpa literal");
        assert_eq!(hpa_replicas(&hpa), (2, 4, Some(ts("2026-01-01T10:00:30Z"))));
        assert_eq!(hpa_min(&hpa), 2);
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 2}
        }))
        .expect("pdb literal");
        assert_eq!(pdb_status(&pdb), (0, 1, 1));
    }

    #[test]
    fn durations_between_api_times_never_go_negative() {
        let a = ts("2026-01-01T10:00:00.800Z");
        assert_eq!(secs_between(a, ts("2026-01-01T10:00:05Z")), 4.2);
        assert_eq!(secs_between(a, ts("2026-01-01T10:00:00Z")), 0.0);
    }
}
