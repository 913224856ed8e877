//! Graceful shutdown: SIGTERM → unready at once → keep serving for the delay (endpoint
//! propagation) → stop accepting → drain in-flight requests until the deadline.

use std::future::{Future, IntoFuture};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::state::AppState;
use crate::{Error, Result, router};

/// How long `POST /crash?mode=exit` waits for in-flight responses (its own 202 first).
const CRASH_FLUSH_DEADLINE: Duration = Duration::from_secs(1);

/// Shutdown timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownTiming {
    /// Serve (unready) this long after the signal.
    pub delay: Duration,
    /// Then wait at most this long for in-flight requests.
    pub drain_timeout: Duration,
}

impl From<&Config> for ShutdownTiming {
    fn from(cfg: &Config) -> Self {
        Self {
            delay: cfg.shutdown_delay(),
            drain_timeout: cfg.shutdown_timeout(),
        }
    }
}

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Shutdown signal; in-flight requests drained (or the deadline passed).
    Signal,
    /// `POST /crash?mode=exit`: the caller must exit with this code.
    Crash(i32),
}

/// Installs the SIGTERM/SIGINT handlers *now* and returns a future that resolves on either.
///
/// Call it before announcing readiness: a signal arriving before the handlers exist would
/// kill the process with the default action instead of draining it.
#[cfg(unix)]
pub fn signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown signal received"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown signal received"),
        }
    })
}

/// Resolves on Ctrl-C (non-Unix fallback).
#[cfg(not(unix))]
pub fn signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!(signal = "ctrl-c", "shutdown signal received");
        } else {
            std::future::pending::<()>().await;
        }
    })
}

/// Serves [`router`] on `listener` until `shutdown` resolves or an exit is requested.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send,
    timing: ShutdownTiming,
) -> Result<Stopped> {
    let (close_tx, close_rx) = oneshot::channel::<()>();
    let server = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(async {
            // A dropped sender also closes: serve never outlives this function.
            let _ = close_rx.await;
        })
        .into_future();
    let mut server = tokio::spawn(server);
    let mut exit_rx = state.exit_requested();

    tokio::select! {
        joined = &mut server => {
            // The server stopped on its own: only an I/O error does that.
            return joined_result(joined).map(|()| Stopped::Signal);
        }
        () = shutdown => {}
        changed = exit_rx.wait_for(Option::is_some) => {
            let code = changed.ok().and_then(|c| *c).unwrap_or(crate::faults::CRASH_EXIT_CODE);
            let _ = close_tx.send(());
            if tokio::time::timeout(CRASH_FLUSH_DEADLINE, &mut server).await.is_err() {
                server.abort();
            }
            tracing::warn!(exit_code = code, "exiting on request (POST /crash?mode=exit)");
            return Ok(Stopped::Crash(code));
        }
    }

    state.begin_drain();
    tracing::info!(
        delay_secs = timing.delay.as_secs_f64(),
        "unready; still serving while endpoints are removed"
    );
    tokio::time::sleep(timing.delay).await;
    tracing::info!(
        deadline_secs = timing.drain_timeout.as_secs_f64(),
        "closing listener, draining in-flight requests"
    );
    let _ = close_tx.send(());
    match tokio::time::timeout(timing.drain_timeout, &mut server).await {
        Ok(joined) => {
            joined_result(joined)?;
            tracing::info!("drained, bye");
        }
        Err(_) => {
            server.abort();
            tracing::warn!("in-flight requests outlived the drain deadline; stopping anyway");
        }
    }
    Ok(Stopped::Signal)
}

fn joined_result(joined: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<()> {
    match joined {
        Ok(res) => res.map_err(Error::ServeFailed),
        Err(join) => Err(Error::ServeFailed(std::io::Error::other(join))),
    }
}
