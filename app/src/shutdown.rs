//! Graceful shutdown: SIGTERM → unready at once → keep serving for the delay (endpoint
//! propagation) → stop accepting → drain in-flight requests until the deadline.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::serve::Listener;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceExt as _;

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
    let mut server = tokio::spawn(accept_loop(listener, state.clone(), close_rx));
    let mut exit_rx = state.exit_requested();

    tokio::select! {
        joined = &mut server => {
            // The accept loop retries accept errors, so only a panic ends it early.
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

/// Accepts connections until `close` fires, then stops accepting and waits for the open ones to
/// finish their in-flight request (each is asked to close after it).
///
/// hyper's connection builder rather than `axum::serve`, which gives hyper no timer, and the
/// header-read timeout needs one. Without it, a client that sends its request head slowly (or
/// never) held a connection and its task forever: the middleware's request timeout only starts
/// once the head is parsed.
async fn accept_loop(mut listener: TcpListener, state: AppState, mut close: oneshot::Receiver<()>) {
    let app = router(state.clone());
    let mut http = http1::Builder::new();
    // NB: hyper arms this timer whenever it waits for a request head, so it also closes
    // kept-alive connections idle this long (see the README on proxies' keep-alive timeouts).
    http.timer(TokioTimer::new())
        .header_read_timeout(state.header_read_timeout());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            // axum's `Listener` retries accept errors (and backs off on EMFILE) instead of failing.
            accepted = Listener::accept(&mut listener) => accepted,
            _ = &mut close => break,
        };
        // hyper reports the same timeout error for a kept-alive connection left idle as for a
        // client trickling its head; only one that never completed a head is a slow client.
        let got_a_head = Arc::new(AtomicBool::new(false));
        let svc = app.clone().map_request({
            let got_a_head = Arc::clone(&got_a_head);
            move |req| {
                got_a_head.store(true, Ordering::Relaxed);
                req
            }
        });
        let conn = graceful
            .watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc)));
        let state = state.clone();
        tokio::spawn(async move {
            match conn.await {
                Ok(()) => {}
                Err(err) if err.is_timeout() => {
                    if !got_a_head.load(Ordering::Relaxed) {
                        state.metrics().header_read_timeouts_total.inc();
                        tracing::debug!(%peer, "closed a connection that sent no complete request head in time");
                    }
                }
                // Resets and half-sent requests: the client's business, not an app failure.
                Err(err) => tracing::debug!(%peer, error = %err, "connection ended with an error"),
            }
        });
    }
    // Closes the socket now: new connections are refused while the open ones drain.
    drop(listener);
    graceful.shutdown().await;
}

fn joined_result(joined: Result<(), tokio::task::JoinError>) -> Result<()> {
    joined.map_err(|join| Error::ServeFailed(std::io::Error::other(join)))
}
