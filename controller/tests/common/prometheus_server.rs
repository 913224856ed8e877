//! A real Prometheus (`hack/tools.sh install prometheus`) on a free local port, for the PromQL
//! triggers and the circuit breaker. Killed, and its data removed, on drop.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_for;

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    /// Base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    _dir: TempDir,
    /// The scrapes' way to the pods, when it scrapes any; stopped after Prometheus (field order).
    _proxy: Option<KubectlProxy>,
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

/// `kubectl proxy` on a free 127.0.0.1 port, killed on drop: Prometheus scrapes the pods through
/// it and the API server's pod proxy, so the host dials only loopback and the API server, never a
/// pod IP (minikube in CI has no route to one).
struct KubectlProxy {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
}

impl Drop for KubectlProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KubectlProxy {
    async fn start() -> Self {
        let bin = binary("kubectl", "KUBECTL", "hack/tools.sh install kubernetes");
        let mut child = Command::new(&bin)
            .args(["proxy", "--address=127.0.0.1", "--port=0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} proxy: {e}", bin.display()));
        // NB: --port=0 picks a free port and says which: "Starting to serve on 127.0.0.1:PORT".
        let stdout = child.stdout.take().unwrap();
        let line = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                std::io::BufReader::new(stdout)
                    .read_line(&mut line)
                    .map(|_| line)
            }),
        )
        .await;
        // Owned before the line is checked: a panic below still kills kubectl.
        let mut proxy = KubectlProxy {
            child,
            addr: String::new(),
        };
        let line = match line {
            Ok(Ok(Ok(line))) => line,
            other => panic!("kubectl proxy did not say where it serves: {other:?}"),
        };
        proxy.addr = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|a| a.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("kubectl proxy said {line:?}, not where it serves"))
            .to_owned();
        proxy
    }
}

/// The `name` binary: `$ENV_VAR`, else on `PATH`, else in `~/.cache/selfheal/bin`.
fn binary(name: &str, env_var: &str, install: &str) -> PathBuf {
    std::env::var_os(env_var)
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(name))
                    .find(|f| f.is_file())
            })
        })
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/selfheal/bin").join(name))
                .filter(|f| f.is_file())
        })
        .unwrap_or_else(|| panic!("no {name} binary: run {install} (make test does)"))
}

/// No scrape targets: constant PromQL answers are enough to prove a trigger's wiring.
pub async fn prometheus() -> Prometheus {
    start("scrape_configs: []\n", None).await
}

/// Scrapes every pod of `ns` that declares a container port named `http`, every second: pods
/// discovered through the cluster in `KUBECONFIG`, scraped through a `kubectl proxy` on 127.0.0.1
/// and the API server's pod proxy (`/api/v1/namespaces/NS/pods/POD:PORT/proxy/metrics`), never
/// at a pod IP. Series carry the `namespace` and `pod` labels a ServiceMonitor scrape carries,
/// and `instance` = the pod's name (every target has the proxy's address).
pub async fn prometheus_scraping(ns: &str) -> Prometheus {
    let kubeconfig = std::env::var("KUBECONFIG")
        .unwrap_or_else(|_| format!("{}/.kube/config", std::env::var("HOME").unwrap_or_default()));
    let proxy = KubectlProxy::start().await;
    let addr = &proxy.addr;
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
      - {{source_labels: [__meta_kubernetes_pod_name], target_label: instance}}
      - source_labels: [__meta_kubernetes_namespace, __meta_kubernetes_pod_name, __meta_kubernetes_pod_container_port_number]
        regex: '(.+);(.+);(.+)'
        target_label: __metrics_path__
        replacement: /api/v1/namespaces/$1/pods/$2:$3/proxy/metrics
      - {{target_label: __address__, replacement: '{addr}'}}
"
    );
    start(&config, Some(proxy)).await
}

async fn start(config: &str, proxy: Option<KubectlProxy>) -> Prometheus {
    let bin = binary(
        "prometheus",
        "PROMETHEUS",
        "hack/tools.sh install prometheus",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("selfheal-prom-{port}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let child = Command::new(&bin)
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
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let url = format!("http://127.0.0.1:{port}");
    let prom = Prometheus {
        child,
        url: url.clone(),
        _dir: TempDir(dir),
        _proxy: proxy,
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
