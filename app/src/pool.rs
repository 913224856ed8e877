//! A simulated connection pool: `GET /` borrows one connection for the whole request, the way a
//! handler borrows a database connection, so a slow or saturated pod runs out of them.
//!
//! The pool is a fair [`Semaphore`]: a caller waiting for many connections (the `pool-exhaust`
//! fault) is served before requests that arrive after it, so once the fault asks for the whole
//! pool no new request gets a connection, and every in-flight one hands its connection over to
//! the fault when it finishes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use crate::{Error, Result};

/// Connections of the pool when `--pool-size` is not given.
pub const DEFAULT_POOL_SIZE: u32 = 10;
/// Largest accepted `--pool-size`.
pub const MAX_POOL_SIZE: u32 = 1000;
/// How long `GET /` waits for a connection when `--pool-wait-ms` is not given.
pub const DEFAULT_POOL_WAIT: Duration = Duration::from_millis(1000);

/// The pool shared by every request and the `pool-exhaust` fault.
#[derive(Debug)]
pub struct Pool {
    connections: Arc<Semaphore>,
    size: u32,
    wait: Duration,
}

/// One borrowed connection; dropping it puts it back.
#[derive(Debug)]
#[must_use = "the connection goes back to the pool as soon as this is dropped"]
pub struct Connection<'a> {
    _permit: SemaphorePermit<'a>,
}

/// Occupancy of the pool, for the gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections borrowed by requests or held by the fault.
    pub in_use: u32,
    /// Pool size.
    pub max: u32,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new(DEFAULT_POOL_SIZE, DEFAULT_POOL_WAIT)
    }
}

impl Pool {
    /// A pool of `size` connections (at least 1) that callers wait `wait` for.
    pub fn new(size: u32, wait: Duration) -> Self {
        let size = size.clamp(1, MAX_POOL_SIZE);
        Self {
            connections: Arc::new(Semaphore::new(size as usize)),
            size,
            wait,
        }
    }

    /// Number of connections.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Connections not borrowed nor held right now.
    pub fn available(&self) -> u32 {
        u32::try_from(self.connections.available_permits()).unwrap_or(u32::MAX)
    }

    /// Current occupancy.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            in_use: self.size.saturating_sub(self.available()),
            max: self.size,
        }
    }

    /// Borrows one connection, waiting at most [`Pool::wait`]; [`Error::PoolExhausted`] when none
    /// became free in time.
    pub async fn acquire(&self) -> Result<Connection<'_>> {
        let exhausted = || Error::PoolExhausted {
            size: self.size,
            waited_ms: u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX),
        };
        match tokio::time::timeout(self.wait, self.connections.acquire()).await {
            Ok(Ok(permit)) => Ok(Connection { _permit: permit }),
            // The semaphore is never closed; treat it like a pool with nothing left.
            Ok(Err(_)) | Err(_) => Err(exhausted()),
        }
    }

    /// Takes `count` connections (at most the pool size) out of the pool until the hold is
    /// dropped or `deadline` passes. What is free is taken at once; the rest is taken, ahead of
    /// later requests, as in-flight requests give their connections back (needs a tokio runtime,
    /// as does releasing at the deadline; without one only the free connections are taken and
    /// kept until the hold is dropped).
    pub fn hold(&self, count: u32, deadline: Option<Instant>) -> Hold {
        let target = count.clamp(1, self.size);
        let free_now = Arc::clone(&self.connections)
            .try_acquire_many_owned(target)
            .ok()
            .or_else(|| {
                // Partly busy: take what is free now so the gauges show the hold at once.
                let free = self.available().min(target);
                (free > 0)
                    .then(|| {
                        Arc::clone(&self.connections)
                            .try_acquire_many_owned(free)
                            .ok()
                    })
                    .flatten()
            });
        let taken = free_now
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits);
        let missing = target.saturating_sub(u32::try_from(taken).unwrap_or(u32::MAX));
        let held = Arc::new(Mutex::new(free_now));
        let task = if missing == 0 && deadline.is_none() {
            None
        } else if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (connections, slot) = (Arc::clone(&self.connections), Arc::clone(&held));
            let take_rest = async move {
                if missing == 0 {
                    return;
                }
                let Ok(rest) = connections.acquire_many_owned(missing).await else {
                    return;
                };
                let mut slot = lock(&slot);
                match slot.as_mut() {
                    Some(p) => p.merge(rest),
                    None => *slot = Some(rest),
                }
            };
            let slot = Arc::clone(&held);
            let handle = rt.spawn(async move {
                let Some(deadline) = deadline.map(tokio::time::Instant::from_std) else {
                    return take_rest.await;
                };
                // Still waiting for busy connections at the deadline: stop waiting.
                let _ = tokio::time::timeout_at(deadline, take_rest).await;
                tokio::time::sleep_until(deadline).await;
                // Released here rather than when the fault is next looked at, so requests
                // already waiting get the connections at the deadline.
                lock(&slot).take();
            });
            Some(handle.abort_handle())
        } else {
            tracing::warn!(
                missing,
                timed = deadline.is_some(),
                "no async runtime: the pool hold does not wait for busy connections nor end by itself"
            );
            None
        };
        Hold { target, held, task }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic while holding the lock cannot leave it inconsistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Connections taken out of the pool by the `pool-exhaust` fault; dropping it gives them back.
