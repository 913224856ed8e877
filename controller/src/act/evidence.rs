//! The evidence an Event carries: how each restarted container last ended and, opt-in
//! (`--log-evidence`), the bounded tail of the previous log of the most-restarted one.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;

use crate::context::Context;

/// Last termination reason and exit code of every restarted container, plus the bounded tail of
/// the previous log of the most-restarted one. Never fails: missing logs are said so.
pub(crate) async fn evidence(ctx: &Context, pod: &Pod, ns: &str, name: &str) -> String {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for c in &statuses {
        if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
            out.push(format!(
                "container {}: last terminated {} (exit {}), {} restarts",
                c.name,
                t.reason.as_deref().unwrap_or("unknown"),
                t.exit_code,
                c.restart_count
            ));
        }
    }
    let worst = statuses
        .iter()
        .filter(|c| c.restart_count > 0)
        .max_by_key(|c| c.restart_count);
    // NB: opt-in. A log tail copied into an Event is readable by everyone who can read Events in
    // that namespace, often more people than can read the pod's logs.
    if let Some(c) = worst.filter(|_| ctx.cfg.log_evidence) {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        let lp = LogParams {
            container: Some(c.name.clone()),
            previous: true,
            tail_lines: Some(ctx.cfg.log_tail_lines),
            limit_bytes: i64::try_from(ctx.cfg.log_tail_bytes.saturating_mul(4)).ok(),
            ..LogParams::default()
        };
        match api.logs(name, &lp).await {
            Ok(log) => out.push(format!(
                "log tail of {}: {}",
                c.name,
                tail(log.trim_end(), ctx.cfg.log_tail_bytes)
            )),
            Err(e) => out.push(format!("log of {} unavailable: {e}", c.name)),
        }
    }
    if out.is_empty() {
        "no termination recorded".into()
    } else {
        out.join("; ")
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

    #[test]
    fn tail_and_truncate_respect_char_boundaries() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(crate::events::truncate("ééééé".into(), 6), "é...");
        assert_eq!(crate::events::truncate("short".into(), 10), "short");
    }
}
