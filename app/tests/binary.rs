//! Black-box tests of the real binary on a free loopback port: shutdown, crash, probe.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{App, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_unready_at_once_while_in_flight_requests_complete() {
    let mut app = App::start(&[
        "--enable-chaos",
        "--shutdown-delay-secs",
        "2",
        "--shutdown-timeout-secs",
        "10",
    ]);
    assert_eq!(app.get("/ready").await.status, 200);
    // Make `/` slow so a request is still in flight when SIGTERM arrives.
    assert_eq!(app.post("/crash?mode=latency&ms=3000").await.status, 200);
    let url = app.url("/");
    let in_flight =
        tokio::spawn(async move { selfheal_app::probe::get(&url, Duration::from_secs(20)).await });
    // The scrape counts itself, so 2 means the slow request is being served.
    eventually("the slow request to be in flight", || async {
        let m = app.get("/metrics").await.body;
        m.lines()
            .any(|l| l == "http_requests_in_flight 2")
            .then_some(())
    })
    .await;

    app.sigterm();
    let ready = eventually("/ready to turn 503 after SIGTERM", || async {
        let r = app.get("/ready").await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert!(ready.body.contains("shutting down"), "{}", ready.body);
    // Still serving other traffic during the delay.
    assert_eq!(app.get("/health").await.status, 200);

    let slow = in_flight.await.unwrap().unwrap();
    assert_eq!(
        slow.status, 200,
        "in-flight request must complete: {}",
        slow.body
    );
    let status = app.wait_exit();
    assert_eq!(status.code(), Some(0), "clean exit after drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_closes_after_the_shutdown_delay() {
    let mut app = App::start(&["--shutdown-delay-secs", "0", "--shutdown-timeout-secs", "5"]);
    let addr = app.addr;
    app.sigterm();
    assert_eq!(app.wait_exit().code(), Some(0));
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "nothing listens after exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_exit_mode_answers_202_then_exits_non_zero() {
    let mut app = App::start(&["--enable-chaos"]);
    let r = app.post("/crash?mode=exit").await;
    assert_eq!(r.status, 202, "{}", r.body);
    let status = app.wait_exit();
    assert!(!status.success());
    assert_eq!(status.code(), Some(selfheal_app::faults::CRASH_EXIT_CODE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_is_refused_and_process_survives_when_chaos_is_off() {
    let mut app = App::start(&[]);
    let r = app.post("/crash?mode=exit").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("--enable-chaos"), "{}", r.body);
    assert_eq!(app.get("/health").await.status, 200);
    assert!(app.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_enabled_env_var_switches_injection_on() {
    let app = App::start_with_env(&[], &[("CHAOS_ENABLED", "true")]);
    assert_eq!(app.post("/crash?mode=unready").await.status, 200);
    assert_eq!(app.get("/ready").await.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_release_profile_is_one_env_var_away() {
    let app = App::start_with_env(&[], &[("APP_FAULT_PROFILE", "unready")]);
    let r = app.get("/ready").await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("bad release"), "{}", r.body);
}

fn probe(url: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal-app"))
        .args(["probe", url, "--timeout-ms", "3000"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_subcommand_exit_codes() {
    let app = App::start(&["--enable-chaos"]);

    let (code, out, _) = probe(&app.url("/ready"));
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "one-line reason: {out}");
    assert!(out.contains("answered 200"), "{out}");

    let (code, _, err) = probe(&app.url("/nope"));
    assert_eq!(code, 1);
    assert!(err.contains("answered 404"), "{err}");

    assert_eq!(app.post("/crash?mode=unhealthy").await.status, 200);
    let (code, _, err) = probe(&app.url("/health"));
    assert_eq!(code, 1);
    assert!(err.contains("503") && err.contains("unhealthy"), "{err}");
    assert_eq!(err.lines().count(), 1, "one-line reason: {err}");

    let (code, _, err) = probe("https://127.0.0.1:1/ready");
    assert_eq!(code, 2, "unsupported URL is a usage error: {err}");
}

#[test]
fn probe_against_a_closed_port_fails_with_a_reason() {
    // Bind then drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, err) = probe(&format!("http://127.0.0.1:{port}/ready"));
    assert_eq!(code, 1);
    assert!(err.contains("connect"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_logs_are_json_carry_the_trace_id_and_skip_probe_paths() {
    let app = App::start(&[]);
    app.get("/health").await;
    app.get("/ready").await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    selfheal_app::probe::request(
        "GET",
        &app.url("/"),
        &[("traceparent", traceparent)],
        "",
        common::DEADLINE,
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let line = eventually("the access log line of GET /", || {
        seen.extend(app.drain_logs());
        let found = seen
            .iter()
            .find(|l| l.contains("request completed"))
            .cloned();
        async move { found }
    })
    .await;
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("/health") || l.contains("/ready")),
        "probe paths must not be logged: {seen:#?}"
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["route"], "/", "{line}");
    assert_eq!(v["method"], "GET", "{line}");
    assert_eq!(v["status"], 200, "{line}");
    assert_eq!(
        v["trace_id"], "0af7651916cd43dd8448eb211c80319c",
        "the caller's trace id joins the log line even without an exporter: {line}"
    );
}
