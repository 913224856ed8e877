//! Leader election on a `coordination.k8s.io/v1` Lease, written out because kube-runtime has none.
//!
//! Every `retry_period` the elector reads the Lease and either renews it (holder), takes it over
//! (free, released, or not renewed for `lease_duration` *as observed locally*, so clock skew
//! between nodes does not matter), or follows. Writes use `replace` with the read
//! `resourceVersion`, so two candidates cannot both win. A leader that cannot renew within
//! `renew_deadline` steps down before anyone else may take over. On shutdown the Lease is released
//! so a follower takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{Error, Result};

/// Lease parameters.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace (the controller's own).
    pub namespace: String,
    /// This candidate's identity (pod name).
    pub identity: String,
    /// A Lease not renewed for this long may be taken over.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

/// Runs the election loop; read the outcome from [`LeaderElector::subscribe`].
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaderConfig,
    tx: watch::Sender<bool>,
    /// Last Lease record seen held by someone else, and when it was first seen.
    observed: Option<(String, Instant)>,
    last_renewed: Option<Instant>,
}

/// What one round concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Leading,
    Following,
}

impl LeaderElector {
    /// Elector for `cfg` (starts as follower).
    pub fn new(client: Client, cfg: LeaderConfig) -> Self {
        let api = Api::namespaced(client, &cfg.namespace);
        Self {
            api,
            cfg,
            tx: watch::channel(false).0,
            observed: None,
            last_renewed: None,
        }
    }

    /// `true` while this candidate leads.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Campaign until `shutdown` resolves, then release the Lease if held.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.round().await {
                Ok(round) => self.set(round == Round::Leading),
                Err(e) => {
                    warn!(error = %e, "leader election round failed");
                    let stale = self
                        .last_renewed
                        .is_none_or(|t| t.elapsed() >= self.cfg.renew_deadline);
                    if *self.tx.borrow() && stale {
                        warn!("could not renew the lease in time, stepping down");
                        self.set(false);
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        }
        let was_leader = *self.tx.borrow();
        self.set(false);
        if was_leader {
            match self.release().await {
                Ok(()) => info!(identity = %self.cfg.identity, "released leader lease"),
                Err(e) => warn!(error = %e, "releasing the lease failed; it expires on its own"),
            }
        }
    }

    fn set(&self, leading: bool) {
        let changed = self
            .tx
            .send_if_modified(|v| std::mem::replace(v, leading) != leading);
        if changed {
            info!(identity = %self.cfg.identity, leading, "leadership changed");
        }
    }

    fn fresh_spec(&self, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: i32::try_from(self.cfg.lease_duration.as_secs()).ok(),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    async fn round(&mut self) -> Result<Round> {
        let name = self.cfg.lease_name.clone();
        let Some(mut lease) = self.api.get_opt(&name).await.map_err(Error::LeaseFailed)? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    ..ObjectMeta::default()
                },
                spec: Some(self.fresh_spec(0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.last_renewed = Some(Instant::now());
                    Ok(Round::Leading)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round::Following),
                Err(e) => Err(Error::LeaseFailed(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder == self.cfg.identity {
            let mut renewed = spec;
            renewed.renew_time = Some(MicroTime(Timestamp::now()));
            lease.spec = Some(renewed);
            return self.write(&lease).await;
        }
        // Someone else (or nobody) holds it: has the record changed since we last looked?
        let record = format!(
            "{holder}|{:?}|{:?}",
            spec.renew_time, lease.metadata.resource_version
        );
        let since = match &self.observed {
            Some((r, t)) if *r == record => *t,
            _ => {
                let t = Instant::now();
                self.observed = Some((record, t));
                t
            }
        };
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.cfg.lease_duration, Duration::from_secs);
        if !holder.is_empty() && since.elapsed() < duration {
            return Ok(Round::Following);
        }
        info!(previous = %holder, "taking over the leader lease");
        lease.spec = Some(self.fresh_spec(spec.lease_transitions.unwrap_or(0).saturating_add(1)));
        self.write(&lease).await
    }

    async fn write(&mut self, lease: &Lease) -> Result<Round> {
        // NB: `replace` carries the resourceVersion we read: a concurrent writer makes this 409.
        match self
            .api
            .replace(&self.cfg.lease_name, &PostParams::default(), lease)
            .await
        {
            Ok(_) => {
                self.last_renewed = Some(Instant::now());
                Ok(Round::Leading)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round::Following),
            Err(e) => Err(Error::LeaseFailed(e)),
        }
    }

    async fn release(&self) -> Result<()> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.cfg.lease_name)
            .await
            .map_err(Error::LeaseFailed)?
        else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        self.api
            .replace(&self.cfg.lease_name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
            .map_err(Error::LeaseFailed)
    }
}
