//! Leader election on a `coordination.k8s.io/v1` Lease, written out because kube-runtime has none.
//!
//! Every `retry_period` the elector reads the Lease and either renews it (holder), takes it over
//! (free, released, or not renewed for `lease_duration` *as observed locally*, so clock skew
//! between nodes does not matter), or follows. Writes use `replace` with the read
//! `resourceVersion`, so two candidates cannot both win. On shutdown the Lease is released so a
//! follower takes over at once.
//!
//! Leadership is a term that ends on its own: a renewal sent at instant `t` makes this process
//! leader until `t + renew_deadline`, whatever happens next. Every election round has a timeout,
//! but a leader whose process was stopped (SIGSTOP, a frozen container) or whose calls hang still
//! stops acting at the end of its term, before a follower may take over (`renew_deadline <
//! lease_duration`, checked at start-up) — so two processes never act at once. The term is
//! measured on the monotonic clock; a whole machine suspended (a paused VM whose guest clock does
//! not advance) is out of its reach, as it is for client-go's elector. [`Leadership::is_current`] is what
//! every write asks right before it is sent.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{Error, Result};

/// Whether this process may act now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// Another process leads, or nobody does yet.
    Follower,
    /// This process leads until the instant (its last renewal plus the renew deadline).
    Until(Instant),
    /// No election (`--leader-election=false`, tests): always leads.
    Always,
}

impl Term {
    /// Whether the term is running at `now`.
    pub fn current_at(self, now: Instant) -> bool {
        match self {
            Term::Follower => false,
            Term::Until(end) => now < end,
            Term::Always => true,
        }
    }
}

/// The leadership of this process as the rest of the controller sees it.
#[derive(Debug, Clone)]
pub struct Leadership(watch::Receiver<Term>);

impl Leadership {
    /// Leadership without an election: always the leader.
    pub fn always() -> Self {
        // NB: the sender is dropped: `changed()` ends at once, `borrow()` keeps the value.
        Self(watch::channel(Term::Always).1)
    }

    /// Whether this process leads right now (a term that ran out reads as not leading, even if
    /// the elector has not noticed yet).
    pub fn is_current(&self) -> bool {
        self.0.borrow().current_at(Instant::now())
    }

    /// `Err(NotLeader)` unless this process leads right now: asked right before every write, as
    /// a term can run out between the decision and the call (a stopped process, a slow call).
    pub fn ensure(&self, write: &'static str) -> Result<()> {
        if self.is_current() {
            return Ok(());
        }
        warn!(write, "leader term ran out before the write: not sent");
        Err(Error::NotLeader(write))
    }

    /// The term as the elector last set it (it may have run out since: see [`Term::current_at`]).
    pub fn term(&self) -> Term {
        *self.0.borrow()
    }

    /// Wait until leadership may have changed (a new term, a step-down); `Err` when the
    /// elector is gone.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.0.changed().await
    }

    /// Wait until this process leads; `Err` when the elector is gone.
    pub async fn wait_leading(&mut self) -> Result<(), watch::error::RecvError> {
        loop {
            if self.is_current() {
                return Ok(());
            }
            self.0.changed().await?;
        }
    }
}

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

impl LeaderConfig {
    /// Refuse timings under which two processes could act at once or a leader could never
    /// renew: `retry_period < renew_deadline < lease_duration`, none zero.
    pub fn check(&self) -> Result<(), String> {
        if self.retry_period.is_zero() {
            return Err("the lease retry period must be above 0".into());
        }
        if self.renew_deadline <= self.retry_period {
            return Err(format!(
                "the lease renew deadline ({:?}) must be longer than the retry period ({:?}): a leader must be able to try again before its term ends",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "the lease renew deadline ({:?}) must be shorter than the lease duration ({:?}): a leader must stop acting before a follower may take over",
                self.renew_deadline, self.lease_duration
            ));
        }
        Ok(())
    }

    /// Timeout of one Lease call: two tries fit in the renew deadline.
    fn call_timeout(&self) -> Duration {
        (self.renew_deadline / 2).max(Duration::from_millis(100))
    }
}

