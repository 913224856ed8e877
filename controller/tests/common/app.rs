//! The real app (`localhost/selfheal-app:dev`) as a test workload, and traffic to it straight
//! at the pod IPs (the node is this machine, so its pod network is reachable from the test).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, ContainerPort, EnvVar, HTTPGetAction, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{APP_IMAGE, crashing_deployment, live_pods, security_context};

/// `replicas` pods of the app labelled `app=<name>`, with `env`, a named `http` port (what
/// [`super::prometheus_scraping`] scrapes) and a 1 s readiness probe on `/ready`.
pub fn app_deployment(name: &str, replicas: i32, env: &[(&str, &str)]) -> Deployment {
    let mut d = crashing_deployment(name, replicas, &[]);
    let spec = d.spec.template.spec.as_mut().unwrap();
    let (_, sc) = security_context();
    spec.containers = vec![Container {
        name: "app".into(),
        image: Some(APP_IMAGE.into()),
        image_pull_policy: Some("Never".into()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            ..ContainerPort::default()
        }]),
        env: Some(
            env.iter()
                .map(|(k, v)| EnvVar {
                    name: (*k).into(),
                    value: Some((*v).into()),
                    ..EnvVar::default()
                })
                .collect(),
        ),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/ready".into()),
                port: IntOrString::Int(8080),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(1),
            failure_threshold: Some(1),
            ..Probe::default()
        }),
        security_context: Some(sc),
        ..Container::default()
    }];
    spec.termination_grace_period_seconds = Some(2);
    d
}

/// `GET /` from background workers until dropped; counts answers by class.
pub struct Traffic {
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// 2xx answers.
    pub ok: Arc<AtomicU64>,
    /// 5xx answers.
    pub errors: Arc<AtomicU64>,
}

impl Drop for Traffic {
    fn drop(&mut self) {
        for w in &self.workers {
            w.abort();
        }
    }
}

fn ready_ips(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect()
}

/// One request; the status code, if an answer came.
async fn get(ip: &str) -> Option<u16> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect((ip, 8080)).await.ok()?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        text.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .ok()
        .flatten()
}

/// `workers` loops sending `GET /` to the Ready pods of `app=<app>` in turn, about 20 a second
/// each; the pod list is refreshed every second.
pub fn traffic(client: &Client, ns: &str, app: &str, workers: usize) -> Traffic {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let handles = (0..workers)
        .map(|_| {
            let (client, ns, app) = (client.clone(), ns.to_owned(), app.to_owned());
            let (ok, errors) = (ok.clone(), errors.clone());
            tokio::spawn(async move {
                let mut n = 0_usize;
                loop {
                    let ips = ready_ips(&live_pods(&client, &ns, &app).await);
                    let until = tokio::time::Instant::now() + Duration::from_secs(1);
                    while tokio::time::Instant::now() < until {
                        if ips.is_empty() {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                        n = n.wrapping_add(1);
                        match get(&ips[n % ips.len()]).await {
                            Some(200..=299) => ok.fetch_add(1, Ordering::Relaxed),
                            Some(500..=599) => errors.fetch_add(1, Ordering::Relaxed),
                            _ => 0,
                        };
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect();
    Traffic {
        workers: handles,
        ok,
        errors,
    }
}
