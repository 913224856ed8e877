//! A real Prometheus (`hack/tools.sh install prometheus`) on a free local port, for the PromQL
//! triggers and the circuit breaker. Killed, and its data removed, on drop.

use std::path::PathBuf;
use std::time::Duration;

use super::wait_for;

/// A running Prometheus.
pub struct Prometheus {
    child: std::process::Child,
    /// Base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn binary() -> PathBuf {
    std::env::var_os("PROMETHEUS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("prometheus"))
                    .find(|f| f.is_file())
            })
        })
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/selfheal/bin/prometheus"))
                .filter(|f| f.is_file())
        })
        .expect("no prometheus binary: run hack/tools.sh install prometheus (make test does)")
}

/// No scrape targets: constant PromQL answers are enough to prove a trigger's wiring.
pub async fn prometheus() -> Prometheus {
    start("scrape_configs: []\n").await
}

/// Scrapes every pod of `ns` that declares a container port named `http`, every second, through
/// the cluster in `KUBECONFIG` (pod discovery) and the pod IPs (the node is this machine), with
/// the `namespace` and `pod` labels a ServiceMonitor scrape carries.
pub async fn prometheus_scraping(ns: &str) -> Prometheus {
    let kubeconfig = std::env::var("KUBECONFIG")
        .unwrap_or_else(|_| format!("{}/.kube/config", std::env::var("HOME").unwrap_or_default()));
    let config = format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: pods
    kubernetes_sd_configs:
      - role: pod
        kubeconfig_file: {kubeconfig}
        namespaces: {{names: [{ns}]}}
    relabel_configs:
      - {{source_labels: [__meta_kubernetes_pod_container_port_name], regex: http, action: keep}}
      - {{source_labels: [__meta_kubernetes_namespace], target_label: namespace}}
      - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}
"
    );
    start(&config).await
}

async fn start(config: &str) -> Prometheus {
    let bin = binary();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("selfheal-prom-{port}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let child = std::process::Command::new(&bin)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let url = format!("http://127.0.0.1:{port}");
    let prom = Prometheus {
        child,
        url: url.clone(),
        _dir: TempDir(dir),
    };
    wait_for(
        "Prometheus to answer a query",
        Duration::from_secs(60),
        || {
            let url = url.clone();
            async move { query(&url, "vector(1)").await.is_some() }
        },
    )
    .await;
    prom
}

/// The values of an instant query (`None` when it failed).
pub async fn query(url: &str, q: &str) -> Option<Vec<f64>> {
    let client = selfheal_promql::Client::new(url, Duration::from_secs(2)).ok()?;
    let series = client.instant_vector(q).await.ok()?;
    Some(series.into_iter().map(|(_, v)| v).collect())
}
