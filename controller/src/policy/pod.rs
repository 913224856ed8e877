//! What the decision reads off a pod: restarts, container states, readiness, age, owner and
//! opt-out. Pure.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Annotation that opts a pod out: `selfheal.io/ignore: "true"`.
pub const IGNORE_ANNOTATION: &str = "selfheal.io/ignore";

/// Total restarts across init and app containers.
pub fn total_restarts(pod: &Pod) -> u32 {
    container_statuses(pod)
        .map(|c| u32::try_from(c.restart_count).unwrap_or(0))
        .sum()
}

pub(crate) fn container_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    let app = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let init = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default();
    init.iter().chain(app.iter())
}

pub(crate) fn waiting_reason(c: &ContainerStatus) -> Option<&str> {
    c.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
}

pub(crate) fn last_terminated_reason(c: &ContainerStatus) -> Option<&str> {
    c.last_state
        .as_ref()?
        .terminated
        .as_ref()?
        .reason
        .as_deref()
}

/// When the pod's Ready condition last turned False, if it is False now.
pub fn not_ready_since(pod: &Pod) -> Option<Timestamp> {
    let ready = pod
        .status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (ready.status == "False").then(|| {
        ready
            .last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
    })
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Whether a container is waiting in `ImagePullBackOff`/`ErrImagePull`.
pub(crate) fn image_pull_failing(pod: &Pod) -> bool {
    container_statuses(pod)
        .any(|c| matches!(waiting_reason(c), Some("ImagePullBackOff" | "ErrImagePull")))
}

/// How long ago the pod was created.
pub(crate) fn age(pod: &Pod, now: Timestamp) -> Option<SignedDuration> {
    let created = pod.metadata.creation_timestamp.as_ref()?.0;
    Some(now.duration_since(created))
}

/// Whether the pod has an owner reference with `controller: true`.
pub fn has_controller(pod: &Pod) -> bool {
    pod.metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o.controller == Some(true))
}

/// Whether the pod carries `selfheal.io/ignore: "true"`.
pub fn opted_out(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(IGNORE_ANNOTATION))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}
