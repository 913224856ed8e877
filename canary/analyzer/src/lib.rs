//! Canary analysis for the selfheal platform (layer 7): what the canary and stable tracks served
//! during a window (from two scrapes of every pod's `/metrics`, or from Prometheus), and whether
//! the canary may be promoted. `main.rs` is the `selfheal-canary` CLI around it.

use std::path::{Path, PathBuf};

/// The decision rules: thresholds in, promote / rollback / inconclusive out (pure).
pub mod analysis;
/// A small Prometheus text-format parser.
pub mod expfmt;
/// The per-track window from Prometheus' recorded series (through `selfheal-promql`).
pub mod prometheus;
/// The per-track window from two scrapes of the pods.
pub mod window;

/// Everything that can go wrong before a verdict.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A scraped exposition is not in the text format.
    #[error("{source_name}: line {line}: {reason}")]
    Parse {
        /// File or pod the text came from.
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// A pod's metrics have no `selfheal_app_info{track}`: it cannot be told apart.
    #[error(
        "pod {0}: no selfheal_app_info{{track=...}} sample, so its track is unknown (is it the selfheal app?)"
    )]
    MissingTrack(String),
    /// A histogram bucket with an unparsable `le`.
    #[error("pod {pod}: histogram bucket with bad le={le:?}")]
    BadBucket {
        /// Pod name.
        pod: String,
        /// The label value.
        le: String,
    },
    /// A scrape directory or file could not be read.
    #[error("reading {path}: {source}")]
    ReadScrapes {
        /// What was read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The scrape directory has no `after/*.prom` file.
    #[error("{0}: no after/*.prom scrape (expected DIR/before/POD.prom and DIR/after/POD.prom)")]
    NoScrapes(PathBuf),
    /// Prometheus has none of the recorded series the analysis reads: the recording rules of
    /// self-healing/ are not loaded (or nothing it records is scraped).
    #[error(
        "Prometheus at {url} has no {series} series at all: load the platform's recording rules \
         (self-healing/rules/*.rules.yaml, or self-healing/prometheusrules/*.yaml on \
         kube-prometheus-stack) and scrape the app with its track label, or analyse with --scrapes"
    )]
    NotRecorded {
        /// The Prometheus asked.
        url: String,
        /// The recorded series that is missing.
        series: &'static str,
    },
    /// Prometheus could not be reached, or did not answer with a usable instant vector.
    #[error(transparent)]
    Prometheus(#[from] selfheal_promql::Error),
}

impl Error {
    /// A bounded label for the kind of failure (JSON summary's `error_kind`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Parse { .. } => "parse",
            Error::MissingTrack(_) => "missing_track",
            Error::BadBucket { .. } => "bad_bucket",
            Error::ReadScrapes { .. } => "read_scrapes",
            Error::NoScrapes(_) => "no_scrapes",
            Error::NotRecorded { .. } => "not_recorded",
            Error::Prometheus(selfheal_promql::Error::Unreachable { .. }) => {
                "prometheus_unreachable"
            }
            Error::Prometheus(selfheal_promql::Error::Answer { .. }) => "prometheus_answer",
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads `DIR/before/*.prom` and `DIR/after/*.prom` (file stem = pod name). `before/` may be
/// missing or lack pods (pods that started during the window).
pub fn read_scrape_dir(dir: &Path) -> Result<(Vec<window::Scrape>, Vec<window::Scrape>)> {
    let read = |sub: &str, required: bool| -> Result<Vec<window::Scrape>> {
        let path = dir.join(sub);
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Vec::new());
            }
            Err(source) => return Err(Error::ReadScrapes { path, source }),
        };
        let mut out = Vec::new();
        for entry in entries {
            let file = entry
                .map_err(|source| Error::ReadScrapes {
                    path: path.clone(),
                    source,
                })?
                .path();
            if file.extension().is_none_or(|e| e != "prom") {
                continue;
            }
            let pod = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&file).map_err(|source| Error::ReadScrapes {
                path: file.clone(),
                source,
            })?;
            out.push(window::Scrape {
                samples: expfmt::parse(&text, &file.display().to_string())?,
                pod,
            });
        }
        out.sort_by(|a, b| a.pod.cmp(&b.pod));
        Ok(out)
    };
    let before = read("before", false)?;
    let after = read("after", true)?;
    if after.is_empty() {
        return Err(Error::NoScrapes(dir.to_owned()));
    }
    Ok((before, after))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scrape_dir_pairs_pods_by_file_name() {
        let dir = std::env::temp_dir().join(format!("selfheal-canary-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("after")).unwrap();
        assert!(matches!(read_scrape_dir(&dir), Err(Error::NoScrapes(_))));
        std::fs::create_dir_all(dir.join("before")).unwrap();
        let info = "selfheal_app_info{track=\"canary\",version=\"1\"} 1\n";
        std::fs::write(dir.join("before/pod-a.prom"), info).unwrap();
        std::fs::write(dir.join("after/pod-a.prom"), info).unwrap();
        std::fs::write(dir.join("after/notes.txt"), "ignored").unwrap();
        let (before, after) = read_scrape_dir(&dir).unwrap();
        assert_eq!((before.len(), after.len()), (1, 1));
        assert_eq!(after[0].pod, "pod-a");
        assert_eq!(after[0].track().unwrap(), "canary");
        std::fs::write(dir.join("after/pod-b.prom"), "garbage{").unwrap();
        let err = read_scrape_dir(&dir).unwrap_err();
        assert_eq!(err.metric_label(), "parse");
        assert!(err.to_string().contains("pod-b.prom: line 1"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
