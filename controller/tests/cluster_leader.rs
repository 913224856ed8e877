//! Leader election on a real Lease: exactly one leader, and a follower takes over when the
//! leader releases the Lease (graceful stop) or dies without releasing it; a leader whose Lease
//! calls hang stops leading at its renew deadline; and a leader process frozen (SIGSTOP) past its
//! lease and resumed after a follower took over writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use selfheal_controller::leader::{LeaderConfig, LeaderElector, Leadership};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Candidate {
    leading: Leadership,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

fn candidate(client: &Client, ns: &str, identity: &str) -> Candidate {
    let elector = LeaderElector::new(
        client.clone(),
        LeaderConfig {
            lease_name: "selfheal-controller".into(),
            namespace: ns.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_millis(500),
        },
    );
    let leading = elector.leadership();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async move {
        let _ = stopped.await;
    }));
    Candidate {
        leading,
        stop: Some(stop),
        task,
    }
}

async fn exactly_one_leader(a: &Candidate, b: &Candidate) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (la, lb) = (a.leading.is_current(), b.leading.is_current());
        assert!(!(la && lb), "two leaders at once");
        if la != lb {
            return if la { 0 } else { 1 };
        }
        assert!(Instant::now() < deadline, "no leader elected within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn never_both_for(a: &Candidate, b: &Candidate, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        assert!(
            !(a.leading.is_current() && b.leading.is_current()),
            "two leaders at once"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_leading(c: &Candidate, within: Duration, what: &str) -> Duration {
    let start = Instant::now();
    let mut leading = c.leading.clone();
    tokio::time::timeout(within, leading.wait_leading())
        .await
        .unwrap_or_else(|_| panic!("{what}: follower did not take over within {within:?}"))
        .expect("elector alive");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_takes_over_when_the_leader_releases_the_lease_on_shutdown() {
    in_namespace("sh-leader", |client, ns| async move {
        let mut c = [
            candidate(&client, &ns, "replica-a"),
            candidate(&client, &ns, "replica-b"),
        ];
        let leader = exactly_one_leader(&c[0], &c[1]).await;
        never_both_for(&c[0], &c[1], Duration::from_secs(3)).await;
        let follower = 1 - leader;
        let lease = Api::<Lease>::namespaced(client.clone(), &ns)
            .get("selfheal-controller")
            .await
            .expect("lease");
        let holder = lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        assert_eq!(holder, ["replica-a", "replica-b"][leader]);

        // Graceful stop: the lease is released, so the follower needs no lease duration to wait.
        let _ = c[leader].stop.take().expect("stop").send(());
        let took = wait_leading(&c[follower], Duration::from_secs(3), "after release").await;
        eprintln!("takeover after release: {took:?}");
        (&mut c[leader].task).await.expect("leader task");
        assert!(!c[leader].leading.is_current());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_takes_over_within_the_lease_duration_when_the_leader_dies() {
    in_namespace("sh-leader-kill", |client, ns| async move {
        let c = [
            candidate(&client, &ns, "replica-a"),
            candidate(&client, &ns, "replica-b"),
        ];
        let leader = exactly_one_leader(&c[0], &c[1]).await;
        let follower = 1 - leader;
        // Killed: no release, the lease has to expire (4 s) as observed by the follower.
        c[leader].task.abort();
        let took = wait_leading(&c[follower], Duration::from_secs(8), "after a crash").await;
        eprintln!("takeover after crash: {took:?}");
        let lease = Api::<Lease>::namespaced(client.clone(), &ns)
            .get("selfheal-controller")
            .await
            .expect("lease");
        let spec = lease.spec.expect("spec");
        assert_eq!(
            spec.holder_identity.as_deref(),
            Some(["replica-a", "replica-b"][follower])
        );
        assert!(
            spec.lease_transitions.unwrap_or(0) >= 1,
            "transition not counted"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_calls_hang_stops_leading_at_its_renew_deadline() {
    in_namespace("sh-leader-hang", |_, ns| async move {
        let (proxy, config) = Proxy::to_api_server().await;
        let through = Client::try_from(config).expect("client through the proxy");
        let c = candidate(&through, &ns, "replica-a");
        wait_leading(&c, Duration::from_secs(15), "at start").await;
        // Every Lease call from now on hangs (kube's own read timeout is minutes). The last
        // renewal was sent before this instant, so the term (renew deadline 3 s) ends before
        // 3 s from now, and before any follower could take over (lease duration 4 s).
        proxy.stall().await;
        let stalled = Instant::now();
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(
            !c.leading.is_current(),
            "still leading {:?} after the Lease calls began to hang (renew deadline 3 s)",
            stalled.elapsed()
        );
        c.task.abort();
    })
    .await;
}

/// A `selfheal-controller` process, killed when dropped.
struct Process {
    child: std::process::Child,
    port: u16,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn spawn_controller(identity: &str, ns: &str, lease_ns: &str) -> Process {
    let port = free_port();
    let log =
        std::fs::File::create(std::env::temp_dir().join(format!("{lease_ns}-{identity}.log")))
            .expect("log file");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_selfheal-controller"))
        .args([
            format!("--pod-name={identity}"),
            format!("--pod-namespace={lease_ns}"),
            format!("--namespaces={ns}"),
            format!("--http-addr=127.0.0.1:{port}"),
            "--leader-election=true".into(),
            "--lease-duration-secs=4".into(),
            "--lease-renew-deadline-secs=3".into(),
            "--lease-retry-period-secs=1".into(),
            "--restart-threshold=1".into(),
            "--rate-restarts=0".into(),
            "--min-pod-age-secs=0".into(),
            "--cooldown-secs=0".into(),
            // NB: the recycle history is shared through its ConfigMap (in the lease namespace):
            // a takeover continues the old leader's window count, which must not run out here.
            "--max-recycles-per-window=1000".into(),
            "--max-retries=1000".into(),
        ])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting selfheal-controller");
    Process { child, port }
}

/// Sum of every series of `metric` on the process's /metrics; `None` when it has no series.
async fn scrape(port: u16, metric: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    let values: Vec<f64> = body
        .lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

async fn holder(client: &Client, lease_ns: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), lease_ns)
        .get_opt("selfheal-controller")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

/// Start `replica-a` and wait until it holds the Lease (so a second process starts as follower).
async fn spawn_leader(client: &Client, ns: &str, lease_ns: &str) -> Process {
    let a = spawn_controller("replica-a", ns, lease_ns);
    wait_for(
        "replica-a to hold the lease",
        Duration::from_secs(30),
        || async { holder(client, lease_ns).await.as_deref() == Some("replica-a") },
    )
    .await;
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controller_processes_only_the_leader_acts_and_the_follower_takes_over() {
    in_namespaces(
        &["sh-2proc", "sh-2proc-lease"],
        |client, names| async move {
            let (ns, lease_ns) = (names[0].clone(), names[1].clone());
            let a = spawn_leader(&client, &ns, &lease_ns).await;
            let mut a = Some(a);
            let b = spawn_controller("replica-b", &ns, &lease_ns);
            wait_for(
                "both processes serving metrics",
                Duration::from_secs(30),
                || async { scrape(b.port, "selfheal_controller_leader").await.is_some() },
            )
            .await;
            let a_port = a.as_ref().expect("a").port;
            assert_eq!(
                scrape(a_port, "selfheal_controller_leader").await,
                Some(1.0)
            );
            assert_eq!(
                scrape(b.port, "selfheal_controller_leader").await,
                Some(0.0)
            );

            create_deployment(&client, &ns, &crashing_deployment("first", 1, &[])).await;
            wait_for("replica-a to recycle", Duration::from_secs(180), || async {
                !our_events_from(&client, &ns, "Recycled", "replica-a")
                    .await
                    .is_empty()
            })
            .await;
            assert!(
                our_events(&client, &ns, "Recycled")
                    .await
                    .iter()
                    .all(|e| e.reporting_instance.as_deref() == Some("replica-a")),
                "the follower acted"
            );
            assert_eq!(
                scrape(b.port, "selfheal_controller_recycles_total").await,
                None,
                "follower counted a recycle"
            );

            // SIGTERM the leader: it stops reconciling, releases the lease and exits 0.
            let mut leader = a.take().expect("a");
            let pid = leader.child.id().to_string();
            let killed = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill");
            assert!(killed.success());
            let status = tokio::task::spawn_blocking(move || {
                let s = leader.child.wait();
                drop(leader);
                s
            })
            .await
            .expect("join")
            .expect("wait");
            assert!(
                status.success(),
                "leader did not shut down cleanly: {status}"
            );
            wait_for("replica-b to take over", Duration::from_secs(6), || async {
                holder(&client, &lease_ns).await.as_deref() == Some("replica-b")
            })
            .await;
            wait_for(
                "replica-b to report leadership",
                Duration::from_secs(5),
                || async { scrape(b.port, "selfheal_controller_leader").await == Some(1.0) },
            )
            .await;

            create_deployment(&client, &ns, &crashing_deployment("second", 1, &[])).await;
            wait_for("replica-b to recycle", Duration::from_secs(180), || async {
                our_events_from(&client, &ns, "Recycled", "replica-b")
                    .await
                    .iter()
                    .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("second"))
            })
            .await;
            drop(b);
        },
    )
    .await;
}

fn signal(p: &Process, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([format!("-{sig}"), p.child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} failed");
}

/// Whether an Event (or a later occurrence in its series) was emitted at or after `t`.
fn emitted_since(e: &k8s_openapi::api::events::v1::Event, t: Timestamp) -> bool {
    let first = e.event_time.as_ref().map(|m| m.0);
    let last = e.series.as_ref().map(|s| s.last_observed_time.0);
    first.into_iter().chain(last).any(|at| at >= t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_writes_nothing_once_resumed() {
    in_namespaces(
        &["sh-sigstop", "sh-sigstop-lease"],
        |client, names| async move {
            let (ns, lease_ns) = (names[0].clone(), names[1].clone());
            let a = spawn_leader(&client, &ns, &lease_ns).await;
            let b = spawn_controller("replica-b", &ns, &lease_ns);
            // Three crash-looping pods keep both processes busy: the frozen leader resumes
            // with watch events and expired requeues queued, each one a write it would make.
            create_deployment(&client, &ns, &crashing_deployment("crasher", 3, &[])).await;
            wait_for("replica-a to recycle", Duration::from_secs(180), || async {
                !our_events_from(&client, &ns, "Recycled", "replica-a")
                    .await
                    .is_empty()
            })
            .await;

            signal(&a, "STOP");
            wait_for(
                "replica-b to take over the lease",
                Duration::from_secs(20),
                || async { holder(&client, &lease_ns).await.as_deref() == Some("replica-b") },
            )
            .await;
            wait_for("replica-b to recycle", Duration::from_secs(180), || async {
                !our_events_from(&client, &ns, "Recycled", "replica-b")
                    .await
                    .is_empty()
            })
            .await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let resumed = Timestamp::now();
            signal(&a, "CONT");
            wait_for(
                "replica-a to report it follows",
                Duration::from_secs(15),
                || async { scrape(a.port, "selfheal_controller_leader").await == Some(0.0) },
            )
            .await;
            // Let the resumed process work off what it had queued.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let mut from_a = Vec::new();
            for reason in ["Recycled", "RecycleBlocked", "GaveUp", "RolloutRestarted"] {
                from_a.extend(
                    our_events_from(&client, &ns, reason, "replica-a")
                        .await
                        .into_iter()
                        .filter(|e| emitted_since(e, resumed)),
                );
            }
            assert!(
                from_a.is_empty(),
                "the resumed ex-leader wrote after a follower took over: {from_a:#?}"
            );
            assert_eq!(
                holder(&client, &lease_ns).await.as_deref(),
                Some("replica-b")
            );
            eprintln!(
                "writes the resumed ex-leader refused itself: {:?}",
                scrape(
                    a.port,
                    "selfheal_controller_reconcile_errors_total{error=\"not_leader\"}"
                )
                .await
            );
            drop(b);
            drop(a);
        },
    )
    .await;
}

#[test]
fn the_binary_refuses_lease_timings_that_could_make_two_leaders() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_selfheal-controller"))
        .args(["--lease-duration-secs=10", "--lease-renew-deadline-secs=10"])
        .output()
        .expect("running selfheal-controller");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started anyway: {stderr}");
    assert!(
        stderr.contains("must be shorter than the lease duration"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_non_zero_when_one_of_its_loops_ends() {
    // The health and metrics server cannot bind (the port is taken): that loop ends at once, and
    // a process that keeps running without it would be a controller nobody can probe.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_selfheal-controller"))
        .args([
            "--leader-election=false",
            "--namespaces=sh-loop-ends-nothing-here",
            &format!("--http-addr=127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting selfheal-controller");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the process kept running 60 s after its server could not start");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(!status.success(), "exited 0: {stderr}");
    assert!(
        stderr.contains("the health and metrics server ended"),
        "{stderr}"
    );
    drop(taken);
}
