//! API-server outage: the controller's connection to the real API server goes through an
//! in-test TCP proxy that is cut (every connection dropped, new ones refused) and restored, as an
//! API-server restart looks from the client. The controller must keep working afterwards without
//! being restarted. (The cluster's own processes are never touched.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy that can be cut and restored on the same port.
struct Proxy {
    listen: SocketAddr,
    upstream: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let listen = listener.local_addr().expect("addr");
        let p = Proxy {
            listen,
            upstream,
            tasks: Arc::default(),
        };
        p.serve(listener);
        p
    }

    fn serve(&self, listener: TcpListener) {
        let tasks = self.tasks.clone();
        let upstream = self.upstream.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Drop every connection and stop listening.
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Listen again on the same port.
    async fn restore(&self) {
        let listener = TcpListener::bind(self.listen)
            .await
            .expect("rebind proxy port");
        self.serve(listener);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_keeps_working_after_the_api_server_connection_is_cut() {
    in_namespace("sh-reconnect", |_, ns| async move {
        let mut config = kube::Config::infer().await.expect("kubeconfig");
        let url: http::Uri = config.cluster_url.clone();
        let host = url
            .host()
            .expect("host")
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url.port_u16().unwrap_or(443);
        let proxy = Proxy::start(format!("{host}:{port}")).await;
        // NB: keep verifying the server certificate against the real host name.
        config.tls_server_name = Some(host.clone());
        config.cluster_url = format!("https://{}", proxy.listen)
            .parse()
            .expect("proxy url");
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
