//! In-process HTTP tests: `router(state)` driven with `tower::ServiceExt::oneshot`, no socket.
//! Every route: status, body, and the metric it bumps.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use selfheal_app::config::{Config, FaultProfile, Track};
use selfheal_app::{AppState, router};
use serde_json::Value;
use tower::ServiceExt;

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text))
    }
}

fn state_with(tweak: impl FnOnce(&mut Config)) -> AppState {
    let mut cfg = Config::for_tests();
    tweak(&mut cfg);
    AppState::new(&cfg).unwrap()
}

fn chaos_state() -> AppState {
    state_with(|c| c.enable_chaos = true)
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get(app: &Router, uri: &str) -> Answer {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post(app: &Router, uri: &str) -> Answer {
    send(app, Request::post(uri).body(Body::empty()).unwrap()).await
}

/// The value of one sample line of `/metrics`, e.g. `http_requests_total{...}`.
async fn metric(app: &Router, series: &str) -> Option<f64> {
    let text = get(app, "/metrics").await.text;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
}

// ---------- GET / ----------

#[tokio::test]
async fn root_reports_service_version_pod_and_track() {
    let state = state_with(|c| {
        c.track = Track::Canary;
        c.message = "hi".into();
        c.pod_namespace = Some("demo".into());
    });
    let app = router(state);
    let a = get(&app, "/").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers[header::CONTENT_TYPE], "application/json");
    let body = a.json();
    assert_eq!(body["service"], "selfheal-app");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["pod"], "test-pod");
    assert_eq!(body["namespace"], "demo");
    assert_eq!(body["track"], "canary");
    assert_eq!(body["message"], "hi");
    assert_eq!(
        metric(
            &app,
            r#"http_requests_total{method="GET",route="/",status="200"}"#
        )
        .await,
        Some(1.0)
    );
}

// ---------- /health ----------

#[tokio::test]
async fn health_is_ok_until_made_unhealthy() {
    let app = router(chaos_state());
    let a = get(&app, "/health").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), serde_json::json!({ "status": "ok" }));
    assert_eq!(metric(&app, "selfheal_app_healthy").await, Some(1.0));

    assert_eq!(
        post(&app, "/crash?mode=unhealthy").await.status,
        StatusCode::OK
    );
    let a = get(&app, "/health").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["status"], "unhealthy");
    assert_eq!(metric(&app, "selfheal_app_healthy").await, Some(0.0));
    assert_eq!(
        metric(
            &app,
            r#"selfheal_app_faults_injected_total{kind="unhealthy"}"#
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(&app, r#"selfheal_app_fault_active{kind="unhealthy"}"#).await,
        Some(1.0)
    );
    // Liveness never depends on readiness: unready does not make it fail.
    let app = router(chaos_state());
    post(&app, "/crash?mode=unready").await;
    assert_eq!(get(&app, "/health").await.status, StatusCode::OK);
}

// ---------- /ready ----------

#[tokio::test]
async fn ready_is_ok_with_no_warm_up() {
    let app = router(chaos_state());
    let a = get(&app, "/ready").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["status"], "ready");
    assert_eq!(metric(&app, "selfheal_app_ready").await, Some(1.0));
}

#[tokio::test]
async fn ready_is_503_during_warm_up() {
    let app = router(state_with(|c| c.warmup_secs = 300));
    let a = get(&app, "/ready").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        a.json()["reason"]
            .as_str()
            .unwrap()
            .starts_with("warming up"),
        "{}",
        a.text
    );
    assert_eq!(metric(&app, "selfheal_app_ready").await, Some(0.0));
}

