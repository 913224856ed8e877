//! The steps layers share: installing the release, the Deployment's Ready pods, `POST /crash`
//! to one pod, the background load and where it goes, layer scripts, the controller's env.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use super::{Runner, kube_err, progress};
use crate::extract;
use crate::load::{self, Limit, LoadConfig, Target};
use crate::report::ReplicaPoint;
use crate::{Error, Result};

impl Runner {
    pub(super) async fn helm_install(&self) -> Result<()> {
        let chart = self.cfg.repo_root.join("helm-chart");
        let values = self.path(&self.cfg.values);
        progress(format!(
            ">>> installing release {} into {} (helm upgrade --install {} -f {}, image {}:{})",
            self.cfg.release,
            self.cfg.namespace,
            chart.display(),
            values.display(),
            self.cfg.image_repository,
            self.cfg.image_tag
        ));
        let status = tokio::process::Command::new("helm")
            .args(["upgrade", "--install", &self.cfg.release])
            .arg(&chart)
            .args(["--namespace", &self.cfg.namespace, "-f"])
            .arg(&values)
            .args([
                "--set",
                &format!("image.repository={}", self.cfg.image_repository),
                "--set",
                &format!("image.tag={}", self.cfg.image_tag),
                "--wait",
                "--timeout",
                "3m",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| {
                Error::Setup(format!(
                    "running helm: {e} (is helm on PATH? source hack/lib.sh)"
                ))
            })?;
        if !status.success() {
            return Err(Error::Setup(format!(
                "helm upgrade --install failed: {status}"
            )));
        }
        Ok(())
    }

    /// Ready, non-terminating pods of the Deployment, by name.
    pub(super) async fn ready_pods(&self) -> Result<Vec<Pod>> {
        let list = self
            .pods()
            .list(&ListParams::default().labels(&self.selector))
            .await
            .map_err(|e| kube_err("listing pods", e))?;
        let mut pods: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| !extract::terminating(p) && extract::pod_ready(p).0)
            .collect();
        pods.sort_by_key(|p| p.name_any());
        Ok(pods)
    }

    /// `POST /crash?QUERY` to one pod through the API server's pod proxy (no host networking
    /// needed). Retries briefly while the container is not listening yet.
    pub(super) async fn crash(&self, pod: &Pod, query: &str) -> std::result::Result<(), String> {
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}:{}/proxy/crash?{query}",
            self.cfg.namespace,
            pod.name_any(),
            extract::http_port(pod)
        );
        let mut last = String::new();
        for _ in 0..10 {
            let req = http::Request::post(&path)
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            match self.client.request_text(req).await {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            // NB: a bounded retry of one HTTP call (the container may be a moment from listening), not a wait for the cluster.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err(format!("POST /crash?{query} to {}: {last}", pod.name_any()))
    }

    /// Start the background load and the ready-replicas recorder.
    pub(super) async fn start_background(
        &mut self,
        stop: watch::Receiver<bool>,
        replicas: Arc<Mutex<Vec<ReplicaPoint>>>,
    ) -> Result<(
        String,
        tokio::task::JoinHandle<load::LoadRun>,
        tokio::task::JoinHandle<()>,
    )> {
        let target = self.load_target().await?;
        let described = target.describe();
        progress(format!(
            ">>> background load: GET {described} at {}/s",
            self.cfg.load_rate
        ));
        let config = LoadConfig {
            concurrency: 4,
            rate: Some(self.cfg.load_rate),
            limit: Limit::UntilStopped,
            timeout: Duration::from_secs(2),
            // Like independent users: new pods (HPA, canary) get their share at once.
            fresh_connections: true,
        };
        self.load_started = Timestamp::now();
        let load = tokio::spawn(load::run(
            target,
            config,
            self.recorder.clone(),
            stop.clone(),
        ));
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let name = self.deployment.clone();
        let mut stop_watch = stop;
        let rec = tokio::spawn(async move {
            let stream = watcher(
                api,
                watcher::Config::default().fields(&format!("metadata.name={name}")),
            )
            .default_backoff()
            .applied_objects();
            futures::pin_mut!(stream);
            let mut last = None;
            loop {
                tokio::select! {
                    _ = stop_watch.changed() => return,
                    d = stream.next() => match d {
                        Some(Ok(d)) => {
                            let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
                            if last != Some(ready) {
                                last = Some(ready);
                                if let Ok(mut r) = replicas.lock() {
                                    r.push(ReplicaPoint { at: Timestamp::now(), ready });
                                }
                            }
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "deployment watch error"),
                        None => return,
                    }
                }
            }
        });
        Ok((described, load, rec))
    }

    /// `--load-url`, else the Service's NodePort on 127.0.0.1 when this machine serves it (the
    /// local cluster's host is the node; `values-demo.yaml` makes the Service a NodePort), else the API server's service proxy (minikube and
    /// remote clusters). Never a ClusterIP or a pod IP: load stays on loopback or goes through
    /// the API server.
    async fn load_target(&self) -> Result<Target> {
        if let Some(url) = &self.cfg.load_url {
            return Target::url(url);
        }
        self.load_target_for(&self.service).await
    }

    /// The NodePort of `service` on 127.0.0.1 when it answers, else the API server's service
    /// proxy.
    pub(super) async fn load_target_for(&self, service: &str) -> Result<Target> {
        let svc: Api<Service> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let s = svc
            .get(service)
            .await
            .map_err(|e| kube_err("reading the Service", e))?;
        let spec = s.spec.unwrap_or_default();
        let first = spec.ports.as_ref().and_then(|p| p.first());
        let port = first.map_or(80, |p| p.port);
        if let Some(node_port) = first.and_then(|p| p.node_port) {
            let addr = format!("127.0.0.1:{node_port}");
            // A Service installed a moment ago may not be in kube-proxy's rules yet: a few
            // tries before deciding this machine does not serve NodePorts on loopback.
            let mut reachable = false;
            for _ in 0..5 {
                let attempt = Instant::now();
                reachable = tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::net::TcpStream::connect(&addr),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                if reachable {
                    break;
                }
                // NB: bounded connectivity probe (5 s at most), not a wait on cluster state.
                tokio::time::sleep_until((attempt + Duration::from_secs(1)).into()).await;
            }
            if reachable {
                return Target::url(&format!("http://{addr}/"));
            }
            progress(format!(
                "    NodePort {addr} does not answer here (minikube?): load goes through the API server's service proxy"
            ));
        }
        Target::service_proxy(
            self.client.clone(),
            &format!("{}/{service}:{port}", self.cfg.namespace),
        )
    }
}

