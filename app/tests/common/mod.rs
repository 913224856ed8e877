//! Starts the real `selfheal-app` binary on a free loopback port and talks to it.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use selfheal_app::probe::{self, ProbeResponse};

/// Generous upper bound for anything the tests wait for (they poll, and stop at success).
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A running `selfheal-app`; killed on drop.
pub struct App {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    logs: mpsc::Receiver<String>,
}

impl App {
    /// Starts the binary with `args` plus `--listen 127.0.0.1:0`, JSON logs and no OTLP,
    /// and waits for its `listening` log line.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Like [`App::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_selfheal-app"));
        cmd.args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for var in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_SERVICE_NAME",
            "OTEL_RESOURCE_ATTRIBUTES",
            "OTEL_SDK_DISABLED",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
            "LISTEN_ADDR",
            "CHAOS_ENABLED",
            "CHAOS_TOKEN",
            "APP_FAULT_PROFILE",
            "APP_WARMUP_SECS",
            "APP_MAX_CONCURRENT_REQUESTS",
            "APP_HEADER_READ_TIMEOUT_MS",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (tx, logs) = mpsc::channel();
        // Owned by `App` from here on, so every exit path (panics included) kills and reaps it.
        let mut app = Self {
            child: cmd.spawn().unwrap(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            logs,
        };
        let stdout = app.child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = app
                .logs
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `listening` log line within {DEADLINE:?}"));
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "listening" {
                app.addr = v["addr"].as_str().unwrap().parse().unwrap();
                return app;
            }
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> ProbeResponse {
        probe::get(&self.url(path), DEADLINE).await.unwrap()
    }

    /// POST `path` with an empty body.
    pub async fn post(&self, path: &str) -> ProbeResponse {
        probe::request("POST", &self.url(path), &[], "", DEADLINE)
            .await
            .unwrap()
    }

    /// Sends SIGTERM (through `kill`, since the crate forbids `unsafe`).
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the process to exit, polling until [`DEADLINE`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < end,
                "process still running after {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Log lines printed so far (JSON), without blocking.
    pub fn drain_logs(&self) -> Vec<String> {
        self.logs.try_iter().collect()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some`, or panics after [`DEADLINE`] with `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