#[tokio::test]
async fn ready_is_503_while_draining() {
    let state = chaos_state();
    let app = router(state.clone());
    state.begin_drain();
    let a = get(&app, "/ready").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        a.json()["reason"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{}",
        a.text
    );
    // Still serving traffic while draining.
    assert_eq!(get(&app, "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn draining_asks_kept_alive_clients_to_reconnect() {
    let state = chaos_state();
    let app = router(state.clone());
    assert_eq!(get(&app, "/").await.headers.get("connection"), None);
    state.begin_drain();
    let a = get(&app, "/").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers.get("connection").unwrap(), "close");
}

#[tokio::test]
async fn unready_fault_fails_readiness_until_reset() {
    let app = router(chaos_state());
    let a = post(&app, "/crash?mode=unready&seconds=120").await;
    assert_eq!(a.status, StatusCode::OK);
    let faults = &a.json()["faults"];
    assert_eq!(faults["unready"]["from_profile"], false);
    assert!(faults["unready"]["remaining_secs"].as_u64().unwrap() <= 120);

    let a = get(&app, "/ready").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        a.json()["reason"]
            .as_str()
            .unwrap()
            .contains("fault injected"),
        "{}",
        a.text
    );
    assert_eq!(
        metric(&app, r#"selfheal_app_fault_active{kind="unready"}"#).await,
        Some(1.0)
    );

    assert_eq!(post(&app, "/crash?mode=reset").await.status, StatusCode::OK);
    assert_eq!(get(&app, "/ready").await.status, StatusCode::OK);
    assert_eq!(
        metric(&app, r#"selfheal_app_fault_active{kind="unready"}"#).await,
        Some(0.0)
    );
}

// ---------- bad release profiles ----------

#[tokio::test]
async fn unready_profile_fails_readiness_from_start_even_without_chaos() {
    let app = router(state_with(|c| c.fault_profile = FaultProfile::Unready));
    let a = get(&app, "/ready").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        a.json()["reason"].as_str().unwrap().contains("bad release"),
        "{}",
        a.text
    );
    let status = get(&app, "/crash").await.json();
    assert_eq!(status["faults"]["unready"]["from_profile"], true);
}

#[tokio::test]
async fn errors_profile_serves_errors_from_start() {
    let app = router(state_with(|c| {
        c.fault_profile = FaultProfile::Errors;
        c.fault_error_percent = 100;
    }));
    let a = get(&app, "/").await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(a.json()["kind"], "injected_error");
    assert_eq!(get(&app, "/ready").await.status, StatusCode::OK);
    assert_eq!(
        metric(
            &app,
            r#"http_requests_total{method="GET",route="/",status="500"}"#
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn unhealthy_profile_fails_liveness_from_start() {
    let app = router(state_with(|c| c.fault_profile = FaultProfile::Unhealthy));
    assert_eq!(
        get(&app, "/health").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn leak_profile_leaks_from_start_even_without_chaos() {
    let app = router(state_with(|c| {
        c.fault_profile = FaultProfile::Leak;
        c.fault_leak_mib_per_sec = 8;
        c.fault_leak_cap_mib = 1;
    }));
    assert!(
        gauge_reaches(&app, "selfheal_app_leaked_bytes", MIB).await,
        "profile leak never reached its 1 MiB cap"
    );
    let leak = &get(&app, "/crash").await.json()["faults"]["leak"];
    assert_eq!(leak["value"], 1);
    assert_eq!(leak["from_profile"], true);
    assert_eq!(get(&app, "/ready").await.status, StatusCode::OK);
}

// ---------- /metrics ----------

#[tokio::test]
async fn metrics_is_prometheus_text_with_every_family() {
    let app = router(state_with(|c| c.track = Track::Canary));
    get(&app, "/").await;
    let a = get(&app, "/metrics").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        a.headers
    );
    for family in [
        "http_requests_total",
        "http_request_duration_seconds",
        "http_requests_in_flight",
        "selfheal_app_info",
        "selfheal_app_ready",
        "selfheal_app_healthy",
        "selfheal_app_faults_injected_total",
        "selfheal_app_fault_active",
        "selfheal_app_leaked_bytes",
        "selfheal_app_pool_connections_in_use",
        "selfheal_app_pool_connections_max",
        "selfheal_app_pool_exhausted_total",
        "selfheal_app_requests_shed_total",
        "selfheal_app_header_read_timeouts_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(
            a.text.contains(&format!("# TYPE {family} ")),
            "missing {family}"
        );
    }
    assert!(a.text.contains(&format!(
        r#"selfheal_app_info{{track="canary",version="{}"}} 1"#,
        env!("CARGO_PKG_VERSION")
    )));
    assert!(
        a.text
            .contains(r#"http_request_duration_seconds_count{method="GET",route="/"} 1"#)
    );
    // The scrape itself is in flight while encoding.
    assert!(a.text.contains("http_requests_in_flight 1"), "{}", a.text);
}

#[tokio::test]
async fn unknown_paths_share_one_route_label() {
    let app = router(chaos_state());
    get(&app, "/a/b/c").await;
    get(&app, "/x?y=1").await;
    assert_eq!(
        metric(
            &app,
            r#"http_requests_total{method="GET",route="unmatched",status="404"}"#
        )
        .await,
        Some(2.0)
    );
    let text = get(&app, "/metrics").await.text;
    assert!(
        !text.contains("/a/b/c"),
        "raw paths must never become labels"
    );
}

#[tokio::test]
async fn exotic_methods_share_one_method_label() {
    let app = router(chaos_state());
    let req = Request::builder()
        .method(Method::from_bytes(b"BREW").unwrap())
        .uri("/")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        metric(
            &app,
            r#"http_requests_total{method="OTHER",route="/",status="405"}"#
        )
        .await,
        Some(1.0)
    );
}

// ---------- /crash ----------

#[tokio::test]
async fn crash_is_403_with_a_hint_when_chaos_is_disabled() {
    let state = state_with(|_| {});
    let app = router(state.clone());
    let a = post(&app, "/crash?mode=exit").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let body = a.json();
    assert_eq!(body["kind"], "chaos_disabled");
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("CHAOS_ENABLED=true")
    );
    assert_eq!(*state.exit_requested().borrow(), None, "no exit requested");
    assert_eq!(
        metric(&app, r#"selfheal_app_faults_injected_total{kind="exit"}"#).await,
        Some(0.0)
    );
    // Status stays readable.
    let status = get(&app, "/crash").await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.json()["chaos_enabled"], false);
}

#[tokio::test]
async fn crash_needs_the_bearer_token_when_one_is_configured() {
    let app = router(state_with(|c| {
        c.enable_chaos = true;
        c.chaos_token = Some("s3cret".into());
    }));
    let a = post(&app, "/crash?mode=unhealthy").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.headers[header::WWW_AUTHENTICATE], "Bearer");
    let wrong = Request::post("/crash?mode=unhealthy")
        .header(header::AUTHORIZATION, "Bearer guess")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, wrong).await.status, StatusCode::UNAUTHORIZED);
    let right = Request::post("/crash?mode=unhealthy")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, right).await.status, StatusCode::OK);
    assert_eq!(get(&app, "/crash").await.json()["token_required"], true);
}

