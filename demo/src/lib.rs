//! `selfheal-demo`: the seven-layer demo runner and its load generator.
//!
//! Everything that decides or computes is a pure function here (statistics, durations); the
//! Kubernetes and HTTP I/O sits at the edge (`load::run`), and `main.rs` only wires the
//! command line to it.

/// Command-line durations (`30s`, `500ms`).
pub mod duration;
/// The HTTP load generator.
pub mod load;
/// Availability, failures by kind, latency percentiles, per-second series.
pub mod stats;

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
        }
    }
}

/// Result alias with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
