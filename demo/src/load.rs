//! The load generator: `concurrency` workers send `GET`s at an optional total `rate` until a
//! duration, a request count or a stop signal, and record one [`Sample`] per request.
//!
//! Two ways to reach the Service:
//! - [`Target::Url`]: plain HTTP straight to a URL (a NodePort on 127.0.0.1 of the local
//!   cluster's host, a port-forward, `minikube service --url`);
//! - [`Target::ServiceProxy`]: through the API server's service proxy
//!   (`/api/v1/namespaces/NS/services/NAME:PORT/proxy/PATH`), which works wherever `kubectl`
//!   works (minikube included) at the cost of one more hop; a Service without ready endpoints
//!   answers 503 there, which counts as a failure like any other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use crate::stats::{Outcome, Sample};
use crate::{Error, Result};

/// Where the requests go.
#[derive(Clone)]
pub enum Target {
    /// Plain `http://` URL.
    Url(hyper::Uri),
    /// The API server's proxy to a Service port.
    ServiceProxy {
        /// Client of the current kube context.
        client: kube::Client,
        /// Namespace of the Service.
        namespace: String,
        /// Service name.
        service: String,
        /// Port name or number.
        port: String,
        /// Path on the Service, without the leading `/`.
        path: String,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Target {
    /// A plain URL target; only `http://` is supported (the app speaks plain HTTP in-cluster).
    pub fn url(url: &str) -> Result<Self> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| Error::BadUrl(format!("{url}: {e}")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(Error::BadUrl(format!(
                "{url}: only http://HOST[:PORT]/PATH is supported"
            )));
        }
        Ok(Target::Url(uri))
    }

    /// A Service proxy target from `NAMESPACE/NAME[:PORT][/PATH]` (see [`parse_service_spec`]).
    pub fn service_proxy(client: kube::Client, spec: &str) -> Result<Self> {
        let (namespace, service, port, path) = parse_service_spec(spec)?;
        Ok(Target::ServiceProxy {
            client,
            namespace,
            service,
            port,
            path,
        })
    }

    /// One line saying where requests go.
    pub fn describe(&self) -> String {
        match self {
            Target::Url(u) => u.to_string(),
            Target::ServiceProxy {
                namespace,
                service,
                port,
                path,
                ..
            } => proxy_path(namespace, service, port, path) + " (API server service proxy)",
        }
    }
}

/// Split `NAMESPACE/NAME[:PORT][/PATH]` into its parts; the port defaults to `http`.
pub fn parse_service_spec(spec: &str) -> Result<(String, String, String, String)> {
    let (namespace, rest) = spec.split_once('/').unwrap_or((spec, ""));
    let (name_port, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (service, port) = name_port.split_once(':').unwrap_or((name_port, "http"));
    if namespace.is_empty() || service.is_empty() || port.is_empty() {
        return Err(Error::BadUrl(format!(
            "{spec}: expected NAMESPACE/SERVICE[:PORT][/PATH]"
        )));
    }
    Ok((
        namespace.to_owned(),
        service.to_owned(),
        port.to_owned(),
        path.to_owned(),
    ))
}

/// The API server path of a Service proxy request.
pub fn proxy_path(namespace: &str, service: &str, port: &str, path: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/{path}")
}

/// When the load stops (besides the stop signal, which always works).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// After this long.
    Duration(Duration),
    /// After this many requests.
    Requests(u64),
    /// Only on the stop signal.
    UntilStopped,
}

/// How hard to push.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadConfig {
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Total requests per second across workers; `None` = as fast as answers come.
    pub rate: Option<f64>,
    /// When to stop.
    pub limit: Limit,
    /// Per-request deadline (connect + answer + body).
    pub timeout: Duration,
    /// A new TCP connection per request instead of keep-alive: kube-proxy balances
    /// connections, so only fresh ones spread over pods that became Ready later (a canary, new
    /// HPA replicas).
    pub fresh_connections: bool,
}

/// Samples shared between the workers and whoever watches the run (the demo runner reads them
/// while the load is still going, for progress and per-layer windows).
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Recorder {
    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn push(&self, sample: Sample) {
        match self.samples.lock() {
            Ok(mut s) => s.push(sample),
            Err(poisoned) => poisoned.into_inner().push(sample),
        }
    }
}

/// A finished run: when it started (wall clock, to line up with API timestamps), how long it
/// lasted, and every request.
#[derive(Debug, Clone)]
pub struct LoadRun {
    /// Wall-clock start.
    pub started: Timestamp,
    /// Wall time.
    pub duration: Duration,
    /// One per request, in completion order.
    pub samples: Vec<Sample>,
}

enum Sender {
    Http(HttpClient<HttpConnector, Empty<Bytes>>),
    Kube(kube::Client),
}

