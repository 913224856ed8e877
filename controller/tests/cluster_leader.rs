//! Leader election on a real Lease: exactly one leader, and a follower takes over when the
//! leader releases the Lease (graceful stop) or dies without releasing it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use selfheal_controller::leader::{LeaderConfig, LeaderElector};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

struct Candidate {
    leading: watch::Receiver<bool>,
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
    let leading = elector.subscribe();
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
        let (la, lb) = (*a.leading.borrow(), *b.leading.borrow());
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
            !(*a.leading.borrow() && *b.leading.borrow()),
            "two leaders at once"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_leading(c: &Candidate, within: Duration, what: &str) -> Duration {
    let start = Instant::now();
    let mut rx = c.leading.clone();
    tokio::time::timeout(within, rx.wait_for(|l| *l))
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
        assert!(!*c[leader].leading.borrow());
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
