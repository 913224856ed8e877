//! Watching instead of sleeping: [`wait_for`] keeps a reflector-backed watch and re-evaluates a
//! check on every change; the waits the layers share (a rollout, one pod, an Event) are built on it.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde::de::DeserializeOwned;

use super::{Runner, progress};
use crate::{extract, verdict};

/// Watch objects (a reflector-backed watch: a full list, then every change) and return the first
/// value `check` yields over the current set, re-evaluated on every change. Prints progress every
/// 10 s; gives up at `deadline`.
pub(super) async fn wait_for<K, T>(
    api: Api<K>,
    wc: watcher::Config,
    what: &str,
    deadline: Instant,
    mut check: impl FnMut(&[Arc<K>]) -> Option<T>,
) -> std::result::Result<T, String>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, wc)).default_backoff();
    futures::pin_mut!(stream);
    let started = Instant::now();
    let mut synced = false;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(watcher::Event::InitDone)) => synced = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => { tracing::warn!(error = %e, what, "watch error, retrying"); continue; }
                None => return Err(format!("the watch for {what} ended")),
            },
            _ = tick.tick() => {
                progress(format!("    … waiting for {what} ({} s)", started.elapsed().as_secs()));
                continue;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                return Err(format!("{what}: not seen within the deadline ({} s of waiting)", started.elapsed().as_secs()));
            }
        }
        if synced && let Some(found) = check(&reader.state()) {
            return Ok(found);
        }
    }
}

impl Runner {
    /// All replicas updated, ready and available.
    pub(super) async fn wait_rolled_out(
        &self,
        deadline: Instant,
    ) -> std::result::Result<i32, String> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        wait_for(
            api,
            watcher::Config::default().fields(&format!("metadata.name={}", self.deployment)),
            "the Deployment to be rolled out",
            deadline,
            |ds| verdict::rolled_out(ds.first()?),
        )
        .await
    }

    /// Wait for one pod (by name) to satisfy `check`.
    pub(super) async fn wait_pod<T>(
        &self,
        name: &str,
        what: &str,
        deadline: Instant,
        mut check: impl FnMut(Option<&Pod>) -> Option<T>,
    ) -> std::result::Result<T, String> {
        wait_for(
            self.pods(),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            what,
            deadline,
            |ps| check(ps.first().map(AsRef::as_ref)),
        )
        .await
    }

    /// Wait for an Event matching `reason`/`needle` about `object` at or after `since`.
    pub(super) async fn wait_event(
        &self,
        reason: &str,
        object: Option<&str>,
        needle: &str,
        since: Timestamp,
        deadline: Instant,
    ) -> std::result::Result<extract::Found, String> {
        let mut wc = watcher::Config::default().fields(&format!("reason={reason}"));
        if let Some(o) = object {
            wc = watcher::Config::default()
                .fields(&format!("reason={reason},involvedObject.name={o}"));
        }
        wait_for(
            self.events(),
            wc,
            &format!("Event {reason}"),
            deadline,
            |evs| extract::find_event(evs, reason, object, needle, since),
        )
        .await
    }
}

/// API timestamps have one-second resolution: compare against the start of the second.
pub(super) fn floor_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::floor_second;
    use k8s_openapi::jiff::Timestamp;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp literal")
    }

    #[test]
    fn floor_second_drops_the_fraction() {
        assert_eq!(
            floor_second(ts("2024-05-01T10:00:07.999Z")),
            ts("2024-05-01T10:00:07Z")
        );
        assert_eq!(
            floor_second(ts("2024-05-01T10:00:07.000001Z")),
            ts("2024-05-01T10:00:07Z")
        );
    }

    #[test]
    fn floor_second_keeps_a_whole_second() {
        let t = ts("2024-05-01T10:00:07Z");
        assert_eq!(floor_second(t), t);
    }

    #[test]
    fn an_event_in_the_same_second_as_the_fault_is_not_missed() {
        // The fault at .6 s; the API records the reaction truncated to the second.
        let fault = ts("2024-05-01T10:00:07.600Z");
        let event = ts("2024-05-01T10:00:07Z");
        assert!(event < fault);
        assert!(event >= floor_second(fault));
    }
}