impl Sender {
    fn for_target(target: &Target, timeout: Duration, fresh_connections: bool) -> Self {
        match target {
            Target::Url(_) => {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(timeout));
                connector.set_nodelay(true);
                let mut builder = HttpClient::builder(TokioExecutor::new());
                if fresh_connections {
                    builder.pool_max_idle_per_host(0);
                }
                Sender::Http(builder.build(connector))
            }
            Target::ServiceProxy { client, .. } => Sender::Kube(client.clone()),
        }
    }

    async fn once(&self, target: &Target) -> Outcome {
        match (self, target) {
            (Sender::Http(client), Target::Url(uri)) => match client.get(uri.clone()).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.into_body().collect().await {
                        Ok(_) => classify_status(status),
                        Err(_) => Outcome::Other,
                    }
                }
                Err(e) if e.is_connect() => Outcome::Connect,
                Err(_) => Outcome::Other,
            },
            (
                Sender::Kube(client),
                Target::ServiceProxy {
                    namespace,
                    service,
                    port,
                    path,
                    ..
                },
            ) => {
                let request = match http::Request::get(proxy_path(namespace, service, port, path))
                    .body(kube::client::Body::empty())
                {
                    Ok(r) => r,
                    Err(_) => return Outcome::Other,
                };
                match client.send(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match response.into_body().collect().await {
                            Ok(_) => classify_status(status),
                            Err(_) => Outcome::Other,
                        }
                    }
                    // The API server itself was unreachable.
                    Err(kube::Error::HyperError(e)) if e.is_closed() => Outcome::Connect,
                    Err(kube::Error::Service(_)) => Outcome::Connect,
                    Err(_) => Outcome::Other,
                }
            }
            _ => Outcome::Other,
        }
    }
}

/// 2xx is served, anything else a failure with its code.
pub fn classify_status(status: u16) -> Outcome {
    if (200..300).contains(&status) {
        Outcome::Ok { status }
    } else {
        Outcome::Status { status }
    }
}