#[tokio::test]
async fn exit_mode_is_the_default_answers_202_and_requests_exit() {
    let state = chaos_state();
    let app = router(state.clone());
    let a = post(&app, "/crash").await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(a.json()["exit_code"], 3);
    assert_eq!(*state.exit_requested().borrow(), Some(3));
    assert_eq!(
        metric(&app, r#"selfheal_app_faults_injected_total{kind="exit"}"#).await,
        Some(1.0)
    );
}

#[tokio::test]
async fn cpu_mode_starts_burners_and_reset_stops_them() {
    let app = router(chaos_state());
    let a = post(&app, "/crash?mode=cpu&seconds=30&threads=1").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["faults"]["cpu"]["value"], 1);
    assert_eq!(
        metric(&app, r#"selfheal_app_fault_active{kind="cpu"}"#).await,
        Some(1.0)
    );
    assert_eq!(
        metric(&app, r#"selfheal_app_faults_injected_total{kind="cpu"}"#).await,
        Some(1.0)
    );
    post(&app, "/crash?mode=reset").await;
    assert!(
        get(&app, "/crash").await.json()["faults"]
            .get("cpu")
            .is_none()
    );
}

const MIB: f64 = 1024.0 * 1024.0;

/// Polls a `/metrics` series for up to 5 s (real time) until it equals `want`.
async fn gauge_reaches(app: &Router, series: &str, want: f64) -> bool {
    for _ in 0..500 {
        if metric(app, series).await == Some(want) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn leak_mode_grows_the_leaked_bytes_gauge_to_the_cap_and_reset_frees_it() {
    let app = router(chaos_state());
    let a = post(&app, "/crash?mode=leak&mib_per_sec=8&cap_mib=2&seconds=60").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json()["faults"]["leak"]["remaining_secs"], 60);
    assert_eq!(
        metric(&app, r#"selfheal_app_fault_active{kind="leak"}"#).await,
        Some(1.0)
    );
    assert_eq!(
        metric(&app, r#"selfheal_app_faults_injected_total{kind="leak"}"#).await,
        Some(1.0)
    );
    assert!(
        gauge_reaches(&app, "selfheal_app_leaked_bytes", 2.0 * MIB).await,
        "leaked bytes: {:?}",
        metric(&app, "selfheal_app_leaked_bytes").await
    );
    let leak = &get(&app, "/crash").await.json()["faults"]["leak"];
    assert_eq!(leak["value"], 2, "MiB leaked so far");
    assert_eq!(leak["from_profile"], false);

    assert_eq!(post(&app, "/crash?mode=reset").await.status, StatusCode::OK);
    assert!(
        get(&app, "/crash").await.json()["faults"]
            .get("leak")
            .is_none()
    );
    assert!(
        gauge_reaches(&app, "selfheal_app_leaked_bytes", 0.0).await,
        "reset did not free the leak"
    );
    assert_eq!(
        metric(&app, r#"selfheal_app_fault_active{kind="leak"}"#).await,
        Some(0.0)
    );
}

// ---------- the connection pool and pool-exhaust ----------

/// Chaos on, a pool of `size` connections and a 50 ms wait, so refusals are quick.
fn pool_state(size: u32) -> AppState {
    state_with(|c| {
        c.enable_chaos = true;
        c.pool_size = size;
        c.pool_wait_ms = 50;
    })
}

#[tokio::test]
async fn root_borrows_a_connection_and_gives_it_back() {
    let app = router(pool_state(4));
    assert_eq!(get(&app, "/").await.status, StatusCode::OK);
    assert_eq!(
        metric(&app, "selfheal_app_pool_connections_in_use").await,
        Some(0.0)
    );
    assert_eq!(
        metric(&app, "selfheal_app_pool_connections_max").await,
        Some(4.0)
    );
    assert_eq!(
        metric(&app, "selfheal_app_pool_exhausted_total").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn pool_exhaust_mode_refuses_root_and_fails_readiness_until_reset() {
    let app = router(pool_state(4));
    let a = post(&app, "/crash?mode=pool-exhaust&seconds=120").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let status = &a.json()["faults"]["pool_exhaust"];
    assert_eq!(status["value"], 4, "{}", a.text);
    assert_eq!(status["from_profile"], false);
    assert!(status["remaining_secs"].as_u64().unwrap() <= 120);
    assert_eq!(
        metric(&app, "selfheal_app_pool_connections_in_use").await,
        Some(4.0)
    );
    assert_eq!(
        metric(&app, "selfheal_app_pool_connections_max").await,
        Some(4.0)
    );
    assert_eq!(
        metric(&app, r#"selfheal_app_fault_active{kind="pool-exhaust"}"#).await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &app,
            r#"selfheal_app_faults_injected_total{kind="pool-exhaust"}"#
        )
        .await,
        Some(1.0)
    );

    let started = std::time::Instant::now();
    let a = get(&app, "/").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(50),
        "refused before the pool wait: {:?}",
        started.elapsed()
    );
    let body = a.json();
    assert_eq!(body["kind"], "pool_exhausted");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("connection pool exhausted"),
        "{}",
        a.text
    );
    assert_eq!(get(&app, "/").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        metric(&app, "selfheal_app_pool_exhausted_total").await,
        Some(2.0)
    );
    assert_eq!(
        metric(
            &app,
            r#"http_requests_total{method="GET",route="/",status="503"}"#
        )
        .await,
        Some(2.0)
    );

    let a = get(&app, "/ready").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    let reason = a.json()["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("pool-exhaust"), "{reason}");
    assert!(reason.contains("4/4 connections held"), "{reason}");
    assert_eq!(metric(&app, "selfheal_app_ready").await, Some(0.0));
    // Saturated is not dead: liveness stays green, so the pod leaves the Service, not the node.
    assert_eq!(get(&app, "/health").await.status, StatusCode::OK);

    assert_eq!(post(&app, "/crash?mode=reset").await.status, StatusCode::OK);
    assert_eq!(get(&app, "/").await.status, StatusCode::OK);
    assert_eq!(get(&app, "/ready").await.status, StatusCode::OK);
    assert_eq!(
        metric(&app, "selfheal_app_pool_connections_in_use").await,
        Some(0.0)
    );
    assert_eq!(
        metric(&app, r#"selfheal_app_fault_active{kind="pool-exhaust"}"#).await,
        Some(0.0)
    );
    assert_eq!(
        metric(&app, "selfheal_app_pool_exhausted_total").await,
        Some(2.0),
        "only refused requests are counted"
    );
    assert!(
        get(&app, "/crash").await.json()["faults"]
            .get("pool_exhaust")
            .is_none()
    );
}

#[tokio::test]
async fn pool_exhaust_with_held_leaves_the_rest_serving_and_ready() {
    let app = router(pool_state(4));
    let a = post(&app, "/crash?mode=pool-exhaust&held=3").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json()["faults"]["pool_exhaust"]["value"], 3);
    assert_eq!(get(&app, "/").await.status, StatusCode::OK);
    assert_eq!(get(&app, "/ready").await.status, StatusCode::OK);
    assert_eq!(
        metric(&app, "selfheal_app_pool_connections_in_use").await,
        Some(3.0)
    );
    assert_eq!(
        metric(&app, "selfheal_app_pool_exhausted_total").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn request_waiting_for_a_connection_is_served_when_the_fault_is_reset() {
    let app = router(state_with(|c| {
        c.enable_chaos = true;
        c.pool_size = 2;
        c.pool_wait_ms = 5_000;
    }));
    post(&app, "/crash?mode=pool-exhaust").await;
    let waiting = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/").await.status }
    });
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    assert!(!waiting.is_finished(), "answered without a connection");
    post(&app, "/crash?mode=reset").await;
    let status = tokio::time::timeout(std::time::Duration::from_secs(2), waiting)
        .await
        .expect("still waiting after the reset")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn slow_requests_exhaust_a_small_pool_without_any_pool_fault() {
    let app = router(pool_state(1));
    post(&app, "/crash?mode=latency&ms=300").await;
    let slow = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/").await.status }
    });
    // Let the slow request take the only connection first.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let a = get(&app, "/").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text);
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    assert_eq!(
        metric(&app, "selfheal_app_pool_exhausted_total").await,
        Some(1.0)
    );
    // A pool drained by load is not the fault: readiness stays up.
    assert_eq!(get(&app, "/ready").await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn requests_over_the_limit_are_shed_but_probes_scrapes_and_crash_are_not() {
    let app = router(state_with(|c| {
        c.enable_chaos = true;
        c.max_concurrent_requests = 1;
    }));
    post(&app, "/crash?mode=latency&ms=300").await;
    let slow = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/").await.status }
    });
    // Let the slow request take the only slot first.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let a = get(&app, "/").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text);
    assert_eq!(a.headers[header::RETRY_AFTER], "1");
    assert_eq!(a.json()["kind"], "overloaded");
    let a = get(&app, "/nope").await;
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "unknown paths count too"
    );
    // Exempt: the kubelet's probes, the scrape and the demo's controls.
    for path in ["/health", "/ready", "/metrics", "/crash"] {
        assert_eq!(get(&app, path).await.status, StatusCode::OK, "{path}");
    }
    assert_eq!(
        metric(&app, "selfheal_app_requests_shed_total").await,
        Some(2.0)
    );
    assert_eq!(
        metric(
            &app,
            r#"http_requests_total{method="GET",route="/",status="503"}"#
        )
        .await,
        Some(1.0)
    );
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    // The slot is given back with the answer.
    assert_eq!(get(&app, "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn pool_exhaust_profile_refuses_root_and_readiness_from_start_even_without_chaos() {
    let app = router(state_with(|c| {
        c.fault_profile = FaultProfile::PoolExhaust;
        c.pool_size = 3;
        c.pool_wait_ms = 50;
    }));
    let a = get(&app, "/").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text);
    assert_eq!(a.json()["kind"], "pool_exhausted");
    let a = get(&app, "/ready").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        a.json()["reason"].as_str().unwrap().contains("bad release"),
        "{}",
        a.text
    );
    let status = &get(&app, "/crash").await.json()["faults"]["pool_exhaust"];
    assert_eq!(status["value"], 3);
    assert_eq!(status["from_profile"], true);
    assert_eq!(
        metric(&app, "selfheal_app_pool_connections_in_use").await,
        Some(3.0)
    );
    assert_eq!(
        metric(&app, "selfheal_app_pool_exhausted_total").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn errors_mode_fails_exactly_the_requested_share_of_root() {
    let app = router(chaos_state());
    let a = post(&app, "/crash?mode=errors&percent=25&seconds=60").await;
    assert_eq!(a.status, StatusCode::OK);
    let mut failed = 0;
    for _ in 0..100 {
        match get(&app, "/").await.status {
            StatusCode::OK => {}
            StatusCode::INTERNAL_SERVER_ERROR => failed += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(failed, 25);
    // Probes are never hit by the errors fault.
    assert_eq!(get(&app, "/health").await.status, StatusCode::OK);
    assert_eq!(get(&app, "/ready").await.status, StatusCode::OK);
    assert_eq!(
        metric(
            &app,
            r#"http_requests_total{method="GET",route="/",status="500"}"#
        )
        .await,
        Some(25.0)
    );
}

#[tokio::test(start_paused = true)]
async fn latency_mode_delays_root() {
    let app = router(chaos_state());
    let a = post(&app, "/crash?mode=latency&ms=400").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["faults"]["latency"]["value"], 400);
    let before = tokio::time::Instant::now();
    assert_eq!(get(&app, "/").await.status, StatusCode::OK);
    assert!(before.elapsed() >= std::time::Duration::from_millis(400));
    // The 0.5 s bucket has it, the 0.25 s one does not.
    assert_eq!(
        metric(
            &app,
            r#"http_request_duration_seconds_bucket{method="GET",route="/",le="0.25"}"#
        )
        .await,
        Some(0.0)
    );
}

#[tokio::test]
async fn json_body_is_accepted_instead_of_query() {
    let app = router(chaos_state());
    let req = Request::post("/crash")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"mode":"latency","ms":300,"seconds":"10"}"#))
        .unwrap();
    let a = send(&app, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json()["faults"]["latency"]["value"], 300);
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_field() {
    let app = router(chaos_state());
    for (uri, body, field) in [
        ("/crash?mode=explode", "", "mode"),
        ("/crash?mode=errors&percent=150", "", "percent"),
        ("/crash?mode=cpu&threads=lots", "", "threads"),
        ("/crash?mode=unready&seconds=0", "", "seconds"),
        ("/crash?mode=latency&delay=5", "", "delay"),
        ("/crash?mode=leak&mib_per_sec=65", "", "mib_per_sec"),
        ("/crash?mode=leak&cap_mib=4097", "", "cap_mib"),
        ("/crash?mode=pool-exhaust&held=11", "", "held"),
        ("/crash?mode=pool-exhaust&held=0", "", "held"),
        ("/crash", "{not json", "body"),
        ("/crash", r#"{"mode":["cpu"]}"#, "mode"),
    ] {
        let req = Request::post(uri).body(Body::from(body)).unwrap();
        let a = send(&app, req).await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{uri} {body}: {}",
            a.text
        );
        assert_eq!(a.json()["field"], field, "{uri} {body}");
    }
    assert!(
        get(&app, "/crash").await.json()["faults"]
            .get("errors")
            .is_none()
    );
}

#[tokio::test]
async fn reset_clears_every_fault() {
    let app = router(chaos_state());
    for q in [
        "unhealthy",
        "unready",
        "errors&percent=100",
        "latency&ms=1",
        "cpu&seconds=30",
        "leak&mib_per_sec=1&cap_mib=1",
        "pool-exhaust",
    ] {
        assert_eq!(
            post(&app, &format!("/crash?mode={q}")).await.status,
            StatusCode::OK
        );
    }
    let a = post(&app, "/crash?mode=reset").await;
    assert_eq!(
        a.json()["faults"],
        serde_json::json!({ "unhealthy": false })
    );
    assert_eq!(get(&app, "/health").await.status, StatusCode::OK);
    assert_eq!(get(&app, "/ready").await.status, StatusCode::OK);
    assert_eq!(get(&app, "/").await.status, StatusCode::OK);
    assert_eq!(
        metric(&app, r#"selfheal_app_faults_injected_total{kind="reset"}"#).await,
        Some(1.0)
    );
    assert_eq!(
        metric(&app, "selfheal_app_pool_connections_in_use").await,
        Some(0.0)
    );
}

// ---------- bad input ----------

#[tokio::test]
async fn unknown_route_is_404_json() {
    let app = router(chaos_state());
    let a = get(&app, "/does-not-exist").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["path"], "/does-not-exist");
}

#[tokio::test]
async fn wrong_method_is_405_json_with_allow() {
    let app = router(chaos_state());
    let a = send(
        &app,
        Request::delete("/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.json()["error"], "method not allowed");
    assert!(a.headers[header::ALLOW].to_str().unwrap().contains("GET"));
    let a = send(&app, Request::put("/crash").body(Body::empty()).unwrap()).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn oversized_body_is_413_json() {
    let app = router(state_with(|c| {
        c.enable_chaos = true;
        c.body_limit_bytes = 32;
    }));
    let big = format!(r#"{{"mode":"reset","pad":"{}"}}"#, "x".repeat(100));
    let req = Request::post("/crash")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big))
        .unwrap();
    let a = send(&app, req).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.json()["error"], "payload too large");
    // Without a content-length the limit still holds (streamed body).
    let big = "y".repeat(100);
    let a = send(&app, Request::post("/crash").body(Body::from(big)).unwrap()).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text);
}

#[tokio::test(start_paused = true)]
async fn slow_request_is_408_json() {
    let app = router(state_with(|c| {
        c.enable_chaos = true;
        c.request_timeout_ms = 100;
    }));
    post(&app, "/crash?mode=latency&ms=5000").await;
    let a = get(&app, "/").await;
    assert_eq!(a.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(a.json()["error"], "request timeout");
    assert_eq!(
        metric(
            &app,
            r#"http_requests_total{method="GET",route="/",status="408"}"#
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn handler_panic_is_a_500_not_a_dead_process() {
    let state = chaos_state();
    let routes = axum::Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            if true {
                panic!("handler bug");
            }
            "unreachable"
        }),
    );
    let app = selfheal_app::middleware::apply(routes, state);
    let a = get(&app, "/boom").await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(a.json()["kind"], "panic");
    // The service keeps answering.
    assert_eq!(
        get(&app, "/boom").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}
