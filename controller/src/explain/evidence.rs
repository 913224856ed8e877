//! The evidence an Event carries: how each restarted container last ended (read off the pod,
//! no I/O) and, opt-in (`--log-evidence`), the bounded tail of the previous log of the
//! most-restarted one (one API call). Gathered after the action, by [`crate::explain`]:
//! an evicted pod stays readable during its grace period.

use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::{Api, Client, ResourceExt};

/// How much of the previous log goes into the evidence (`--log-tail-lines`, `--log-tail-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogTail {
    pub(crate) lines: i64,
    pub(crate) bytes: usize,
}

/// Last termination reason and exit code of every restarted container. Pure.
pub(crate) fn terminations(pod: &Pod) -> Vec<String> {
    statuses(pod)
        .filter_map(|c| {
            let t = c.last_state.as_ref()?.terminated.as_ref()?;
            Some(format!(
                "container {}: last terminated {} (exit {}), {} restarts",
                c.name,
                t.reason.as_deref().unwrap_or("unknown"),
                t.exit_code,
                c.restart_count
            ))
        })
        .collect()
}

/// The container that restarted most (whose previous log is worth quoting), if any did.
pub(crate) fn most_restarted(pod: &Pod) -> Option<&str> {
    statuses(pod)
        .filter(|c| c.restart_count > 0)
        .max_by_key(|c| c.restart_count)
        .map(|c| c.name.as_str())
}

fn statuses(pod: &Pod) -> impl Iterator<Item = &k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
}

/// The bounded tail of `container`'s previous log.
pub(crate) async fn previous_log(
    client: &Client,
    pod: &Pod,
    container: &str,
    tail: LogTail,
) -> Result<String, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let lp = LogParams {
        container: Some(container.to_owned()),
        previous: true,
        tail_lines: Some(tail.lines),
        limit_bytes: i64::try_from(tail.bytes.saturating_mul(4)).ok(),
        ..LogParams::default()
    };
    let log = api.logs(&pod.name_any(), &lp).await?;
    Ok(self::tail(log.trim_end(), tail.bytes).to_owned())
}

/// The evidence in one line: the parts joined, or that nothing was recorded.
pub(crate) fn render(parts: &[String]) -> String {
    if parts.is_empty() {
        "no termination recorded".into()
    } else {
        parts.join("; ")
    }
}

/// The last `max` bytes of `s`, cut at a character boundary.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pod;

    #[test]
    fn tail_and_truncate_respect_char_boundaries() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(crate::events::truncate("ééééé".into(), 6), "é...");
        assert_eq!(crate::events::truncate("short".into(), 10), "short");
    }

    #[test]
    fn terminations_name_each_restarted_container_and_its_exit() {
        let p = pod()
            .with_restarts(4)
            .last_terminated("OOMKilled", 137)
            .build();
        let parts = terminations(&p);
        assert_eq!(parts.len(), 1);
        assert!(
            parts[0].contains("last terminated OOMKilled (exit 137)"),
            "{parts:?}"
        );
        assert!(most_restarted(&p).is_some());
        assert_eq!(render(&[]), "no termination recorded");
        assert!(most_restarted(&pod().build()).is_none());
    }
}