/// Run the load until its limit or until `stop` turns true; samples go to `recorder` as they
/// complete (so they can be read live) and are returned at the end.
pub async fn run(
    target: Target,
    config: LoadConfig,
    recorder: Recorder,
    stop: watch::Receiver<bool>,
) -> LoadRun {
    let started = Timestamp::now();
    let t0 = Instant::now();
    let deadline = match config.limit {
        Limit::Duration(d) => Some(t0 + d),
        _ => None,
    };
    let budget = match config.limit {
        Limit::Requests(n) => Some(n),
        _ => None,
    };
    let sent = Arc::new(AtomicU64::new(0));
    // One shared ticker paces the total rate; workers take turns on it.
    let ticker = config.rate.filter(|r| *r > 0.0).map(|rate| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Arc::new(tokio::sync::Mutex::new(i))
    });
    let sender = Arc::new(Sender::for_target(
        &target,
        config.timeout,
        config.fresh_connections,
    ));
    let target = Arc::new(target);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        let (sender, target, recorder, sent, ticker) = (
            sender.clone(),
            target.clone(),
            recorder.clone(),
            sent.clone(),
            ticker.clone(),
        );
        let mut stop = stop.clone();
        workers.spawn(async move {
            loop {
                if *stop.borrow() || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if let Some(ticker) = &ticker {
                    let wait = async { ticker.lock().await.tick().await };
                    tokio::select! {
                        _ = wait => {}
                        _ = stop.changed() => break,
                        _ = sleep_until_opt(deadline) => break,
                    }
                }
                if budget.is_some_and(|n| sent.fetch_add(1, Ordering::SeqCst) >= n) {
                    break;
                }
                let begin = Instant::now();
                let outcome = tokio::time::timeout(config.timeout, sender.once(&target))
                    .await
                    .unwrap_or(Outcome::Timeout);
                recorder.push(Sample {
                    offset_ms: begin.duration_since(t0).as_millis() as u64,
                    latency_us: begin.elapsed().as_micros() as u64,
                    outcome,
                });
            }
        });
    }
    while workers.join_next().await.is_some() {}
    LoadRun {
        started,
        duration: t0.elapsed(),
        samples: recorder.snapshot(),
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summarize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A tiny HTTP/1.1 server on a free loopback port answering every request with `status`.
    async fn server(status: u16) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {
                                let reply =
                                    format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok");
                                if sock.write_all(reply.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (format!("http://{addr}/"), handle)
    }

    fn config(limit: Limit) -> LoadConfig {
        LoadConfig {
            concurrency: 2,
            rate: None,
            limit,
            timeout: Duration::from_secs(2),
            fresh_connections: false,
        }
    }

    /// A run against `url` that nothing stops early: it ends by its own limit.
    async fn run_to_end(url: &str, cfg: LoadConfig) -> LoadRun {
        let (_tx, rx) = watch::channel(false);
        run(Target::url(url).expect("url"), cfg, Recorder::default(), rx).await
    }
    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(Target::url("http://10.96.0.1:80/").is_ok());
        assert!(matches!(
            Target::url("https://example.test/"),
            Err(Error::BadUrl(_))
        ));
        assert!(Target::url("not a url").is_err());
        assert!(Target::url("/just/a/path").is_err());
    }

    #[test]
    fn service_specs_default_the_port_and_keep_the_path() {
        let parts = |s: &str| parse_service_spec(s).expect(s);
        assert_eq!(
            parts("demo/web"),
            ("demo".into(), "web".into(), "http".into(), String::new())
        );
        assert_eq!(
            parts("demo/web:8080/ready"),
            ("demo".into(), "web".into(), "8080".into(), "ready".into())
        );
        assert!(parse_service_spec("web").is_err());
        assert!(parse_service_spec("demo/").is_err());
        assert!(parse_service_spec("/web").is_err());
        assert!(parse_service_spec("demo/web:").is_err());
    }

    #[test]
    fn proxy_path_names_service_port_and_path() {
        assert_eq!(
            proxy_path("demo", "selfheal-app", "http", ""),
            "/api/v1/namespaces/demo/services/selfheal-app:http/proxy/"
        );
    }

    #[test]
    fn status_classes_split_at_2xx() {
        assert!(classify_status(200).is_ok());
        assert!(classify_status(204).is_ok());
        assert!(!classify_status(301).is_ok());
        assert_eq!(classify_status(503), Outcome::Status { status: 503 });
    }

    #[tokio::test]
    async fn a_request_budget_sends_exactly_that_many() {
        let (url, srv) = server(200).await;
        let run = run_to_end(&url, config(Limit::Requests(25))).await;
        srv.abort();
        let s = summarize(&run.samples, run.duration.as_secs_f64());
        assert_eq!((s.total, s.ok), (25, 25));
    }

    #[tokio::test]
    async fn fresh_connections_open_one_connection_per_request() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let srv = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let reply = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        for (fresh, expect_many) in [(true, true), (false, false)] {
            accepted.store(0, Ordering::SeqCst);
            let mut cfg = config(Limit::Requests(10));
            cfg.concurrency = 1;
            cfg.fresh_connections = fresh;
            let run = run_to_end(&format!("http://{addr}/"), cfg).await;
            assert_eq!(summarize(&run.samples, 1.0).ok, 10);
            let conns = accepted.load(Ordering::SeqCst);
            if expect_many {
                assert_eq!(conns, 10, "one connection per request");
            } else {
                assert_eq!(conns, 1, "keep-alive reuses one connection");
            }
        }
        srv.abort();
    }

    #[tokio::test]
    async fn error_statuses_are_failures_with_their_code() {
        let (url, srv) = server(503).await;
        let run = run_to_end(&url, config(Limit::Requests(5))).await;
        srv.abort();
        let s = summarize(&run.samples, 1.0);
        assert_eq!(s.failures.get("status_503"), Some(&5));
        assert_eq!(s.success_ratio, 0.0);
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_failure() {
        // Bind and drop: the port is free and nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let run = run_to_end(
            &format!("http://127.0.0.1:{port}/"),
            config(Limit::Requests(3)),
        )
        .await;
        let s = summarize(&run.samples, 1.0);
        assert_eq!(s.failures.get("connect"), Some(&3), "{s:?}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Accepts and never answers.
        let srv = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let mut cfg = config(Limit::Requests(2));
        cfg.timeout = Duration::from_millis(200);
        let run = run_to_end(&format!("http://{addr}/"), cfg).await;
        srv.abort();
        let s = summarize(&run.samples, 1.0);
        assert_eq!(s.failures.get("timeout"), Some(&2), "{s:?}");
    }

    #[tokio::test]
    async fn the_rate_caps_requests_and_the_stop_signal_ends_the_run() {
        let (url, srv) = server(200).await;
        let (tx, rx) = watch::channel(false);
        let recorder = Recorder::default();
        let mut cfg = config(Limit::UntilStopped);
        cfg.rate = Some(20.0);
        let task = tokio::spawn(run(
            Target::url(&url).expect("url"),
            cfg,
            recorder.clone(),
            rx,
        ));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let live = recorder.snapshot().len();
        tx.send(true).expect("stop");
        let run = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops promptly")
            .expect("joins");
        srv.abort();
        // 20/s for ~1 s: the first tick is immediate, so about 21; never hundreds.
        assert!((10..=30).contains(&live), "live count {live}");
        assert!(run.samples.len() <= 32, "{}", run.samples.len());
    }

    #[tokio::test]
    async fn a_duration_limit_ends_the_run() {
        let (url, srv) = server(200).await;
        let mut cfg = config(Limit::Duration(Duration::from_millis(300)));
        cfg.rate = Some(50.0);
        let run = tokio::time::timeout(Duration::from_secs(5), run_to_end(&url, cfg))
            .await
            .expect("ends by itself");
        srv.abort();
        assert!(run.duration < Duration::from_secs(2));
        assert!(!run.samples.is_empty());
    }
}
