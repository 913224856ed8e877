//! API-server outage: the controller's connection to the real API server goes through an
//! in-test TCP proxy that is cut (every connection dropped, new ones refused) and restored, as an
//! API-server restart looks from the client. The controller must keep working afterwards without
//! being restarted. (The cluster's own processes are never touched.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_keeps_working_after_the_api_server_connection_is_cut() {
    in_namespace("sh-reconnect", |_, ns| async move {
        let (proxy, config) = Proxy::to_api_server().await;
        let direct = client().await;

        let ctl = start_with(config, config_for(&ns));
        create_deployment(&direct, &ns, &crashing_deployment("before", 1, &[])).await;
        wait_for(
            "a recycle before the outage",
            Duration::from_secs(180),
            || async { recycles(&ctl.metrics, &ns) >= 1 },
        )
        .await;

        let watches = ctl
            .metrics
            .api_requests_total
            .with_label_values(&["watch"])
            .get();
        proxy.cut();
        tokio::time::sleep(Duration::from_secs(10)).await;
        proxy.restore().await;

        let before = recycles(&ctl.metrics, &ns);
        create_deployment(&direct, &ns, &crashing_deployment("after", 1, &[])).await;
        wait_for(
            "a recycle of a deployment created after the outage",
            Duration::from_secs(240),
            || async {
                our_events(&direct, &ns, "Recycled")
                    .await
                    .iter()
                    .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("after"))
            },
        )
        .await;
        assert!(recycles(&ctl.metrics, &ns) > before);
        assert!(
            ctl.metrics
                .api_requests_total
                .with_label_values(&["watch"])
                .get()
                > watches,
            "the watch was not re-established"
        );
    })
    .await;
}

fn config_for(ns: &str) -> selfheal_controller::config::Config {
    config(ns, &[])
}
