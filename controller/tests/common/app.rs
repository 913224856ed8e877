//! The real app (`localhost/selfheal-app:dev`) as a test workload, and traffic to it through the
//! API server's pod proxy: the test dials only the API server, never a pod IP (minikube in CI
//! has no route to one).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, ContainerPort, EnvVar, HTTPGetAction, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Client, ResourceExt};

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
    /// 5xx answers of the app (not the API server's own, when it cannot reach a pod).
    pub errors: Arc<AtomicU64>,
}

impl Drop for Traffic {
    fn drop(&mut self) {
        for w in &self.workers {
            w.abort();
        }
    }
}

fn ready_names(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(ResourceExt::name_any)
        .collect()
}

/// One `GET /` to pod `ns/pod` through the API server's pod proxy; the app's status code, if
/// the app answered. `None` also when the API server answered for it (a `Status` body: the pod
/// could not be reached), so that a proxy failure is never counted as an app error.
async fn get(client: &Client, ns: &str, pod: &str) -> Option<u16> {
    let work = async {
        let request = http::Request::get(format!("/api/v1/namespaces/{ns}/pods/{pod}:8080/proxy/"))
            .body(kube::client::Body::empty())
            .ok()?;
        let response = client.send(request).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        let from_api_server = serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|v| v["kind"] == "Status" && v["apiVersion"] == "v1");
        (!from_api_server).then_some(status)
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .ok()
        .flatten()
}

/// `workers` loops sending `GET /` to the Ready pods of `app=<app>` in turn, about 20 a second
/// each, through the API server's pod proxy; the pod list is refreshed every second.
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
                    let pods = ready_names(&live_pods(&client, &ns, &app).await);
                    let until = tokio::time::Instant::now() + Duration::from_secs(1);
                    while tokio::time::Instant::now() < until {
                        if pods.is_empty() {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                        n = n.wrapping_add(1);
                        match get(&client, &ns, &pods[n % pods.len()]).await {
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