/// Run a layer script with `common` and `extra` arguments; its stderr goes to ours (progress),
/// its stdout is one JSON line.
pub(super) async fn run_script(
    script: &std::path::Path,
    common: &[&str],
    extra: &[&str],
) -> std::result::Result<(i32, serde_json::Value), String> {
    let output = tokio::process::Command::new(script)
        .args(common)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        // NB: tokio's output() would pipe stderr too; the scripts' progress belongs on ours.
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| format!("running {}: {e}", script.display()))?
        .wait_with_output()
        .await
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let json = script_json(&String::from_utf8_lossy(&output.stdout));
    Ok((output.status.code().unwrap_or(-1), json))
}

/// What a layer script printed on stdout, as JSON (`null` when nothing parses).
fn script_json(stdout: &str) -> serde_json::Value {
    // One JSON document (possibly pretty-printed), else the last line that is one.
    serde_json::from_str(stdout)
        .ok()
        .or_else(|| {
            stdout
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str(l).ok())
        })
        .unwrap_or(serde_json::Value::Null)
}

/// The controller Deployment's env values, as numbers.
pub(super) async fn controller_env(api: &Api<Deployment>) -> impl Fn(&str) -> Option<f64> + use<> {
    let env = api
        .get("selfheal-controller")
        .await
        .ok()
        .map(container_env)
        .unwrap_or_default();
    env_numbers(env)
}

/// Look up `env` values by name, as numbers (`None` when absent or not a number).
fn env_numbers(env: Vec<(String, String)>) -> impl Fn(&str) -> Option<f64> {
    move |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse().ok())
    }
}

/// The literal `env` values of a Deployment's first container (`valueFrom` entries are left out).
pub(super) fn container_env(dep: Deployment) -> Vec<(String, String)> {
    dep.spec
        .template
        .spec
        .and_then(|s| s.containers.into_iter().next()?.env)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn script_json_reads_one_document_even_pretty_printed() {
        let out = "{\n  \"result\": \"rolled_back\",\n  \"effective_weight\": 25\n}\n";
        assert_eq!(
            script_json(out),
            json!({"result": "rolled_back", "effective_weight": 25})
        );
    }

    #[test]
    fn script_json_takes_the_last_line_that_is_json() {
        let out = "helm: upgrading\n{\"result\": \"first\"}\n{\"result\": \"last\"}\ndone\n";
        assert_eq!(script_json(out), json!({"result": "last"}));
    }

    #[test]
    fn script_json_is_null_without_json() {
        assert_eq!(script_json(""), serde_json::Value::Null);
        assert_eq!(script_json("no json here\n"), serde_json::Value::Null);
    }

    #[test]
    fn container_env_keeps_literal_values_of_the_first_container() {
        let dep: Deployment = serde_json::from_value(json!({
            "spec": {
                "selector": {},
                "template": {"spec": {"containers": [
                    {"name": "controller", "env": [
                        {"name": "CONTROLLER_RESTART_THRESHOLD", "value": "5"},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "CONTROLLER_PROMETHEUS_URL", "value": ""}
                    ]},
                    {"name": "sidecar", "env": [{"name": "SIDECAR", "value": "1"}]}
                ]}}
            }
        }))
        .expect("deployment literal");
        assert_eq!(
            container_env(dep),
            vec![
                ("CONTROLLER_RESTART_THRESHOLD".to_owned(), "5".to_owned()),
                ("CONTROLLER_PROMETHEUS_URL".to_owned(), String::new()),
            ]
        );
        assert!(container_env(Deployment::default()).is_empty());
    }

    #[test]
    fn env_numbers_parses_by_name() {
        let env = env_numbers(vec![
            ("CONTROLLER_RESTART_THRESHOLD".to_owned(), "5".to_owned()),
            ("CONTROLLER_MIN_POD_AGE_SECS".to_owned(), "12.5".to_owned()),
            ("CONTROLLER_RATE_RESTARTS".to_owned(), "often".to_owned()),
            ("CONTROLLER_RESTART_THRESHOLD".to_owned(), "9".to_owned()),
        ]);
        assert_eq!(env("CONTROLLER_RESTART_THRESHOLD"), Some(5.0));
        assert_eq!(env("CONTROLLER_MIN_POD_AGE_SECS"), Some(12.5));
        assert_eq!(env("CONTROLLER_RATE_RESTARTS"), None);
        assert_eq!(env("CONTROLLER_MISSING"), None);
    }
}
