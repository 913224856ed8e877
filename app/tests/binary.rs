//! Black-box tests of the real binary on a free loopback port: shutdown, crash, probe, slow
//! clients, load shedding and refused settings.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{App, DEADLINE, eventually};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

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

/// Sends `head` as is on a new connection and returns everything read until the server closes.
async fn raw_exchange(addr: SocketAddr, head: &str) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, conn.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// GET `path` on a new connection; the whole answer (status line, headers, body) as text.
async fn raw_get(addr: SocketAddr, path: &str) -> String {
    raw_exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
    .await
}

fn metric_line(metrics: &str, line: &str) -> bool {
    metrics.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_head_is_cut_off_while_other_clients_are_served() {
    let app = App::start(&["--header-read-timeout-ms", "500"]);
    let (mut rx, mut tx) = TcpStream::connect(app.addr).await.unwrap().into_split();
    let started = Instant::now();
    let closed = tokio::spawn(async move {
        let mut answer = Vec::new();
        // EOF or a reset both mean the server gave up on the connection.
        let _ = rx.read_to_end(&mut answer).await;
        (started.elapsed(), answer)
    });
    // One byte every 100 ms: each byte arrives well within the timeout, the whole head (5 s)
    // does not: a per-read timeout would never fire, a slowloris client holds the connection.
    let head = b"GET / HTTP/1.1\r\nHost: slow.test\r\nConnection: close\r\nX-Slow: 1\r\n\r\n";
    let mut sent = 0;
    for (i, byte) in head.iter().enumerate() {
        if closed.is_finished() || tx.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        if i % 4 == 0 {
            // Meanwhile other clients are served.
            assert_eq!(app.get("/").await.status, 200);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (after, answer) = tokio::time::timeout(DEADLINE, closed)
        .await
        .expect("the slow connection is closed")
        .unwrap();
    assert!(
        answer.is_empty(),
        "no answer for a head this slow: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        sent < head.len(),
        "closed only after the whole head was sent"
    );
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_secs(4),
        "closed after {after:?}, want about 500 ms"
    );
    let m = app.get("/metrics").await.body;
    assert!(
        metric_line(&m, "selfheal_app_header_read_timeouts_total 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connection_idle_longer_than_the_header_timeout_is_closed() {
    let app = App::start(&["--header-read-timeout-ms", "500"]);
    let started = Instant::now();
    // No `Connection: close`: the answer comes, then the server waits for the next head.
    let answer = raw_exchange(app.addr, "GET /health HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let after = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        after >= Duration::from_millis(400),
        "closed after {after:?}, before the timeout"
    );
    // An idle close is not a slow client.
    let m = app.get("/metrics").await.body;
    assert!(
        metric_line(&m, "selfheal_app_header_read_timeouts_total 0"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_limit_are_shed_with_retry_after_while_probes_answer() {
    let app = App::start(&[
        "--max-concurrent-requests",
        "2",
        "--fault-profile",
        "latency",
        "--fault-latency-ms",
        "3000",
    ]);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = app.url("/");
            tokio::spawn(async move { selfheal_app::probe::get(&url, DEADLINE).await })
        })
        .collect();
    // The scrape counts itself, so 3 means both slots are taken.
    eventually("both request slots to be taken", || async {
        let m = app.get("/metrics").await.body;
        metric_line(&m, "http_requests_in_flight 3").then_some(())
    })
    .await;

    // A burst over the limit is answered at once, not queued behind the slow requests.
    let burst_started = Instant::now();
    let burst = futures::future::join_all((0..4).map(|_| raw_get(app.addr, "/"))).await;
    for answer in &burst {
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("\r\nretry-after: 1\r\n"),
            "{answer}"
        );
        assert!(answer.contains(r#""kind":"overloaded""#), "{answer}");
    }
    assert!(burst_started.elapsed() < Duration::from_secs(2));

    // Liveness, readiness and the scrape still answer while saturated.
    let health = app.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(app.get("/ready").await.status, 200);
    let m = app.get("/metrics").await.body;
    assert!(metric_line(&m, "selfheal_app_requests_shed_total 4"), "{m}");
    assert!(
        metric_line(
            &m,
            r#"http_requests_total{method="GET",route="/",status="503"} 4"#
        ),
        "{m}"
    );
    for s in slow {
        assert_eq!(
            s.await.unwrap().unwrap().status,
            200,
            "admitted ones finish"
        );
    }
}

/// Runs the binary to its exit (killed after [`DEADLINE`]): exit code and stderr.
fn run_to_exit(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_selfheal-app"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env_remove("APP_WARMUP_SECS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{env:?} accepted: still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

#[test]
fn out_of_range_warmup_is_refused_at_start_with_a_clear_message() {
    // 3601 is one past the bound; 2^64-1 used to overflow `Instant` and panic (exit 101).
    for value in ["3601", "18446744073709551615"] {
        let (code, stderr) = run_to_exit(&[("APP_WARMUP_SECS", value)]);
        assert_eq!(code, Some(2), "usage error, not a panic: {stderr}");
        assert!(
            stderr.contains("--warmup-secs")
                && stderr.contains(value)
                && stderr.contains("0..=3600")
                && stderr.contains("environment variable APP_WARMUP_SECS"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_at_its_bounds_is_accepted() {
    let app = App::start_with_env(&[], &[("APP_WARMUP_SECS", "3600")]);
    let r = app.get("/ready").await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("warming up (3600s left)"), "{}", r.body);
    let app = App::start(&["--warmup-secs", "0"]);
    assert_eq!(app.get("/ready").await.status, 200);
}
