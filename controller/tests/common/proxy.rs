//! A TCP proxy in front of the real API server, for outages the server itself is never put
//! through: every connection cut (an API-server restart, as the client sees it) or held open
//! without an answer (a hung server, a dropped network path).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy that can be cut and restored on the same port.
pub struct Proxy {
    pub listen: SocketAddr,
    upstream: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Self {
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
    pub fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Listen again on the same port.
    pub async fn restore(&self) {
        let listener = self.rebind().await;
        self.serve(listener);
    }

    /// Drop every connection and accept new ones without ever answering or forwarding: each
    /// request hangs until the client's own timeout.
    pub async fn stall(&self) {
        self.cut();
        let listener = self.rebind().await;
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((inbound, _)) = listener.accept().await {
                held.push(inbound);
            }
        });
        self.tasks.lock().unwrap().push(hold);
    }

    /// Listen on the proxy's port again. An aborted accept task drops its listener only when the
    /// runtime next polls it, so the port can still be taken for a moment after [`Proxy::cut`].
    async fn rebind(&self) -> TcpListener {
        for _ in 0..50 {
            if let Ok(l) = TcpListener::bind(self.listen).await {
                return l;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("could not listen on {} again within 5 s", self.listen);
    }

    /// A proxy to the API server of `KUBECONFIG`, and a client configuration that goes through
    /// it (still verifying the server certificate against the real host name).
    pub async fn to_api_server() -> (Self, kube::Config) {
        let mut config = kube::Config::infer().await.expect("kubeconfig");
        let url: http::Uri = config.cluster_url.clone();
        let host = url
            .host()
            .expect("host")
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url.port_u16().unwrap_or(443);
        let proxy = Proxy::start(format!("{host}:{port}")).await;
        config.tls_server_name = Some(host);
        config.cluster_url = format!("https://{}", proxy.listen)
            .parse()
            .expect("proxy url");
        (proxy, config)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
