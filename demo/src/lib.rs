//! `selfheal-demo`: the seven-layer demo runner and its load generator.
//!
//! Everything that decides or computes is a pure function here (statistics, durations); the
//! Kubernetes and HTTP I/O sits at the edge (`load::run`), and `main.rs` only wires the
//! command line to it.

/// Command-line durations (`30s`, `500ms`).
pub mod duration;
/// Pure readings of Kubernetes objects (conditions, Events, EndpointSlices, Helm history).
pub mod extract;
/// The HTTP load generator.
pub mod load;
/// Per-layer results, the run report and the terminal table.
pub mod report;
/// Kubernetes I/O: setup, watches, fault injection, teardown.
pub mod runner;
/// The ops scenarios (layers 8–11) as pure plans: workloads, policies, lower bounds.
pub mod scenario;
/// Availability, failures by kind, latency percentiles, per-second series.
pub mod stats;
/// The SVG timeline.
pub mod svg;
/// The fastest recovery the settings allow, per layer.
pub mod theory;
/// "Has it happened yet?": pure predicates the runner's watches evaluate.
pub mod verdict;

/// Everything that can go wrong in the runner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A target URL or Service spec that cannot be used.
    #[error("unusable target {0}")]
    BadUrl(String),
    /// A Kubernetes API call failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The demo cannot start (no cluster, no release, a tool missing).
    #[error("{0}")]
    Setup(String),
    /// Writing a report file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A bounded label for each kind of error.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::BadUrl(_) => "bad_url",
            Error::Kube { .. } => "kube",
            Error::Write { .. } => "write",
            Error::Setup(_) => "setup",
        }
    }
}

/// Result alias with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