#[derive(Debug)]
pub struct Hold {
    target: u32,
    held: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    task: Option<tokio::task::AbortHandle>,
}

impl Hold {
    /// Connections asked for.
    pub fn target(&self) -> u32 {
        self.target
    }

    /// Connections held right now (fewer than [`Hold::target`] while in-flight requests still
    /// have theirs, 0 once the deadline passed).
    pub fn held(&self) -> u32 {
        lock(&self.held)
            .as_ref()
            .map_or(0, |p| u32::try_from(p.num_permits()).unwrap_or(u32::MAX))
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // A task still waiting for busy connections is first in the semaphore's queue, so it is
        // handed what is released here (and what requests give back) until the runtime drops
        // the aborted task, which returns it all: a scheduler turn, not the rest of the hold.
        if let Some(task) = &self.task {
            task.abort();
        }
        lock(&self.held).take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(size: u32, wait_ms: u64) -> Pool {
        Pool::new(size, Duration::from_millis(wait_ms))
    }

    /// Lets the runtime run (and drop) ready tasks.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn requests_borrow_and_return_connections() {
        let p = pool(2, 10);
        let a = p.acquire().await.unwrap();
        assert_eq!(p.stats(), PoolStats { in_use: 1, max: 2 });
        let b = p.acquire().await.unwrap();
        assert_eq!(p.stats().in_use, 2);
        drop((a, b));
        assert_eq!(p.stats().in_use, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_gives_up_after_the_wait_with_pool_exhausted() {
        let p = pool(1, 50);
        let _busy = p.acquire().await.unwrap();
        let start = tokio::time::Instant::now();
        match p.acquire().await {
            Err(Error::PoolExhausted { size, waited_ms }) => {
                assert_eq!((size, waited_ms), (1, 50));
            }
            other => panic!("expected PoolExhausted, got {other:?}"),
        }
        assert!(
            start.elapsed() >= Duration::from_millis(50),
            "gave up early"
        );
    }

    #[test]
    fn hold_takes_free_connections_at_once_and_drop_returns_them() {
        let p = pool(5, 10);
        let h = p.hold(3, None);
        assert_eq!((h.target(), h.held()), (3, 3));
        assert_eq!(p.available(), 2);
        drop(h);
        assert_eq!(p.available(), 5);
    }

    #[test]
    fn hold_is_capped_at_the_pool_size() {
        let p = pool(4, 10);
        let h = p.hold(99, None);
        assert_eq!((h.target(), h.held()), (4, 4));
        assert_eq!(p.stats(), PoolStats { in_use: 4, max: 4 });
    }

    #[tokio::test]
    async fn hold_takes_busy_connections_as_requests_finish_ahead_of_new_requests() {
        let p = pool(3, 20);
        let busy = p.acquire().await.unwrap();
        let h = p.hold(3, None);
        assert_eq!(h.held(), 2, "the two free connections are taken at once");
        drop(busy);
        for _ in 0..100 {
            if h.held() == 3 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(h.held(), 3, "the returned connection went to the hold");
        assert!(
            matches!(p.acquire().await, Err(Error::PoolExhausted { .. })),
            "a new request must not win the returned connection"
        );
        drop(h);
        assert_eq!(p.available(), 3);
    }

    #[tokio::test]
    async fn dropping_a_waiting_hold_takes_nothing_later() {
        let p = pool(2, 20);
        let busy = p.acquire().await.unwrap();
        // Timed, so a task left running would sit on the connection until the deadline.
        let h = p.hold(2, Some(Instant::now() + Duration::from_secs(600)));
        tokio::task::yield_now().await; // its task now queues for the busy connection
        assert_eq!(h.held(), 1);
        drop(h);
        settle().await;
        assert_eq!(p.available(), 1, "only the busy connection is out");
        drop(busy);
        settle().await;
        assert_eq!(
            p.available(),
            2,
            "the dropped hold's task kept a connection"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn timed_hold_gives_connections_back_at_the_deadline() {
        let p = pool(2, 5_000);
        let h = p.hold(2, Some(Instant::now() + Duration::from_secs(1)));
        assert_eq!(h.held(), 2);
        // A request already waiting is served at the deadline (paused clock: no real wait).
        let started = tokio::time::Instant::now();
        let _conn = tokio::time::timeout(Duration::from_secs(60), p.acquire())
            .await
            .unwrap()
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "released early"
        );
        assert_eq!(h.held(), 0);
    }
}