/// Runs the election loop; read the outcome from [`LeaderElector::leadership`].
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaderConfig,
    tx: watch::Sender<Term>,
    /// Last Lease record seen held by someone else, and when it was first seen.
    observed: Option<(String, Instant)>,
}

/// What one round concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Leading,
    Following,
}

impl LeaderElector {
    /// Elector for `cfg` (starts as follower). Check `cfg` with [`LeaderConfig::check`] first.
    pub fn new(client: Client, cfg: LeaderConfig) -> Self {
        let api = Api::namespaced(client, &cfg.namespace);
        Self {
            api,
            cfg,
            tx: watch::channel(Term::Follower).0,
            observed: None,
        }
    }

    /// This candidate's leadership, as the elector decides it.
    pub fn leadership(&self) -> Leadership {
        Leadership(self.tx.subscribe())
    }

    /// Campaign until `shutdown` resolves, then release the Lease if held.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            // NB: the term starts when the renewal is sent, not when it is answered: the API
            // server may have stored it any time in between.
            let sent = Instant::now();
            let round = tokio::time::timeout(self.cfg.call_timeout(), self.round()).await;
            match round {
                Ok(Ok(Round::Leading)) => self.set(Term::Until(sent + self.cfg.renew_deadline)),
                Ok(Ok(Round::Following)) => self.set(Term::Follower),
                Ok(Err(e)) => warn!(error = %e, "leader election round failed"),
                Err(_) => {
                    warn!(timeout = ?self.cfg.call_timeout(), "leader election round timed out")
                }
            }
            // Step down when the term ran out, whatever the calls returned.
            let term = *self.tx.borrow();
            if matches!(term, Term::Until(_)) && !term.current_at(Instant::now()) {
                warn!("could not renew the lease within the renew deadline, stepping down");
                self.set(Term::Follower);
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        }
        let was_leader = self.tx.borrow().current_at(Instant::now());
        self.set(Term::Follower);
        if was_leader {
            match tokio::time::timeout(self.cfg.call_timeout(), self.release()).await {
                Ok(Ok(())) => info!(identity = %self.cfg.identity, "released leader lease"),
                Ok(Err(e)) => {
                    warn!(error = %e, "releasing the lease failed; it expires on its own")
                }
                Err(_) => warn!("releasing the lease timed out; it expires on its own"),
            }
        }
    }

    fn set(&self, term: Term) {
        let before = *self.tx.borrow();
        let now = Instant::now();
        self.tx.send_replace(term);
        let (was, is) = (before.current_at(now), term.current_at(now));
        if was != is {
            info!(identity = %self.cfg.identity, leading = is, "leadership changed");
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
                Ok(_) => Ok(Round::Leading),
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
            Ok(_) => Ok(Round::Leading),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(lease: u64, renew: u64, retry: u64) -> LeaderConfig {
        LeaderConfig {
            lease_name: "l".into(),
            namespace: "ns".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        }
    }

    #[test]
    fn timings_that_could_make_two_leaders_are_refused() {
        assert_eq!(cfg(15, 10, 2).check(), Ok(()));
        let equal = cfg(10, 10, 2).check().expect_err("equal timings");
        assert!(equal.contains("shorter than the lease duration"), "{equal}");
        assert!(cfg(10, 15, 2).check().is_err());
        let retry = cfg(15, 2, 2).check().expect_err("renew = retry");
        assert!(retry.contains("longer than the retry period"), "{retry}");
        assert!(cfg(15, 10, 0).check().is_err());
        assert_eq!(cfg(15, 10, 2).call_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn a_term_ends_on_its_own() {
        let now = Instant::now();
        let term = Term::Until(now + Duration::from_secs(3));
        assert!(term.current_at(now));
        assert!(term.current_at(now + Duration::from_millis(2999)));
        assert!(!term.current_at(now + Duration::from_secs(3)));
        assert!(!Term::Follower.current_at(now));
        assert!(Term::Always.current_at(now + Duration::from_secs(1 << 30)));
        assert!(Leadership::always().is_current());
    }
}
